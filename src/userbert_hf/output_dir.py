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

import json
import os
import shutil

MARKER_FILE = "_userbert_job.json"
_LAST = {"true", "last", "yes", "1"}
_NONE = {"", "none", "false", "no", "0"}


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


def job_marker(output_dir: str) -> dict | None:
    """The marker a job left in ``output_dir`` (``{"job": "pretrain", ...}``), or ``None``."""
    path = os.path.join(output_dir, MARKER_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def mark_output_dir(output_dir: str, job: str) -> None:
    """Record that ``output_dir`` is written by ``userbert <job>`` (call on the main process only)."""
    from . import __version__

    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, MARKER_FILE), "w") as f:
        json.dump({"job": job, "userbert_hf_version": __version__}, f)
        f.write("\n")


def prepare_output_dir(
    output_dir: str,
    job: str,
    overwrite: bool = False,
    resume_from_checkpoint=None,
    expect_sampler_state: bool = False,
) -> str | None:
    """Decide, before anything is loaded or written, whether ``job`` may write to ``output_dir``; returns the
    checkpoint to resume from (or ``None``). Raises :class:`OutputDirError` naming the folder otherwise.

    Args:
        output_dir: the job's ``--output_dir``.
        job: ``"pretrain"`` or ``"finetune"`` (the marker's job name).
        overwrite: ``--overwrite_output_dir``: use a non-empty folder anyway; stale ``checkpoint-*`` folders of a
            previous run of this job are removed so a later resume cannot mix two runs.
        resume_from_checkpoint: ``--resume_from_checkpoint`` (a path, ``True``/``"last"``, or ``None``).
        expect_sampler_state: checkpoints must hold the negative sampler's state (pre-training).
    """
    from .pretraining.checkpoints import checkpoint_folders, checkpoint_problem, last_complete_checkpoint

    resume = parse_resume_argument(resume_from_checkpoint)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise OutputDirError(f"--output_dir {output_dir} is a file, not a folder")
    entries = sorted(os.listdir(output_dir)) if os.path.isdir(output_dir) else []
    marker = job_marker(output_dir)
    ours = marker is not None and marker.get("job") == job
    if entries and not ours and not overwrite:
        raise OutputDirError(_foreign_message(output_dir, job, marker, entries))
    if isinstance(resume, str):
        if not os.path.isdir(resume):
            raise OutputDirError(f"--resume_from_checkpoint {resume}: no such checkpoint folder")
        problem = checkpoint_problem(resume, expect_sampler_state)
        if problem:
            raise OutputDirError(f"--resume_from_checkpoint {resume} cannot be resumed from: {problem}")
        return resume
    checkpoints = checkpoint_folders(output_dir)
    if resume is True:
        last = last_complete_checkpoint(output_dir, expect_sampler_state)
        if last is None:
            found = ", ".join(os.path.basename(c) for c in checkpoints) or "none"
            raise OutputDirError(
                f"--resume_from_checkpoint {resume_from_checkpoint}: {output_dir} has no complete checkpoint to "
                f"resume from (checkpoint folders: {found})"
            )
        return last
    if overwrite:
        if ours:  # a fresh run must not later resume from (or rotate against) the previous run's checkpoints
            for folder in checkpoints:
                shutil.rmtree(folder)
        return None
    if not entries:
        return None
    last = last_complete_checkpoint(output_dir, expect_sampler_state)
    if last is None:
        raise OutputDirError(_foreign_message(output_dir, job, marker, entries))
    print(f"userbert {job}: {output_dir} holds checkpoints of an earlier run; resuming from {last} "
          "(pass --overwrite_output_dir to start over)")
    return last


def claim_output_dir(training_args, job: str, expect_sampler_state: bool = False) -> str | None:
    """:func:`prepare_output_dir` for a job's ``TrainingArguments`` (``--output_dir``, ``--overwrite_output_dir``,
    ``--resume_from_checkpoint``) on every rank, then the main process marks the folder; returns the checkpoint
    to resume from. Ranks wait for each other in between, so none sees a marker another rank just wrote."""
    resume = prepare_output_dir(
        training_args.output_dir, job, overwrite=getattr(training_args, "overwrite_output_dir", False),
        resume_from_checkpoint=training_args.resume_from_checkpoint, expect_sampler_state=expect_sampler_state,
    )
    if training_args.world_size > 1:
        import torch.distributed

        torch.distributed.barrier()
    if training_args.process_index == 0:
        mark_output_dir(training_args.output_dir, job)
    return resume


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
    "OutputDirError",
    "parse_resume_argument",
    "job_marker",
    "mark_output_dir",
    "prepare_output_dir",
    "claim_output_dir",
    "check_embedding_output",
]
