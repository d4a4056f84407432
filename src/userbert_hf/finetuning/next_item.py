"""The ``next_item`` task (Amazon Beauty, leave-one-out): validation predicts each user's second-last behaviour,
test the last one, training the ones before; full ranking over all behaviours. Its split builder, collator,
metrics and registry entry.

Example:
    >>> fn = make_next_item_compute_metrics(ks=(1,))
    >>> fn((np.array([0, 3, -100]), None))["hr@1"]
    0.5
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
from ..modeling_userbert import UserBertForNextBehaviorPrediction
from .metrics import IGNORE_INDEX, _floats, _to_numpy, _unpack_eval_prediction, full_ranking_metrics, metrics_from_ranks
from .registry import Task, TaskData, register_task
from .splits import SPLITS, _IDS, _collate, _recent, load_task_sequences

logger = logging.getLogger(__name__)

NEXT_ITEM_FEATURES = datasets.Features(
    {"user_id": datasets.Value("string"), "history": _IDS, "target": datasets.Value("int32"), "exclude": _IDS}
)
# Training rows of causal models: one per user, with the behaviour after each history position.
NEXT_ITEM_SEQUENCE_FEATURES = datasets.Features({**NEXT_ITEM_FEATURES, "next_behaviors": _IDS})


# ----------------------------------------------------------------------------------------------
# Split builder
# ----------------------------------------------------------------------------------------------
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


def _build_next_item(args, vocabulary) -> TaskData:
    data = load_task_sequences(args, vocabulary)
    targets = None if args.train_every_prefix else args.max_train_targets_per_user
    one_pass = bool(getattr(args, "prefixes_in_one_pass", False)) and args.train_every_prefix
    splits = build_next_item_dataset(data, max_train_targets_per_user=targets, max_behaviors=args.max_behaviors,
                                     exclude_history=args.exclude_history, sequence_rows=one_pass)
    return TaskData(splits, data.vocabulary, data)


# ----------------------------------------------------------------------------------------------
# Collator and metrics
# ----------------------------------------------------------------------------------------------
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


def make_next_item_compute_metrics(
    ks: Sequence[int] = (5, 10, 20),
    pad_id: int | None = 0,
    ignore_index: int = IGNORE_INDEX,
    chunk_size: int = 1024,
) -> Callable[[Any], dict[str, float]]:
    """``compute_metrics`` for next-item prediction (full ranking).

    Two layouts of ``predictions`` are supported:

    * 1-D ``(n,)`` (or ``(n, 1)``): the 0-based rank of the target, already
      computed inside the model (cheap: no score matrix leaves the GPU).
      Negative values (e.g. Trainer padding -100) are dropped; ``label_ids``
      is ignored.
    * 2-D ``(n, n_items)``: full score matrix, ranked against ``label_ids``
      ``(n,)`` (target item ids; rows equal to ``ignore_index`` dropped) with
      the ``pad_id`` column excluded.

    Returns :func:`metrics_from_ranks` as floats.

    Example:
        >>> fn = make_next_item_compute_metrics(ks=(1,))
        >>> fn((np.array([0, 3, -100]), None))["hr@1"]
        0.5
    """

    def compute_metrics(eval_pred: Any) -> dict[str, float]:
        preds, labels = _unpack_eval_prediction(eval_pred)
        preds = _to_numpy(preds)
        if preds.ndim == 1 or (preds.ndim == 2 and preds.shape[1] == 1):
            ranks = preds.reshape(-1)
            return _floats(metrics_from_ranks(ranks[ranks >= 0], ks))
        if preds.ndim != 2:
            raise ValueError(f"predictions must be 1-D ranks or 2-D scores, got shape {preds.shape}")
        if labels is None:
            raise ValueError("label_ids (target item ids) are required with 2-D score predictions")
        targets = _to_numpy(labels).reshape(-1)
        keep = targets != ignore_index
        return _floats(
            full_ranking_metrics(preds[keep], targets[keep], ks=ks, pad_id=pad_id, chunk_size=chunk_size)
        )

    return compute_metrics


# ----------------------------------------------------------------------------------------------
# Registry entry
# ----------------------------------------------------------------------------------------------
register_task(Task(
    name="next_item", head=UserBertForNextBehaviorPrediction, collator=NextBehaviorCollator,
    build_splits=_build_next_item, compute_metrics=make_next_item_compute_metrics,
    card_metrics=("hr@5", "ndcg@5", "hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr"), primary_metric="ndcg@10",
    hub_task_type="next-item-prediction", hub_task_name="Next-item prediction (leave-one-out, full ranking)",
    pretraining_view="before_last_two", trains_on_whole_export=True, eval_ignore_keys=("logits", "user_embedding"),
    id_behaviours_only=True,
    settings=("train_every_prefix", "max_train_targets_per_user", "prefixes_in_one_pass", "exclude_history"),
))

__all__ = [
    "NEXT_ITEM_FEATURES",
    "NEXT_ITEM_SEQUENCE_FEATURES",
    "NextBehaviorCollator",
    "build_next_item_dataset",
    "make_next_item_compute_metrics",
]
