"""Behaviours read by a pre-trained language model (``behavior_type="plm"``).

A behaviour text (a news or movie title) is read by a transformers encoder (BERT, MiniLM, ...), pooled (mean
over tokens or the [CLS] state, as the encoder's sentence-transformers folder says) and projected to the user
model's ``hidden_size``. ``plm_trainable_layers`` decides how much of the encoder learns: 0 (frozen), the top k
layers, or -1 (all of it, embeddings included).

Token ids travel through the catalog and the processor shifted by one (``PLM id + 1``) so that 0 stays the
padding id of every behaviour table, whatever the encoder's own padding id (RoBERTa pads with 1); the encoder
undoes the shift.

A frozen encoder gives each text the same pooled vector forever, so those vectors can be computed once per
vocabulary and looked up (:meth:`UserBertPlmEncoder.attach_cache`; ``plm_cache.py`` builds and stores them).
Rows the cache does not hold (new behaviours at inference) are encoded on the fly.

This file is copied next to saved checkpoints with ``modeling_userbert.py`` and must only import its siblings
relatively.

Shapes: N behaviour texts, W token columns, D the encoder's hidden size, H the user model's hidden size.
"""

from __future__ import annotations

import json
import os

import torch
from torch import nn

# The poolings a sentence-transformers folder may name (configuration_userbert.PLM_POOLINGS validates the config
# field; kept apart so that this module does not import the config module: no import cycle).
PLM_POOLINGS = ("mean", "cls")

_HASH_BASE = 1_000_003  # odd multiplier of the row hash (wraps around in int64)


# ----------------------------------------------------------------------------------------------
# Reading an encoder folder (local or Hub): its transformers config, its pooling, its tokenizer.
# ----------------------------------------------------------------------------------------------


def _resolve(name_or_path: str, filename: str) -> str | None:
    from transformers.utils import cached_file

    return cached_file(str(name_or_path), filename, _raise_exceptions_for_missing_entries=False)


def read_plm_pooling(name_or_path: str) -> str:
    """The pooling a sentence-transformers folder declares (``1_Pooling/config.json``, or the Pooling module
    named in ``modules.json``): ``"cls"`` or ``"mean"``; ``"mean"`` for a plain transformers encoder.

    Raises ``ValueError`` naming the file for a pooling this encoder cannot reproduce (max, weighted, ...).
    """
    pooling_dir = "1_Pooling"
    modules_file = _resolve(name_or_path, "modules.json")
    if modules_file:
        with open(modules_file, encoding="utf-8") as f:
            modules = json.load(f)
        for module in modules:
            if str(module.get("type", "")).endswith("Pooling"):
                pooling_dir = module.get("path") or pooling_dir
    config_file = _resolve(name_or_path, f"{pooling_dir}/config.json")
    if config_file is None:
        return "mean"
    with open(config_file, encoding="utf-8") as f:
        settings = json.load(f)
    if settings.get("pooling_mode_cls_token"):
        return "cls"
    if settings.get("pooling_mode_mean_tokens", True):
        return "mean"
    used = sorted(k for k, v in settings.items() if k.startswith("pooling_mode") and v)
    raise ValueError(f"{config_file}: pooling {used} is not supported (use an encoder with mean or CLS pooling)")


def plm_config_fields(name_or_path: str, trainable_layers: int = 0) -> dict:
    """The ``UserBertConfig`` fields of a PLM behaviour encoder read from ``name_or_path`` (a folder or Hub id):
    ``plm_name_or_path``, ``plm_config`` (the encoder's transformers config as a dict, so a saved user model
    rebuilds it without a download), ``plm_pooling`` and ``plm_trainable_layers``."""
    from transformers import AutoConfig

    try:
        encoder_config = AutoConfig.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as err:
        raise ValueError(f"--plm_name_or_path {name_or_path}: not a transformers encoder ({err})") from None
    settings = encoder_config.to_dict()
    for key in ("_name_or_path", "transformers_version", "architectures", "auto_map", "_commit_hash"):
        settings.pop(key, None)
    return dict(
        behavior_type="plm", plm_name_or_path=str(name_or_path), plm_config=settings,
        plm_pooling=read_plm_pooling(name_or_path), plm_trainable_layers=int(trainable_layers),
    )


