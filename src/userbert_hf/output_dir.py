"""What a job may do to its output folder: never destroy files it did not write, resume its own checkpoints.

The convention of the transformers example scripts, made decidable with a marker file:

* a missing or empty ``--output_dir`` is used;
* a folder marked by a previous run of the same job (``_userbert_job.json``) with a complete ``checkpoint-N`` is
  resumed from its last complete checkpoint (incomplete newer ones, from a crash while writing, are skipped);
* any other non-empty folder (someone else's files, another job's output, a finished run without checkpoints) is
  refused, naming the folder, unless ``--overwrite_output_dir`` is passed;
* ``--resume_from_checkpoint PATH`` resumes from that checkpoint (checked complete first);
  ``--resume_from_checkpoint True`` (or ``last``) from the last complete checkpoint of the folder.

The marker starts with ``_`` so that the Trainer's Hub pushes (which ignore ``_*``) leave it out.

Example:

```python
>>> resume = prepare_output_dir("outputs/run", "pretrain", overwrite=False, resume_from_checkpoint=None)
>>> mark_output_dir("outputs/run", "pretrain")          # on the main process, before writing anything else
>>> trainer.train(resume_from_checkpoint=resume)
```
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import uuid

logger = logging.getLogger(__name__)

MARKER_FILE = "_userbert_job.json"
CHECKPOINT_MARK = "_userbert_checkpoint.json"  # inside each checkpoint-N the job writes
LOCK_FILE = "_userbert_job.lock"  # held for the run's lifetime
MODEL_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
_LAST = {"true", "last", "yes", "1"}
_NONE = {"", "none", "false", "no", "0"}
# Options that do not change what is trained: a rerun that differs only in them resumes the same run. max_steps and
# num_train_epochs are among them, so a finished run can be continued for longer.
_NOT_FINGERPRINTED = re.compile(
    r"^(output_dir|overwrite_output_dir|resume_from_checkpoint|logging_.*|log_.*|report_to|run_name|push_to_hub|"
    r"hub_.*|disable_tqdm|save_.*|eval_.*|per_device_eval_batch_size|dataloader_.*|local_rank|ddp_.*|"
    r"max_steps|num_train_epochs|use_cpu|strict_data|trackio_.*|project|.*_token|include_.*|skip_memory_metrics|"
    r"debug|tpu_.*|past_index|label_names|load_best_model_at_end|metric_for_best_model|greater_is_better|"
    r"early_stopping_patience|_n_gpu|accelerator_config|deepspeed|fsdp.*|torch_compile.*)$"
)
_HELD: dict[str, str] = {}  # lock files held by this process -> output folder


class OutputDirError(ValueError):
    """An ``--output_dir`` / ``--resume_from_checkpoint`` setting that would lose data or cannot be honoured."""


def parse_resume_argument(value) -> str | bool | None:
    """``--resume_from_checkpoint`` as given on the command line: ``True`` for "the last complete checkpoint"
    (``True``, ``true``, ``last``), ``None`` for no resume (``False``, ``None``, empty), else a path."""
    if value is None or isinstance(value, bool):
        return value or None
    text = str(value).strip()
    if text.lower() in _LAST:
        return True
    if text.lower() in _NONE:
        return None
    return text


# ----------------------------------------------------------------------------------------------- fingerprints
def data_fingerprint(data) -> str:
    """sha256 of the data's content: every byte of a file, or of every file under a folder (with its relative
    path); a name that is not on disk (``movielens``, a Hub dataset id) is hashed as written."""
    digest = hashlib.sha256()
    path = str(data) if data is not None else ""
    if os.path.isfile(path):
        files = [(os.path.basename(path), path)]
    elif os.path.isdir(path):
        files = sorted(
            (os.path.relpath(os.path.join(root, name), path), os.path.join(root, name))
            for root, dirs, names in os.walk(path) for name in names if not name.startswith(".")
        )
    else:
        digest.update(b"name:" + path.encode())
        return digest.hexdigest()
    for relative, full in files:
        digest.update(relative.encode() + b"\0")
        with open(full, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def run_fingerprint(data, *settings) -> str:
    """The fingerprint of a run: its data's content (:func:`data_fingerprint`) and every setting of the given
    argument dataclasses that changes what is trained (output, logging, saving, evaluation and step-budget options
    excluded). Stored in the output folder's mark; a rerun resumes the folder only when it is equal.

    Example:

    ```python
    >>> run_fingerprint("events.csv", data_args, model_args, training_args)[:12]
    '4f0c2a9d81be'
    ```
    """
    values = {}
    for args in settings:
        names = [f.name for f in dataclasses.fields(args)] if dataclasses.is_dataclass(args) else sorted(vars(args))
        for name in names:
            if not _NOT_FINGERPRINTED.match(name):
                values[f"{type(args).__name__}.{name}" if name in values else name] = getattr(args, name, None)
    blob = json.dumps({"data": data_fingerprint(data), "settings": values}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# ----------------------------------------------------------------------------------------------- marks
def job_marker(output_dir: str) -> dict | None:
    """The marker a job left in ``output_dir`` (``{"job": "pretrain", ...}``), or ``None``."""
    return _read_json(os.path.join(output_dir, MARKER_FILE))


def checkpoint_mark(checkpoint: str) -> dict | None:
    """The mark a job wrote into a ``checkpoint-N`` folder it saved (``{"job", "fingerprint", "run_id"}``)."""
    return _read_json(os.path.join(checkpoint, CHECKPOINT_MARK))


def _read_json(path: str) -> dict | None:
    if os.path.islink(path) or not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _write_json(path: str, value: dict) -> None:
    """Write ``path`` (never through a link planted there): into a temporary file, then renamed over it."""
    if os.path.islink(path):
        raise OutputDirError(f"{path} is a link; the job writes no file through a link")
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)
        f.write("\n")
    os.replace(tmp, path)


def mark_output_dir(output_dir: str, job: str, fingerprint: str | None = None, run_id: str | None = None) -> str:
    """Record that ``output_dir`` is written by ``userbert <job>`` (call on the main process only), with the run's
    fingerprint; returns the run id."""
    from . import __version__

    os.makedirs(output_dir, exist_ok=True)
    run_id = run_id or uuid.uuid4().hex
    _write_json(os.path.join(output_dir, MARKER_FILE), {
        "job": job, "userbert_hf_version": __version__, "run_id": run_id, "fingerprint": fingerprint,
    })
    return run_id


def mark_checkpoint(checkpoint: str, job: str, fingerprint: str | None, run_id: str | None = None) -> None:
    """Mark ``checkpoint`` (created if missing) as written by this run of ``job``: only marked checkpoints are
    resumed from or deleted by a later run."""
    if os.path.islink(checkpoint):
        raise OutputDirError(f"{checkpoint} is a link; the job writes no checkpoint through a link")
    os.makedirs(checkpoint, exist_ok=True)
    _write_json(os.path.join(checkpoint, CHECKPOINT_MARK), {"job": job, "fingerprint": fingerprint, "run_id": run_id})


def is_own_checkpoint(checkpoint: str, job: str) -> bool:
    mark = checkpoint_mark(checkpoint)
    return mark is not None and mark.get("job") == job and not os.path.islink(checkpoint)


# ----------------------------------------------------------------------------------------------- lock
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def lock_holder(output_dir: str) -> dict | None:
    """The live job holding ``output_dir``'s lock (``{"pid", "host", "job"}``), or ``None`` when the folder is
    free, its lock stale (the process is gone) or held by this very process."""
    path = os.path.join(output_dir, LOCK_FILE)
    if not os.path.lexists(path):
        return None
    if os.path.abspath(path) in _HELD:
        return None
    holder = _read_json(path) or {}
    pid, host = holder.get("pid"), holder.get("host")
    if isinstance(pid, int) and host == socket.gethostname() and not _pid_alive(pid):
        return None  # stale: its process is gone
    return holder or {"pid": "?", "host": "?"}


def acquire_lock(output_dir: str, job: str) -> None:
    """Take ``output_dir``'s lock for this process (a stale lock of a dead process is taken over); raises
    :class:`OutputDirError` when another live job holds it. Released by :func:`release_lock` or at exit."""
    path = os.path.abspath(os.path.join(output_dir, LOCK_FILE))
    if path in _HELD:
        return
    os.makedirs(output_dir, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = lock_holder(output_dir)
            if holder is not None:
                raise OutputDirError(_locked_message(output_dir, holder)) from None
            os.unlink(path)  # stale: taken over
            continue
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "job": job}, f)
        _HELD[path] = output_dir
        if len(_HELD) == 1:
            atexit.register(_release_all)
        return
    raise OutputDirError(f"--output_dir {output_dir}: could not take the lock {path}")


def release_lock(output_dir: str) -> None:
    """Release the lock this process holds on ``output_dir`` (nothing when it holds none)."""
    path = os.path.abspath(os.path.join(output_dir, LOCK_FILE))
    if _HELD.pop(path, None) is not None:
        try:
            os.unlink(path)
        except OSError:
            pass


def _release_all() -> None:
    for path in list(_HELD):
        release_lock(os.path.dirname(path))


def _locked_message(output_dir: str, holder: dict) -> str:
    return (
        f"--output_dir {output_dir} is in use by another running job (`userbert {holder.get('job', '?')}`, process "
        f"{holder.get('pid')} on {holder.get('host')}); nothing was changed. Wait for it to end or choose another "
        f"folder (if that process is gone, delete {os.path.join(output_dir, LOCK_FILE)})."
    )


# ----------------------------------------------------------------------------------------------- the decision
def _links_inside(output_dir: str, folders: list[str]) -> list[str]:
    links = []
    for folder in [output_dir, *folders]:
        if os.path.isdir(folder) and not os.path.islink(folder):
            links += [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if os.path.islink(os.path.join(folder, n))]
    return links


def _decide(output_dir, job, overwrite, resume_from_checkpoint, expect_sampler_state, fingerprint):
    """``(resume_from, checkpoints_to_delete)``, or :class:`OutputDirError`; touches nothing."""
    from .pretraining.checkpoints import checkpoint_folders, checkpoint_problem

    resume = parse_resume_argument(resume_from_checkpoint)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise OutputDirError(f"--output_dir {output_dir} is a file, not a folder")
    entries = sorted(os.listdir(output_dir)) if os.path.isdir(output_dir) else []
    holder = lock_holder(output_dir) if entries else None
    if holder is not None:
        raise OutputDirError(_locked_message(output_dir, holder))
    visible = [e for e in entries if e != LOCK_FILE]
    marker = job_marker(output_dir)
    ours = marker is not None and marker.get("job") == job
    if visible and not ours and not overwrite:
        raise OutputDirError(_foreign_message(output_dir, job, marker, visible))
    checkpoints = checkpoint_folders(output_dir)
    own = [c for c in checkpoints if ours and is_own_checkpoint(c, job)]
    foreign = [c for c in checkpoints if c not in own]
    if links := _links_inside(output_dir, own):
        raise OutputDirError(
            f"--output_dir {output_dir} holds links ({', '.join(links[:3])}) through which the job would write outside "
            "the folder; nothing was changed. Remove them or choose another folder."
        )
    if foreign:
        names = ", ".join(os.path.basename(c) for c in foreign[:5])
        raise OutputDirError(
            f"--output_dir {output_dir} holds checkpoint folders this job did not write ({names}); nothing was "
            "changed. The Trainer would resume from or rotate them away: move them, or choose another folder."
        )
    if isinstance(resume, str):
        if not os.path.isdir(resume):
            raise OutputDirError(f"--resume_from_checkpoint {resume}: no such checkpoint folder")
        problem = checkpoint_problem(resume, expect_sampler_state)
        if problem:
            raise OutputDirError(f"--resume_from_checkpoint {resume} cannot be resumed from: {problem}")
        mark = checkpoint_mark(resume)
        if mark is not None and fingerprint is not None and mark.get("fingerprint") not in (None, fingerprint):
            raise OutputDirError(_mismatch_message(f"--resume_from_checkpoint {resume}", job))
        return resume, []
    complete = [c for c in own if checkpoint_problem(c, expect_sampler_state) is None]
    for c in own:
        if c not in complete:
            logger.warning("Skipping checkpoint %s: %s", c, checkpoint_problem(c, expect_sampler_state))
    same_run = ours and marker.get("fingerprint") == fingerprint
    if resume is True:
        if not complete:
            found = ", ".join(os.path.basename(c) for c in checkpoints) or "none"
            raise OutputDirError(
                f"--resume_from_checkpoint {resume_from_checkpoint}: {output_dir} has no complete checkpoint to "
                f"resume from (checkpoint folders: {found})"
            )
        if not same_run:
            raise OutputDirError(_mismatch_message(f"--output_dir {output_dir}", job))
        return complete[-1], []
    if overwrite:
        return None, own  # a fresh run must not later resume from (or rotate against) the earlier run's checkpoints
    if not visible:
        return None, []
    if not complete:
        if any(os.path.exists(os.path.join(output_dir, name)) for name in MODEL_FILES):
            raise OutputDirError(_foreign_message(output_dir, job, marker, visible))
        # An earlier run of this job that failed before its first complete checkpoint: reused as it is (its
        # incomplete checkpoints removed), every other file left in place.
        print(f"userbert {job}: {output_dir} holds an earlier run that ended before its first checkpoint; "
              "starting over in it")
        return None, own
    if not same_run:
        raise OutputDirError(_mismatch_message(f"--output_dir {output_dir}", job))
    print(f"userbert {job}: {output_dir} holds checkpoints of an earlier run; resuming from {complete[-1]} "
          "(pass --overwrite_output_dir to start over)")
    return complete[-1], []


def prepare_output_dir(
    output_dir: str,
    job: str,
    overwrite: bool = False,
    resume_from_checkpoint=None,
    expect_sampler_state: bool = False,
    fingerprint: str | None = None,
) -> str | None:
    """Decide, before anything is loaded or written, whether ``job`` may write to ``output_dir``; returns the
    checkpoint to resume from (or ``None``). Raises :class:`OutputDirError` naming the folder otherwise.

    Args:
        output_dir: the job's ``--output_dir``.
        job: ``"pretrain"`` or ``"finetune"`` (the marker's job name).
        overwrite: ``--overwrite_output_dir``: use a non-empty folder anyway; the ``checkpoint-*`` folders this job
            marked are removed so a later resume cannot mix two runs (unmarked ones make the job refuse).
        resume_from_checkpoint: ``--resume_from_checkpoint`` (a path, ``True``/``"last"``, or ``None``).
        expect_sampler_state: checkpoints must hold the negative sampler's state (pre-training).
        fingerprint: :func:`run_fingerprint` of this run: a folder of a run with another fingerprint is not resumed.
    """
    resume, delete = _decide(output_dir, job, overwrite, resume_from_checkpoint, expect_sampler_state, fingerprint)
    for folder in delete:
        shutil.rmtree(folder)
    return resume


def claim_output_dir(training_args, job: str, expect_sampler_state: bool = False, fingerprint: str | None = None):
    """:func:`prepare_output_dir` for a job's ``TrainingArguments`` (``--output_dir``, ``--overwrite_output_dir``,
    ``--resume_from_checkpoint``): every rank decides, the main process takes the folder's lock, removes the
    checkpoints this job marked when starting over, and marks the folder with the run's fingerprint; returns the
    checkpoint to resume from. Ranks wait for each other in between, so none sees a marker another rank just wrote.
    Call :func:`release_output_dir` when the job ends (also done at exit)."""
    args = (training_args.output_dir, job, getattr(training_args, "overwrite_output_dir", False),
            training_args.resume_from_checkpoint, expect_sampler_state, fingerprint)
    resume, _ = _decide(*args)
    if training_args.world_size > 1:
        import torch.distributed

        torch.distributed.barrier()
    if training_args.process_index == 0:
        acquire_lock(training_args.output_dir, job)
        try:
            resume, delete = _decide(*args)  # again, under the lock
            for folder in delete:
                shutil.rmtree(folder)
            marker = job_marker(training_args.output_dir) or {}
            run_id = marker.get("run_id") if resume is not None else None
            training_args._userbert_run = (job, fingerprint, mark_output_dir(training_args.output_dir, job, fingerprint, run_id))
        except BaseException:
            release_lock(training_args.output_dir)
            raise
    if training_args.world_size > 1:
        import torch.distributed

        torch.distributed.barrier()
    return resume


def release_output_dir(training_args) -> None:
    """Release the lock :func:`claim_output_dir` took (on the main process)."""
    release_lock(training_args.output_dir)


def checkpoint_mark_callback(training_args):
    """A ``TrainerCallback`` that marks each ``checkpoint-N`` folder as written by the run :func:`claim_output_dir`
    started for ``training_args``, before the Trainer writes into it: a later run resumes from or deletes only
    checkpoints that carry this mark."""
    from transformers import TrainerCallback

    job, fingerprint, run_id = getattr(training_args, "_userbert_run", (None, None, None))

    class CheckpointMarkCallback(TrainerCallback):
        def _mark(self, args, state, control):
            if job is not None and control.should_save and state.is_world_process_zero:
                mark_checkpoint(os.path.join(args.output_dir, f"checkpoint-{state.global_step}"), job, fingerprint,
                                run_id)

        def on_step_end(self, args, state, control, **kwargs):
            self._mark(args, state, control)

        def on_epoch_end(self, args, state, control, **kwargs):
            self._mark(args, state, control)

    return CheckpointMarkCallback()


def _mismatch_message(where: str, job: str) -> str:
    return (
        f"{where} holds a run of `userbert {job}` on other data or with other settings (its fingerprint differs); "
        "resuming it would mix two runs, so nothing was changed. Choose another folder, or pass "
        "--overwrite_output_dir to start over in it."
    )


def _foreign_message(output_dir: str, job: str, marker: dict | None, entries: list[str]) -> str:
    shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
    if marker is not None and marker.get("job") == job:
        why = f"it holds a finished run of `userbert {job}` without a complete checkpoint to resume from"
    elif marker is not None:
        why = f"it was written by `userbert {marker.get('job')}`, not `userbert {job}`"
    else:
        why = "it was not written by `userbert " + job + "`"
    return (
        f"--output_dir {output_dir} is not empty ({shown}) and {why}; nothing was changed. Choose an empty or new "
        "folder, or pass --overwrite_output_dir to write into it anyway."
    )


def check_embedding_output(output: str, overwrite: bool = False) -> None:
    """``userbert embed --output``: an existing file or folder is replaced only when it holds user embeddings
    (columns ``user_id`` and ``embedding`` exactly) or with ``--overwrite_output``."""
    if overwrite or not os.path.exists(output):
        return
    if os.path.isdir(output) and not os.listdir(output):
        return
    if _holds_embeddings(output):
        return
    kind = "folder" if os.path.isdir(output) else "file"
    raise OutputDirError(
        f"--output {output} is an existing {kind} that does not hold user embeddings (columns user_id, embedding); "
        "nothing was changed. Choose another path, or pass --overwrite_output to replace it."
    )


def _holds_embeddings(output: str) -> bool:
    try:
        if os.path.isdir(output):
            with open(os.path.join(output, "dataset_info.json")) as f:
                names = set(json.load(f).get("features", {}))
        else:
            import pyarrow.parquet as pq

            names = set(pq.read_schema(output).names)
    except Exception:
        return False
    return names == {"user_id", "embedding"}


def push_output_dir(trainer, output_dir: str, commit_message: str = "End of training"):
    """Push the finished output folder to the job's Hub repository exactly as it is on disk: the job's own model
    card (not the Trainer's generic one), ``training_results.json``, weights, config, model and processor code,
    vocabulary and tokenizer. Checkpoints, ``training_args.bin`` (a pickle) and ``_*`` files stay local; a
    ``training_args.bin`` pushed by the Trainer's in-training pushes is deleted from the repository."""
    from huggingface_hub import HfApi

    in_flight = getattr(trainer, "push_in_progress", None)
    if in_flight is not None:
        in_flight.wait_until_done()  # the Trainer's last checkpoint push lands before the final commit
    args = trainer.args
    repo_id = getattr(trainer, "hub_model_id", None) or args.hub_model_id
    if repo_id is None:  # push_to_hub set after the Trainer was built
        trainer.init_hf_repo()
        repo_id = trainer.hub_model_id
    return HfApi().upload_folder(
        repo_id=repo_id, folder_path=output_dir, commit_message=commit_message, token=args.hub_token,
        revision=args.hub_revision, ignore_patterns=["_*", "checkpoint-*", "training_args.bin"],
        delete_patterns=["training_args.bin"],
    )


__all__ = [
    "push_output_dir",
    "MARKER_FILE",
    "CHECKPOINT_MARK",
    "LOCK_FILE",
    "data_fingerprint",
    "run_fingerprint",
    "acquire_lock",
    "release_lock",
    "release_output_dir",
    "checkpoint_mark_callback",
    "OutputDirError",
    "parse_resume_argument",
    "job_marker",
    "mark_output_dir",
    "prepare_output_dir",
    "claim_output_dir",
    "check_embedding_output",
]
