"""Run an experiment grid: pre-train -> fine-tune over user splits x seeds x label fractions, plus baselines.

``userbert experiment experiments/movielens_ctr.yaml`` (or ``python examples/run_experiments.py ...``) runs
:func:`main`. The jobs are called through their Python entry points (``pretraining.job.main`` and
``finetuning.job.main`` with argument lists), so every cell is exactly a command a user could type. Each
finished cell is appended to ``<output_dir>/results.jsonl``; a rerun skips the cells found there, so an
interrupted grid resumes where it stopped. At the end the report (tables, paired tests, plots) is written.

The protocol: a development run (the default) never evaluates the test split: fine-tunings and baselines report
validation metrics, and so does its report (``<output_dir>/development.md`` by default). Once the settings are
chosen, ``userbert experiment CONFIG --confirm`` runs the frozen grid into ``<output_dir>/confirmation-<hash>``
and computes the test metrics once; its report goes to ``docs/results.md`` and the reference models' cards to
``model_cards/``. The grid's hash covers the config file's content and the code version; every confirmation is
appended to ``<output_dir>/confirmations.jsonl``, and the report says whether test numbers of that hash had been
seen before (an earlier confirmation, even an interrupted one).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .spec import SHARED_DATA_ARGS, Cell, ExperimentSpec, method_objective

logger = logging.getLogger(__name__)


def _argv(settings: dict) -> list[str]:
    """``{"max_steps": 10, "use_cpu": True}`` -> ``["--max_steps", "10", "--use_cpu", "true"]``."""
    out = []
    for key, value in settings.items():
        if value is None:
            continue
        out += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return out


def grid_hash(config_text: str, code: str) -> str:
    """The frozen grid's identity: sha256 of the config file's content and the code version (first 12 digits).

    Example:
        >>> len(grid_hash("name: g", "abc1234")), grid_hash("name: g", "abc1234") == grid_hash("name: h", "abc1234")
        (12, False)
    """
    import hashlib

    return hashlib.sha256(f"{config_text}\0{code}".encode()).hexdigest()[:12]


class ConfirmationLog:
    """``confirmations.jsonl``: one line per ``--confirm`` started (hash, time, code, command).

    Example:
        >>> log = ConfirmationLog(tmp_path / "confirmations.jsonl")
        >>> log.record("3f2a", code="abc", command="userbert experiment g.yaml --confirm")["earlier"]
        0
        >>> log.record("3f2a", code="abc", command="userbert experiment g.yaml --confirm")["earlier"]
        1
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def entries(self, hash_: str | None = None) -> list[dict]:
        if not self.path.exists():
            return []
        rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        return [r for r in rows if hash_ is None or r.get("hash") == hash_]

    def record(self, hash_: str, code: str, command: str, test_cells_done: int | None = None) -> dict:
        """Append a confirmation of ``hash_``; ``earlier`` counts the confirmations of that hash before it, and
        ``test_cells_done`` the cells whose test numbers were already computed when it started (0 after an
        earlier confirmation that stopped before its first test number)."""
        entry = {"hash": hash_, "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "code": code,
                 "command": command, "earlier": len(self.entries(hash_))}
        if test_cells_done is not None:
            entry["test_cells_done"] = int(test_cells_done)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")
        return entry


def code_version() -> str:
    """The git commit of the package's source (``+modified`` when the source differs from it), or ``unknown``."""
    import subprocess

    source = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+modified" if dirty else "")


