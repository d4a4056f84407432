"""A transformers pipeline that embeds users: ``pipeline("user-feature-extraction", model=folder)``.

Why not the stock ``"feature-extraction"`` pipeline: it tokenizes *text* into ``input_ids`` and returns the
per-token hidden states, while a user model reads behaviour ids through its ``UserBertProcessor`` and its output
is one pooled user embedding. The package registers this pipeline under its own task name (importing
``userbert_hf`` is enough); re-registering ``"feature-extraction"`` would change that task for every model.

Example:

```python
>>> import userbert_hf  # registers the task
>>> from transformers import pipeline
>>> embed = pipeline("user-feature-extraction", model="outputs/userbert-pretrained")  # doctest: +SKIP
>>> embed([["1", "50", "296"], ["2", "3"]])  # one embedding (a list of H floats) per user  # doctest: +SKIP
```
"""

from __future__ import annotations

import collections.abc

import torch.nn.functional as F
from torch.utils.data import DataLoader
from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator
from transformers.utils import logging

from .processing_userbert import UserBertProcessor

TASK = "user-feature-extraction"
logger = logging.get_logger(__name__)


class UserBertFeatureExtractionPipeline(Pipeline):
    """Embeds each user (a list of raw behaviour ids, or ``{"behaviors": [...], "timestamps": [...]}``) with a
    UserBERT user model and its processor.

    Call parameters: ``normalize_embeddings`` (L2-normalise, default False) and ``return_tensors`` (a torch tensor
    (H,) per user instead of a list of floats). ``batch_size=N`` (at construction or call) embeds N users per
    forward pass, with the same embeddings as one at a time.

    Example:

    ```python
    >>> embed = pipeline("user-feature-extraction", model=folder)  # doctest: +SKIP
    >>> vectors = embed([{"behaviors": ["296", "1"], "timestamps": [20, 10]}], normalize_embeddings=True)  # doctest: +SKIP
    >>> vectors = embed([["1", "50"], ["2"], ["296", "3"]], batch_size=2)  # doctest: +SKIP
    ```
    """

    _load_processor = False  # the pipeline() factory only knows ProcessorMixin processors: loaded here instead
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, model, processor: UserBertProcessor | None = None, **kwargs):
        super().__init__(model=model, **kwargs)
        self.processor = processor if processor is not None else UserBertProcessor.from_pretrained(model.name_or_path)
        self.processor.check_model_config(model.config)

    def _sanitize_parameters(self, normalize_embeddings=None, return_tensors=None, **kwargs):
        postprocess = {}
        if normalize_embeddings is not None:
            postprocess["normalize_embeddings"] = normalize_embeddings
        if return_tensors is not None:
            postprocess["return_tensors"] = return_tensors
        return {}, {}, postprocess

    def preprocess(self, user):
        if isinstance(user, dict):
            ids, unknown = self.processor.convert_behaviors_to_ids(user["behaviors"], user.get("timestamps"))
        elif isinstance(user, (str, int)):
            raise TypeError(f"each user is a list of behaviour ids, got {user!r}: pass [[...], [...]] for several users")
        else:
            ids, unknown = self.processor.convert_behaviors_to_ids(list(user))
        if unknown:
            logger.warning("%d behaviour ids of a user are not in the vocabulary: dropped", unknown)
        return {"ids": [ids]}  # a batch of one user's vocabulary ids; batches are joined by _collate

    @staticmethod
    def _collate(items: list[dict]) -> dict:
        return {"ids": [ids for item in items for ids in item["ids"]]}

    def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params):
        """As ``Pipeline.get_iterator``, with this pipeline's collation: ``batch_size`` users share one behaviour
        table (the stock collation pads tokenizer or feature-extractor outputs, which a user model has neither)."""
        if batch_size == 1:
            return super().get_iterator(inputs, num_workers, batch_size, preprocess_params, forward_params,
                                        postprocess_params)
        if isinstance(inputs, collections.abc.Sized):
            dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        else:
            dataset = PipelineIterator(inputs, self.preprocess, preprocess_params)
        loader = DataLoader(dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=self._collate)
        model_iterator = PipelineIterator(loader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)

    def _forward(self, model_inputs):
        inputs = self.processor.collate(model_inputs["ids"]).to(self.device)
        return {"user_embedding": self.model(**inputs).user_embedding}  # (B, H)

    def postprocess(self, model_outputs, normalize_embeddings: bool = False, return_tensors: bool = False):
        embedding = model_outputs["user_embedding"][0].float()  # (H,)
        if normalize_embeddings:
            embedding = F.normalize(embedding, p=2, dim=-1)
        return embedding if return_tensors else embedding.tolist()


def register_pipeline() -> None:
    """Register ``"user-feature-extraction"`` with transformers' ``pipeline()`` (done on importing the package)."""
    if TASK not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=UserBertFeatureExtractionPipeline, pt_model=AutoModel)


__all__ = ["UserBertFeatureExtractionPipeline", "register_pipeline", "TASK"]
