"""Checkpoint validation for resuming pre-training: a checkpoint is complete only when every file, the
negative sampler's state included, can be read back."""

from __future__ import annotations

import os

import torch

_CHECKPOINT_FILES = ("model.safetensors", "trainer_state.json", "optimizer.pt", "scheduler.pt")


def checkpoint_problem(directory: str, expect_sampler_state: bool = True) -> str | None:
    """Why a checkpoint folder cannot be resumed from (a missing, truncated or corrupted file, named), or
    ``None`` when it is complete. Reads every tensor, so a checkpoint cut short by a crash is caught here rather
    than half-way through loading."""
    import json

    from safetensors import safe_open

    for name in _CHECKPOINT_FILES:
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            return f"{path} is missing (the checkpoint was not completely written)"
    path = os.path.join(directory, "model.safetensors")
    try:
        with safe_open(path, framework="pt") as f:
            for key in f.keys():
                f.get_tensor(key)
    except Exception as err:
        return f"{path} is truncated or corrupted ({err})"
    for name in ("trainer_state.json",):
        path = os.path.join(directory, name)
        try:
            with open(path) as f:
                json.load(f)
        except Exception as err:
            return f"{path} is truncated or corrupted ({err})"
    for name in ("optimizer.pt", "scheduler.pt"):
        path = os.path.join(directory, name)
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            return f"{path} is truncated or corrupted ({type(err).__name__}: {str(err)[:200]})"
    if expect_sampler_state:
        meta_path = os.path.join(directory, "negative_sampler.json")
        tensor_path = os.path.join(directory, "negative_sampler.safetensors")
        for path in (meta_path, tensor_path):
            if not os.path.exists(path):
                return f"{path} is missing (the checkpoint was not completely written)"
        try:
            with open(meta_path) as f:
                json.load(f)
            with safe_open(tensor_path, framework="pt") as f:
                for key in f.keys():
                    f.get_tensor(key)
        except Exception as err:
            return f"the negative sampler state in {directory} is truncated or corrupted ({err})"
    return None


def last_complete_checkpoint(output_dir: str, expect_sampler_state: bool = True) -> str | None:
    """The newest ``checkpoint-N`` folder of ``output_dir`` that is complete; incomplete newer ones (a crash
    while writing) are reported and skipped."""
    import logging
    import re

    if not os.path.isdir(output_dir):
        return None
    steps = sorted(
        (int(m.group(1)), name) for name in os.listdir(output_dir) if (m := re.fullmatch(r"checkpoint-(\d+)", name))
    )
    for _, name in reversed(steps):
        path = os.path.join(output_dir, name)
        problem = checkpoint_problem(path, expect_sampler_state)
        if problem is None:
            return path
        logging.getLogger(__name__).warning("Skipping checkpoint %s: %s", path, problem)
    return None



__all__ = ["checkpoint_problem", "last_complete_checkpoint"]