class ResultsStore:
    """The grid's results: one JSON line per finished cell, appended (and flushed) as each cell ends.

    Example:
        >>> store = ResultsStore(tmp_path / "results.jsonl")
        >>> store.add({"cell": "baseline/popularity/split0", "metrics": {"auc": 0.61}})
        >>> store.done("baseline/popularity/split0"), len(store.records)
        (True, 1)
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: list[dict] = []
        if self.path.exists():
            for number, line in enumerate(self.path.read_text().splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    self.records.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by a kill: that cell is simply run again
                    logger.warning("%s:%d: unreadable result line skipped (the cell will be rerun)", self.path, number)
        self._done = {record["cell"] for record in self.records}

    def done(self, cell_id: str) -> bool:
        return cell_id in self._done

    def add(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records.append(record)
        self._done.add(record["cell"])


EXPERIMENT_MARK = "_userbert_experiment.json"
# What the runner writes into its output folder: all that --restart may delete (and only in a folder it marked).
OWN_ENTRIES = ("results.jsonl", "runs", "pretrained", "pretraining_data", "tmp", EXPERIMENT_MARK,
               "development.md", "results", "confirmations.jsonl")
OWN_PREFIXES = ("confirmation-",)  # confirmation runs: a folder each, marked itself
REPORT_NOTICE = "<!-- Generated by `userbert experiment"


class ExperimentPathError(ValueError):
    """An output folder, report or card path the runner did not create and would delete or overwrite."""


def _inside(path: Path, folder: Path) -> Path:
    """``path`` resolved, checked to lie inside ``folder`` (no ``..``, no link leading out)."""
    resolved, root = Path(path).resolve(), Path(folder).resolve()
    if resolved != root and root not in resolved.parents:
        raise ExperimentPathError(f"{path} resolves to {resolved}, outside {folder}; nothing was written there")
    return resolved


def claim_experiment_dir(output_dir: Path, name: str, restart: bool = False) -> None:
    """Check, then mark, the grid's output folder: a new or empty folder, or one this grid marked, is used (with
    ``restart``, only the entries the runner writes are deleted, and only in a folder it marked); a folder holding
    anything else is refused before anything is written or deleted."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ExperimentPathError(f"--output_dir {output_dir} is a file, not a folder")
    entries = sorted(p.name for p in output_dir.iterdir()) if output_dir.is_dir() else []
    mark_path = output_dir / EXPERIMENT_MARK
    mark = None
    if mark_path.is_file() and not mark_path.is_symlink():
        try:
            mark = json.loads(mark_path.read_text())
        except (OSError, ValueError):
            mark = None
    ours = isinstance(mark, dict) and mark.get("experiment") == name
    if entries and not ours:
        foreign = [e for e in entries if e not in OWN_ENTRIES and not e.startswith(OWN_PREFIXES)]
        if foreign or restart or isinstance(mark, dict):
            why = (f"it was written by experiment {mark.get('experiment')!r}" if isinstance(mark, dict) else
                   f"it holds files this grid did not write ({', '.join(foreign[:5])})" if foreign else
                   "it carries no mark of this grid")
            raise ExperimentPathError(
                f"--output_dir {output_dir} is not this grid's folder: {why}; nothing was deleted or written. Choose "
                "another --output_dir."
            )
    links = [e for e in entries if (output_dir / e).is_symlink()]
    if links:
        raise ExperimentPathError(f"--output_dir {output_dir} holds links ({', '.join(links)}); nothing was written")
    if restart and ours:
        for entry in OWN_ENTRIES:
            path = output_dir / entry
            if entry == EXPERIMENT_MARK or not path.exists():
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    output_dir.mkdir(parents=True, exist_ok=True)
    mark_path.write_text(json.dumps({"experiment": name}) + "\n")


def check_report_path(report: str | Path, overwrite: bool = False) -> None:
    """Refuse to replace a report this command did not write (it starts with the generated notice), or to write
    through a link, unless ``overwrite``."""
    report = Path(report)
    if report.is_symlink():
        raise ExperimentPathError(f"--report {report} is a link; no report is written through a link")
    if report.is_dir():
        raise ExperimentPathError(f"--report {report} is a folder")
    if report.exists() and not overwrite:
        try:
            generated = REPORT_NOTICE in report.read_text(errors="replace")[:2000]
        except OSError:
            generated = False
        if not generated:
            raise ExperimentPathError(
                f"--report {report} exists and was not written by `userbert experiment`; nothing was changed. Choose "
                "another --report, or pass --overwrite_report to replace it."
            )


