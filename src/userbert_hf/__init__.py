"""userbert_hf: contrastive user model pre-training (UserBERT) on the Hugging Face stack.

Importing the package registers ``UserBertConfig`` and the UserBERT models with transformers' auto classes,
so ``AutoConfig``/``AutoModel`` resolve ``model_type="userbert"``.
"""

from transformers import AutoConfig, AutoModel, AutoModelForPreTraining
from transformers import AutoModelForMultipleChoice, AutoModelForSequenceClassification

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

__version__ = "0.1.0"

AutoConfig.register("userbert", UserBertConfig, exist_ok=True)
AutoModel.register(UserBertConfig, UserBertModel, exist_ok=True)
AutoModelForPreTraining.register(UserBertConfig, UserBertForPreTraining, exist_ok=True)
# Downstream heads with a fitting auto class: user classification is sequence classification of a behaviour
# sequence; news recommendation picks among an impression's candidates (logits (B, num_choices), softmax over
# them). CTR and next-behaviour prediction have no matching auto class: load them with their class.
AutoModelForSequenceClassification.register(UserBertConfig, UserBertForUserClassification, exist_ok=True)
AutoModelForMultipleChoice.register(UserBertConfig, UserBertForNewsRecommendation, exist_ok=True)

# save_pretrained copies the model code and writes auto_map, so checkpoints load with trust_remote_code=True
# where this package is not installed.
UserBertConfig.register_for_auto_class()
UserBertModel.register_for_auto_class("AutoModel")
UserBertForPreTraining.register_for_auto_class("AutoModelForPreTraining")
UserBertForUserClassification.register_for_auto_class("AutoModelForSequenceClassification")
UserBertForNewsRecommendation.register_for_auto_class("AutoModelForMultipleChoice")

__all__ = [
    "PRESETS",
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
