"""userbert_hf: contrastive user model pre-training (UserBERT) on the Hugging Face stack.

Importing the package is cheap: it imports neither torch nor transformers (so ``userbert --help`` starts fast).
Its names load on first use, as transformers' own ``_LazyModule`` does, and the package registers
``UserBertConfig``, the UserBERT models, the processor and the ``"user-feature-extraction"`` pipeline with
transformers' auto classes as soon as transformers is imported (at once when it already is), so ``AutoConfig`` /
``AutoModel`` / ``AutoProcessor`` / ``pipeline()`` resolve ``model_type="userbert"`` after ``import userbert_hf``.

Example:

```python
>>> import userbert_hf
>>> from transformers import AutoConfig
>>> type(AutoConfig.for_model("userbert")).__name__
'UserBertConfig'
```
"""

from __future__ import annotations

import importlib
import sys

__version__ = "0.1.0"

# name -> submodule that defines it (imported on first access)
_LAZY = {
    "BehaviorCatalog": ".collation",
    "UserBertCollator": ".collation",
    "PRESETS": ".configuration_userbert",
    "UserBertConfig": ".configuration_userbert",
    "UserBertFeatureExtractionPipeline": ".pipeline_userbert",
    "UserBertProcessor": ".processing_userbert",
    "UserBertTrainer": ".pretraining",
    "UserBertTrainingArguments": ".pretraining",
    "MediumHardNegativeSampler": ".pretraining.samplers",
    "RandomNegativeSampler": ".pretraining.samplers",
    "HardestNegativeSampler": ".pretraining.samplers",
    **{
        name: ".modeling_userbert"
        for name in (
            "UserBertModel", "UserBertModelOutput", "UserBertPreTrainedModel",
            "UserBertForPreTraining", "UserBertForPreTrainingOutput",
            "UserBertForCTRPrediction", "UserBertForCTRPredictionOutput",
            "UserBertForNewsRecommendation", "UserBertForNewsRecommendationOutput",
            "UserBertForNextBehaviorPrediction", "UserBertForNextBehaviorPredictionOutput",
            "UserBertForUserClassification", "UserBertForUserClassificationOutput",
        )
    },
}
__all__ = sorted(_LAZY)

_registered = False


def register_auto_classes() -> None:
    """Register the UserBERT classes with transformers' auto classes and ``pipeline()`` (once; done for you when
    transformers is imported).

    Downstream heads and their auto classes (docs/hub.md): user classification is sequence classification of a
    behaviour sequence; news recommendation picks among an impression's candidates (logits (B, num_choices));
    next-behaviour prediction scores the next behaviour over the whole behaviour vocabulary, as a causal LM scores
    the next token; CTR scores (user, candidate) pairs, one log-odds each, as a cross-encoder scores text pairs.
    Two heads share ``AutoModelForSequenceClassification``: transformers picks among registered classes by the
    config's ``architectures`` (the class a folder was saved from; user classification when there is none).
    ``register_for_auto_class`` makes ``save_pretrained`` copy the code and write ``auto_map``, so checkpoints load
    with ``trust_remote_code=True`` where this package is not installed.
    """
    global _registered
    if _registered:
        return
    _registered = True
    from transformers import (
        AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMultipleChoice, AutoModelForPreTraining,
        AutoModelForSequenceClassification, AutoProcessor,
    )

    from . import modeling_userbert as m
    from .configuration_userbert import UserBertConfig
    from .pipeline_userbert import register_pipeline
    from .processing_userbert import UserBertProcessor

    AutoConfig.register("userbert", UserBertConfig, exist_ok=True)
    AutoModel.register(UserBertConfig, m.UserBertModel, exist_ok=True)
    AutoModelForPreTraining.register(UserBertConfig, m.UserBertForPreTraining, exist_ok=True)
    AutoModelForSequenceClassification.register(
        UserBertConfig, (m.UserBertForUserClassification, m.UserBertForCTRPrediction), exist_ok=True
    )
    AutoModelForMultipleChoice.register(UserBertConfig, m.UserBertForNewsRecommendation, exist_ok=True)
    AutoModelForCausalLM.register(UserBertConfig, m.UserBertForNextBehaviorPrediction, exist_ok=True)
    AutoProcessor.register(UserBertConfig, UserBertProcessor, exist_ok=True)

    UserBertConfig.register_for_auto_class()
    m.UserBertModel.register_for_auto_class("AutoModel")
    m.UserBertForPreTraining.register_for_auto_class("AutoModelForPreTraining")
    m.UserBertForUserClassification.register_for_auto_class("AutoModelForSequenceClassification")
    m.UserBertForCTRPrediction.register_for_auto_class("AutoModelForSequenceClassification")
    m.UserBertForNewsRecommendation.register_for_auto_class("AutoModelForMultipleChoice")
    m.UserBertForNextBehaviorPrediction.register_for_auto_class("AutoModelForCausalLM")
    UserBertProcessor.register_for_auto_class("AutoProcessor")
    register_pipeline()


class _RegisterOnImport:
    """A ``sys.meta_path`` finder that calls :func:`register_auto_classes` once transformers is imported: right
    after ``import transformers`` completes, or, when one of this package's modules imported it, once that module
    (the outermost one being imported) is complete, so registration never meets a half-initialised module."""

    def __init__(self):
        self.depth = 0  # this package's modules being imported right now
        self.transformers_loaded = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "transformers" and not fullname.startswith(__name__ + "."):
            return None
        for finder in sys.meta_path:
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _NotifyingLoader(spec.loader, self, ours=fullname != "transformers")
        return spec

    def module_done(self, ours: bool) -> None:
        self.transformers_loaded |= not ours
        if self.depth == 0 and self.transformers_loaded and not _registered:
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            register_auto_classes()


class _NotifyingLoader:
    """Runs the real loader, then tells :class:`_RegisterOnImport`; every other attribute is the real loader's."""

    def __init__(self, loader, finder: _RegisterOnImport, ours: bool):
        self._loader, self._finder, self._ours = loader, finder, ours

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._finder.depth += self._ours
        try:
            self._loader.exec_module(module)
        finally:
            self._finder.depth -= self._ours
        self._finder.module_done(self._ours)

    def __getattr__(self, name):
        return getattr(self._loader, name)


def __getattr__(name: str):
    if name in _LAZY:
        register_auto_classes()
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


if "transformers" in sys.modules:
    register_auto_classes()
elif not any(type(finder).__name__ == "_RegisterOnImport" for finder in sys.meta_path):
    sys.meta_path.insert(0, _RegisterOnImport())
