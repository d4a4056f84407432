"""The pre-training wing: masking and period splits, objectives (UserBERT, PTUM, CP), negative samplers, the
``UserBertTrainer`` and checkpoint handling."""

from .checkpoints import checkpoint_problem, last_complete_checkpoint
from .samplers import MediumHardNegativeSampler
from .trainer import SamplerCheckpointCallback, UserBertTrainer, UserBertTrainingArguments

__all__ = [
    "MediumHardNegativeSampler",
    "SamplerCheckpointCallback",
    "UserBertTrainer",
    "UserBertTrainingArguments",
    "checkpoint_problem",
    "last_complete_checkpoint",
]
