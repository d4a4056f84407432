"""Labelled data for fine-tuning user models, built from what the loaders of ``userbert_hf.data`` return.

The split builders of the tasks registered in ``tasks.py``, each a ``datasets.DatasetDict`` with ``train`` /
``validation`` / ``test`` splits:

* ``ctr`` (MovieLens): a user's earlier ratings are the history, the later ones are candidates labelled
  ``rating >= 4``; one row per (user, candidate); users are split 80/10/10.
* ``implicit_ctr`` (MovieLens, implicit feedback): the same history; candidates are the later rated items
  (label 1) and popular items the user never rated (label 0), closer to clicks than rating thresholds.
* ``next_item`` (Amazon Beauty, leave-one-out): validation predicts each user's second-last behaviour, test the
  last one, training the ones before; full ranking over all behaviours.
* ``news`` (MIND): training rows are one clicked + ``npratio`` non-clicked news of the same impression,
  evaluation rows are whole impressions.
* ``user_classification``: one row per user with a label (a ``user_id,label`` file, or a MovieLens demo label).

:func:`subsample_training` keeps a seeded share of the labelled training data (by user or impression), the
low-resource setting of the paper (10% / 25% / 100%). :func:`pretraining_users` returns the behaviour
sequences a pre-training run may use without ever seeing an evaluation target.

The collators turn rows into the batch-table layout of the UserBERT heads (``collation.collate_histories``):
histories and candidates index one table of distinct behaviours.

Load MovieLens / Beauty with ``max_behaviors=None``: candidates and targets are chosen on the full sequences,
histories are truncated to the most recent ``max_behaviors`` here.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch

from .collation import BehaviorCatalog, collate_histories, pad_sequences

try:  # datasets >= 4
    from datasets import List as _ListFeature
except ImportError:  # pragma: no cover - datasets 3.x
    from datasets import Sequence as _ListFeature

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
IGNORE_INDEX = -100

_IDS = _ListFeature(datasets.Value("int32"))
CTR_FEATURES = datasets.Features(
    {"user_id": datasets.Value("string"), "history": _IDS, "candidate": datasets.Value("int32"),
     "label": datasets.Value("float32")}
)
NEXT_ITEM_FEATURES = datasets.Features(
    {"user_id": datasets.Value("string"), "history": _IDS, "target": datasets.Value("int32"), "exclude": _IDS}
)
# Training rows of causal models: one per user, with the behaviour after each history position.
NEXT_ITEM_SEQUENCE_FEATURES = datasets.Features({**NEXT_ITEM_FEATURES, "next_behaviors": _IDS})
NEWS_FEATURES = datasets.Features(
    {"impression_id": datasets.Value("string"), "user_id": datasets.Value("string"), "history": _IDS,
     "candidates": _IDS, "labels": _ListFeature(datasets.Value("float32"))}
)
USER_CLASSIFICATION_FEATURES = datasets.Features(
    {"user_id": datasets.Value("string"), "history": _IDS, "label": datasets.Value("int64")}
)


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
    column = list(dataset[group_column])
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
# MovieLens CTR
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


def build_ctr_dataset(
    data,
    *,
    history_fraction: float = 0.8,
    positive_rating: float = 4.0,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 42,
    max_behaviors: int | None = 100,
) -> datasets.DatasetDict:
    """CTR-style rows from rated behaviours (MovieLens): history = the earlier ratings, candidates = the later
    ones, ``label = rating >= positive_rating``.

    Args:
        data: a ``BehaviorData`` whose users have a ``ratings`` column (``load_movielens(max_behaviors=None)``).
        history_fraction: share of each user's ratings (by time) used as history; see :func:`history_cut`.
        positive_rating: ratings at or above it are clicks (1.0), below are non-clicks (0.0).
        split_fractions: train / validation / test shares of USERS (no user is in two splits).
        seed: seed of the user split.
        max_behaviors: histories keep their most recent ``max_behaviors`` behaviours.

    Returns:
        ``DatasetDict`` of rows ``user_id``, ``history`` (ids, oldest first), ``candidate``, ``label`` (float32).
    """
    users = data.users
    if "ratings" not in users.column_names:
        raise ValueError(
            "the ctr task labels candidates by rating (rating >= positive_rating): it needs rated behaviours such "
            f"as MovieLens ratings.csv; {getattr(data, 'source', 'this data')} has columns {users.column_names}"
        )
    _warn_if_truncated(data, "ctr")
    parts = split_users(users["user_id"], split_fractions, seed)
    columns = {split: {name: [] for name in CTR_FEATURES} for split in SPLITS}
    for row in users:
        cut = history_cut(row["timestamps"], history_fraction)
        if cut is None:
            continue
        split = next(s for s in SPLITS if row["user_id"] in parts[s])
        history = _recent(row["behavior_ids"][:cut], max_behaviors)
        out = columns[split]
        for behavior, rating in zip(row["behavior_ids"][cut:], row["ratings"][cut:]):
            out["user_id"].append(row["user_id"])
            out["history"].append(history)
            out["candidate"].append(behavior)
            out["label"].append(1.0 if rating >= positive_rating else 0.0)
    return datasets.DatasetDict(
        {split: datasets.Dataset.from_dict(columns[split], features=CTR_FEATURES) for split in SPLITS}
    )


def build_implicit_ctr_dataset(
    data,
    *,
    history_fraction: float = 0.8,
    negatives_per_positive: int = 1,
    popular_items: int = 1000,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 42,
    max_behaviors: int | None = 100,
) -> datasets.DatasetDict:
    """Implicit-feedback CTR rows (clicks rather than rating thresholds): history = a user's earlier behaviours,
    candidates = the later behaviours (label 1) plus ``negatives_per_positive`` items per positive drawn
    uniformly from the ``popular_items`` most frequent items of all histories that the user never had (label 0).

    Negatives are popular so that popularity alone does not separate them from the positives (as an impression
    log shows popular items that were not clicked). Popularity is counted on history parts only, so no
    evaluation candidate leaks into it. Negatives of a user are drawn with ``(seed, user index)``; a user with
    fewer unseen popular items than needed gets them all. Users are split like :func:`build_ctr_dataset`.

    Example (item popularity over the histories [1, 2, 3, 4] and [1, 2, 6, 7]: 1, 2, then 3, 4 by id; user ``a``
    had all four popular items, ``b`` gets one negative among 3 and 4):
        >>> from types import SimpleNamespace
        >>> users = datasets.Dataset.from_dict({"user_id": ["a", "b"], "behavior_ids": [[1, 2, 3, 4, 5], [1, 2, 6, 7, 9]],
        ...                                     "timestamps": [[1, 2, 3, 4, 5]] * 2})
        >>> rows = build_implicit_ctr_dataset(SimpleNamespace(users=users), popular_items=4, split_fractions=(1, 0, 0))
        >>> list(zip(rows["train"]["user_id"], rows["train"]["candidate"], rows["train"]["label"]))
        [('a', 5, 1.0), ('b', 9, 1.0), ('b', 4, 0.0)]
    """
    if negatives_per_positive < 1 or popular_items < 1:
        raise ValueError(f"negatives_per_positive and popular_items must be >= 1, got {negatives_per_positive}, "
                         f"{popular_items}")
    users = data.users
    _warn_if_truncated(data, "implicit_ctr")
    cuts = [history_cut(t, history_fraction) for t in users["timestamps"]]
    sequences = users["behavior_ids"]
    counts: dict[int, int] = {}
    for sequence, cut in zip(sequences, cuts):
        for behavior in sequence[:cut] if cut is not None else ():
            counts[behavior] = counts.get(behavior, 0) + 1
    popular = np.asarray(sorted(counts, key=lambda b: (-counts[b], b))[:popular_items], dtype=np.int64)
    parts = split_users(users["user_id"], split_fractions, seed)
    columns = {split: {name: [] for name in CTR_FEATURES} for split in SPLITS}
    for index, (user, sequence, cut) in enumerate(zip(users["user_id"], sequences, cuts)):
        if cut is None:
            continue
        split = next(s for s in SPLITS if user in parts[s])
        positives = list(dict.fromkeys(sequence[cut:]))
        unseen = popular[~np.isin(popular, np.asarray(sequence, dtype=np.int64))]
        rng = np.random.default_rng([seed, index])
        size = min(len(unseen), negatives_per_positive * len(positives))
        negatives = rng.choice(unseen, size=size, replace=False).tolist() if size else []
        history = _recent(sequence[:cut], max_behaviors)
        out = columns[split]
        for behavior, label in [(b, 1.0) for b in positives] + [(int(b), 0.0) for b in negatives]:
            out["user_id"].append(user)
            out["history"].append(history)
            out["candidate"].append(behavior)
            out["label"].append(label)
    return datasets.DatasetDict(
        {split: datasets.Dataset.from_dict(columns[split], features=CTR_FEATURES) for split in SPLITS}
    )


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
    for i, user in enumerate(rows["user_id"]):
        by_user.setdefault(user, []).append(i)
    histories, candidates, labels = list(rows["history"]), list(rows["candidate"]), list(rows["label"])
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


# =====================================================================================================
# Next item (leave-one-out)
# =====================================================================================================
def build_next_item_dataset(
    data,
    *,
    max_train_targets_per_user: int | None = 1,
    max_behaviors: int | None = 100,
    exclude_history: bool = True,
    sequence_rows: bool = False,
) -> datasets.DatasetDict:
    """Leave-one-out next-item rows (the SASRec / S3-Rec protocol on Amazon Beauty).

    For a user with sequence ``s`` (oldest first): test predicts ``s[-1]`` from ``s[:-1]``, validation ``s[-2]``
    from ``s[:-2]``, and training predicts ``s[t]`` from ``s[:t]`` for the last ``max_train_targets_per_user``
    positions ``t <= len(s) - 3`` (``None``: every prefix). Users too short for a split are left out of it.

    Rows: ``user_id``, ``history`` (most recent ``max_behaviors``), ``target`` and ``exclude`` (every behaviour of
    the full prefix when ``exclude_history``, else empty): behaviours the user already has are not ranked at
    evaluation, as in S3-Rec's evaluation code (the target itself is always ranked).

    ``sequence_rows`` (for causal user models, with ``max_train_targets_per_user=None``): one training row per
    user instead of one per prefix, the row of the last training target plus ``next_behaviors``, the behaviour
    after each history position (its last entry is ``target``). ``NextBehaviorCollator`` turns it into
    per-position labels, so one pass of a causal model trains on every prefix. A user with more training targets
    than ``max_behaviors`` gets one row per window of ``max_behaviors`` targets (an early target then sees only
    the earlier behaviours of its window, not a full ``max_behaviors`` of context).

    Example:
        >>> from types import SimpleNamespace
        >>> data = SimpleNamespace(users=[{"user_id": "u", "behavior_ids": [5, 6, 7, 8, 9]}])
        >>> rows = build_next_item_dataset(data, max_train_targets_per_user=None, sequence_rows=True)["train"]
        >>> rows[0]["history"], rows[0]["next_behaviors"], rows[0]["target"]
        ([5, 6], [6, 7], 7)
    """
    if max_train_targets_per_user is not None and max_train_targets_per_user < 1:
        raise ValueError(f"max_train_targets_per_user must be >= 1 or None, got {max_train_targets_per_user}")
    if sequence_rows and max_train_targets_per_user is not None:
        raise ValueError("sequence_rows trains on every prefix: pass max_train_targets_per_user=None")
    features = {split: NEXT_ITEM_FEATURES for split in SPLITS}
    if sequence_rows:
        features["train"] = NEXT_ITEM_SEQUENCE_FEATURES
    columns = {split: {name: [] for name in features[split]} for split in SPLITS}

    def add(split: str, user: str, prefix: list[int], target: int, exclude: bool) -> None:
        out = columns[split]
        out["user_id"].append(user)
        out["history"].append(_recent(prefix, max_behaviors))
        out["target"].append(target)
        out["exclude"].append(sorted(set(prefix)) if exclude else [])

    for row in data.users:
        sequence, user = list(row["behavior_ids"]), row["user_id"]
        n = len(sequence)
        if n >= 2:
            add("test", user, sequence[:-1], sequence[-1], exclude_history)
        if n >= 3:
            add("validation", user, sequence[:-2], sequence[-2], exclude_history)
        last = n - 3  # last training target position
        if sequence_rows:  # windows of max_behaviors targets, the most recent first, together every target
            end = last
            while end >= 1:
                add("train", user, sequence[:end], sequence[end], False)
                columns["train"]["next_behaviors"].append(_recent(sequence[1 : end + 1], max_behaviors))
                end = end - max_behaviors if max_behaviors else 0
            continue
        first = 1 if max_train_targets_per_user is None else max(1, last - max_train_targets_per_user + 1)
        for t in range(first, last + 1):
            add("train", user, sequence[:t], sequence[t], False)
    return datasets.DatasetDict(
        {split: datasets.Dataset.from_dict(columns[split], features=features[split]) for split in SPLITS}
    )


# =====================================================================================================
# MIND news recommendation
# =====================================================================================================
def news_training_rows(impressions: datasets.Dataset, npratio: int = 4, seed: int = 42) -> datasets.Dataset:
    """One row per clicked news: the click first, then ``npratio`` non-clicked news of the same impression
    (sampled with replacement when the impression has fewer). Labels are ``[1, 0, ..., 0]``.

    Clicks of impressions without any non-clicked news, and unlabelled (test-split) impressions, give no rows.
    """
    if npratio < 1:
        raise ValueError(f"npratio must be >= 1, got {npratio}")
    rng = np.random.default_rng(seed)
    out = {name: [] for name in NEWS_FEATURES}
    skipped = 0
    for row in impressions:
        candidates = np.asarray(row["candidates"], dtype=np.int64)
        labels = np.asarray(row["labels"])
        positives, negatives = candidates[labels == 1], candidates[labels == 0]
        if len(negatives) == 0:
            skipped += len(positives)
            continue
        for positive in positives:
            sampled = rng.choice(negatives, size=npratio, replace=len(negatives) < npratio)
            out["impression_id"].append(row["impression_id"])
            out["user_id"].append(row["user_id"])
            out["history"].append(row["history"])
            out["candidates"].append([int(positive), *map(int, sampled)])
            out["labels"].append([1.0] + [0.0] * npratio)
    if skipped:
        logger.info("news: %d clicks of impressions without non-clicked news give no training row", skipped)
    return datasets.Dataset.from_dict(out, features=NEWS_FEATURES)


def news_evaluation_rows(impressions: datasets.Dataset) -> datasets.Dataset:
    """Whole labelled impressions (all candidates, labels 0/1 as floats); unlabelled impressions are dropped."""
    labelled = impressions.filter(lambda labels: all(x in (0, 1) for x in labels), input_columns="labels")
    return datasets.Dataset.from_dict(
        {
            "impression_id": list(labelled["impression_id"]),
            "user_id": list(labelled["user_id"]),
            "history": list(labelled["history"]),
            "candidates": list(labelled["candidates"]),
            "labels": [[float(x) for x in labels] for labels in labelled["labels"]],
        },
        features=NEWS_FEATURES,
    )


def build_news_dataset(
    impressions: datasets.Dataset,
    test_impressions: datasets.Dataset | None = None,
    *,
    npratio: int = 4,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 42,
) -> datasets.DatasetDict:
    """News-recommendation splits from ``load_mind_impressions`` datasets.

    Users of ``impressions`` are split into train / validation / test (``split_fractions``). With
    ``test_impressions`` (e.g. MINDsmall_dev while training on MINDsmall_train) those are the test split and the
    users of ``impressions`` are split into train / validation only (test share 0). Training impressions become
    ``npratio`` rows (:func:`news_training_rows`), the others stay whole (:func:`news_evaluation_rows`).
    """
    fractions = tuple(split_fractions) if test_impressions is None else (split_fractions[0], split_fractions[1], 0.0)
    parts = split_users(impressions["user_id"], fractions, seed)
    by_split = {s: impressions.filter(lambda u, s=s: [x in parts[s] for x in u], input_columns="user_id", batched=True)
                for s in SPLITS}
    if test_impressions is not None:
        by_split["test"] = test_impressions
    return datasets.DatasetDict(
        {
            "train": news_training_rows(by_split["train"], npratio, seed),
            "validation": news_evaluation_rows(by_split["validation"]),
            "test": news_evaluation_rows(by_split["test"]),
        }
    )


# =====================================================================================================
# User classification
# =====================================================================================================
def read_user_labels(path: str | os.PathLike) -> dict[str, str]:
    """Read a ``user_id,label`` CSV (header required; extra columns ignored) into ``{user_id: label}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"user label file not found: {path}")
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"user_id", "label"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected a CSV header with columns user_id,label, got {reader.fieldnames}")
        labels = {}
        for line, row in enumerate(reader, start=2):
            user, label = (row["user_id"] or "").strip(), (row["label"] or "").strip()
            if not user or not label:
                raise ValueError(f"{path}:{line}: empty user_id or label")
            if user in labels and labels[user] != label:
                raise ValueError(f"{path}:{line}: user {user!r} has two labels ({labels[user]!r}, {label!r})")
            labels[user] = label
    return labels


