"""The ``user_classification`` task: one row per user with a label (a ``user_id,label`` file, or a MovieLens demo
label). Its split builder, collator, metrics and registry entry.

Example:
    >>> from types import SimpleNamespace
    >>> fn = make_classification_compute_metrics()
    >>> fn(SimpleNamespace(predictions=np.array([[2.0, 0.0], [0.0, 1.0]]), label_ids=np.array([0, 1])))
    {'accuracy': 1.0, 'auc': 1.0}
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

from ..collation import BehaviorCatalog
from ..modeling_userbert import UserBertForUserClassification
from .metrics import auc_score
from .registry import Task, TaskData, register_task
from .splits import SPLITS, _IDS, _collate, _recent, load_task_sequences, split_users

logger = logging.getLogger(__name__)

USER_CLASSIFICATION_FEATURES = datasets.Features(
    {"user_id": datasets.Value("string"), "history": _IDS, "label": datasets.Value("int64")}
)


# ----------------------------------------------------------------------------------------------
# Split builder
# ----------------------------------------------------------------------------------------------
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


def _build_user_classification(args, vocabulary) -> TaskData:
    data = load_task_sequences(args, vocabulary)
    if args.user_labels:
        labels = read_user_labels(args.user_labels)
    elif "ratings" in data.users.column_names:
        logger.warning("user_classification without --user_labels: using the MovieLens DEMO label "
                       "(mean rating >= 3.5); pass a user_id,label CSV for a real task")
        labels = movielens_demo_user_labels(data)
    else:
        raise ValueError("--task user_classification needs --user_labels (a CSV with columns user_id,label)")
    splits, label_names = build_user_classification_dataset(data, labels, seed=args.split_seed,
                                                            max_behaviors=args.max_behaviors)
    return TaskData(splits, data.vocabulary, data, label_names)


# ----------------------------------------------------------------------------------------------
# Collator and metrics
# ----------------------------------------------------------------------------------------------
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


def make_classification_compute_metrics():
    """``compute_metrics`` for user classification: accuracy (and AUC for two classes)."""

    def compute_metrics(eval_pred) -> dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        logits = logits[0] if isinstance(logits, (tuple, list)) else logits
        logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels).reshape(-1)
        metrics = {"accuracy": float((logits.argmax(-1) == labels).mean())}
        if logits.shape[-1] == 2 and 0 < labels.sum() < len(labels):
            metrics["auc"] = auc_score(labels, logits[:, 1] - logits[:, 0])
        return metrics

    return compute_metrics


# ----------------------------------------------------------------------------------------------
# Registry entry
# ----------------------------------------------------------------------------------------------
register_task(Task(
    name="user_classification", head=UserBertForUserClassification, collator=UserClassificationCollator,
    build_splits=_build_user_classification, compute_metrics=make_classification_compute_metrics,
    card_metrics=("accuracy", "auc"), primary_metric="accuracy",
    hub_task_type="user-classification", hub_task_name="User classification", settings=("user_labels",),
))

__all__ = [
    "USER_CLASSIFICATION_FEATURES",
    "UserClassificationCollator",
    "build_user_classification_dataset",
    "make_classification_compute_metrics",
    "movielens_demo_user_labels",
    "read_user_labels",
]
