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
With the top k layers tuned (0 < k < L layers), the frozen lower part (embeddings + the first L - k layers) gives
each text the same token states forever: those can be attached instead
(:meth:`UserBertPlmEncoder.attach_state_cache`; ``plm_state_cache.py``), and a step runs only the top k layers,
the pooling and the projection. Rows a cache does not hold (new behaviours at inference) are encoded on the fly.

This file is copied next to saved checkpoints with ``modeling_userbert.py`` and must only import its siblings
relatively.

Shapes: N behaviour texts, W token columns, D the encoder's hidden size, H the user model's hidden size, T the
tokens of a cached vocabulary (padding excluded).
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


class _RowIndex:
    """Exact lookup of shifted token rows (K, W) held by a cache: a sorted hash, then an equality check, so that
    a hash collision never matches. Kept on the CPU."""

    def __init__(self, token_ids: torch.Tensor):
        self.token_ids = token_ids.cpu()  # (K, Wc)
        self.hashes, self.order = torch.sort(_row_hashes(self.token_ids))  # (K,), (K,)

    def __len__(self) -> int:
        return int(self.token_ids.shape[0])

    def find(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(found (N,) bool, rows (N,) long)`` on the CPU: whether each row is held and its cache row (only
        meaningful where found)."""
        asked = token_ids.cpu()  # (N, W)
        query = _row_hashes(asked)  # (N,)
        slot = torch.searchsorted(self.hashes, query).clamp(max=len(self.hashes) - 1)  # (N,)
        rows = self.order[slot]  # (N,) candidate cache rows
        width = max(asked.shape[1], self.token_ids.shape[1])
        candidate = nn.functional.pad(self.token_ids[rows], (0, width - self.token_ids.shape[1]))  # (N, width)
        asked = nn.functional.pad(asked, (0, width - asked.shape[1]))  # (N, width)
        return (self.hashes[slot] == query) & (candidate == asked).all(-1), rows


# ----------------------------------------------------------------------------------------------
# The encoder module.
# ----------------------------------------------------------------------------------------------


class UserBertPlmEncoder(nn.Module):
    """A pre-trained language model as behaviour encoder: tokens -> encoder -> pooling -> projection to H.

    The encoder is built from ``config.plm_config`` (no download; its weights come with the user model's
    ``model.safetensors``, or from :func:`load_plm_weights` when a new model is built). What does not learn runs
    in eval mode (no dropout): the whole encoder when frozen (``plm_trainable_layers=0``), so its pooled vectors
    can be cached, and the embeddings and lower layers when only the top k layers learn, so their token states can
    be cached.

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
        self._cache = None  # (_RowIndex, vectors (K, D)) of a frozen encoder; not saved
        self._state_cache = None  # (_RowIndex, states (T, D), offsets (K,)) of the frozen lower part; not saved
        self.trainable_layers = config.plm_trainable_layers
        self.set_trainable_layers(self.trainable_layers)

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
        if layers != self.trainable_layers:
            self._cache = self._state_cache = None  # cached for another split of the encoder
        self.trainable_layers = layers
        self.plm.requires_grad_(layers == -1)
        if layers > 0:
            for layer in list(self.encoder_layers())[-layers:]:
                layer.requires_grad_(True)
        self.train(self.training)  # what no longer learns runs in eval mode

    @property
    def frozen(self) -> bool:
        return self.trainable_layers == 0

    @property
    def frozen_layers(self) -> int:
        """How many bottom layers are frozen under learning top layers (0 < k < L): L - k; else 0 (nothing to
        replay: the whole encoder is frozen, or learns from its embeddings, or all its layers learn)."""
        count = self.plm.config.num_hidden_layers
        return count - self.trainable_layers if 0 < self.trainable_layers < count else 0

    def frozen_modules(self) -> list[nn.Module]:
        """The frozen lower part under learning top layers: the encoder's modules outside its layer stack
        (embeddings; an unused pooler) and its first ``frozen_layers`` layers."""
        layers = self.encoder_layers()
        outside = [m for m in self.plm.children() if not any(sub is layers for sub in m.modules())]
        return outside + list(layers)[: self.frozen_layers]

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.plm.eval()  # a frozen encoder has no dropout: its vectors are fixed (and cacheable)
        elif self.frozen_layers:
            for module in self.frozen_modules():
                module.eval()  # nor has a frozen lower part: its token states are fixed (and cacheable)
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
        self._cache = (_RowIndex(token_ids), vectors)

    def detach_cache(self) -> None:
        """Drop the attached vectors or token states: every row is encoded again."""
        self._cache = None
        self._state_cache = None

    @property
    def cache_size(self) -> int:
        """Rows the attached cache (vectors or lower-layer states) holds."""
        cache = self._cache or self._state_cache
        return 0 if cache is None else len(cache[0])

    def lookup(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(found (N,) bool, vectors (N, D))`` for rows held by the cache (vectors of other rows are zeros)."""
        n, d = token_ids.shape[0], self.plm.config.hidden_size
        vectors = torch.zeros(n, d, device=token_ids.device)
        if self._cache is None or n == 0:
            return torch.zeros(n, dtype=torch.bool, device=token_ids.device), vectors
        index, cached_vectors = self._cache
        found, rows = index.find(token_ids)  # (N,), (N,)
        vectors[found.to(vectors.device)] = cached_vectors[rows[found]].to(vectors)
        return found.to(token_ids.device), vectors

    # ----- cached token states of the frozen lower part -----
    def attach_state_cache(self, token_ids: torch.Tensor, states: torch.Tensor, offsets: torch.Tensor) -> None:
        """Use the token states the frozen lower part gives the shifted token rows ``token_ids`` (K, W) instead of
        running it: row i's states are ``states[offsets[i] : offsets[i] + n_i]`` (T, D), one per token of the row
        (``n_i`` its tokens, padding excluded). Only with 0 < ``plm_trainable_layers`` < L."""
        if not self.frozen_layers:
            raise ValueError("cached token states need the top k layers tuned (0 < plm_trainable_layers < "
                             f"{self.plm.config.num_hidden_layers}), not {self.trainable_layers}")
        lengths = (token_ids != 0).sum(-1)  # (K,)
        if (offsets.shape != lengths.shape or states.shape[-1] != self.plm.config.hidden_size
                or int(lengths.sum()) != states.shape[0]):
            raise ValueError(f"state cache shapes do not fit: token ids {tuple(token_ids.shape)}, states "
                             f"{tuple(states.shape)}, offsets {tuple(offsets.shape)}")
        self._state_cache = (_RowIndex(token_ids), states, offsets.long())

    def lower_states(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token states (N, W, D) output by the frozen lower part (embeddings + ``frozen_layers`` layers) for
        shifted token rows (N, W), as the full encoder computes them (its ``hidden_states``); padding columns hold
        whatever the encoder puts there (they never reach a token's state nor the pooling)."""
        mask = token_ids != 0  # (N, W)
        with torch.no_grad():
            out = self.plm(input_ids=(token_ids - 1).clamp(min=0), attention_mask=mask.long(),
                           output_hidden_states=True)
        return out.hidden_states[self.frozen_layers]  # (N, W, D)

    def top_layers(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Run the learning top layers on lower-part token states (N, W, D) with the token mask (N, W): the last
        hidden state (N, W, D). The attention mask is built as the encoder builds it
        (``create_bidirectional_mask``), so padding is treated exactly as in the full encoder."""
        from transformers.masking_utils import create_bidirectional_mask

        attention = create_bidirectional_mask(config=self.plm.config, inputs_embeds=states,
                                              attention_mask=mask.long())  # (N, 1, W, W) or None (no padding)
        hidden = states
        for layer in list(self.encoder_layers())[self.frozen_layers :]:
            out = layer(hidden, attention)
            hidden = out[0] if isinstance(out, tuple) else out  # (N, W, D)
        return hidden

    def _gather_states(self, rows: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Cached token states of cache rows ``rows`` (n,) laid out on their token mask (n, W): (n, W, D), zeros in
        padding columns."""
        _, states, offsets = self._state_cache
        mask = mask.cpu()
        within = mask.long().cumsum(1) - 1  # (n, W) the token's place in its row
        index = (offsets[rows].unsqueeze(1) + within)[mask]  # (tokens,) rows of ``states``
        out = torch.zeros(*mask.shape, states.shape[-1], dtype=torch.float32)  # (n, W, D)
        out[mask] = states[index].float()
        return out

    def _pool_from_states(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Pooled outputs (N, D) of shifted token rows (N, W): rows the state cache holds run the top layers only,
        the others (new behaviours) the whole encoder; rows without tokens give zeros."""
        device, mask = token_ids.device, token_ids != 0  # (N, W)
        found, rows = self._state_cache[0].find(token_ids)  # (N,), (N,) on the CPU
        cached = found & mask.any(-1).cpu()  # (N,) empty rows need no layers
        missing = ~found
        pooled = torch.zeros(token_ids.shape[0], self.plm.config.hidden_size, device=device)  # (N, D)
        if bool(cached.any()):
            states = self._gather_states(rows[cached], mask[cached.to(device)])  # (n, W, D)
            dtype = next(self.plm.parameters()).dtype
            keep = mask[cached.to(device)]  # (n, W)
            hidden = self.top_layers(states.to(device, dtype), keep)  # (n, W, D)
            pooled[cached.to(device)] = self._pool_hidden(hidden, keep).to(pooled.dtype)
        if bool(missing.any()):
            pooled[missing.to(device)] = self.pool(token_ids[missing.to(device)]).to(pooled.dtype)
        return pooled

    # ----- encoding -----
    def _pool_hidden(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pool token states (N, W, D) over the token mask (N, W): (N, D); rows without tokens give zeros."""
        if self.pooling == "cls":
            pooled = hidden[:, 0]  # (N, D)
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)  # (N, W, 1)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)  # (N, D)
        return pooled * mask.any(-1, keepdim=True)

    def pool(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Pooled encoder outputs (N, D) of shifted token rows (N, W), without any cache; rows without tokens
        give zeros."""
        mask = token_ids != 0  # (N, W)
        input_ids = (token_ids - 1).clamp(min=0)  # the encoder's own ids; padding columns are masked
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            hidden = self.plm(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state  # (N, W, D)
        return self._pool_hidden(hidden, mask)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        # token_ids: (N, W) shifted ids -> (N, H)
        if self._state_cache is not None:
            return self.projection(self._pool_from_states(token_ids))  # (N, H)
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