def movielens_demo_user_labels(data, threshold: float = 3.5) -> dict[str, str]:
    """A DEMO label for user classification on MovieLens: whether a user's mean rating is ``>= threshold``
    (from which movies they rated, not how). It only shows the pipeline working; it is not a benchmark."""
    if "ratings" not in data.users.column_names:
        raise ValueError("the MovieLens demo label needs a ratings column; pass a user_id,label file instead")
    return {
        row["user_id"]: ("high_rater" if float(np.mean(row["ratings"])) >= threshold else "low_rater")
        for row in data.users
    }


def build_user_classification_dataset(
    data,
    user_labels: Mapping[str, str],
    *,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 42,
    max_behaviors: int | None = 100,
) -> tuple[datasets.DatasetDict, list[str]]:
    """One row per labelled user (``user_id``, ``history``, ``label`` class index). Returns the splits and the
    class names (sorted; ``label`` indexes them). Users without a label, or without behaviours, are left out."""
    names = sorted({str(v) for v in user_labels.values()})
    if len(names) < 2:
        raise ValueError(f"user classification needs at least two classes, got {names}")
    index = {name: i for i, name in enumerate(names)}
    labelled = [row for row in data.users if row["user_id"] in user_labels]
    if not labelled:
        raise ValueError("no user of the behaviour data has a label (check that user ids match)")
    missing = len(user_labels) - len(labelled)
    if missing:
        logger.warning("user_classification: %d labelled users have no behaviours and are left out", missing)
    parts = split_users([row["user_id"] for row in labelled], split_fractions, seed)
    columns = {split: {name: [] for name in USER_CLASSIFICATION_FEATURES} for split in SPLITS}
    for row in labelled:
        split = next(s for s in SPLITS if row["user_id"] in parts[s])
        columns[split]["user_id"].append(row["user_id"])
        columns[split]["history"].append(_recent(row["behavior_ids"], max_behaviors))
        columns[split]["label"].append(index[str(user_labels[row["user_id"]])])
    splits = datasets.DatasetDict(
        {s: datasets.Dataset.from_dict(columns[s], features=USER_CLASSIFICATION_FEATURES) for s in SPLITS}
    )
    return splits, names


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
    sees anyway, never an evaluation candidate or target (``tasks.pretraining_users_for`` picks the task's view).

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
# Collators: rows -> the heads' batch-table layout
# =====================================================================================================
def _collate(collator, features: list[dict], *candidates: torch.Tensor):
    """The ``history`` rows through the one shared collation, candidates in the same behaviour table."""
    return collate_histories(collator.catalog, [f["history"] for f in features], collator.max_behaviors, *candidates)


@dataclass
class CTRCollator:
    """Rows ``history``, ``candidate``, ``label`` -> inputs of ``UserBertForCTRPrediction`` (``candidate_index``
    (B,)); packed rows (``candidates``, ``labels`` lists, see :func:`pack_candidates`) give (B, C) candidates with
    ``candidate_mask`` and labels -100 on padding.

    Example:
        >>> batch = CTRCollator(BehaviorCatalog(10))([{"history": [3, 4], "candidate": 7, "label": 1.0}])
        >>> batch["behavior_ids"].tolist(), batch["behavior_index"].tolist(), batch["candidate_index"].tolist()
        ([3, 4, 7], [[0, 1]], [2])
    """

    catalog: BehaviorCatalog
    max_behaviors: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        if "candidates" in features[0]:
            return NewsRecommendationCollator(self.catalog, self.max_behaviors)(features)
        candidates = torch.as_tensor([int(f["candidate"]) for f in features], dtype=torch.long)  # (B,)
        batch, (candidate_index,) = _collate(self, features, candidates)
        batch["candidate_index"] = candidate_index
        if "label" in features[0]:
            batch["labels"] = torch.as_tensor([float(f["label"]) for f in features], dtype=torch.float)
        return batch


@dataclass
class NewsRecommendationCollator:
    """Rows ``history``, ``candidates``, ``labels`` -> inputs of ``UserBertForNewsRecommendation``; candidates are
    right-padded (``candidate_mask`` 0, labels -100)."""

    catalog: BehaviorCatalog
    max_behaviors: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        candidates = pad_sequences([f["candidates"] for f in features])  # (B, C)
        mask = pad_sequences([[1] * len(f["candidates"]) for f in features], length=candidates.shape[1])
        batch, (candidate_index,) = _collate(self, features, candidates)
        batch.update(candidate_index=candidate_index, candidate_mask=mask)
        if "labels" in features[0]:
            batch["labels"] = pad_sequences(
                [f["labels"] for f in features], pad_value=IGNORE_INDEX, length=candidates.shape[1], dtype=torch.float
            )
        return batch


@dataclass
class NextBehaviorCollator:
    """Rows ``history``, ``target`` (and ``exclude``) -> inputs of ``UserBertForNextBehaviorPrediction``:
    ``labels`` are vocabulary ids (the head ranks the whole vocabulary), ``exclude_index`` is padded with 0.
    Sequence rows (``next_behaviors``, see :func:`build_next_item_dataset`) give per-position ``labels`` (B, L),
    -100 on padding."""

    catalog: BehaviorCatalog
    max_behaviors: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch, _ = _collate(self, features)
        if "next_behaviors" in features[0]:  # sequence rows: the behaviour after each position, (B, L)
            width = batch["attention_mask"].shape[1]
            nexts = [_recent(f["next_behaviors"], self.max_behaviors) for f in features]
            batch["labels"] = pad_sequences(nexts, pad_value=-100, length=width)  # (B, L)
        elif "target" in features[0]:
            batch["labels"] = torch.as_tensor([int(f["target"]) for f in features], dtype=torch.long)
        if any(len(f.get("exclude") or ()) for f in features):
            batch["exclude_index"] = pad_sequences([f["exclude"] for f in features])  # (B, K)
        return batch


@dataclass
class UserClassificationCollator:
    """Rows ``history``, ``label`` -> inputs of ``UserBertForUserClassification``."""

    catalog: BehaviorCatalog
    max_behaviors: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch, _ = _collate(self, features)
        if "label" in features[0]:
            batch["labels"] = torch.as_tensor([int(f["label"]) for f in features], dtype=torch.long)
        return batch


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
    "split_users",
    "subsample_training",
    "history_cut",
    "build_ctr_dataset",
    "pack_candidates",
    "build_next_item_dataset",
    "news_training_rows",
    "news_evaluation_rows",
    "build_news_dataset",
    "read_user_labels",
    "movielens_demo_user_labels",
    "build_user_classification_dataset",
    "PRETRAINING_VIEWS",
    "pretraining_users",
    "build_implicit_ctr_dataset",
    "CTRCollator",
    "NewsRecommendationCollator",
    "NextBehaviorCollator",
    "UserClassificationCollator",
    "split_statistics",
]
