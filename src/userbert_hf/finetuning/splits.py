"""What every fine-tuning task's labelled splits share, built from what the loaders of ``userbert_hf.data`` return.

Each task module of this package (``ctr``, ``next_item``, ``news``, ``user_classification``) builds its own
``datasets.DatasetDict`` with ``train`` / ``validation`` / ``test`` splits from the helpers here:
:func:`split_users` (seeded user splits), :func:`history_cut` (where a user's history ends and the candidates
begin), :func:`load_task_sequences` (whole sequences of a job's data arguments) and the shared collation step.

:func:`subsample_training` keeps a seeded share of the labelled training data (by user or impression), the
low-resource setting of the paper (10% / 25% / 100%). :func:`pack_candidates` packs (user, candidate) rows per
user. :func:`pretraining_users` returns the behaviour sequences a pre-training run may use without ever seeing an
evaluation target. :func:`split_statistics` describes built splits.

Load MovieLens / Beauty with ``max_behaviors=None``: candidates and targets are chosen on the full sequences,
histories are truncated to the most recent ``max_behaviors`` here.

Example:
    >>> parts = split_users([f"u{i}" for i in range(10)], seed=0)
    >>> sorted(len(users) for users in parts.values())
    [1, 1, 8]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import datasets
import numpy as np
import torch

from ..collation import collate_histories
from ..data import column_options, load_behavior_data

try:  # datasets >= 4
    from datasets import List as _ListFeature
except ImportError:  # pragma: no cover - datasets 3.x
    from datasets import Sequence as _ListFeature

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
IGNORE_INDEX = -100

_IDS = _ListFeature(datasets.Value("int32"))


def column_values(dataset, name: str) -> list:
    """Every value of column ``name`` of ``dataset``, in row order, as a list.

    Iterating ``dataset[name]`` (a ``datasets`` ``Column``) formats one row at a time; a slice reads the column in
    one batch and gives the same values several times faster on the tens of thousands of rows of a CTR split.
    Datasets with a format (torch, numpy, ...) are read row by row as before, so that the values keep the types
    iteration gives; anything that is not a ``datasets.Dataset`` is listed as it is.

    Example:
        >>> column_values(datasets.Dataset.from_dict({"h": [[1, 2], [3]]}).select([1, 0]), "h")
        [[3], [1, 2]]
    """
    if isinstance(dataset, datasets.Dataset) and dataset.format["type"] is None:
        return list(dataset[name][:])
    return list(dataset[name])


# =====================================================================================================
# Splits and label fractions
# =====================================================================================================
def split_users(
    user_ids: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 42
) -> dict[str, set]:
    """Assign distinct users to train / validation / test with a seeded permutation.

    ``fractions`` are normalised; the validation and test shares are rounded, train gets the rest, so every user
    lands in exactly one split.

    Example:
        >>> parts = split_users([f"u{i}" for i in range(10)], seed=0)
        >>> [len(parts[s]) for s in ("train", "validation", "test")]
        [8, 1, 1]
    """
    if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
        raise ValueError(f"fractions must be three non-negative shares (train, validation, test), got {fractions}")
    users = list(dict.fromkeys(str(u) for u in user_ids))  # distinct, first-seen order
    total = float(sum(fractions))
    n_val = int(round(len(users) * fractions[1] / total))
    n_test = int(round(len(users) * fractions[2] / total))
    order = np.random.default_rng(seed).permutation(len(users))
    shuffled = [users[i] for i in order]
    return {
        "validation": set(shuffled[:n_val]),
        "test": set(shuffled[n_val : n_val + n_test]),
        "train": set(shuffled[n_val + n_test :]),
    }


def subsample_training(
    dataset: datasets.Dataset, fraction: float, seed: int = 42, group_column: str = "user_id"
) -> datasets.Dataset:
    """Keep ``round(fraction * groups)`` (at least one) groups of training rows, chosen with ``seed``.

    Groups are users (CTR, next item, user classification) or impressions (news, ``group_column="impression_id"``)
    so all rows of a kept user/impression stay together. ``fraction=1`` returns ``dataset`` unchanged.

    Example:
        >>> rows = datasets.Dataset.from_dict({"user_id": ["a", "a", "b", "c"], "x": [1, 2, 3, 4]})
        >>> list(subsample_training(rows, 0.34, seed=0)["user_id"])
        ['c']
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"train_fraction must be in (0, 1], got {fraction}")
    if fraction == 1 or len(dataset) == 0:
        return dataset
    column = column_values(dataset, group_column)
    groups = list(dict.fromkeys(column))  # first-seen order: deterministic
    keep_count = max(1, int(round(fraction * len(groups))))
    chosen = np.random.default_rng(seed).permutation(len(groups))[:keep_count]
    keep = {groups[i] for i in chosen}
    return dataset.select([i for i, group in enumerate(column) if group in keep])


