"""The fine-tuning tasks: one :class:`Task` per downstream task, in one registry.

A task says everything the fine-tuning job, the model cards and the experiment runner need to know about it:
how its labelled splits are built from the data, which head and collator train on them, how its rows are grouped
when a share of the labels is kept, which metrics the Trainer computes and which go into a model card, its Hub
task type, and what a pre-training run may see before fine-tuning on it. Adding a task means adding one entry to
:data:`TASK_REGISTRY` (and its split builder in ``downstream_data``).

This module imports neither the fine-tuning job nor ``model_card``: both import it, so there is no import cycle.

Example:
    >>> from userbert_hf.tasks import get_task
    >>> task = get_task("ctr")
    >>> task.head.__name__, task.collator.__name__, task.card_metrics
    ('UserBertForCTRPrediction', 'CTRCollator', ('auc', 'ap', 'logloss'))
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import datasets
import numpy as np

from .data import column_options, load_behavior_data, load_mind_impressions
from .downstream_data import (
    CTRCollator,
    NewsRecommendationCollator,
    NextBehaviorCollator,
    UserClassificationCollator,
    build_ctr_dataset,
    build_implicit_ctr_dataset,
    build_news_dataset,
    build_next_item_dataset,
    build_user_classification_dataset,
    movielens_demo_user_labels,
    pack_candidates,
    pretraining_users,
    read_user_labels,
    subsample_training,
)
from .metrics import auc_score, make_ctr_compute_metrics, make_news_compute_metrics, make_next_item_compute_metrics
from .modeling_userbert import (
    UserBertForCTRPrediction,
    UserBertForNewsRecommendation,
    UserBertForNextBehaviorPrediction,
    UserBertForUserClassification,
)
from .vocabulary import BehaviorVocabulary

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# compute_metrics factories the metrics module does not have
# ----------------------------------------------------------------------------------------------
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
# Split builders: (data_args, vocabulary) -> TaskData
# ----------------------------------------------------------------------------------------------
@dataclass
class TaskData:
    """The labelled splits of a task and what they were built from.

    ``behavior_data`` is the loaded ``BehaviorData`` (``None`` for MIND impressions); ``label_names`` the class
    names of user classification (``None`` otherwise).
    """

    splits: datasets.DatasetDict
    vocabulary: BehaviorVocabulary
    behavior_data: object | None = None
    label_names: list[str] | None = None


def _load_sequences(args, vocabulary):
    # Candidates and targets are chosen on whole sequences; histories are truncated afterwards.
    return load_behavior_data(args.data, max_behaviors=None, vocabulary=vocabulary, strict=args.strict_data,
                              verbose=False, **column_options(args))


def _build_ctr(args, vocabulary) -> TaskData:
    data = _load_sequences(args, vocabulary)
    splits = build_ctr_dataset(data, history_fraction=args.history_fraction, positive_rating=args.positive_rating,
                               seed=args.split_seed, max_behaviors=args.max_behaviors)
    return TaskData(splits, data.vocabulary, data)


def _build_implicit_ctr(args, vocabulary) -> TaskData:
    data = _load_sequences(args, vocabulary)
    splits = build_implicit_ctr_dataset(
        data, history_fraction=args.history_fraction, negatives_per_positive=args.negatives_per_positive,
        popular_items=args.popular_items, seed=args.split_seed, max_behaviors=args.max_behaviors,
    )
    return TaskData(splits, data.vocabulary, data)


def _build_next_item(args, vocabulary) -> TaskData:
    data = _load_sequences(args, vocabulary)
    targets = None if args.train_every_prefix else args.max_train_targets_per_user
    one_pass = bool(getattr(args, "prefixes_in_one_pass", False)) and args.train_every_prefix
    splits = build_next_item_dataset(data, max_train_targets_per_user=targets, max_behaviors=args.max_behaviors,
                                     exclude_history=args.exclude_history, sequence_rows=one_pass)
    return TaskData(splits, data.vocabulary, data)


def _build_news(args, vocabulary) -> TaskData:
    vocabulary = vocabulary if vocabulary is not None else BehaviorVocabulary()
    load = dict(max_behaviors=args.max_behaviors, strict=args.strict_data, verbose=False)
    impressions = load_mind_impressions(args.data, vocabulary, **load)
    test = load_mind_impressions(args.test_data, vocabulary, **load) if args.test_data else None
    return TaskData(build_news_dataset(impressions, test, npratio=args.npratio, seed=args.split_seed), vocabulary)


def _build_user_classification(args, vocabulary) -> TaskData:
    data = _load_sequences(args, vocabulary)
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
# The Task
# ----------------------------------------------------------------------------------------------
def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Task:
    """A fine-tuning task: splits, head, collator, metrics, model-card metrics, Hub task type.

    Args:
        name: the ``--task`` value.
        head: the ``UserBertFor<Task>`` class trained on it.
        collator: the collator class (``collator(catalog, max_behaviors)``) turning rows into the head's inputs.
        build_splits: ``(data_args, vocabulary) -> TaskData`` (reads the fine-tuning job's data arguments).
        compute_metrics: factory of the Trainer's ``compute_metrics``.
        card_metrics: the test metrics that go into the model card's ``model-index``, in order.
        primary_metric: the metric the experiment runner compares models on.
        hub_task_type / hub_task_name: the card's task type and human-readable name.
        group_column: rows that :func:`subsample_training` keeps or drops together (users or impressions).
        packs_candidates: pack (user, candidate) rows per user (:func:`pack_candidates`).
        pretraining_view: what pre-training may see (``downstream_data.pretraining_users``): ``history``,
            ``before_last_two`` or ``all``.
        eval_ignore_keys: model outputs the Trainer does not gather at evaluation.
        id_behaviours_only: the head ranks every behaviour of the vocabulary (ID models only).
        settings: the data arguments that define the task, recorded with every run.
        needs_rated_data: the task labels by rating (MovieLens-like data).

    Example:
        >>> task = get_task("next_item")
        >>> task.card_metrics_from({"test_ndcg@10": 0.03, "test_hr@10": 0.06, "test_loss": 9.1})
        {'hr@10': 0.06, 'ndcg@10': 0.03}
    """

    name: str
    head: type
    collator: type
    build_splits: Callable
    compute_metrics: Callable[[], Callable]
    card_metrics: tuple[str, ...]
    primary_metric: str
    hub_task_type: str
    hub_task_name: str
    group_column: str = "user_id"
    packs_candidates: bool = False
    pretraining_view: str = "all"
    eval_ignore_keys: tuple[str, ...] = ("user_embedding",)
    id_behaviours_only: bool = False
    settings: tuple[str, ...] = field(default_factory=tuple)

    def metrics_function(self) -> Callable:
        """A fresh ``compute_metrics`` for ``transformers.Trainer``."""
        return self.compute_metrics()

    def card_metrics_from(self, metrics: dict, prefix: str = "test_") -> dict[str, float]:
        """The finite card metrics of ``metrics`` (keys ``prefix + name``), prefix dropped."""
        out = {}
        for name in self.card_metrics:
            value = metrics.get(prefix + name)
            if _finite(value):
                out[name] = float(value)
        return out

    def prepare_training_splits(self, splits: datasets.DatasetDict, train_fraction: float, seed: int,
                                candidates_per_row: int | None = None) -> datasets.DatasetDict:
        """Keep ``train_fraction`` of the training groups (seeded) and pack candidates where the task does."""
        if train_fraction < 1:
            splits["train"] = subsample_training(splits["train"], train_fraction, seed, self.group_column)
        if self.packs_candidates:
            splits["train"] = pack_candidates(splits["train"], candidates_per_row, seed)
            splits["validation"] = pack_candidates(splits["validation"])
            splits["test"] = pack_candidates(splits["test"])
        return splits

    def settings_of(self, data_args) -> dict:
        """The task-defining data arguments of a run (for ``training_results.json`` and the card); unset ones
        (``None``) are left out."""
        values = {name: getattr(data_args, name, None) for name in self.settings}
        return {name: value for name, value in values.items() if value is not None}


_CTR_CARD = ("auc", "ap", "logloss")
# The one list of fine-tuning tasks, by name: ``userbert finetune --task`` and the experiment specs read it. Add a task
# with ``register_task(Task(...))`` (docs/extending.md).
TASK_REGISTRY: dict[str, Task] = {
    task.name: task
    for task in (
        Task(
            name="news", head=UserBertForNewsRecommendation, collator=NewsRecommendationCollator,
            build_splits=_build_news, compute_metrics=make_news_compute_metrics,
            card_metrics=("auc", "mrr", "ndcg@5", "ndcg@10"), primary_metric="auc",
            hub_task_type="news-recommendation", hub_task_name="News recommendation",
            group_column="impression_id", pretraining_view="all", settings=("npratio",),
        ),
        Task(
            name="ctr", head=UserBertForCTRPrediction, collator=CTRCollator, build_splits=_build_ctr,
            compute_metrics=make_pairwise_ctr_compute_metrics, card_metrics=_CTR_CARD, primary_metric="auc",
            hub_task_type="ctr-prediction", hub_task_name="Click-through-rate prediction",
            packs_candidates=True, pretraining_view="history", settings=("history_fraction", "positive_rating"),
        ),
        Task(
            name="implicit_ctr", head=UserBertForCTRPrediction, collator=CTRCollator, build_splits=_build_implicit_ctr,
            compute_metrics=make_pairwise_ctr_compute_metrics, card_metrics=_CTR_CARD, primary_metric="auc",
            hub_task_type="ctr-prediction",
            hub_task_name="Implicit-feedback click prediction (rated vs not-rated popular items)",
            packs_candidates=True, pretraining_view="history",
            settings=("history_fraction", "negatives_per_positive", "popular_items"),
        ),
        Task(
            name="next_item", head=UserBertForNextBehaviorPrediction, collator=NextBehaviorCollator,
            build_splits=_build_next_item, compute_metrics=make_next_item_compute_metrics,
            card_metrics=("hr@5", "ndcg@5", "hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr"), primary_metric="ndcg@10",
            hub_task_type="next-item-prediction", hub_task_name="Next-item prediction (leave-one-out, full ranking)",
            pretraining_view="before_last_two", eval_ignore_keys=("logits", "user_embedding"),
            id_behaviours_only=True,
            settings=("train_every_prefix", "max_train_targets_per_user", "prefixes_in_one_pass", "exclude_history"),
        ),
        Task(
            name="user_classification", head=UserBertForUserClassification, collator=UserClassificationCollator,
            build_splits=_build_user_classification, compute_metrics=make_classification_compute_metrics,
            card_metrics=("accuracy", "auc"), primary_metric="accuracy",
            hub_task_type="user-classification", hub_task_name="User classification", settings=("user_labels",),
        ),
    )
}


def register_task(task: Task) -> Task:
    """Make ``task`` available as ``userbert finetune --task <task.name>`` and to the experiment specs.

    Example:
        >>> from dataclasses import replace
        >>> task = register_task(replace(get_task("ctr"), name="ctr_copy"))
        >>> get_task("ctr_copy").head.__name__
        'UserBertForCTRPrediction'
        >>> del TASK_REGISTRY["ctr_copy"]
    """
    if TASK_REGISTRY.get(task.name, task) is not task:
        raise ValueError(f"a fine-tuning task named {task.name!r} is already registered")
    TASK_REGISTRY[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The registered :class:`Task` called ``name``; a clear error names the choices otherwise."""
    try:
        return TASK_REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose one of {tuple(TASK_REGISTRY)}") from None


def pretraining_users_for(task: str, data, *, history_fraction: float = 0.8,
                          max_behaviors: int | None = None) -> datasets.Dataset:
    """The behaviour sequences a pre-training run may use before fine-tuning on ``task`` (never an evaluation
    candidate or target): ``downstream_data.pretraining_users`` with the task's view."""
    return pretraining_users(data, get_task(task).pretraining_view, history_fraction=history_fraction,
                             max_behaviors=max_behaviors)


__all__ = [
    "Task",
    "TaskData",
    "TASK_REGISTRY",
    "register_task",
    "get_task",
    "pretraining_users_for",
    "make_classification_compute_metrics",
    "make_pairwise_ctr_compute_metrics",
]