def load_plm_tokenizer(name_or_path: str):
    """The encoder's own tokenizer (``AutoTokenizer``)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(name_or_path))


def encode_plm_texts(tokenizer, texts: list[str], max_words: int) -> torch.Tensor:
    """Behaviour texts -> (N, max_words) token ids shifted by one (0 = padding), special tokens ([CLS], [SEP])
    included and truncated to ``max_words`` tokens. An empty text is an all-padding row.

    Example:

    ```python
    >>> ids = encode_plm_texts(tokenizer, ["Toy Story (1995)", ""], max_words=8)  # doctest: +SKIP
    >>> (ids[0, 0] - 1).item() == tokenizer.cls_token_id, ids[1].tolist()  # doctest: +SKIP
    (True, [0, 0, 0, 0, 0, 0, 0, 0])
    ```
    """
    texts = ["" if t is None else str(t) for t in texts]
    out = torch.zeros(len(texts), max_words, dtype=torch.long)
    filled = [i for i, t in enumerate(texts) if t.strip()]
    if not filled:
        return out
    encoded = tokenizer([texts[i] for i in filled], truncation=True, max_length=max_words, padding="max_length",
                        return_attention_mask=True, return_tensors="pt")
    ids, mask = encoded["input_ids"][:, :max_words], encoded["attention_mask"][:, :max_words]  # (n, W)
    if tokenizer.padding_side == "left":  # keep tokens left-aligned: rows are compared and trimmed by columns
        ids = torch.stack([torch.cat([r[m.bool()], r[~m.bool()]]) for r, m in zip(ids, mask)])
        mask = mask.sort(dim=1, descending=True, stable=True).values
    out[filled] = (ids.long() + 1) * mask.long()
    return out


def _row_hashes(token_ids: torch.Tensor) -> torch.Tensor:
    """A hash per row of (N, W) shifted token ids that ignores trailing padding (0 contributes nothing): (N,)."""
    powers, value = [], 1
    for _ in range(token_ids.shape[1]):
        value = (value * _HASH_BASE) & 0xFFFFFFFFFFFFFFFF
        powers.append(value - (1 << 64) if value >= 1 << 63 else value)
    weights = torch.tensor(powers, dtype=torch.long, device=token_ids.device)  # (W,)
    return (token_ids * weights).sum(-1)  # (N,) int64 arithmetic wraps around


# ----------------------------------------------------------------------------------------------
# The encoder module.
# ----------------------------------------------------------------------------------------------


class UserBertPlmEncoder(nn.Module):
    """A pre-trained language model as behaviour encoder: tokens -> encoder -> pooling -> projection to H.

    The encoder is built from ``config.plm_config`` (no download; its weights come with the user model's
    ``model.safetensors``, or from :func:`load_plm_weights` when a new model is built). A frozen encoder
    (``plm_trainable_layers=0``) always runs in eval mode (no dropout), so its pooled vectors can be cached.

    Example:

    ```python
    >>> config = UserBertConfig.from_preset("nrms", **plm_config_fields("all-MiniLM-L6-v2"))  # doctest: +SKIP
    >>> encoder = UserBertPlmEncoder(config)  # doctest: +SKIP
    >>> encoder(torch.tensor([[102, 2000, 103, 0]])).shape  # shifted ids of one title  # doctest: +SKIP
    torch.Size([1, 256])
    ```
    """

    def __init__(self, config):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if not config.plm_config:
            raise ValueError("behavior_type='plm' needs config.plm_config (see plm_config_fields)")
        settings = dict(config.plm_config)
        encoder_config = AutoConfig.for_model(settings.pop("model_type"), **settings)
        self.plm = AutoModel.from_config(encoder_config)
        self.pooling = config.plm_pooling
        self.projection = nn.Linear(encoder_config.hidden_size, config.hidden_size)
        self.trainable_layers = config.plm_trainable_layers
        self.set_trainable_layers(self.trainable_layers)
        self._cache = None  # (hashes sorted (K,), order (K,), token ids (K, Wc), vectors (K, D)); not saved

    # ----- which parameters learn -----
    def encoder_layers(self) -> nn.ModuleList:
        """The encoder's stack of transformer layers (bottom first)."""
        count = self.plm.config.num_hidden_layers
        for module in self.plm.modules():
            if isinstance(module, nn.ModuleList) and len(module) == count:
                return module
        raise ValueError(f"cannot find the {count} layers of the {type(self.plm).__name__} encoder")

    def set_trainable_layers(self, layers: int) -> None:
        """0: the encoder is frozen; k: its top k layers learn; -1: all of it learns (embeddings included). The
        projection always learns."""
        self.trainable_layers = layers
        self.plm.requires_grad_(layers == -1)
        if layers > 0:
            for layer in list(self.encoder_layers())[-layers:]:
                layer.requires_grad_(True)
        if self.frozen:
            self.plm.eval()

    @property
    def frozen(self) -> bool:
        return self.trainable_layers == 0

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.plm.eval()  # a frozen encoder has no dropout: its vectors are fixed (and cacheable)
        return self

    # ----- cached vectors of a frozen encoder -----
    def attach_cache(self, token_ids: torch.Tensor, vectors: torch.Tensor) -> None:
        """Use ``vectors`` (K, D), the pooled encoder outputs of the shifted token rows ``token_ids`` (K, W),
        instead of running the encoder on those rows. Only for a frozen encoder."""
        if not self.frozen:
            raise ValueError("cached PLM vectors need a frozen encoder (plm_trainable_layers=0)")
        if token_ids.shape[0] != vectors.shape[0] or vectors.shape[-1] != self.plm.config.hidden_size:
            raise ValueError(f"cache shapes do not fit: token ids {tuple(token_ids.shape)}, "
                             f"vectors {tuple(vectors.shape)}")
        hashes = _row_hashes(token_ids)
        hashes, order = torch.sort(hashes)
        self._cache = (hashes, order, token_ids, vectors)

    def detach_cache(self) -> None:
        self._cache = None

    @property
    def cache_size(self) -> int:
        return 0 if self._cache is None else int(self._cache[2].shape[0])

    def lookup(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(found (N,) bool, vectors (N, D))`` for rows held by the cache (vectors of other rows are zeros)."""
        n, d = token_ids.shape[0], self.plm.config.hidden_size
        vectors = torch.zeros(n, d, device=token_ids.device)
        if self._cache is None or n == 0:
            return torch.zeros(n, dtype=torch.bool, device=token_ids.device), vectors
        hashes, order, cached_ids, cached_vectors = self._cache
        query = _row_hashes(token_ids).cpu()  # (N,)
        slot = torch.searchsorted(hashes, query).clamp(max=len(hashes) - 1)  # (N,)
        rows = order[slot]  # (N,) candidate cache rows
        width = max(token_ids.shape[1], cached_ids.shape[1])
        candidate = nn.functional.pad(cached_ids[rows], (0, width - cached_ids.shape[1]))  # (N, width)
        asked = nn.functional.pad(token_ids.cpu(), (0, width - token_ids.shape[1]))  # (N, width)
        found = (hashes[slot] == query) & (candidate == asked).all(-1)  # exact: hash collisions never match
        vectors[found.to(vectors.device)] = cached_vectors[rows[found]].to(vectors)
        return found.to(token_ids.device), vectors

    # ----- encoding -----
    def pool(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Pooled encoder outputs (N, D) of shifted token rows (N, W), without the cache; rows without tokens
        give zeros."""
        mask = token_ids != 0  # (N, W)
        input_ids = (token_ids - 1).clamp(min=0)  # the encoder's own ids; padding columns are masked
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            hidden = self.plm(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state  # (N, W, D)
        if self.pooling == "cls":
            pooled = hidden[:, 0]  # (N, D)
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)  # (N, W, 1)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)  # (N, D)
        return pooled * mask.any(-1, keepdim=True)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        # token_ids: (N, W) shifted ids -> (N, H)
        found, pooled = self.lookup(token_ids) if self.frozen else (None, None)
        if found is None:
            pooled = self.pool(token_ids)
        elif not bool(found.all()):
            missing = ~found
            pooled = pooled.clone()
            pooled[missing] = self.pool(token_ids[missing]).to(pooled.dtype)  # new behaviours, on the fly
        return self.projection(pooled)  # (N, H)


def plm_encoders(model: nn.Module) -> list[UserBertPlmEncoder]:
    """The PLM behaviour encoders inside any UserBERT model (user model, pre-training or task head)."""
    return [m for m in model.modules() if isinstance(m, UserBertPlmEncoder)]


def load_plm_weights(model: nn.Module, name_or_path: str) -> None:
    """Copy the pre-trained encoder weights of ``name_or_path`` into every PLM behaviour encoder of ``model``
    (a newly built user model; a saved one carries them in its own ``model.safetensors``)."""
    from transformers import AutoModel

    source = AutoModel.from_pretrained(str(name_or_path))
    for encoder in plm_encoders(model):
        missing, unexpected = encoder.plm.load_state_dict(source.state_dict(), strict=False)
        if missing:
            raise ValueError(f"{name_or_path} lacks encoder weights {missing[:5]}")
        encoder.set_trainable_layers(encoder.trainable_layers)


__all__ = [
    "PLM_POOLINGS", "UserBertPlmEncoder", "encode_plm_texts", "load_plm_tokenizer", "load_plm_weights",
    "plm_config_fields", "plm_encoders", "read_plm_pooling",
]
