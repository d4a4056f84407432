"""userbert_hf: contrastive user model pre-training (UserBERT) on the Hugging Face stack.

Importing the package registers ``UserBertConfig`` and the UserBERT models with transformers' auto classes,
so ``AutoConfig``/``AutoModel`` resolve ``model_type="userbert"``.
"""

from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from .configuration_userbert import PRESETS, UserBertConfig
from .modeling_userbert import (
    UserBertForPreTraining,
    UserBertForPreTrainingOutput,
    UserBertModel,
    UserBertModelOutput,
    UserBertPreTrainedModel,
)

__version__ = "0.1.0"

AutoConfig.register("userbert", UserBertConfig, exist_ok=True)
AutoModel.register(UserBertConfig, UserBertModel, exist_ok=True)
AutoModelForPreTraining.register(UserBertConfig, UserBertForPreTraining, exist_ok=True)

# save_pretrained copies the model code and writes auto_map, so checkpoints load with trust_remote_code=True
# where this package is not installed.
UserBertConfig.register_for_auto_class()
UserBertModel.register_for_auto_class("AutoModel")
UserBertForPreTraining.register_for_auto_class("AutoModelForPreTraining")

__all__ = [
    "PRESETS",
    "UserBertConfig",
    "UserBertModel",
    "UserBertModelOutput",
    "UserBertPreTrainedModel",
    "UserBertForPreTraining",
    "UserBertForPreTrainingOutput",
]