class ShardError(ValueError):
    """A ``--shard`` that cannot run: K outside [0, N), or the shared cells it needs are not finished yet."""


class ExperimentRunner:
    """Runs the cells of an :class:`ExperimentSpec` that are not yet in the results file.

    Args:
        spec: the grid.
        output_dir: where runs, pre-trained models and ``results.jsonl`` go.
        pretrain_fn / finetune_fn: the jobs' entry points (``main(argv) -> metrics``); tests pass fakes.
        keep_models: keep every fine-tuned model's weights (default: only the reference runs', for model cards).
        confirm: a confirmation run (test metrics computed); default: development (validation only).

    Example:
        >>> runner = ExperimentRunner(ExperimentSpec.from_file("experiments/movielens_ctr.yaml"), "outputs/exp")
        >>> runner.run()  # resumes from outputs/exp/results.jsonl if it exists
    """

    def __init__(self, spec: ExperimentSpec, output_dir: str | Path, *, pretrain_fn: Callable | None = None,
                 finetune_fn: Callable | None = None, keep_models: bool = False, confirm: bool = False):
        self.spec = spec
        self.confirm = confirm
        self.evaluated_on = "test" if confirm else "validation"
        self.output_dir = Path(output_dir)
        if pretrain_fn is None or finetune_fn is None:
            from ..finetuning import job as finetuning_job
            from ..pretraining import job as pretraining_job

            pretrain_fn = pretrain_fn or pretraining_job.main
            finetune_fn = finetune_fn or finetuning_job.main
        self.pretrain_fn, self.finetune_fn = pretrain_fn, finetune_fn
        self.keep_models = keep_models
        self.store = ResultsStore(self.output_dir / "results.jsonl")
        self.code_version = code_version()
        self._splits_cache: dict = {}

    # ------------------------------------------------------------------ paths
    @property
    def export_dir(self) -> Path:
        return self.output_dir / "pretraining_data"

    def pretrained_dir(self, method: str, split_seed: int | None, pretrain_seed: int | None = None) -> Path:
        """The pre-trained model of ``method`` (pre-training seed ``pretrain_seed``) that fine-tunings on
        ``split_seed`` start from."""
        method = self.spec.pretraining_owner(method)
        split_seed = self.spec.pretraining_split(split_seed) if split_seed is not None else None
        suffix = f"-split{split_seed}" if split_seed is not None else ""
        suffix += f"-pseed{pretrain_seed}" if pretrain_seed is not None else ""
        return self.output_dir / "pretrained" / f"{self.spec.name}-{method}{suffix}"

    def run_dir(self, cell: Cell) -> Path:
        pseed = f"-pseed{cell.pretrain_seed}" if cell.pretrain_seed is not None else ""
        return self.output_dir / "runs" / (
            f"{self.spec.name}-{cell.method}{pseed}-split{cell.split_seed}-seed{cell.seed}-frac{cell.fraction:g}"
        )

    def is_reference(self, cell: Cell) -> bool:
        """The run whose model card goes into ``model_cards/``: first split, first seed, all labels."""
        top = max(self.spec.label_fractions)
        return (cell.split_seed == self.spec.split_seeds_for(top)[0] and cell.seed == self.spec.seeds_for(top)[0]
                and cell.fraction == top
                and cell.pretrain_seed in (None, self.spec.effective_pretrain_seeds[0]))

    # ------------------------------------------------------------------ argv of the jobs
    def task_argv(self, split_seed: int | None = None) -> list[str]:
        settings = {"task": self.spec.task, "data": self.spec.data, **self.spec.task_args}
        if split_seed is not None:
            settings["split_seed"] = split_seed
        return _argv(settings)

    def export_argv(self) -> list[str]:
        return self.task_argv() + ["--export_pretraining_data", str(self.export_dir)]

    def pretrain_argv(self, method: str, split_seed: int | None, pretrain_seed: int | None = None) -> list[str]:
        settings = {"data": str(self.export_dir), "preset": self.spec.preset, **self.spec.model_args}
        settings.update({k: self.spec.task_args[k] for k in SHARED_DATA_ARGS if k in self.spec.task_args})
        max_steps = int(self.spec.pretraining_args.get("max_steps", 200))
        # One checkpoint at the end keeps the whole log history (trainer_state.json) for the curves.
        # A grid's budget is its max_steps unless it asks for early stopping (pretraining_args or the method).
        settings.update({"save_strategy": "steps", "save_steps": max_steps, "save_total_limit": 1,
                         "report_to": "none", "disable_tqdm": True, "early_stopping_patience": 0})
        settings.update(self.spec.pretraining_args)
        method_settings = dict(self.spec.methods[method] or {})
        method_settings.pop("finetuning_args", None)  # the method's fine-tuning options, not pre-training ones
        method_settings.setdefault("objective", method_objective(method, method_settings))
        settings.update(method_settings)
        seed = split_seed if split_seed is not None else self.spec.split_seeds[0]
        if pretrain_seed is not None:
            seed = pretrain_seed
        settings.update({"seed": seed, "output_dir": str(self.pretrained_dir(method, split_seed, pretrain_seed))})
        return _argv(settings)

    def finetune_argv(self, cell: Cell) -> list[str]:
        if self.spec.is_scratch(cell.method):
            settings = {"model_name_or_path": self.spec.preset, **self.spec.model_args}
        else:
            # A grid names its starts: a pre-trained row is fine-tuned as it is unless its finetuning_args soften it
            # (the job's default softening of a same-data warm start would change what a row of a grid means).
            pretrained = self.pretrained_dir(cell.method, cell.split_seed, cell.pretrain_seed)
            settings = {"model_name_or_path": str(pretrained), "soften_same_data_start": False}
        settings.update({"report_to": "none", "disable_tqdm": True, "save_strategy": "no"})
        settings.update(self.spec.finetuning_args)
        settings.update(self.spec.fraction_args.get(cell.fraction, {}))
        settings.update(self.spec.method_finetuning_args(cell.method))
        settings.update({"train_fraction": cell.fraction, "seed": cell.seed, "output_dir": str(self.run_dir(cell))})
        if not self.confirm:
            settings["evaluate_test"] = False  # development: the test split is never evaluated
        return self.task_argv(cell.split_seed) + _argv(settings)

    # ------------------------------------------------------------------ cells
    def run(self, stop_after: int | None = None, shard: tuple[int, int] = (0, 1),
            wait_seconds: float = 0.0, poll_seconds: float = 5.0) -> list[dict]:
        """Run every unfinished cell (at most ``stop_after`` of them); returns all records.

        ``shard=(k, n)`` runs only the k-th of n interleaved shares of the cells, so n processes (or machines
        sharing the output folder) work on one grid at once: the export belongs to shard 0, the pre-training runs
        and then the fine-tuning and baseline cells are dealt out in turn. A cell whose export or pre-trained model
        another shard has not finished yet is waited for (the results file is re-read every ``poll_seconds``) for
        at most ``wait_seconds``; after that the shard stops with a :class:`ShardError` naming what is missing.
        """
        k, n = shard
        if not 0 <= k < n:
            raise ShardError(f"shard {k}/{n}: need 0 <= K < N")
        cells = self.spec.cells()
        if n > 1:
            exports = [c for c in cells if c.kind == "export"]
            pretrains = [c for c in cells if c.kind == "pretrain"]
            rest = [c for c in cells if c.kind not in ("export", "pretrain")]
            cells = ((exports if k == 0 else []) + [c for i, c in enumerate(pretrains) if i % n == k]
                     + [c for i, c in enumerate(rest) if i % n == k])
        self._wait = (wait_seconds, poll_seconds, (k, n))
        mixed = {r.get("evaluated_on", "test") for r in self.store.records if r.get("kind") in ("finetune", "baseline")}
        if mixed - {self.evaluated_on}:
            raise ShardError(
                f"{self.store.path} holds runs evaluated on {sorted(mixed)} (runs from before the protocol computed "
                f"test metrics); this {('confirmation' if self.confirm else 'development run')} evaluates "
                f"{self.evaluated_on}: use another --output_dir, --restart, or --report_only to rebuild its report"
            )
        todo = [c for c in cells if not self.store.done(c.cell_id)]
        logger.info("experiment %s: %d cells, %d finished, %d to run", self.spec.name, len(cells),
                    len(cells) - len(todo), len(todo))
        for number, cell in enumerate(todo[:stop_after] if stop_after is not None else todo, start=1):
            self._wait_for(self.dependencies(cell))
            started = time.time()
            print(f"[{self.spec.name}] {number}/{len(todo)} {cell.cell_id}", flush=True)
            record = getattr(self, f"_run_{cell.kind}")(cell)
            record.update(cell=cell.cell_id, kind=cell.kind, method=cell.method, split_seed=cell.split_seed,
                          seed=cell.seed, fraction=cell.fraction, pretrain_seed=cell.pretrain_seed,
                          seconds=round(time.time() - started, 1), code=self.code_version)
            if cell.kind in ("finetune", "baseline"):
                record["evaluated_on"] = self.evaluated_on
            self.store.add(record)
        return self.store.records

    def dependencies(self, cell: Cell) -> list[str]:
        """The cells that must be finished before ``cell`` runs: the export before a pre-training, the pre-trained
        model before its fine-tunings."""
        if cell.kind == "pretrain":
            return ["export"]
        if cell.kind == "finetune" and not self.spec.is_scratch(cell.method):
            split = cell.split_seed if self.spec.pretrain_per_split else None
            owner = self.spec.pretraining_owner(cell.method)
            return [Cell("pretrain", owner, split, pretrain_seed=cell.pretrain_seed).cell_id]
        return []

    def _wait_for(self, cell_ids: list[str]) -> None:
        """Block until every cell of ``cell_ids`` is in the results file (written by another shard)."""
        wait_seconds, poll_seconds, (k, n) = getattr(self, "_wait", (0.0, 5.0, (0, 1)))
        deadline = time.time() + wait_seconds
        while True:
            missing = [c for c in cell_ids if not self.store.done(c)]
            if not missing:
                return
            if time.time() >= deadline:
                raise ShardError(
                    f"shard {k}/{n} needs {', '.join(missing)} finished first (not in {self.store.path}): run the "
                    f"shard that owns it, or the grid without --shard, or give the shards time with --shard_wait"
                )
            time.sleep(poll_seconds)
            self.store = ResultsStore(self.store.path)  # other shards append to the same file

    def _remove_own(self, path: Path) -> None:
        """Delete a folder the runner writes (a half-written run of an interrupted attempt), inside its output folder."""
        if path.is_symlink():
            raise ExperimentPathError(f"{path} is a link; the runner deletes nothing through a link")
        if path.exists():
            shutil.rmtree(_inside(path, self.output_dir))

    def _run_export(self, cell: Cell) -> dict:
        self._remove_own(self.export_dir)  # a half-written export of an interrupted run
        self.finetune_fn(self.export_argv())
        return {"argv": self.export_argv()}

    def _run_pretrain(self, cell: Cell) -> dict:
        argv = self.pretrain_argv(cell.method, cell.split_seed, cell.pretrain_seed)
        out = self.pretrained_dir(cell.method, cell.split_seed, cell.pretrain_seed)
        self._remove_own(out)
        metrics = self.pretrain_fn(argv) or {}
        return {"argv": argv, "metrics": _numbers(metrics), "log_history": pretraining_log_history(out)}

    def _run_finetune(self, cell: Cell) -> dict:
        argv = self.finetune_argv(cell)
        out = self.run_dir(cell)
        self._remove_own(out)  # left by an interrupted attempt of this cell
        metrics = self.finetune_fn(argv) or {}
        results_path = out / "training_results.json"
        prefix = "test_" if self.confirm else "eval_"
        record = {"argv": argv, "metrics": {k.removeprefix(prefix): v for k, v in _numbers(metrics).items()
                                            if k.startswith(prefix)}}
        if results_path.exists():
            results = json.loads(results_path.read_text())
            kept = results.get("kept_model_validation")
            # the kept (tested) model's validation; runs before it was recorded: the last in-training evaluation
            record["validation"] = [kept] if kept else results.get("validation", [])[-1:]
            if kept:
                record["validation_of_kept_model"] = True
            record["train_runtime_seconds"] = results.get("train_runtime_seconds")
        if not self.keep_models and not self.is_reference(cell) and out.exists():
            for name in ("model.safetensors", "optimizer.pt"):
                (out / name).unlink(missing_ok=True)
        return record

    def _run_baseline(self, cell: Cell) -> dict:
        from ..finetuning.registry import get_task
        from .baselines import evaluate_baseline

        splits, num_items = self.task_splits(cell.split_seed)
        train_rows = None
        if cell.method == "item_mean":  # the training users the fine-tuning job keeps at this fraction and seed
            from ..finetuning.splits import subsample_training

            group = get_task(self.spec.task).group_column
            train_rows = subsample_training(splits["train"], cell.fraction, cell.seed, group)
        metrics = evaluate_baseline(cell.method, splits, num_items, train_rows=train_rows,
                                    mf_args=self.spec.mf_args, seed=cell.split_seed, split=self.evaluated_on)
        return {"metrics": metrics}

    def task_splits(self, split_seed: int):
        """The task's labelled splits of one user split (built as the fine-tuning job builds them)."""
        if split_seed not in self._splits_cache:
            from ..finetuning.job import parse_args
            from ..finetuning.registry import get_task

            data_args = parse_args(self.task_argv(split_seed) + ["--output_dir", str(self.output_dir / "tmp")])[0]
            built = get_task(self.spec.task).build_splits(data_args, None)
            self._splits_cache = {split_seed: (built.splits, len(built.vocabulary))}
        return self._splits_cache[split_seed]


