"""Turning padded user rows into pre-training examples: masking, non-overlapping periods, PTUM targets and CP
views.

Every random decision for a user is drawn from ``numpy.random.default_rng([seed, step, user_index, task])``,
so it depends only on the seed, the optimizer step and the user, not on how users are grouped into
micro-batches, ranks or resumed runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..collation import pad_sequences

_MASK, _SPLIT, _CP = 1, 2, 3


def user_rng(seed: int, step: int, user_index: int, task: int) -> np.random.Generator:
    """The random generator of one user at one step for one task."""
    return np.random.default_rng([seed & 0xFFFFFFFF, step, user_index, task])


def num_masked(length: int, ratio: float) -> int:
    """How many of ``length`` behaviours are masked: ``floor(ratio * length)``, at least one (paper: 10%, at
    least one); zero for an empty sequence."""
    return 0 if length <= 0 else max(1, int(length * ratio))


def choose_masked_positions(length: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions (of ``length`` valid ones) to mask; never padding."""
    return np.sort(rng.choice(length, size=num_masked(length, ratio), replace=False)) if length else np.zeros(0, int)


def choose_period_split(
    timestamps: np.ndarray, min_first: int, min_second: int, gap: int, rng: np.random.Generator
) -> int | None:
    """Split index ``s`` so that A = behaviours[:s] and B = behaviours[s:] come from periods that do not overlap
    in time: ``timestamps[s] - timestamps[s - 1] > gap`` (so the last of A is strictly before the first of B),
    ``len(A) >= min_first``, ``len(B) >= min_second``. Chosen uniformly among valid splits; ``None`` when the
    user cannot give two periods."""
    n = len(timestamps)
    candidates = np.arange(max(min_first, 1), n - min_second + 1)
    if len(candidates) == 0:
        return None
    ts = np.asarray(timestamps, dtype=np.int64)
    valid = candidates[(ts[candidates] - ts[candidates - 1]) > gap]
    return int(rng.choice(valid)) if len(valid) else None


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


