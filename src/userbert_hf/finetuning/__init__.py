"""The fine-tuning wing: one module per downstream task (``ctr`` with ``ctr`` and ``implicit_ctr``,
``next_item``, ``news``, ``user_classification``: split builders, collator, metrics and registry entry), the
registry they fill (``registry``), the shared split helpers (``splits``), the metric functions (``metrics``),
the optimiser (``optim``) and the ``userbert finetune`` job (``job``, imported on use).

Importing this package registers every task module, in this order (the order of ``--task`` choices).

Example:
    >>> from userbert_hf.finetuning import TASK_REGISTRY
    >>> tuple(TASK_REGISTRY)
    ('news', 'ctr', 'implicit_ctr', 'next_item', 'user_classification')
"""

from .registry import TASK_REGISTRY, Task, TaskData, get_task, pretraining_users_for, register_task  # isort: skip
from . import news, ctr, next_item, user_classification  # noqa: E402,F401  # isort: skip  (registration order)
from .ctr import CTRCollator, build_ctr_dataset, build_implicit_ctr_dataset  # noqa: E402
from .news import NewsRecommendationCollator, build_news_dataset  # noqa: E402
from .next_item import NextBehaviorCollator, build_next_item_dataset  # noqa: E402
from .splits import pack_candidates, pretraining_users, split_statistics, split_users, subsample_training  # noqa: E402
from .user_classification import UserClassificationCollator, build_user_classification_dataset  # noqa: E402

__all__ = [
    "TASK_REGISTRY",
    "CTRCollator",
    "NewsRecommendationCollator",
    "NextBehaviorCollator",
    "Task",
    "TaskData",
    "UserClassificationCollator",
    "build_ctr_dataset",
    "build_implicit_ctr_dataset",
    "build_news_dataset",
    "build_next_item_dataset",
    "build_user_classification_dataset",
    "get_task",
    "pack_candidates",
    "pretraining_users",
    "pretraining_users_for",
    "register_task",
    "split_statistics",
    "split_users",
    "subsample_training",
]
