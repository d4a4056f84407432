"""The pre-training wing: masking and period splits, objectives (UserBERT, PTUM, CP), negative samplers, held-out
evaluation, the ``UserBertTrainer`` and checkpoint handling."""

from .batch import PretrainingBatch
from .checkpoints import checkpoint_problem, last_complete_checkpoint
from .evaluation import PretrainingEvaluator, embedding_health, knn_future_recall
from .masking import RandomStream
from .objectives import OBJECTIVES, CpObjective, PretrainingObjective, PtumObjective, UserBertObjective, build_objective
from .samplers import (
    SAMPLERS,
    HardestNegativeSampler,
    MediumHardNegativeSampler,
    NegativeSampler,
    RandomNegativeSampler,
    build_sampler,
)
from .trainer import SamplerCheckpointCallback, UserBertTrainer, UserBertTrainingArguments

__all__ = [
    "OBJECTIVES",
    "SAMPLERS",
    "CpObjective",
    "HardestNegativeSampler",
    "MediumHardNegativeSampler",
    "NegativeSampler",
    "PretrainingBatch",
    "PretrainingEvaluator",
    "PretrainingObjective",
    "PtumObjective",
    "RandomNegativeSampler",
    "RandomStream",
    "SamplerCheckpointCallback",
    "UserBertObjective",
    "UserBertTrainer",
    "UserBertTrainingArguments",
    "build_objective",
    "build_sampler",
    "checkpoint_problem",
    "embedding_health",
    "knn_future_recall",
    "last_complete_checkpoint",
]