def _recent(sequence, max_behaviors: int | None) -> list[int]:
    sequence = list(sequence)
    return sequence[-max_behaviors:] if max_behaviors else sequence


def _warn_if_truncated(data, what: str) -> None:
    summary = getattr(data, "summary", None)
    if summary is not None and getattr(summary, "truncated_users", 0):
        logger.warning(
            "%s: %d users were truncated to their most recent %s behaviours when loading; load with "
            "max_behaviors=None so that the split into history and evaluation targets sees whole sequences",
            what, summary.truncated_users, summary.max_behaviors,
        )


# =====================================================================================================
# Histories, packed candidates, task sequences
# =====================================================================================================
def history_cut(timestamps: Sequence[int], history_fraction: float = 0.8) -> int | None:
    """Where a user's candidates start: ``timestamps[:cut]`` is the history, ``timestamps[cut:]`` the candidates.

    The cut is near ``history_fraction * n`` and moved to the nearest time boundary so that history and
    candidates do not share a timestamp (when every event has the same time this is impossible and the cut is
    kept). Returns ``None`` for users with fewer than two events. ``timestamps`` must be sorted.

    Example:
        >>> history_cut([1, 2, 3, 4, 5], 0.8), history_cut([1, 2, 3, 3, 3], 0.8), history_cut([7], 0.8)
        (4, 2, None)
    """
    t = np.asarray(timestamps)
    n = len(t)
    if n < 2:
        return None
    cut = min(max(int(round(history_fraction * n)), 1), n - 1)
    if t[cut - 1] < t[cut]:
        return cut
    left = int(np.searchsorted(t, t[cut], side="left"))  # first event of the group the cut falls in
    right = int(np.searchsorted(t, t[cut], side="right"))  # first event after that group
    options = [c for c in (left, right) if 1 <= c <= n - 1]
    if not options:
        return cut
    return min(options, key=lambda c: (abs(c - cut), c))


CTR_PACKED_FEATURES = datasets.Features(
    {"user_id": datasets.Value("string"), "history": _IDS, "candidates": _IDS,
     "labels": _ListFeature(datasets.Value("float32"))}
)


def pack_candidates(rows: datasets.Dataset, candidates_per_row: int | None = None, seed: int = 42) -> datasets.Dataset:
    """Pack (user, candidate) rows into rows of up to ``candidates_per_row`` candidates of one user (``None``: all
    of them), so a batch encodes each user's history once instead of once per candidate.

    The loss and the metrics stay per (user, candidate) pair (``UserBertForCTRPrediction`` accepts (B, C)
    candidates); a user's candidates are shuffled with ``seed`` before being cut into rows.
    Rows: ``user_id``, ``history``, ``candidates``, ``labels``.

    Example:
        >>> rows = datasets.Dataset.from_dict({"user_id": ["a", "a", "a", "b"], "history": [[1], [1], [1], [2]],
        ...                                    "candidate": [5, 6, 7, 8], "label": [1.0, 0.0, 1.0, 0.0]})
        >>> packed = pack_candidates(rows, candidates_per_row=2)
        >>> list(packed["user_id"]), [len(c) for c in packed["candidates"]]
        (['a', 'a', 'b'], [2, 1, 1])
    """
    if candidates_per_row is not None and candidates_per_row < 1:
        raise ValueError(f"candidates_per_row must be >= 1 or None, got {candidates_per_row}")
    rng = np.random.default_rng(seed)
    by_user: dict[str, list[int]] = {}
    for i, user in enumerate(column_values(rows, "user_id")):
        by_user.setdefault(user, []).append(i)
    histories, candidates, labels = (column_values(rows, name) for name in ("history", "candidate", "label"))
    out = {name: [] for name in CTR_PACKED_FEATURES}
    for user, index in by_user.items():
        index = [index[j] for j in rng.permutation(len(index))]
        size = candidates_per_row or len(index)
        for start in range(0, len(index), size):
            chunk = index[start : start + size]
            out["user_id"].append(user)
            out["history"].append(histories[chunk[0]])
            out["candidates"].append([candidates[j] for j in chunk])
            out["labels"].append([labels[j] for j in chunk])
    return datasets.Dataset.from_dict(out, features=CTR_PACKED_FEATURES)


