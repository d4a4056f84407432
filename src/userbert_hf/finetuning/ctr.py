"""The CTR tasks: ``ctr`` (MovieLens: a user's earlier ratings are the history, the later ones are candidates
labelled ``rating >= 4``; one row per (user, candidate); users are split 80/10/10) and ``implicit_ctr`` (the same
history; candidates are the later rated items, label 1, and popular items the user never rated, label 0, closer
to clicks than rating thresholds). Their split builders, collator, metrics and registry entries.

Example:
    >>> batch = CTRCollator(BehaviorCatalog(10))([{"history": [3, 4], "candidate": 7, "label": 1.0}])
    >>> batch["candidate_index"].tolist()
    [2]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import torch

from ..collation import BehaviorCatalog
from ..modeling_userbert import UserBertForCTRPrediction
from .metrics import IGNORE_INDEX, _floats, _to_numpy, _unpack_eval_prediction, ctr_metrics
from .news import NewsRecommendationCollator
from .registry import Task, TaskData, register_task
from .splits import (
    SPLITS,
    _IDS,
    _collate,
    _recent,
    _warn_if_truncated,
    history_cut,
    load_task_sequences,
    split_users,
)

logger = logging.getLogger(__name__)

CTR_FEATURES = datasets.Features(
    {"user_id": datasets.Value("string"), "history": _IDS, "candidate": datasets.Value("int32"),
     "label": datasets.Value("float32")}
)


# ----------------------------------------------------------------------------------------------
# Split builders
# ----------------------------------------------------------------------------------------------
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


def _build_ctr(args, vocabulary) -> TaskData:
    data = load_task_sequences(args, vocabulary)
    splits = build_ctr_dataset(data, history_fraction=args.history_fraction, positive_rating=args.positive_rating,
                               seed=args.split_seed, max_behaviors=args.max_behaviors)
    return TaskData(splits, data.vocabulary, data)


def _build_implicit_ctr(args, vocabulary) -> TaskData:
    data = load_task_sequences(args, vocabulary)
    splits = build_implicit_ctr_dataset(
        data, history_fraction=args.history_fraction, negatives_per_positive=args.negatives_per_positive,
        popular_items=args.popular_items, seed=args.split_seed, max_behaviors=args.max_behaviors,
    )
    return TaskData(splits, data.vocabulary, data)


# ----------------------------------------------------------------------------------------------
# Collator and metrics
# ----------------------------------------------------------------------------------------------
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


def make_ctr_compute_metrics(
    from_logits: bool = True, ignore_index: int = IGNORE_INDEX
) -> Callable[[Any], dict[str, float]]:
    """``compute_metrics`` for binary CTR prediction.

    ``predictions`` are logits (or probabilities with ``from_logits=False``) of
    shape ``(n,)`` or ``(n, 1)``; two-class logits ``(n, 2)`` are reduced to
    the log-odds ``z1 - z0``.  ``label_ids`` is ``(n,)``; rows labelled
    ``ignore_index`` are dropped.  Returns :func:`ctr_metrics` as floats
    (``auc_undefined`` becomes 0.0/1.0).

    Example:
        >>> fn = make_ctr_compute_metrics()
        >>> fn((np.array([[2.0], [1.0], [-2.0], [-1.0]]), np.array([1, 0, 0, 1])))["auc"]
        0.75
    """

    def compute_metrics(eval_pred: Any) -> dict[str, float]:
        preds, labels = _unpack_eval_prediction(eval_pred)
        preds = _to_numpy(preds).astype(np.float64)
        labels = _to_numpy(labels).reshape(-1)
        if preds.ndim == 2 and preds.shape[1] == 2:
            if not from_logits:
                preds = preds[:, 1]
            else:
                preds = preds[:, 1] - preds[:, 0]
        preds = preds.reshape(-1)
        if preds.shape[0] != labels.shape[0]:
            raise ValueError(f"predictions/labels length mismatch: {preds.shape[0]} != {labels.shape[0]}")
        keep = labels != ignore_index
        return _floats(ctr_metrics(labels[keep], preds[keep], from_logits=from_logits))

    return compute_metrics


def make_pairwise_ctr_compute_metrics():
    """CTR metrics over all (user, candidate) pairs: predictions and labels (n, C) are flattened and padding
    (label -100) is dropped, so packed and one-candidate rows give the same numbers."""
    ctr_metrics = make_ctr_compute_metrics()

    def compute_metrics(eval_pred) -> dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        logits = logits[0] if isinstance(logits, (tuple, list)) else logits
        return ctr_metrics((np.asarray(logits).reshape(-1), np.asarray(labels).reshape(-1)))

    return compute_metrics


# ----------------------------------------------------------------------------------------------
# Registry entries
# ----------------------------------------------------------------------------------------------
_CTR_CARD = ("auc", "ap", "logloss")
register_task(Task(
    name="ctr", head=UserBertForCTRPrediction, collator=CTRCollator, build_splits=_build_ctr,
    compute_metrics=make_pairwise_ctr_compute_metrics, card_metrics=_CTR_CARD, primary_metric="auc",
    hub_task_type="ctr-prediction", hub_task_name="Click-through-rate prediction",
    packs_candidates=True, pretraining_view="history", settings=("history_fraction", "positive_rating"),
))
register_task(Task(
    name="implicit_ctr", head=UserBertForCTRPrediction, collator=CTRCollator, build_splits=_build_implicit_ctr,
    compute_metrics=make_pairwise_ctr_compute_metrics, card_metrics=_CTR_CARD, primary_metric="auc",
    hub_task_type="ctr-prediction",
    hub_task_name="Implicit-feedback click prediction (rated vs not-rated popular items)",
    packs_candidates=True, pretraining_view="history",
    settings=("history_fraction", "negatives_per_positive", "popular_items"),
))

__all__ = [
    "CTR_FEATURES",
    "CTRCollator",
    "build_ctr_dataset",
    "build_implicit_ctr_dataset",
    "make_ctr_compute_metrics",
    "make_pairwise_ctr_compute_metrics",
]