@dataclass
class PretrainingBatchBuilder:
    """Builds the per-objective inputs of one micro-batch from ``UserBertPretrainingCollator`` output.

    Args:
        objective: ``userbert``, ``ptum`` or ``cp``.
        mask_ratio: share of behaviours masked for MBP (paper: 0.1, at least one).
        bsm_min_behaviors: minimum behaviours in each of the two BSM periods.
        bsm_gap: minimum time between the last behaviour of A and the first of B (strictly greater).
        ptum_next_k: behaviours predicted by PTUM's next-K task.
        cp_crop_ratio / cp_mask_ratio / cp_reorder_ratio: CL4SRec augmentation strengths.
        seed: base seed.

    Example:

    ```python
    >>> builder = PretrainingBatchBuilder(objective="userbert", seed=0)
    >>> batch = {"sequence_ids": torch.tensor([[3, 4, 5, 6]]), "timestamps": torch.tensor([[1, 2, 3, 4]]),
    ...          "attention_mask": torch.ones(1, 4), "user_index": torch.tensor([0])}
    >>> prepared = builder.prepare(batch, step=0)
    >>> int(prepared["masked_positions"].sum())
    1
    ```
    """

    objective: str = "userbert"
    mask_ratio: float = 0.1
    bsm_min_behaviors: int = 2
    bsm_gap: int = 0
    ptum_next_k: int = 2
    cp_crop_ratio: float = 0.6
    cp_mask_ratio: float = 0.3
    cp_reorder_ratio: float = 0.6
    seed: int = 42
    stats: dict = field(default_factory=lambda: {"users": 0, "bsm_excluded_users": 0})

    def _rows(self, batch):
        ids = batch["sequence_ids"].cpu().numpy()
        times = batch["timestamps"].cpu().numpy()
        lengths = batch["attention_mask"].cpu().numpy().astype(bool).sum(1)
        users = batch["user_index"].cpu().numpy()
        for i in range(len(ids)):
            yield int(users[i]), ids[i, : lengths[i]].tolist(), times[i, : lengths[i]]

    def prepare(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        rows = list(self._rows(batch))
        self.stats["users"] += len(rows)
        builder = {"userbert": self._userbert, "ptum": self._ptum, "cp": self._cp}[self.objective]
        out = builder(rows, step)
        out["user_index"] = batch["user_index"].cpu()
        return out

    def _masked_tensor(self, masked: list[list[int]], length: int) -> torch.Tensor:
        positions = torch.zeros(len(masked), length, dtype=torch.bool)
        for i, cols in enumerate(masked):
            positions[i, list(cols)] = True
        return positions

    def _userbert(self, rows, step):
        a_seqs, b_seqs, a_times, masked, valid, windows = [], [], [], [], [], []
        for user, seq, ts in rows:
            split = choose_period_split(
                ts, self.bsm_min_behaviors, self.bsm_min_behaviors, self.bsm_gap, user_rng(self.seed, step, user, _SPLIT)
            )
            if split is None:
                self.stats["bsm_excluded_users"] += 1
                a, b, ta = seq, [], ts
            else:
                a, b, ta = seq[:split], seq[split:], ts[:split]
            a_seqs.append(a)
            b_seqs.append(b)
            a_times.append(ta)
            valid.append(split is not None)
            windows.append([int(ta.min()), int(ta.max())] if len(ta) else [0, 0])
            masked.append(choose_masked_positions(len(a), self.mask_ratio, user_rng(self.seed, step, user, _MASK)))
        a_ids = pad_sequences(a_seqs)
        masked_positions = self._masked_tensor(masked, a_ids.shape[1])
        b_ids = pad_sequences(b_seqs)
        bsm_valid = torch.tensor(valid, dtype=torch.bool)
        return {
            "sequence_ids": a_ids,  # (B, La) sequence A (or the whole sequence when BSM is impossible)
            "timestamps": pad_sequences([t.tolist() for t in a_times], length=a_ids.shape[1]),
            "attention_mask": a_ids != 0,
            "masked_positions": masked_positions,  # (B, La)
            "masked_ids": a_ids[masked_positions],  # (M,) row-major
            "positive_ids": b_ids,  # (B, Lb) sequence B
            "bsm_valid": bsm_valid,  # (B,)
            "target_window": torch.tensor(windows, dtype=torch.long).view(-1, 2),  # (B, 2) time span of A
            "mbp_count": masked_positions.sum(),
            "bsm_count": bsm_valid.sum(),
        }

    def _ptum(self, rows, step):
        k = self.ptum_next_k
        seqs, masked, next_ids, next_valid = [], [], [], []
        for user, seq, _ in rows:
            # The last k behaviours are the next-K targets (kept only if at least one behaviour stays visible).
            cut = min(k, max(len(seq) - 1, 0))
            context, targets = seq[: len(seq) - cut], seq[len(seq) - cut :]
            seqs.append(context)
            masked.append(choose_masked_positions(len(context), self.mask_ratio, user_rng(self.seed, step, user, _MASK)))
            next_ids.append(targets + [0] * (k - len(targets)))
            next_valid.append([True] * len(targets) + [False] * (k - len(targets)))
        ids = pad_sequences(seqs)
        masked_positions = self._masked_tensor(masked, ids.shape[1])
        nbp_valid = torch.tensor(next_valid, dtype=torch.bool).view(-1, k)
        return {
            "sequence_ids": ids,
            "attention_mask": ids != 0,
            "masked_positions": masked_positions,
            "masked_ids": ids[masked_positions],
            "next_ids": torch.tensor(next_ids, dtype=torch.long).view(-1, k),  # (B, k)
            "nbp_valid": nbp_valid,
            "mbp_count": masked_positions.sum(),
            "bsm_count": nbp_valid.sum(),
        }

    def _cp(self, rows, step):
        augmentations = (
            lambda s, r: crop_view(s, self.cp_crop_ratio, r),
            lambda s, r: mask_view(s, self.cp_mask_ratio, r),
            lambda s, r: reorder_view(s, self.cp_reorder_ratio, r),
        )
        views = ([], []), ([], [])
        for user, seq, _ in rows:
            rng = user_rng(self.seed, step, user, _CP)
            for v in range(2):
                view, view_masked = augmentations[int(rng.integers(0, 3))](list(seq), rng)
                views[v][0].append(view)
                views[v][1].append(view_masked)
        out = {}
        for v, prefix in enumerate(("", "view_")):
            ids = pad_sequences(views[v][0])
            out[f"{prefix}sequence_ids" if prefix else "sequence_ids"] = ids
            out[f"{prefix}attention_mask"] = ids != 0
            out[f"{prefix}masked_positions"] = self._masked_tensor(views[v][1], ids.shape[1])
        out["mbp_count"] = torch.tensor(0)
        out["bsm_count"] = torch.tensor(2 * len(rows))
        return out


__all__ = [
    "PretrainingBatchBuilder",
    "choose_masked_positions",
    "choose_period_split",
    "num_masked",
    "crop_view",
    "mask_view",
    "reorder_view",
    "user_rng",
]
