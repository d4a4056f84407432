"""Checkpoint validation for resuming pre-training: a checkpoint is complete only when every file, the
negative sampler's state and the RNG states included, can be read back. Every problem names the file."""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import zipfile

from ..assets import safetensors_problem

logger = logging.getLogger(__name__)

_CHECKPOINT_FILES = ("model.safetensors", "trainer_state.json", "optimizer.pt", "scheduler.pt")
_SAMPLER_FILES = ("negative_sampler.json", "negative_sampler.safetensors")


def _torch_file_problem(path: str) -> str | None:
    """A ``torch.save`` file is a zip archive: a truncated one has no central directory, a corrupted one fails its
    CRC check. Checked without unpickling anything."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        return f"{path} is truncated or corrupted ({type(err).__name__}: {err})"
    if bad is not None:
        return f"{path} is corrupted (member {bad} fails its CRC check)"
    return None


def _json_problem(path: str) -> str | None:
    try:
        with open(path) as f:
            json.load(f)
    except (OSError, ValueError) as err:
        return f"{path} is truncated or corrupted ({err})"
    return None


def checkpoint_problem(directory: str, expect_sampler_state: bool = True) -> str | None:
    """Why a checkpoint folder cannot be resumed from (a missing, truncated or corrupted file, named), or
    ``None`` when it is complete. Reads every tensor, so a checkpoint cut short by a crash is caught here rather
    than half-way through loading.

    Example:

    ```python
    >>> checkpoint_problem("outputs/run/checkpoint-200")
    'outputs/run/checkpoint-200/rng_state.pth is truncated or corrupted (BadZipFile: File is not a zip file)'
    ```
    """
    def missing(names) -> str | None:
        for name in names:
            path = os.path.join(directory, name)
            if not os.path.exists(path):
                return f"{path} is missing (the checkpoint was not completely written)"
        return None

    # The Trainer's files first (present, then readable), then the negative sampler's state.
    if problem := missing(_CHECKPOINT_FILES):
        return problem
    # One RNG file per process: rng_state.pth (one process) or rng_state_<rank>.pth.
    rng_files = sorted(glob.glob(os.path.join(glob.escape(directory), "rng_state*.pth")))
    if not rng_files:
        return f"{os.path.join(directory, 'rng_state.pth')} is missing (the checkpoint was not completely written)"
    checks = [
        lambda: safetensors_problem(os.path.join(directory, "model.safetensors")),
        lambda: _json_problem(os.path.join(directory, "trainer_state.json")),
        *(lambda n=n: _torch_file_problem(os.path.join(directory, n)) for n in ("optimizer.pt", "scheduler.pt")),
        *(lambda p=p: _torch_file_problem(p) for p in rng_files),
    ]
    if expect_sampler_state:
        checks += [
            lambda: missing(_SAMPLER_FILES),
            lambda: _json_problem(os.path.join(directory, "negative_sampler.json")),
            lambda: safetensors_problem(os.path.join(directory, "negative_sampler.safetensors")),
        ]
    return next((problem for check in checks if (problem := check())), None)


_CHECKPOINT = re.compile(r"checkpoint-(\d+)")


def checkpoint_folders(output_dir: str) -> list[str]:
    """``checkpoint-N`` folders of ``output_dir``, oldest step first."""
    if not os.path.isdir(output_dir):
        return []
    steps = sorted((int(m.group(1)), name) for name in os.listdir(output_dir) if (m := _CHECKPOINT.fullmatch(name)))
    return [os.path.join(output_dir, name) for _, name in steps]


def last_complete_checkpoint(output_dir: str, expect_sampler_state: bool = True) -> str | None:
    """The newest ``checkpoint-N`` folder of ``output_dir`` that is complete; incomplete newer ones (a crash
    while writing) are reported and skipped."""

    for path in reversed(checkpoint_folders(output_dir)):
        problem = checkpoint_problem(path, expect_sampler_state)
        if problem is None:
            return path
        logger.warning("Skipping checkpoint %s: %s", path, problem)
    return None


__all__ = ["checkpoint_folders", "checkpoint_problem", "last_complete_checkpoint"]
