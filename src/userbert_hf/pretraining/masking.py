"""Random streams and the per-user building blocks of pre-training examples: masking, non-overlapping periods,
CL4SRec views.

Every random decision is drawn from a named :class:`RandomStream`: per user from
``numpy.random.default_rng([seed, step, user_index, stream])``, so it depends only on the seed, the optimizer
step and the user, not on how users are grouped into micro-batches, ranks or resumed runs; shared pools from
``step_generator(seed, step, stream)``, identical on every rank.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
import torch


class RandomStream(IntEnum):
    """Names of the independent random streams (the values are part of the seeds: never renumber)."""

    MASK = 1  # which behaviours of a user are masked
    PERIOD_SPLIT = 2  # where a user's behaviours split into periods A and B
    CP_VIEWS = 3  # CL4SRec augmentations
    BSM_POSITIVE_CROP = 4  # how much of period B the positive keeps
    BEHAVIOR_POOL = 11  # the medium-hard behaviour pool of a step (shared by all ranks)
    SEQUENCE_POOL = 12  # the sequence pool of a refresh (shared by all ranks)
    FALLBACK_CROPS = 13  # extra negative crops for a target whose pool has too few candidates
    RANDOM_BEHAVIOR_NEGATIVES = 14  # uniform negatives for a user's masked / next behaviours
    RANDOM_SEQUENCE_NEGATIVES = 15  # uniform choice among a target's allowed pool sequences
    NEXT_BEHAVIOR_NEGATIVES = 16  # PTUM's next-behaviour negatives
    EVALUATION = 17  # the fixed held-out evaluation batch and its negatives


def user_rng(seed: int, step: int, user_index: int, stream: int) -> np.random.Generator:
    """The random generator of one user at one step for one stream."""
    return np.random.default_rng([seed & 0xFFFFFFFF, step, user_index, int(stream)])


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """A torch generator determined by (seed, step, stream): identical on every rank and after resume."""
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([seed & 0xFFFFFFFF, step, int(stream)]).generate_state(1)[0]))
    return g


def num_masked(length: int, ratio: float) -> int:
    """How many of ``length`` behaviours are masked: ``floor(ratio * length)``, at least one (paper: 10%, at
    least one); zero for an empty sequence."""
    return 0 if length <= 0 else max(1, int(length * ratio))


def choose_masked_positions(length: int, ratio: float, rng: np.random.Generator, first: int = 0) -> np.ndarray:
    """Sorted positions (of ``length`` valid ones) to mask; never padding. ``num_masked(length, ratio)`` of them,
    drawn from positions ``first`` .. ``length - 1`` (at most all of those)."""
    if length <= first:
        return np.zeros(0, int)
    if first == 0:
        return np.sort(rng.choice(length, size=num_masked(length, ratio), replace=False))
    size = min(num_masked(length, ratio), length - first)
    return first + np.sort(rng.choice(length - first, size=size, replace=False))


def _valid_splits(timestamps: np.ndarray, min_first: int, min_second: int, gap: int) -> np.ndarray:
    """Every split index ``s`` with ``len(A) >= min_first``, ``len(B) >= min_second`` and a gap of more than
    ``gap`` between the last of A and the first of B (ascending; empty when there is none)."""
    n = len(timestamps)
    candidates = np.arange(max(min_first, 1), n - min_second + 1)
    if len(candidates) == 0:
        return candidates
    ts = np.asarray(timestamps, dtype=np.int64)
    return candidates[(ts[candidates] - ts[candidates - 1]) > gap]


def choose_period_split(
    timestamps: np.ndarray, min_first: int, min_second: int, gap: int, rng: np.random.Generator
) -> int | None:
    """Split index ``s`` so that A = behaviours[:s] and B = behaviours[s:] come from periods that do not overlap
    in time: ``timestamps[s] - timestamps[s - 1] > gap`` (so the last of A is strictly before the first of B),
    ``len(A) >= min_first``, ``len(B) >= min_second``. Chosen uniformly among valid splits; ``None`` when the
    user cannot give two periods."""
    valid = _valid_splits(timestamps, min_first, min_second, gap)
    return int(rng.choice(valid)) if len(valid) else None


def choose_balanced_split(timestamps: np.ndarray, min_first: int, min_second: int, gap: int, rng: np.random.Generator) -> int | None:
    """As :func:`choose_period_split`, but the valid split nearest the middle (A and B of about n / 2 behaviours
    each, ties broken at random): a short history is not cut into a 2-behaviour A or B."""
    n = len(timestamps)
    valid = _valid_splits(timestamps, min_first, min_second, gap)
    if not len(valid):
        return None
    distance = np.abs(2 * valid - n)
    return int(rng.choice(valid[distance == distance.min()]))


def crop_view(seq: list, ratio: float, rng: np.random.Generator) -> tuple[list, list]:
    """CL4SRec crop: a random contiguous sub-sequence of ``max(1, floor(ratio * n))`` behaviours."""
    n = len(seq)
    size = max(1, int(n * ratio))
    start = int(rng.integers(0, n - size + 1))
    return seq[start : start + size], []


def mask_view(seq: list, ratio: float, rng: np.random.Generator) -> tuple[list, list]:
    """CL4SRec mask: ``floor(ratio * n)`` random behaviours are replaced by the mask embedding."""
    k = int(len(seq) * ratio)
    return list(seq), sorted(rng.choice(len(seq), size=k, replace=False).tolist()) if k else []


def reorder_view(seq: list, ratio: float, rng: np.random.Generator) -> tuple[list, list]:
    """CL4SRec reorder: a random contiguous sub-sequence of ``floor(ratio * n)`` behaviours is shuffled."""
    n = len(seq)
    size = int(n * ratio)
    seq = list(seq)
    if size >= 2:
        start = int(rng.integers(0, n - size + 1))
        part = seq[start : start + size]
        seq[start : start + size] = [part[i] for i in rng.permutation(size)]
    return seq, []


__all__ = [
    "RandomStream",
    "step_generator",
    "choose_masked_positions",
    "choose_period_split",
    "num_masked",
    "crop_view",
    "mask_view",
    "reorder_view",
    "user_rng",
]
