"""Tiny, fast settings for running the real `userbert` jobs in tests (imported by tests/test_cli_*.py,
tests/test_output_dir.py, tests/pretraining/test_checkpoints.py and more)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# A 2-step GRU4Rec pre-training on the bundled MovieLens with small pools: a few seconds in-process.
TINY_PRETRAIN = [
    "--preset", "gru4rec", "--hidden_size", "16", "--max_behaviors", "30", "--max_steps", "2",
    "--behavior_pool_size", "50", "--sequence_pool_size", "10", "--per_device_train_batch_size", "16",
    "--logging_steps", "1", "--save_steps", "1", "--save_total_limit", "3", "--eval_fraction", "0",
    "--report_to", "none", "--disable_tqdm", "true", "--use_cpu", "true",
]


def tiny_pretrain_args(output_dir, *extra: str) -> list[str]:
    return [*TINY_PRETRAIN, "--output_dir", str(output_dir), *extra]


def run_cli(*args: str, env: dict | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    """``userbert ARGS`` in a fresh interpreter (``python -m userbert_hf.cli``)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    return subprocess.run([sys.executable, "-m", "userbert_hf.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def folder_snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to assert that nothing changed)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def add_sentinel(checkpoint: Path) -> None:
    """Mark a checkpoint's log history: a run resumed from it carries the mark into every later trainer state."""
    path = Path(checkpoint) / "trainer_state.json"
    state = json.loads(path.read_text())
    state["log_history"][0]["sentinel"] = checkpoint.name
    path.write_text(json.dumps(state))


def sentinels(trainer_state: Path) -> list[str]:
    state = json.loads(Path(trainer_state).read_text())
    return [entry["sentinel"] for entry in state["log_history"] if "sentinel" in entry]
