"""userbert_hf: contrastive user model pre-training (UserBERT) on the Hugging Face stack.

Importing the package registers ``UserBertConfig`` and the UserBERT models with transformers' auto classes,
so ``AutoConfig``/``AutoModel`` resolve ``model_type="userbert"``.
"""

from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, AutoProcessor
from transformers import AutoModelForCausalLM, AutoModelForMultipleChoice, AutoModelForSequenceClassification

from .collation import BehaviorCatalog, UserBertCollator

from .configuration_userbert import PRESETS, UserBertConfig
from .modeling_userbert import (
    UserBertForPreTraining,
    UserBertForPreTrainingOutput,
    UserBertForCTRPrediction,
    UserBertForCTRPredictionOutput,
    UserBertForNewsRecommendation,
    UserBertForNewsRecommendationOutput,
    UserBertForNextBehaviorPrediction,
    UserBertForNextBehaviorPredictionOutput,
    UserBertForUserClassification,
    UserBertForUserClassificationOutput,
    UserBertModel,
    UserBertModelOutput,
    UserBertPreTrainedModel,
)
from .pipeline_userbert import UserBertFeatureExtractionPipeline  # registers pipeline("user-feature-extraction")
from .processing_userbert import UserBertProcessor

__version__ = "0.1.0"

AutoConfig.register("userbert", UserBertConfig, exist_ok=True)
AutoModel.register(UserBertConfig, UserBertModel, exist_ok=True)
AutoModelForPreTraining.register(UserBertConfig, UserBertForPreTraining, exist_ok=True)
# Downstream heads and their auto classes (docs/hub.md): user classification is sequence classification of a
# behaviour sequence; news recommendation picks among an impression's candidates (logits (B, num_choices));
# next-behaviour prediction scores the next behaviour over the whole behaviour vocabulary, as a causal LM scores
# the next token. CTR scores (user, candidate) pairs, one log-odds each, as a cross-encoder scores text pairs.
# Two heads share AutoModelForSequenceClassification: transformers picks among registered classes by the
# config's `architectures` (the class a folder was saved from; user classification when there is none).
AutoModelForSequenceClassification.register(
    UserBertConfig, (UserBertForUserClassification, UserBertForCTRPrediction), exist_ok=True
)
AutoModelForMultipleChoice.register(UserBertConfig, UserBertForNewsRecommendation, exist_ok=True)
AutoModelForCausalLM.register(UserBertConfig, UserBertForNextBehaviorPrediction, exist_ok=True)
AutoProcessor.register(UserBertConfig, UserBertProcessor, exist_ok=True)

# save_pretrained copies the model code and writes auto_map, so checkpoints load with trust_remote_code=True
# where this package is not installed.
UserBertConfig.register_for_auto_class()
UserBertModel.register_for_auto_class("AutoModel")
UserBertForPreTraining.register_for_auto_class("AutoModelForPreTraining")
UserBertForUserClassification.register_for_auto_class("AutoModelForSequenceClassification")
UserBertForNewsRecommendation.register_for_auto_class("AutoModelForMultipleChoice")
UserBertForCTRPrediction.register_for_auto_class("AutoModelForSequenceClassification")
UserBertForNextBehaviorPrediction.register_for_auto_class("AutoModelForCausalLM")
UserBertProcessor.register_for_auto_class("AutoProcessor")

# The pre-training wing (Trainer, samplers) loads on first use: importing the package
# for inference should not import the Trainer.
_LAZY = {
    "UserBertTrainer": ".pretraining",
    "UserBertTrainingArguments": ".pretraining",
    "MediumHardNegativeSampler": ".pretraining.samplers",
    "RandomNegativeSampler": ".pretraining.samplers",
    "HardestNegativeSampler": ".pretraining.samplers",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PRESETS",
    "BehaviorCatalog",
    "UserBertCollator",
    "UserBertProcessor",
    "UserBertTrainer",
    "UserBertTrainingArguments",
    "MediumHardNegativeSampler",
    "RandomNegativeSampler",
    "HardestNegativeSampler",
    "UserBertFeatureExtractionPipeline",
    "UserBertConfig",
    "UserBertModel",
    "UserBertModelOutput",
    "UserBertPreTrainedModel",
    "UserBertForPreTraining",
    "UserBertForPreTrainingOutput",
    "UserBertForNewsRecommendation",
    "UserBertForNewsRecommendationOutput",
    "UserBertForCTRPrediction",
    "UserBertForCTRPredictionOutput",
    "UserBertForNextBehaviorPrediction",
    "UserBertForNextBehaviorPredictionOutput",
    "UserBertForUserClassification",
    "UserBertForUserClassificationOutput",
]