def load_task_sequences(args, vocabulary):
    """The whole behaviour sequences of a fine-tuning job's data arguments (``args.data``, columns, strictness):
    candidates and targets are chosen on whole sequences, histories are truncated afterwards."""
    return load_behavior_data(args.data, max_behaviors=None, vocabulary=vocabulary, strict=args.strict_data,
                              verbose=False, **column_options(args))

# =====================================================================================================
# What pre-training may see
# =====================================================================================================
PRETRAINING_VIEWS = ("history", "before_last_two", "all")


def pretraining_users(
    data,
    view: str,
    *,
    history_fraction: float = 0.8,
    max_behaviors: int | None = None,
) -> datasets.Dataset:
    """The users' behaviour sequences a pre-training run may use before fine-tuning: inputs the downstream model
    sees anyway, never an evaluation candidate or target (``registry.pretraining_users_for`` picks the task's view).

    * ``history`` (CTR tasks): each user's history part (:func:`history_cut` with the same ``history_fraction``);
      the later candidates are dropped (users with a single rating keep it: it is never a candidate);
    * ``before_last_two`` (next item): each sequence without its last two behaviours (validation and test targets);
    * ``all`` (news, user classification): unchanged (MIND histories precede their impressions; user labels are
      not behaviours).

    Returns a dataset with the columns of ``data.users`` (list columns cut consistently), users left without
    behaviours dropped, sequences truncated to the most recent ``max_behaviors``.

    Example:
        >>> from types import SimpleNamespace
        >>> users = datasets.Dataset.from_dict({"user_id": ["a"], "behavior_ids": [[5, 6, 7, 8]],
        ...                                     "timestamps": [[1, 2, 3, 4]]})
        >>> list(pretraining_users(SimpleNamespace(users=users), "before_last_two")["behavior_ids"])
        [[5, 6]]
    """
    if view not in PRETRAINING_VIEWS:
        raise ValueError(f"unknown pre-training view {view!r}; choose one of {PRETRAINING_VIEWS}")
    users = data.users
    if view == "history":
        _warn_if_truncated(data, "pretraining_users(view='history')")
    list_columns = [name for name, feature in users.features.items() if isinstance(feature, _ListFeature)]

    def keep_length(timestamps: list) -> int:
        n = len(timestamps)
        if view == "history":
            cut = history_cut(timestamps, history_fraction)
            return n if cut is None else cut
        if view == "before_last_two":
            return max(n - 2, 0)
        return n

    def cut_batch(batch: dict) -> dict:
        lengths = [keep_length(t) for t in batch["timestamps"]]
        for name in list_columns:
            batch[name] = [
                _recent(values[:length], max_behaviors) for values, length in zip(batch[name], lengths)
            ]
        return batch

    cut = users.map(cut_batch, batched=True, desc=f"pre-training users ({view})")
    return cut.filter(lambda ids: [len(x) > 0 for x in ids], input_columns="behavior_ids", batched=True)


# =====================================================================================================
# Collation and statistics
# =====================================================================================================
def _collate(collator, features: list[dict], *candidates: torch.Tensor):
    """The ``history`` rows through the one shared collation, candidates in the same behaviour table."""
    return collate_histories(collator.catalog, [f["history"] for f in features], collator.max_behaviors, *candidates)


def split_statistics(splits: datasets.DatasetDict, task: str) -> dict:
    """Rows, users and label balance of each split (for logs, ``training_results.json`` and the model card)."""
    stats = {}
    for name, split in splits.items():
        entry = {"rows": len(split), "users": len(set(split["user_id"])) if len(split) else 0}
        columns = split.column_names
        ctr_rows = "candidate" in columns or ("candidates" in columns and "impression_id" not in columns)
        if ctr_rows and len(split):  # (user, candidate) rows, one per pair or packed per user
            labels = split["label"] if "label" in split.column_names else [x for row in split["labels"] for x in row]
            entry["pairs"] = len(labels)
            entry["positive_rate"] = round(float(np.mean(labels)), 4)
        if task == "news" and len(split):
            entry["impressions"] = len(set(split["impression_id"]))
            entry["candidates"] = int(sum(len(c) for c in split["candidates"]))
        if task == "user_classification" and len(split):
            entry["label_counts"] = {int(k): int(v) for k, v in zip(*np.unique(split["label"], return_counts=True))}
        stats[name] = entry
    return stats


__all__ = [
    "SPLITS",
    "IGNORE_INDEX",
    "PRETRAINING_VIEWS",
    "split_users",
    "subsample_training",
    "history_cut",
    "load_task_sequences",
    "pack_candidates",
    "pretraining_users",
    "split_statistics",
]