def _numbers(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def pretraining_log_history(output_dir: str | Path) -> list[dict]:
    """The log history of a pre-training run: ``training_results.json``'s ``log_history`` when the job records
    it, else the last checkpoint's ``trainer_state.json``."""
    output_dir = Path(output_dir)
    results = output_dir / "training_results.json"
    if results.exists():
        history = json.loads(results.read_text()).get("log_history")
        if history:
            return history
    states = sorted(output_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    return json.loads(states[-1].read_text()).get("log_history", []) if states else []


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="userbert experiment", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="The grid, a YAML or JSON file (see experiments/*.yaml).")
    parser.add_argument("--output_dir", default=None, help="Runs and results.jsonl (default: outputs/experiments/NAME).")
    parser.add_argument("--report", default=None,
                        help="The generated report, plots next to it (default: docs/results.md with --confirm, "
                             "else OUTPUT_DIR/development.md).")
    parser.add_argument("--confirm", action="store_true",
                        help="Run the frozen grid as a confirmation: compute the test metrics, once (into "
                             "OUTPUT_DIR/confirmation-HASH; recorded in OUTPUT_DIR/confirmations.jsonl). Without it "
                             "a development run evaluates validation only.")
    parser.add_argument("--model_cards_dir", default="model_cards", help="Where the reference models' cards go.")
    parser.add_argument("--restart", action="store_true",
                        help="Delete the earlier results and runs of this grid (only in a folder this grid marked).")
    parser.add_argument("--overwrite_report", action="store_true",
                        help="Replace --report even when it is a file `userbert experiment` did not write.")
    parser.add_argument("--report_only", action="store_true", help="Only rewrite the report from results.jsonl.")
    parser.add_argument("--keep_models", action="store_true", help="Keep every fine-tuned model's weights.")
    parser.add_argument(
        "--shard", default="0/1", metavar="K/N",
        help="Run the K-th of N interleaved shares of the cells (several single-thread processes on one grid: shard "
             "0 runs the export, the pre-training runs and then the fine-tunings are dealt out in turn). The report "
             "covers every finished cell of the results file.",
    )
    parser.add_argument(
        "--shard_wait", type=float, default=None, metavar="SECONDS",
        help="How long a shard waits for an export or a pre-trained model that another shard is still producing "
             "(default with --shard K/N, N > 1: 24 hours).",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING)
    # Every option is checked before anything is written or deleted.
    try:
        shard = tuple(int(part) for part in args.shard.split("/"))
        if len(shard) != 2:
            raise ValueError
    except ValueError:
        parser.error(f"--shard {args.shard!r}: expected K/N, e.g. 0/2")
    try:
        spec = ExperimentSpec.from_file(args.config)
    except (OSError, ValueError) as err:
        parser.error(str(err))
    if not 0 <= shard[0] < shard[1]:
        parser.error(f"shard {shard[0]}/{shard[1]}: need 0 <= K < N")
    root = Path(args.output_dir or Path("outputs/experiments") / spec.name)
    version = code_version()
    frozen = grid_hash(Path(args.config).read_text(), version)
    output_dir = root / f"confirmation-{frozen}" if args.confirm else root
    runner = ExperimentRunner(spec, output_dir, keep_models=args.keep_models, confirm=args.confirm)
    report_path = args.report or ("docs/results.md" if args.confirm else str(root / "development.md"))
    try:
        from .cards import check_card_path
        from .report import reference_model_folders

        check_report_path(report_path, args.overwrite_report)
        if args.confirm:  # only a confirmation writes the reference cards (they carry test metrics)
            for folder in reference_model_folders(runner, finished_only=False):
                check_card_path(Path(args.model_cards_dir) / f"{folder.name}.md")
        if not args.report_only:
            claim_experiment_dir(output_dir, spec.name, restart=args.restart)
    except ValueError as err:  # ExperimentPathError, CardPathError
        parser.error(str(err))
    runner.store = ResultsStore(output_dir / "results.jsonl")  # read again: --restart may have removed it
    # The command that runs (or resumes) the grid; --report_only only rebuilds its report.
    given = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--report_only"]
    command = "userbert experiment " + " ".join(shlex.quote(a) for a in given)
    log = ConfirmationLog(root / "confirmations.jsonl")
    if args.confirm and not args.report_only and shard[0] == 0:
        tested = sum(r.get("kind") in ("finetune", "baseline") and r.get("evaluated_on", "test") == "test"
                     for r in runner.store.records)
        # from here on, test numbers of this hash can be seen
        log.record(frozen, code=version, command=command, test_cells_done=tested)
    if not args.report_only:
        try:
            wait = args.shard_wait if args.shard_wait is not None else (86400.0 if shard[1] > 1 else 0.0)
            runner.run(shard=shard, wait_seconds=wait)
        except ShardError as err:
            parser.error(str(err))
    from .report import write_model_cards, write_report

    if shard[1] > 1:  # other shards may have added cells since this one started
        runner.store = ResultsStore(runner.store.path)
        command = command.replace(f" --shard {args.shard}", "").replace(f" --shard={args.shard}", "")
    confirmations = log.entries(frozen)
    protocol = {"mode": "confirmation" if args.confirm else "development", "hash": frozen, "code": version,
                "confirmations": confirmations}
    write_report(spec, runner.store.records, report_path, command=command, protocol=protocol)
    if args.confirm:  # the reference cards carry test metrics: only a confirmation writes them
        try:
            write_model_cards(runner, args.model_cards_dir)
        except ValueError as err:  # a card path holding a file that is not a generated card
            parser.error(str(err))
    return runner.store.records


__all__ = ["ExperimentRunner", "ResultsStore", "ShardError", "ConfirmationLog", "ExperimentPathError",
           "claim_experiment_dir", "check_report_path", "grid_hash", "pretraining_log_history", "main"]
