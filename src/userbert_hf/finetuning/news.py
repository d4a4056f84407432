"""The ``news`` task (MIND): training rows are one clicked + ``npratio`` non-clicked news of the same impression,
evaluation rows are whole impressions. Its split builder, collator, metrics and registry entry.

Example:
    >>> from transformers import EvalPrediction
    >>> fn = make_news_compute_metrics()
    >>> fn(EvalPrediction(predictions=np.array([[0.9, 0.1]]), label_ids=np.array([[1, 0]])))["auc"]
    1.0
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import torch

from ..collation import BehaviorCatalog, pad_sequences
from ..data import load_mind_impressions
from ..modeling_userbert import UserBertForNewsRecommendation
from ..vocabulary import BehaviorVocabulary
from .metrics import (
    IGNORE_INDEX,
    _binary_labels,
    _flat_impression_metrics,
    _floats,
    _scores_1d,
    _to_numpy,
    _unpack_eval_prediction,
)
from .registry import Task, TaskData, register_task
from .splits import SPLITS, _IDS, _ListFeature, _collate, split_users

logger = logging.getLogger(__name__)

NEWS_FEATURES = datasets.Features(
    {"impression_id": datasets.Value("string"), "user_id": datasets.Value("string"), "history": _IDS,
     "candidates": _IDS, "labels": _ListFeature(datasets.Value("float32"))}
)


# ----------------------------------------------------------------------------------------------
# Split builder
# ----------------------------------------------------------------------------------------------
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


def _build_news(args, vocabulary) -> TaskData:
    vocabulary = vocabulary if vocabulary is not None else BehaviorVocabulary()
    load = dict(max_behaviors=args.max_behaviors, strict=args.strict_data, verbose=False)
    impressions = load_mind_impressions(args.data, vocabulary, **load)
    test = load_mind_impressions(args.test_data, vocabulary, **load) if args.test_data else None
    return TaskData(build_news_dataset(impressions, test, npratio=args.npratio, seed=args.split_seed), vocabulary)


# ----------------------------------------------------------------------------------------------
# Collator and metrics
# ----------------------------------------------------------------------------------------------
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


def make_news_compute_metrics(
    ks: Sequence[int] = (5, 10), ignore_index: int = IGNORE_INDEX
) -> Callable[[Any], dict[str, float]]:
    """``compute_metrics`` for padded news-recommendation impressions.

    Expects ``predictions`` of shape ``(n_impressions, max_candidates)`` and
    ``label_ids`` of the same shape with ``ignore_index`` (-100) marking padding
    (the Trainer pads across batches with -100 too).  Each row is stripped of
    its padded positions and :func:`impression_metrics` is returned as floats.
    Rows without any valid label are dropped.

    Example:
        >>> from transformers import EvalPrediction
        >>> fn = make_news_compute_metrics()
        >>> ep = EvalPrediction(predictions=np.array([[0.9, 0.8, 0.1, 0.3], [0.2, 0.7, -100, -100]]),
        ...                     label_ids=np.array([[1, 0, 0, 1], [0, 1, -100, -100]]))
        >>> fn(ep)["auc"]
        0.875
    """

    def compute_metrics(eval_pred: Any) -> dict[str, float]:
        preds, labels = _unpack_eval_prediction(eval_pred)
        preds = _to_numpy(preds)
        labels = _to_numpy(labels)
        if preds.ndim == 1:
            preds, labels = preds[None], labels[None]
        if preds.shape[0] != labels.shape[0]:
            raise ValueError(f"predictions/labels row mismatch: {preds.shape[0]} != {labels.shape[0]}")
        width = min(preds.shape[1], labels.shape[1])
        preds, labels = preds[:, :width], labels[:, :width]
        valid = labels != ignore_index  # (n, width); rows without a valid label are dropped
        kept, rows = np.unique(np.nonzero(valid)[0], return_inverse=True)  # row-major: impressions contiguous
        y = _binary_labels(labels[valid])
        return _floats(_flat_impression_metrics(rows.reshape(-1), y, _scores_1d(preds[valid], y.shape[0]), ks, len(kept)))

    return compute_metrics


# ----------------------------------------------------------------------------------------------
# Registry entry
# ----------------------------------------------------------------------------------------------
register_task(Task(
    name="news", head=UserBertForNewsRecommendation, collator=NewsRecommendationCollator,
    build_splits=_build_news, compute_metrics=make_news_compute_metrics,
    card_metrics=("auc", "mrr", "ndcg@5", "ndcg@10"), primary_metric="auc",
    hub_task_type="news-recommendation", hub_task_name="News recommendation",
    group_column="impression_id", pretraining_view="all", settings=("npratio",),
))

__all__ = [
    "NEWS_FEATURES",
    "NewsRecommendationCollator",
    "build_news_dataset",
    "make_news_compute_metrics",
    "news_evaluation_rows",
    "news_training_rows",
]
