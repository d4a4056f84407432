"""The fine-tuning tasks' registry: one :class:`Task` per downstream task, in :data:`TASK_REGISTRY`.

A task says everything the fine-tuning job, the model cards and the experiment runner need to know about it:
how its labelled splits are built from the data, which head and collator train on them, how its rows are grouped
when a share of the labels is kept, which metrics the Trainer computes and which go into a model card, its Hub
task type, and what a pre-training run may see before fine-tuning on it. Each task module of this package
(``ctr``, ``next_item``, ``news``, ``user_classification``) registers its tasks with :func:`register_task`;
``userbert_hf.finetuning`` imports them all, so the registry is complete once any module of the package is
imported. Adding a task means adding one module that calls :func:`register_task` (docs/extending.md).

This module imports neither the fine-tuning job nor ``model_card``: both import it, so there is no import cycle.

Example:
    >>> from userbert_hf.finetuning.registry import get_task
    >>> task = get_task("ctr")
    >>> task.head.__name__, task.collator.__name__, task.card_metrics
    ('UserBertForCTRPrediction', 'CTRCollator', ('auc', 'ap', 'logloss'))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import datasets

from ..vocabulary import BehaviorVocabulary
from .splits import pack_candidates, pretraining_users, subsample_training


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
        pretraining_view: what pre-training may see (``splits.pretraining_users``): ``history``,
            ``before_last_two`` or ``all``.
        trains_on_whole_export: with all its labels the task trains on every sequence its
            ``--export_pretraining_data`` holds (leave-one-out next-item: every user's prefixes), so a model
            pre-trained on that export alone is a warm start on the fine-tuning data itself
            (``warm_start.same_data_warm_start``). False where the export also holds users the task never trains
            on (CTR: the validation and test users' histories).
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
    trains_on_whole_export: bool = False
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


# The one list of fine-tuning tasks, by name: ``userbert finetune --task`` and the experiment specs read it. The task
# modules fill it, in the order ``userbert_hf.finetuning`` imports them; add a task with ``register_task(Task(...))``
# (docs/extending.md).
TASK_REGISTRY: dict[str, Task] = {}


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
    candidate or target): ``splits.pretraining_users`` with the task's view."""
    return pretraining_users(data, get_task(task).pretraining_view, history_fraction=history_fraction,
                             max_behaviors=max_behaviors)


__all__ = [
    "Task",
    "TaskData",
    "TASK_REGISTRY",
    "register_task",
    "get_task",
    "pretraining_users_for",
]
