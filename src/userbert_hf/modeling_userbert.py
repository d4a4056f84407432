"""UserBERT user models and pre-training heads (Wu et al., "UserBERT: Contrastive User Model Pre-training").

Read top to bottom: small modules (additive attention, self-attention, text encoder) -> behaviour encoder ->
behaviour context encoders -> aggregators -> ``UserBertPreTrainedModel`` -> ``UserBertModel`` -> pure loss
functions -> ``UserBertForPreTraining``. Downstream heads (``UserBertFor<Task>``) follow.

This file (and ``configuration_userbert.py``) is copied next to saved checkpoints so that
``AutoModel.from_pretrained(dir, trust_remote_code=True)`` works without the package: it must only import
its siblings relatively.

Shapes: B users, L behaviour positions, W words per behaviour, U distinct behaviours in a batch table,
H hidden size.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.dynamic_module_utils import custom_object_save
from transformers.utils import ModelOutput

from .configuration_userbert import UserBertConfig, own_auto_map
from .plm_encoder import UserBertPlmEncoder


def _masked_fill_min(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fill positions where ``mask`` is False with the dtype's minimum (a fully masked row gives a uniform
    softmax instead of NaN)."""
    return scores.masked_fill(~mask, torch.finfo(scores.dtype).min)


def compact_left(index: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the valid entries of each row to the left, keeping their order: (B, L) ``index`` and bool ``mask``
    -> the same with dropped behaviours (e.g. PTUM's masked ones) removed instead of leaving holes."""
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices  # valid first, order kept
    return index.gather(1, order), mask.gather(1, order)


class UserBertAdditiveAttention(nn.Module):
    """Additive (query-vector) attention pooling: ``a_i = softmax(q^T tanh(W x_i + b))``, ``out = sum a_i x_i``."""

    def __init__(self, input_size: int, query_size: int):
        super().__init__()
        self.projection = nn.Linear(input_size, query_size)
        self.query = nn.Linear(query_size, 1, bias=False)

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # inputs: (..., N, D); mask: (..., N) bool
        scores = self.query(torch.tanh(self.projection(inputs))).squeeze(-1)  # (..., N)
        weights = torch.softmax(_masked_fill_min(scores, mask), dim=-1)
        weights = weights * mask  # exact zeros on padding, also in fully masked rows
        return torch.einsum("...n,...nd->...d", weights, inputs)  # (..., D)


class UserBertSelfAttention(nn.Module):
    """Multi-head self-attention with a key padding mask (the NRMS building block), optionally causal.

    ``dropout`` is the dropout on the attention probabilities (``config.attention_probs_dropout_prob``). At 0,
    training runs PyTorch's fused scaled_dot_product_attention kernel (on CPU the flash kernel); above 0, CPU
    training falls back to the math path (scores, softmax, a Bernoulli mask, two batched matmuls).
    """

    def __init__(
        self, hidden_size: int, num_heads: int, dropout: float, output_projection: bool = False, causal: bool = False
    ):
        super().__init__()
        self.causal = causal  # each position attends only to itself and earlier positions (SASRec)
        self.num_heads = num_heads
        self.head_size = hidden_size // num_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.output = nn.Linear(hidden_size, hidden_size) if output_projection else nn.Identity()
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # hidden: (N, S, H); mask: (N, S) bool
        n, s, h = hidden.shape
        # One (H -> 3H) projection instead of three; the parameters stay query/key/value (checkpoint keys).
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])  # (3H, H)
        bias = torch.cat([self.query.bias, self.key.bias, self.value.bias])  # (3H,)
        qkv = F.linear(hidden, weight, bias).view(n, s, 3, self.num_heads, self.head_size)  # (N, S, 3, heads, hs)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (N, heads, S, head_size)
        # Fused attention (the CPU flash kernel without attention dropout; PyTorch picks the math path with
        # attention dropout on CPU and fused kernels on GPUs). A row whose keys are all padding gives zeros, which callers mask anyway.
        context = F.scaled_dot_product_attention(
            q, k, v, attn_mask=self.attention_mask(mask), dropout_p=self.dropout.p if self.training else 0.0
        )  # (N, heads, S, head_size)
        context = context.transpose(1, 2).reshape(n, s, h)  # (N, S, H)
        return self.output(context)

    def attention_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """Boolean (N, 1, 1, S) key mask from the (N, S) padding mask, or (N, 1, S, S) when causal."""
        allowed = mask[:, None, None, :]  # (N, 1, 1, S)
        if self.causal:
            s = mask.shape[-1]
            allowed = allowed & torch.ones(s, s, dtype=torch.bool, device=mask.device).tril()  # (N, 1, S, S)
        return allowed


class UserBertTransformerLayer(nn.Module):
    """Post-LayerNorm Transformer encoder layer (BERT4Rec)."""

    def __init__(self, config: UserBertConfig):
        super().__init__()
        h = config.hidden_size
        self.attention = UserBertSelfAttention(
            h, config.num_attention_heads, config.attention_probs_dropout_prob, output_projection=True,
            causal=config.causal_attention,
        )
        self.attention_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.feed_forward = nn.Sequential(
            nn.Linear(h, config.intermediate_size), nn.GELU(), nn.Linear(config.intermediate_size, h)
        )
        self.output_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.attention_norm(hidden + self.dropout(self.attention(hidden, mask)))
        return self.output_norm(hidden + self.dropout(self.feed_forward(hidden)))


class UserBertTextEncoder(nn.Module):
    """Encodes a behaviour text (word ids) into a vector: word embeddings -> CNN (NAML) or word self-attention
    (NRMS) -> additive attention over words."""

    def __init__(self, config: UserBertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(
            config.word_vocab_size, config.word_embedding_size, padding_idx=config.word_pad_token_id
        )
        self.kind = config.text_encoder
        if self.kind == "cnn":
            self.cnn = nn.Conv1d(
                config.word_embedding_size, config.hidden_size, config.cnn_window_size,
                padding=config.cnn_window_size // 2,
            )
        else:
            self.word_projection = (
                nn.Linear(config.word_embedding_size, config.hidden_size)
                if config.word_embedding_size != config.hidden_size
                else nn.Identity()
            )
            self.word_attention = UserBertSelfAttention(
                config.hidden_size, config.num_attention_heads, config.attention_probs_dropout_prob
            )
        self.word_pooling = UserBertAdditiveAttention(config.hidden_size, config.attention_query_size)
        self.dropout = nn.Dropout(config.dropout)

    # Texts are encoded independently of each other, so rows can be encoded in any grouping. A table's texts are
    # padded to its longest one (titles: 10 words on average, 30 at most); on CPU, rows sorted by length are
    # encoded in chunks cut to each chunk's longest text, which skips most padding words (attention is quadratic
    # in the width). Accelerators get one padded batch: reading the lengths there would wait for the device.
    length_chunk_rows = 256

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        # token_ids: (N, W) -> (N, H)
        n, width = token_ids.shape
        if token_ids.device.type != "cpu" or n < 2 * self.length_chunk_rows or width <= 1:
            return self.encode_padded(token_ids)
        columns = torch.arange(1, width + 1, device=token_ids.device)
        lengths = ((token_ids != 0) * columns).amax(1)  # (N,) 1 + last word column, 0 for no words
        order = torch.argsort(lengths, stable=True)  # (N,) shortest first
        chunks = order.split(max(self.length_chunk_rows, -(-n // 8)))
        # Within a chunk the last row is the longest.
        parts = [self.encode_padded(token_ids[rows, : max(int(lengths[rows[-1]]), 1)]) for rows in chunks]
        return torch.cat(parts).index_select(0, torch.argsort(order))  # (N, H) back in table order

    def encode_padded(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Encode (N, W) word ids as one padded batch -> (N, H)."""
        word_mask = token_ids != 0  # (N, W)
        words = self.dropout(self.word_embeddings(token_ids))  # (N, W, E)
        if self.kind == "cnn":
            hidden = F.relu(self.cnn(words.transpose(1, 2))).transpose(1, 2)  # (N, W, H)
        else:
            hidden = self.word_attention(self.word_projection(words), word_mask)  # (N, W, H)
        hidden = self.dropout(hidden)
        return self.word_pooling(hidden, word_mask)  # (N, H)


class UserBertBehaviorEncoder(nn.Module):
    """Turns behaviours into vectors: an ID embedding table (``behavior_type="id"``), a text encoder over
    the behaviour's word ids (``behavior_type="text"``) or a pre-trained language model over its tokens
    (``behavior_type="plm"``, ``plm_encoder.py``)."""

    def __init__(self, config: UserBertConfig):
        super().__init__()
        self.behavior_type = config.behavior_type
        if self.behavior_type == "id":
            self.behavior_embeddings = nn.Embedding(
                config.behavior_vocab_size, config.hidden_size, padding_idx=config.pad_token_id
            )
        elif self.behavior_type == "plm":
            self.plm_encoder = UserBertPlmEncoder(config)
        else:
            self.text_encoder = UserBertTextEncoder(config)

    def forward(self, behavior_ids: torch.Tensor | None = None, behavior_token_ids: torch.Tensor | None = None):
        """``behavior_ids``: (...,) ids for ID behaviours; ``behavior_token_ids``: (..., W) for text behaviours.
        Returns (..., H)."""
        if self.behavior_type == "id":
            if behavior_ids is None:
                raise ValueError("This UserBERT model has ID behaviours: pass behavior_ids")
            return self.behavior_embeddings(behavior_ids)
        if behavior_token_ids is None:
            raise ValueError("This UserBERT model has text behaviours: pass behavior_token_ids (word ids per behaviour)")
        lead = behavior_token_ids.shape[:-1]
        flat = behavior_token_ids.reshape(-1, behavior_token_ids.shape[-1])  # (N, W)
        encoder = self.plm_encoder if self.behavior_type == "plm" else self.text_encoder
        return encoder(flat).reshape(*lead, -1)  # (..., H)


class UserBertContextEncoder(nn.Module):
    """Behaviour context encoder: none, multi-head self-attention (NRMS), Transformer (BERT4Rec), GRU
    (GRU4Rec, LSTUR) or CNN over behaviours. Padded positions never influence valid ones."""

    def __init__(self, config: UserBertConfig):
        super().__init__()
        self.kind = config.context_encoder
        h = config.hidden_size
        if self.kind == "self_attention":
            self.self_attention = UserBertSelfAttention(
                h, config.num_attention_heads, config.attention_probs_dropout_prob, causal=config.causal_attention
            )
        elif self.kind == "transformer":
            self.layers = nn.ModuleList(UserBertTransformerLayer(config) for _ in range(config.num_hidden_layers))
        elif self.kind == "gru":
            self.gru = nn.GRU(h, h, num_layers=config.num_hidden_layers, batch_first=True)
        elif self.kind == "cnn":
            self.cnn = nn.Conv1d(h, h, config.cnn_window_size, padding=config.cnn_window_size // 2)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # hidden: (B, L, H) with padded positions zeroed; mask: (B, L) bool; returns (B, L, H)
        if self.kind == "none":
            return hidden
        if self.kind == "self_attention":
            hidden = self.self_attention(hidden, mask)
        elif self.kind == "transformer":
            for layer in self.layers:
                hidden = layer(hidden, mask)
        elif self.kind == "gru":
            hidden = self.run_gru(hidden, mask)
        elif self.kind == "cnn":
            hidden = F.relu(self.cnn(hidden.transpose(1, 2))).transpose(1, 2)
        return self.dropout(hidden) * mask.unsqueeze(-1)

    # Share of valid positions under which, on CPU, a packed GRU (which skips padding steps) beats the padded one.
    gru_packing_below = 0.6

    def run_gru(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """GRU states (B, L, H) at the valid positions (padded positions are garbage, zeroed by the caller).

        Behaviours are left-aligned and the GRU runs forward, so trailing padding never changes the states of
        valid positions and the padded batch can run as it is: this is the path on accelerators, where packing
        would read the lengths on the host and stall the device. On CPU, ragged batches (short sequences padded
        to a long one) run packed, which skips the padding steps (3-4x faster on Beauty-like lengths).
        """
        # torch.export / torch.compile trace the padded path: packing reads the lengths (a data-dependent shape).
        if hidden.device.type == "cpu" and not (torch.compiler.is_exporting() or torch.compiler.is_compiling()):
            lengths = mask.sum(-1)  # (B,)
            if int(lengths.sum()) < self.gru_packing_below * mask.numel():
                packed = nn.utils.rnn.pack_padded_sequence(
                    hidden, lengths.clamp(min=1), batch_first=True, enforce_sorted=False
                )
                output, _ = self.gru(packed)
                return nn.utils.rnn.pad_packed_sequence(output, batch_first=True, total_length=mask.shape[1])[0]
        return self.gru(hidden)[0]  # (B, L, H)


class UserBertAggregator(nn.Module):
    """Summarises contextual behaviour states into one user embedding: attention, mean, max or last."""

    def __init__(self, config: UserBertConfig):
        super().__init__()
        self.kind = config.aggregator
        if self.kind == "attention":
            self.attention = UserBertAdditiveAttention(config.hidden_size, config.attention_query_size)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # hidden: (B, L, H); mask: (B, L) bool; returns (B, H); users without behaviours get zeros
        has_any = mask.any(-1, keepdim=True)  # (B, 1)
        if self.kind == "attention":
            pooled = self.attention(hidden, mask)
        elif self.kind == "mean":
            pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(-1, keepdim=True).clamp(min=1)
        elif self.kind == "max":
            pooled = hidden.masked_fill(~mask.unsqueeze(-1), torch.finfo(hidden.dtype).min).max(1).values
        else:  # last valid position (behaviours are left-aligned, oldest first)
            last = (mask.sum(-1) - 1).clamp(min=0)  # (B,)
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return torch.where(has_any, pooled, torch.zeros_like(pooled))


@dataclass
class UserBertModelOutput(ModelOutput):
    """Output of [`UserBertModel`].

    Args:
        last_hidden_state: (B, L, H) contextual behaviour states; zeros at padded positions.
        pooler_output: (B, H) the pooled user embedding (zeros for a user without behaviours); the same tensor as
            ``user_embedding``, under the name transformers' feature extraction expects.
        hidden_states: with ``output_hidden_states=True``, a tuple of (B, L, H): the context encoder's input
            (behaviour vectors + positions, padding zeroed), then the output of each context layer (Transformer
            layers; the one self-attention, GRU or CNN block); the last entry is ``last_hidden_state``.
        attentions: with ``output_attentions=True`` and an attention context encoder (``self_attention``,
            ``transformer``), a tuple of (B, heads, L, L) attention weights per layer (padded keys get 0); ``None``
            for GRU, CNN and no context encoder.
        behavior_embeddings: (B, L, H) behaviour-encoder outputs (before position embeddings and masking).
        user_embedding: (B, H) the pooled user embedding (the same tensor as ``pooler_output``).
        attention_mask: (B, L) bool mask of valid behaviours.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    behavior_embeddings: torch.FloatTensor | None = None
    user_embedding: torch.FloatTensor | None = None
    attention_mask: torch.BoolTensor | None = None


def _attention_weights(attention: "UserBertSelfAttention", hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The softmax weights (N, heads, S, S) that ``attention`` gives for input ``hidden`` (N, S, H) and key mask
    (N, S), recomputed from its query/key projections (the forward pass itself may use a fused kernel)."""
    n, s, _ = hidden.shape
    q = attention.query(hidden).view(n, s, attention.num_heads, attention.head_size).transpose(1, 2)
    k = attention.key(hidden).view(n, s, attention.num_heads, attention.head_size).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / attention.head_size**0.5  # (N, heads, S, S)
    allowed = attention.attention_mask(mask)  # (N, 1, 1 or S, S)
    return torch.softmax(_masked_fill_min(scores, allowed), dim=-1) * allowed


def _context_encode_with_states(encoder: "UserBertContextEncoder", hidden: torch.Tensor, mask: torch.Tensor):
    """Run ``encoder`` and also return ``(hidden_states, attentions)`` (see ``UserBertModelOutput``), read with
    forward hooks on its layers so the encoder modules stay as they are."""
    blocks = list(encoder.layers) if encoder.kind == "transformer" else []
    if encoder.kind == "self_attention":
        blocks = [encoder.self_attention]
    inputs, outputs = [], []

    def record(module, args, output):  # returns None: the output is kept as it is
        inputs.append(args[0])
        outputs.append(output)

    handles = [block.register_forward_hook(record) for block in blocks]
    try:
        contextual = encoder(hidden, mask)  # (B, L, H)
    finally:
        for handle in handles:
            handle.remove()
    hidden_states = (hidden, *outputs[:-1], contextual) if encoder.kind == "transformer" else (hidden, contextual)
    if encoder.kind == "none":
        hidden_states = (hidden,)
    attentions = None
    if blocks:
        modules = [layer.attention for layer in blocks] if encoder.kind == "transformer" else blocks
        attentions = tuple(_attention_weights(m, x, mask) for m, x in zip(modules, inputs))
    return contextual, hidden_states, attentions


class UserBertPreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading for UserBERT models."""

    config_class = UserBertConfig
    base_model_prefix = "userbert"
    main_input_name = "behavior_ids"
    supports_gradient_checkpointing = False

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, allow_pickle: bool = False, **kwargs):
        """Load as transformers does, but only from safetensors: pickle weight files (``pytorch_model.bin``) can run
        code when loaded and are refused unless ``allow_pickle=True`` is passed explicitly."""
        if not allow_pickle:
            if kwargs.get("use_safetensors") is False:
                raise ValueError("use_safetensors=False loads pickle weights: pass allow_pickle=True to accept that risk")
            kwargs["use_safetensors"] = True
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except OSError as err:
            if allow_pickle or "safetensors" not in str(err):
                raise
            raise OSError(
                f"{pretrained_model_name_or_path} has no model.safetensors; UserBERT loads only safetensors weights. "
                "If you trust a pickle checkpoint (pytorch_model.bin), pass allow_pickle=True."
            ) from err

    def save_pretrained(self, save_directory, *args, is_main_process: bool = True, push_to_hub: bool = False, **kwargs):
        """Save as transformers does, with this package's model code next to the weights and an ``auto_map`` that
        names only that code: ``AutoConfig``, ``AutoModel`` (the base user model, from any UserBERT checkpoint,
        pre-training or fine-tuned) and the class's own auto class (a head's, e.g. ``AutoModelForCausalLM`` for
        next-behaviour prediction; an inherited head's entry is dropped). Entries
        inherited from a loaded config that point elsewhere (``"org/repo--modeling_x.X"``) are dropped, so
        ``from_pretrained(folder, trust_remote_code=True)`` only ever runs the code saved in the folder."""
        if push_to_hub:  # save completely first, then upload the same folder content through push_to_hub
            named = inspect.signature(PreTrainedModel.save_pretrained).parameters
            hub_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k not in named}
            self.save_pretrained(save_directory, *args, is_main_process=is_main_process, **kwargs)
            if not is_main_process:
                return None
            repo_id = hub_kwargs.pop("repo_id", os.path.basename(os.path.normpath(str(save_directory))))
            return self.push_to_hub(repo_id, **hub_kwargs)
        self.config.auto_map = {  # model auto classes name this class only (set below and by custom_object_save)
            **{k: v for k, v in own_auto_map(getattr(self.config, "auto_map", None)).items()
               if not k.startswith("AutoModel")},
            "AutoConfig": "configuration_userbert.UserBertConfig",
            "AutoModel": "modeling_userbert.UserBertModel",
        }
        if is_main_process:
            os.makedirs(save_directory, exist_ok=True)
            custom_object_save(self, save_directory)  # this file and its relative imports; auto_map set above
        return super().save_pretrained(save_directory, *args, is_main_process=is_main_process, **kwargs)

    def freeze_user_model(self) -> None:
        """Stop training the user model (``self.userbert``, behaviour encoder included) of a task head: only the
        head's own parameters learn. News and next-behaviour heads have none (candidates are scored with the
        user model's behaviour encoder), CTR keeps its bias, user classification its classifier (a linear probe)."""
        if not hasattr(self, "userbert"):
            raise AttributeError(f"{type(self).__name__} is the user model itself; freeze it from a task head")
        for param in self.userbert.parameters():
            param.requires_grad = False

    def _init_weights(self, module):
        # ``initializer_gain`` scales every random draw (Glorot gain, embedding std); norms and biases stay
        # constant. Each tensor is drawn once, so with one seed a model at gain g is g x the model at gain 1.
        gain = getattr(self.config, "initializer_gain", 1.0)
        if isinstance(module, nn.Embedding) and gain != 1.0:
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range * gain)
            if module.padding_idx is not None:
                init.zeros_(module.weight[module.padding_idx])
            return
        super()._init_weights(module)
        # Glorot-uniform dense and convolution weights (the Keras defaults of the paper's implementation): the
        # dot-product matchers need embeddings of a usable scale from the first step.
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            init.xavier_uniform_(module.weight, gain=gain)
        if isinstance(module, nn.GRU):
            for name, param in module.named_parameters():
                if "weight" in name:
                    init.xavier_uniform_(param, gain=gain)
                else:
                    init.zeros_(param)


class UserBertModel(UserBertPreTrainedModel):
    """A user model: behaviour encoder + behaviour context encoder + aggregator (Section 3.1 of the paper).

    Inputs come in two layouts:

    * per position: ``behavior_ids`` (B, L) for ID behaviours or ``behavior_token_ids`` (B, L, W) for text;
    * a batch table of distinct behaviours plus an index: ``behavior_ids`` (U,) or ``behavior_token_ids``
      (U, W) and ``behavior_index`` (B, L) into the table, so a behaviour shared by many users of the batch is
      encoded once (this is what ``UserBertCollator`` produces).

    ``attention_mask`` (B, L) marks valid behaviours (1) and padding (0); behaviours are left-aligned, oldest
    first. ``masked_positions`` (B, L) replaces behaviours by a learned mask embedding (masked behaviour
    prediction).

    Example:

    ```python
    >>> import torch
    >>> from userbert_hf import UserBertConfig, UserBertModel
    >>> model = UserBertModel(UserBertConfig.from_preset("gru4rec", behavior_vocab_size=100, hidden_size=32))
    >>> out = model(behavior_ids=torch.tensor([[5, 7, 9, 0]]), attention_mask=torch.tensor([[1, 1, 1, 0]]))
    >>> out.user_embedding.shape
    torch.Size([1, 32])
    ```
    """

    def __init__(self, config: UserBertConfig):
        super().__init__(config)
        self.behavior_encoder = UserBertBehaviorEncoder(config)
        self.position_embeddings = (
            nn.Embedding(config.max_behaviors, config.hidden_size) if config.use_position_embeddings else None
        )
        self.mask_embedding = nn.Embedding(1, config.hidden_size)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.context_encoder = UserBertContextEncoder(config)
        self.aggregator = UserBertAggregator(config)
        self.post_init()

    # ----- building blocks used by the pre-training and downstream heads -----
    def encode_behaviors(self, behavior_ids=None, behavior_token_ids=None) -> torch.Tensor:
        """Behaviour-encoder vectors for any leading shape: (...,) ids or (..., W) word ids -> (..., H)."""
        return self.behavior_encoder(behavior_ids=behavior_ids, behavior_token_ids=behavior_token_ids)

    def encode_sequences(
        self,
        behavior_embeddings: torch.Tensor,
        attention_mask: torch.Tensor,
        masked_positions: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> UserBertModelOutput:
        """Context-encode and pool behaviour vectors (B, L, H) with mask (B, L) into a ``UserBertModelOutput``."""
        mask = attention_mask.bool()
        batch, length, _ = behavior_embeddings.shape
        if length > self.config.max_behaviors:
            raise ValueError(
                f"Behaviour sequences have {length} positions but config.max_behaviors={self.config.max_behaviors};"
                " truncate to the most recent behaviours when loading the data"
            )
        hidden = behavior_embeddings
        if masked_positions is not None:
            mask_vector = self.mask_embedding.weight[0].to(hidden.dtype)  # (H,)
            hidden = torch.where(masked_positions.bool().unsqueeze(-1), mask_vector, hidden)
        if self.position_embeddings is not None:
            # Positions count back from the most recent behaviour, so appending padding changes nothing. Causal
            # models count forward from the oldest one, so a prefix keeps the positions it has in the sequence.
            steps = torch.arange(length, device=mask.device)  # (L,)
            if self.config.causal_attention:
                positions = steps.expand(batch, length)  # (B, L)
            else:
                lengths = mask.sum(-1, keepdim=True)  # (B, 1)
                positions = (lengths - 1 - steps).clamp(min=0)  # (B, L)
            hidden = hidden + self.position_embeddings(positions)
        hidden = self.embedding_dropout(hidden) * mask.unsqueeze(-1)  # (B, L, H), padding zeroed
        if output_hidden_states or output_attentions:
            contextual, hidden_states, attentions = _context_encode_with_states(self.context_encoder, hidden, mask)
        else:
            contextual, hidden_states, attentions = self.context_encoder(hidden, mask), None, None  # (B, L, H)
        user_embedding = self.aggregator(contextual, mask)  # (B, H)
        return UserBertModelOutput(
            last_hidden_state=contextual,
            pooler_output=user_embedding,
            hidden_states=hidden_states if output_hidden_states else None,
            attentions=attentions if output_attentions else None,
            behavior_embeddings=behavior_embeddings,
            user_embedding=user_embedding,
            attention_mask=mask,
        )

    def encode(
        self,
        histories,
        processor=None,
        batch_size: int = 32,
        normalize_embeddings: bool = False,
        show_progress_bar: bool = False,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        timestamps=None,
        device: str | torch.device | None = None,
    ):
        """User embeddings of raw-id histories, in the style of sentence-transformers' ``encode``.

        Args:
            histories: lists of raw behaviour ids (oldest first unless ``timestamps`` are given); one flat list is
                one user and gives a 1-D result.
            processor: the model's ``UserBertProcessor``; default: the one saved next to the model
                (``AutoProcessor.from_pretrained(self.name_or_path, trust_remote_code=True)``, the folder or Hub
                repository this model was loaded from, whose code was already trusted to load the model).
            batch_size: users per forward pass.
            normalize_embeddings: L2-normalise each embedding (dot product = cosine similarity).
            show_progress_bar: show a tqdm bar over batches.
            convert_to_numpy: return a numpy array (float32) instead of a tensor.
            convert_to_tensor: return one torch tensor (overrides ``convert_to_numpy``).
            timestamps: optional times aligned with ``histories``, used to order each user's behaviours.
            device: where to run; default: the model's device.

        Returns:
            (N, H) user embeddings (or (H,) for one flat history), in the order of ``histories``. Users none of
            whose ids the vocabulary knows get zeros (the processor counts the unknown ids).

        Example:

        ```python
        >>> model = AutoModel.from_pretrained("outputs/userbert-pretrained", trust_remote_code=True)  # doctest: +SKIP
        >>> model.encode([["1", "50", "296"], ["2", "3"]], normalize_embeddings=True).shape  # doctest: +SKIP
        (2, 64)
        ```
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if processor is None:
            processor = self._saved_processor()
        processor.check_model_config(self.config)
        histories = list(histories)
        single = bool(histories) and all(isinstance(h, (str, int)) for h in histories)
        if single:
            histories, timestamps = [histories], None if timestamps is None else [timestamps]
        device = torch.device(device) if device is not None else self.device
        was_training = self.training
        self.eval()
        starts = range(0, len(histories), batch_size)
        if show_progress_bar:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="Batches", total=len(starts))
        embeddings = []
        try:
            with torch.no_grad():
                for start in starts:
                    times = None if timestamps is None else timestamps[start : start + batch_size]
                    inputs = processor(histories[start : start + batch_size], timestamps=times, return_tensors="pt")
                    batch = self(**{k: v.to(device) for k, v in inputs.items()}).user_embedding  # (b, H)
                    if normalize_embeddings:
                        batch = F.normalize(batch, p=2, dim=-1)
                    embeddings.append(batch)
        finally:
            self.train(was_training)
        out = torch.cat(embeddings) if embeddings else torch.zeros(0, self.config.hidden_size, device=device)
        out = out[0] if single else out  # (N, H) or (H,)
        if convert_to_tensor or not convert_to_numpy:
            return out
        return out.float().cpu().numpy()

    def _saved_processor(self):
        """The processor saved next to this model (cached on first use)."""
        if getattr(self, "_processor", None) is None:
            if not self.name_or_path:
                raise ValueError("this model was not loaded from a folder or the Hub: pass processor=UserBertProcessor(...)")
            from transformers import AutoProcessor

            try:
                processor = AutoProcessor.from_pretrained(self.name_or_path, trust_remote_code=True)
            except (OSError, ValueError) as error:
                processor = error
            if type(processor).__name__ != "UserBertProcessor":  # an error, or e.g. a bare word tokenizer
                raise ValueError(
                    f"no UserBertProcessor (processor_config.json) next to the model in {self.name_or_path} "
                    f"({processor!r:.200}): pass processor=UserBertProcessor.from_pretrained(...)"
                )
            self._processor = processor
        return self._processor

    def get_input_embeddings(self) -> nn.Embedding:
        """The behaviour id embedding (ID behaviours) or the word embedding of the text encoder (text behaviours)."""
        if self.config.behavior_type == "id":
            return self.behavior_encoder.behavior_embeddings
        if self.config.behavior_type == "plm":
            return self.behavior_encoder.plm_encoder.plm.get_input_embeddings()
        return self.behavior_encoder.text_encoder.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        if self.config.behavior_type == "id":
            self.behavior_encoder.behavior_embeddings = value
        else:
            self.behavior_encoder.text_encoder.word_embeddings = value

    def get_behavior_embeddings(self, behavior_ids=None, behavior_token_ids=None, behavior_index=None):
        """Per-position behaviour vectors (B, L, H) from either input layout (see the class docstring)."""
        table = self.encode_behaviors(behavior_ids, behavior_token_ids)
        if behavior_index is None:
            return table
        return table[behavior_index]  # (B, L, H)

    def forward(
        self,
        behavior_ids: torch.LongTensor | None = None,
        behavior_token_ids: torch.LongTensor | None = None,
        behavior_index: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        masked_positions: torch.BoolTensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> UserBertModelOutput | tuple:
        embeddings = self.get_behavior_embeddings(behavior_ids, behavior_token_ids, behavior_index)  # (B, L, H)
        if attention_mask is None:
            if behavior_index is not None:
                raise ValueError("attention_mask is required with behavior_index")
            source = behavior_ids if behavior_ids is not None else behavior_token_ids[..., 0]
            attention_mask = source != self.config.pad_token_id
        output = self.encode_sequences(
            embeddings,
            attention_mask,
            masked_positions,
            output_hidden_states=bool(output_hidden_states if output_hidden_states is not None
                                      else self.config.output_hidden_states),
            output_attentions=bool(output_attentions if output_attentions is not None
                                   else self.config.output_attentions),
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()


# ----------------------------------------------------------------------------------------------
# Contrastive losses: pure functions of scores and embeddings, testable without a model.
# ----------------------------------------------------------------------------------------------


def contrastive_loss_from_scores(
    scores: torch.Tensor, normalizer: torch.Tensor | float | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax cross-entropy where column 0 of ``scores`` (N, 1 + negatives) is the positive.

    Returns ``(loss, mean_loss, accuracy)``: ``loss`` is the summed cross-entropy divided by ``normalizer``
    (default N, i.e. the mean; the trainer passes the item count of the whole accumulated/global batch so
    gradient accumulation and data parallelism give the gradients of one large batch), ``mean_loss`` the
    detached mean for logging and ``accuracy`` the share of rows whose positive scores highest.

    Example:

    ```python
    >>> loss, mean, acc = contrastive_loss_from_scores(torch.tensor([[2.0, 0.0, 0.0]]))
    >>> round(float(mean), 4), float(acc)
    (0.2395, 1.0)
    ```
    """
    if scores.shape[0] == 0:
        zero = scores.sum() * 0.0
        return zero, zero.detach(), zero.detach()
    targets = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    summed = F.cross_entropy(scores.float(), targets, reduction="sum")
    if normalizer is None:
        normalizer = scores.shape[0]
    loss = summed / normalizer
    mean_loss = (summed / scores.shape[0]).detach()
    accuracy = (scores.argmax(-1) == 0).float().mean().detach()
    return loss, mean_loss, accuracy


def matching_scores(queries: torch.Tensor, candidates: torch.Tensor, similarity: str = "dot", temperature: float = 1.0) -> torch.Tensor:
    """Scores of each query (..., H) against its candidates (..., C, H): the dot product (the paper's matcher), or
    the cosine, divided by ``temperature``. Returns (..., C).

    Example:

    ```python
    >>> q, c = torch.tensor([[3.0, 0.0]]), torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    >>> matching_scores(q, c).tolist(), matching_scores(q, c, "cosine", 0.5).tolist()
    ([[3.0, 0.0]], [[2.0, 0.0]])
    ```
    """
    if similarity == "cosine":
        queries, candidates = F.normalize(queries, dim=-1), F.normalize(candidates, dim=-1)
    return torch.einsum("...h,...ch->...c", queries, candidates) / temperature


def uniformity_loss(embeddings: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Wang & Isola's (2020) uniformity of L2-normalised embeddings (N, H): ``log mean_{i != j} exp(-t |u_i - u_j|^2)``.
    Lower is more uniform on the sphere; it penalises a direction shared by all embeddings (collapse) without
    depending on their scale. Zero rows (users without behaviours) are left out; fewer than two rows give 0.

    Example:

    ```python
    >>> round(float(uniformity_loss(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))), 4)  # antipodal: log(exp(-8))
    -8.0
    ```
    """
    embeddings = embeddings[embeddings.norm(dim=-1) > 0]
    n = embeddings.shape[0]
    if n < 2:
        return embeddings.sum() * 0.0
    unit = F.normalize(embeddings.float(), dim=-1)
    squared = torch.cdist(unit, unit).pow(2)  # (N, N)
    off_diagonal = squared[~torch.eye(n, dtype=torch.bool, device=unit.device)]
    return torch.logsumexp(-t * off_diagonal, 0) - torch.log(torch.tensor(float(off_diagonal.numel())))


def _gather_with_gradients(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All ranks' rows of ``tensor`` (N, H), with gradients flowing back to each rank's own rows, and the offset
    of this rank's rows. Ranks may hold different numbers of rows (padded for the gather, then cut)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return tensor, 0
    from torch.distributed.nn.functional import all_gather

    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    count = torch.tensor([tensor.shape[0]], device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    torch.distributed.all_gather(counts, count)
    counts = [int(c) for c in counts]
    padded = F.pad(tensor, (0, 0, 0, max(counts) - tensor.shape[0]))  # (max N, H)
    parts = [part[:n] for part, n in zip(all_gather(padded), counts)]
    return torch.cat(parts, 0), sum(counts[:rank])


def in_batch_contrastive_loss(
    view_a: torch.Tensor, view_b: torch.Tensor, temperature: float = 1.0, normalizer=None, similarity: str = "dot",
    gather_across_ranks: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NT-Xent over two views (N, H) each (CL4SRec / CP): each view is matched to its partner against the other
    2N - 2 views of the batch. With ``gather_across_ranks`` (under torch.distributed) the
    candidates are the views of every rank (gathered with gradients) and the anchors this rank's own, so the sum
    over ranks is the loss of one large batch. Returns ``(loss, mean_loss, accuracy)`` like
    :func:`contrastive_loss_from_scores`, over this rank's 2N anchors."""
    n = view_a.shape[0]
    offset, total = 0, n
    all_a, all_b = view_a, view_b
    if gather_across_ranks:
        all_a, offset = _gather_with_gradients(view_a)
        all_b, _ = _gather_with_gradients(view_b)
        total = all_a.shape[0]
    candidates = torch.cat([all_a, all_b], 0)  # (2T, H)
    anchors = torch.cat([view_a, view_b], 0)  # (2N, H)
    own = torch.cat([torch.arange(offset, offset + n), torch.arange(total + offset, total + offset + n)]).to(anchors.device)
    partner = (own + total) % (2 * total)  # (2N,) column of each anchor's other view
    sim = matching_scores(anchors, candidates[None].expand(2 * n, -1, -1), similarity, temperature)  # (2N, 2T)
    rows = torch.arange(2 * n, device=sim.device)
    positive = sim[rows, partner][:, None]  # (2N, 1)
    keep = torch.ones_like(sim, dtype=torch.bool)
    keep[rows, partner] = False
    keep[rows, own] = False
    negatives = sim[keep].view(2 * n, 2 * total - 2)  # (2N, 2T - 2)
    return contrastive_loss_from_scores(torch.cat([positive, negatives], 1), normalizer)


class UserBertTaskLoss(NamedTuple):
    """One pre-training loss of a micro-batch, as each ``UserBertForPreTraining`` loss method returns it.

    Args:
        loss: the summed loss divided by its normalizer, in the graph, before its weight.
        mean: detached mean over its rows, logged (``None``: nothing to log, e.g. BSM without a valid target).
        accuracy: detached share of rows whose positive scores highest (``None`` for losses without one).
        rows: how many rows ``mean`` was taken over (the trainer weights logged means by it).
    """

    loss: torch.Tensor
    mean: torch.Tensor | None
    accuracy: torch.Tensor | None
    rows: int | torch.Tensor


@dataclass
class UserBertForPreTrainingOutput(ModelOutput):
    """Output of [`UserBertForPreTraining`]. Losses are ``None`` for tasks that did not run.

    Args:
        loss: weighted sum of the task losses (the training objective).
        mbp_loss / bsm_loss / nbp_loss / cp_loss / uniformity_loss: detached mean of each task's loss, for logging.
        mbp_accuracy / bsm_accuracy / nbp_accuracy / cp_accuracy: share of rows whose positive ranks first.
        user_embedding: (B, H) user embeddings of the (masked) input sequences.
        loss_rows: rows each logged task's mean was taken over (``{"mbp": M, ...}``, keyed by the prefix of its
            ``<task>_loss`` / ``<task>_accuracy`` fields): the trainer logs every such field, weighted by it.
    """

    loss: torch.FloatTensor | None = None
    mbp_loss: torch.FloatTensor | None = None
    bsm_loss: torch.FloatTensor | None = None
    nbp_loss: torch.FloatTensor | None = None
    cp_loss: torch.FloatTensor | None = None
    mbp_accuracy: torch.FloatTensor | None = None
    bsm_accuracy: torch.FloatTensor | None = None
    nbp_accuracy: torch.FloatTensor | None = None
    cp_accuracy: torch.FloatTensor | None = None
    uniformity_loss: torch.FloatTensor | None = None
    user_embedding: torch.FloatTensor | None = None
    loss_rows: dict | None = None


class UserBertProjectionHead(nn.Module):
    """Two-layer MLP between a user embedding and the sequence matchers (SimCLR's projection head): the matching
    loss shapes the projected space, the user embedding below it keeps more information for downstream tasks."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.output = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.output(F.relu(self.dense(hidden)))


class UserBertForPreTraining(UserBertPreTrainedModel):
    """UserBERT pre-training heads: masked behaviour prediction (MBP), behaviour sequence matching (BSM), and the
    PTUM (next behaviour prediction, NBP) and CP (contrastive views) baselines. ``forward`` encodes the behaviour
    table and the input sequences once, then runs each loss whose inputs are present, one method per loss
    (``masked_behavior_loss``, ``sequence_matching_loss``, ``next_behavior_loss``, ``contrastive_views_loss``,
    ``embedding_uniformity_loss``), and adds them with their weights; which inputs a batch carries is decided by
    the objective (``userbert_hf.pretraining.objectives``).

    All behaviours of a step live in one table (``behavior_ids`` (U,) or ``behavior_token_ids`` (U, W)),
    encoded once; every sequence and candidate input is an index into it. Negatives are chosen outside the
    model (the trainer's sampler); the model owns the scoring (``config.matching_similarity`` /
    ``matching_temperature``, optional projection head) and the loss math.

    Inputs:

    * ``behavior_index``/``attention_mask`` (B, L) the input sequences; ``masked_positions`` (B, L) behaviours
      replaced by the mask embedding.
    * MBP: ``mbp_candidate_index`` (M, 1 + K), positive first, one row per masked position in row-major order;
      predicted from the contextual state at the masked position (models without a context encoder: from the user
      embedding of the sequence without its masked behaviours). With ``mbp_query_rows`` (M,) instead (PTUM, whose
      masked behaviours are removed from the sequence), each is predicted from the user embedding of its row.
    * BSM: ``bsm_candidate_index``/``bsm_candidate_mask`` (B, 1 + P, L2), the later period B first, and
      ``bsm_valid`` (B,) for users that take part.
    * NBP: ``nbp_candidate_index`` (B, next_k, 1 + K) and ``nbp_valid`` (B, next_k).
    * CP: a second view ``view_index``/``view_attention_mask``/``view_masked_positions`` (B, L'); the views of
      the other users of the batch (of every rank under torch.distributed) are the negatives.
    * ``*_normalizer``: what each task's summed loss is divided by (default: its row count); the trainer passes the
      counts of the whole step (all micro-batches, all ranks). ``uniformity_normalizer`` is the step's number of
      users: this micro-batch's uniformity term is weighted by its share of them.

    Example:

    ```python
    >>> import torch
    >>> from userbert_hf import UserBertConfig, UserBertForPreTraining
    >>> model = UserBertForPreTraining(UserBertConfig.from_preset("gru4rec", behavior_vocab_size=50, hidden_size=16))
    >>> out = model(
    ...     behavior_ids=torch.arange(10), behavior_index=torch.tensor([[1, 2, 3, 4]]),
    ...     attention_mask=torch.ones(1, 4), masked_positions=torch.tensor([[False, True, False, False]]),
    ...     mbp_candidate_index=torch.tensor([[2, 5, 6, 7, 8]]),
    ... )
    >>> out.mbp_loss is not None
    True
    ```
    """

    def __init__(self, config: UserBertConfig):
        super().__init__(config)
        self.userbert = UserBertModel(config)
        # PTUM predicts the k-th next behaviour from a k-specific projection of the user embedding.
        if config.uses_next_behavior_prediction:
            self.nbp_projections = nn.ModuleList(
                nn.Linear(config.hidden_size, config.hidden_size) for _ in range(config.ptum_next_k)
            )
        if config.projection_head:
            self.projection_head = UserBertProjectionHead(config.hidden_size)
        self.post_init()

    def _score(self, queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return matching_scores(queries, candidates, self.config.matching_similarity, self.config.matching_temperature)

    def _project(self, user_embeddings: torch.Tensor) -> torch.Tensor:
        return self.projection_head(user_embeddings) if self.config.projection_head else user_embeddings

    def forward(
        self,
        behavior_ids: torch.LongTensor | None = None,
        behavior_token_ids: torch.LongTensor | None = None,
        behavior_index: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        masked_positions: torch.BoolTensor | None = None,
        mbp_candidate_index: torch.LongTensor | None = None,
        mbp_query_rows: torch.LongTensor | None = None,
        bsm_candidate_index: torch.LongTensor | None = None,
        bsm_candidate_mask: torch.Tensor | None = None,
        bsm_valid: torch.BoolTensor | None = None,
        nbp_candidate_index: torch.LongTensor | None = None,
        nbp_valid: torch.BoolTensor | None = None,
        view_index: torch.LongTensor | None = None,
        view_attention_mask: torch.Tensor | None = None,
        view_masked_positions: torch.BoolTensor | None = None,
        mbp_normalizer: torch.Tensor | float | None = None,
        bsm_normalizer: torch.Tensor | float | None = None,
        nbp_normalizer: torch.Tensor | float | None = None,
        cp_normalizer: torch.Tensor | float | None = None,
        uniformity_normalizer: torch.Tensor | float | None = None,
        return_dict: bool | None = None,
    ) -> UserBertForPreTrainingOutput:
        if behavior_index is None:
            raise ValueError("UserBertForPreTraining expects a behaviour table and behavior_index (see the docstring)")
        config = self.config
        table = self.userbert.encode_behaviors(behavior_ids, behavior_token_ids)  # (U, H)
        sequence_mask = attention_mask.bool()
        # With mbp_query "previous" (left-to-right models) the prefix state before a target cannot see it, so the
        # target stays in the input: no [MASK] token that the model would never meet downstream.
        input_masked = masked_positions if config.mbp_query == "masked" else None
        encoded = self.userbert.encode_sequences(table[behavior_index], sequence_mask, input_masked)

        # (task, weight, loss) of each loss whose inputs are present, in a fixed order.
        losses = []
        if mbp_candidate_index is not None:
            losses.append(("mbp", config.mbp_loss_weight, self.masked_behavior_loss(
                table, encoded, behavior_index, sequence_mask, masked_positions, mbp_candidate_index, mbp_query_rows,
                mbp_normalizer,
            )))
        if bsm_candidate_index is not None:
            losses.append(("bsm", config.bsm_loss_weight, self.sequence_matching_loss(
                table, encoded, bsm_candidate_index, bsm_candidate_mask, bsm_valid, bsm_normalizer
            )))
        if nbp_candidate_index is not None:
            losses.append(("nbp", config.next_behavior_loss_weight, self.next_behavior_loss(
                table, encoded, nbp_candidate_index, nbp_valid, nbp_normalizer
            )))
        if view_index is not None:
            losses.append(("cp", 1.0, self.contrastive_views_loss(
                table, encoded, view_index, view_attention_mask, view_masked_positions, cp_normalizer
            )))
        if config.uniformity_loss_weight > 0 and self.training:
            losses.append(("uniformity", config.uniformity_loss_weight, self.embedding_uniformity_loss(
                encoded, uniformity_normalizer)))

        out = UserBertForPreTrainingOutput(user_embedding=encoded.user_embedding)
        total = table.sum() * 0.0  # keeps every parameter of the table in the graph
        rows = {}
        for task, weight, task_loss in losses:
            total = total + weight * task_loss.loss
            if task_loss.mean is not None:  # e.g. BSM without a valid target: nothing to log
                setattr(out, f"{task}_loss", task_loss.mean)
                if task_loss.accuracy is not None:
                    setattr(out, f"{task}_accuracy", task_loss.accuracy)
                rows[task] = task_loss.rows
        out.loss_rows = rows
        out.loss = total
        return_dict = return_dict if return_dict is not None else config.return_dict
        return out if return_dict else out.to_tuple()

    # ----- one method per loss: each returns a UserBertTaskLoss (its weight is applied in forward) -----
    def masked_behavior_loss(
        self, table, encoded, behavior_index, sequence_mask, masked_positions, candidate_index, query_rows=None,
        normalizer=None,
    ) -> UserBertTaskLoss:
        """MBP: each masked behaviour against its candidates ``candidate_index`` (M, 1 + K), positive first.

        The query is the contextual state at the masked position (``mbp_query`` "previous": at the position before
        it); with ``query_rows`` (M,) (PTUM: masked behaviours removed from the sequence) the user embedding of its
        row; without a context encoder, the user embedding of the sequence without its masked behaviours."""
        if query_rows is not None:  # the masked behaviours were removed from the sequence (PTUM)
            queries = encoded.user_embedding[query_rows]  # (M, H)
        elif self.config.context_encoder != "none":  # UserBERT: the contextual state at the masked position
            rows, cols = masked_positions.bool().nonzero(as_tuple=True)  # (M,), (M,)
            if self.config.mbp_query == "previous":  # left-to-right: the prefix's state just before it
                if bool((cols == 0).any()):
                    raise ValueError("mbp_query='previous' cannot predict a masked first behaviour")
                cols = cols - 1
            queries = encoded.last_hidden_state[rows, cols]  # (M, H)
        else:
            # Without a context encoder (NAML, NativeCTR) the masked position sees no other behaviour:
            # predict from the user embedding of the sequence without the masked behaviours.
            rows, _ = masked_positions.bool().nonzero(as_tuple=True)
            kept_index, kept_mask = compact_left(behavior_index, sequence_mask & ~masked_positions.bool())
            queries = self.userbert.encode_sequences(table[kept_index], kept_mask).user_embedding[rows]  # (M, H)
        scores = self._score(queries, table[candidate_index])  # (M, 1 + K)
        return UserBertTaskLoss(*contrastive_loss_from_scores(scores, normalizer), rows=scores.shape[0])

    def sequence_matching_loss(self, table, encoded, candidate_index, candidate_mask, valid=None, normalizer=None):
        """BSM: each valid user's embedding against its candidate sequences ``candidate_index`` (B, 1 + P, L2), the
        later period first. Without a valid user the loss is a graph-keeping zero and nothing is logged."""
        valid = valid.bool() if valid is not None else torch.ones_like(candidate_index[:, 0, 0]).bool()  # (B,)
        b, c, l2 = candidate_index.shape
        index = candidate_index[valid].reshape(-1, l2)  # (V * (1 + P), L2)
        mask = candidate_mask[valid].reshape(-1, l2)
        candidates = self.userbert.encode_sequences(table[index], mask).user_embedding.view(-1, c, table.shape[-1])
        scores = self._score(self._project(encoded.user_embedding[valid]), self._project(candidates))  # (V, 1 + P)
        loss, mean, accuracy = contrastive_loss_from_scores(scores, normalizer)
        if not bool(valid.any()):
            return UserBertTaskLoss(loss, None, None, 0)
        return UserBertTaskLoss(loss, mean, accuracy, valid.sum())

    def next_behavior_loss(self, table, encoded, candidate_index, valid=None, normalizer=None) -> UserBertTaskLoss:
        """PTUM's next-behaviour prediction: the k-th projection of each user embedding against the candidates of
        its k-th next behaviour ``candidate_index`` (B, next_k, 1 + K), positive first."""
        queries = torch.stack([proj(encoded.user_embedding) for proj in self.nbp_projections], 1)  # (B, k, H)
        scores = self._score(queries, table[candidate_index])  # (B, k, 1 + K)
        valid = valid.bool() if valid is not None else torch.ones_like(scores[..., 0]).bool()  # (B, k)
        scores = scores[valid]  # (V, 1 + K)
        return UserBertTaskLoss(*contrastive_loss_from_scores(scores, normalizer), rows=scores.shape[0])

    def contrastive_views_loss(
        self, table, encoded, view_index, view_attention_mask, view_masked_positions, normalizer=None
    ) -> UserBertTaskLoss:
        """CP: NT-Xent between each user's two views (the input sequence and ``view_index`` (B, L')) against the
        views of the other users of the batch (of every rank under torch.distributed)."""
        view = self.userbert.encode_sequences(table[view_index], view_attention_mask, view_masked_positions)
        loss, mean, accuracy = in_batch_contrastive_loss(
            self._project(encoded.user_embedding), self._project(view.user_embedding),
            self.config.cp_matching_temperature, normalizer, self.config.cp_matching_similarity,
            gather_across_ranks=torch.distributed.is_available() and torch.distributed.is_initialized(),
        )
        return UserBertTaskLoss(loss, mean, accuracy, 2 * view_index.shape[0])

    def embedding_uniformity_loss(self, encoded, normalizer=None) -> UserBertTaskLoss:
        """Uniformity of the micro-batch's user embeddings (no accuracy). An in-batch term (like CP's negatives):
        under torch.distributed over the users of every rank, gathered with gradients. Each rank adds it times its
        share of the step's users (rows / ``normalizer``, the step's number of users; default 1 / world): the
        ranks' sum is the term of one large batch, and under gradient accumulation the micro-batches' terms
        average (weighted by users) instead of adding up."""
        embeddings, rows, world = encoded.user_embedding, encoded.user_embedding.shape[0], 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            embeddings, world = _gather_with_gradients(embeddings)[0], torch.distributed.get_world_size()
        uniformity = uniformity_loss(embeddings)
        share = 1.0 / world if normalizer is None else rows / normalizer
        return UserBertTaskLoss(uniformity * share, uniformity.detach(), None, rows)


# ----------------------------------------------------------------------------------------------
# Downstream heads. Every head takes the two input layouts of ``UserBertModel``:
# * the batch table of the collators and the processor: ``behavior_ids`` (U,) or ``behavior_token_ids`` (U, W),
#   ``behavior_index``/``attention_mask`` (B, L), and candidates as indices into the same table, so a candidate
#   that is also in some user's history is encoded once;
# * the plain padded layout: ``behavior_ids`` (B, L) (or ``behavior_token_ids`` (B, L, W)), ``attention_mask``
#   optional, and candidates as behaviour ids (``candidate_index``; text behaviours: ``candidate_token_ids``).
# ----------------------------------------------------------------------------------------------


def _encode_users_and_candidates(
    userbert: UserBertModel, behavior_ids, behavior_token_ids, behavior_index, attention_mask, with_states=False
):
    """``(candidate_vectors, users (B, H))``: ``candidate_vectors(candidate_index, candidate_token_ids=None)``
    gives (..., H) vectors of candidates in the layout of the inputs (table indices or behaviour ids). With
    ``with_states`` the contextual states (B, L, H) come third."""
    if behavior_index is not None:
        if attention_mask is None:
            raise ValueError("attention_mask (B, L) is required with behavior_index (the batch-table layout)")
        table = userbert.encode_behaviors(behavior_ids, behavior_token_ids)  # (U, H)
        encoded = userbert.encode_sequences(table[behavior_index], attention_mask)
        candidates = lambda index, token_ids=None: table[index]  # noqa: E731
        return (candidates, encoded.user_embedding, encoded.last_hidden_state)[: 3 if with_states else 2]
    encoded = userbert(behavior_ids=behavior_ids, behavior_token_ids=behavior_token_ids, attention_mask=attention_mask)
    users = encoded.user_embedding  # (B, H)

    def candidate_vectors(index, token_ids=None):
        if token_ids is not None:
            return userbert.encode_behaviors(behavior_token_ids=token_ids)  # (..., H)
        if userbert.config.behavior_type != "id":
            raise ValueError(
                "text behaviours in the plain layout: pass candidate_token_ids (B, [C,] W), the candidates' word ids "
                "(or use the batch-table layout of UserBertProcessor / the collators)"
            )
        return userbert.encode_behaviors(behavior_ids=index)  # (..., H)

    return (candidate_vectors, users, encoded.last_hidden_state)[: 3 if with_states else 2]


def candidate_softmax_loss(logits: torch.Tensor, labels: torch.Tensor, candidate_mask: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy over each row's valid candidates, averaged over the rows that have a positive:
    ``-sum_i y_i log softmax_i(logits) / sum_i y_i``.

    With one clicked and ``npratio`` non-clicked candidates per row this is the usual (1 + npratio)-way news
    recommendation loss. Candidates where ``candidate_mask`` is 0 or ``labels`` is -100 are left out.

    Example:

    ```python
    >>> logits = torch.tensor([[2.0, 0.0, 0.0, 5.0]])
    >>> loss = candidate_softmax_loss(logits, torch.tensor([[1.0, 0.0, 0.0, -100.0]]), torch.tensor([[1, 1, 1, 0]]))
    >>> round(float(loss), 4)  # -log(e^2 / (e^2 + 2)); the padded 4th candidate is ignored
    0.2395
    ```
    """
    valid = candidate_mask.bool() & (labels != -100)  # (B, C)
    targets = torch.where(valid, labels.float(), torch.zeros_like(labels, dtype=torch.float))  # (B, C)
    log_probs = torch.log_softmax(_masked_fill_min(logits.float(), valid), dim=-1)  # (B, C)
    positives = targets.sum(-1)  # (B,)
    rows = positives > 0
    if not rows.any():
        return logits.sum() * 0.0
    per_row = -(targets * log_probs).sum(-1)[rows] / positives[rows]  # (R,)
    return per_row.mean()


@dataclass
class UserBertForNewsRecommendationOutput(ModelOutput):
    """Output of [`UserBertForNewsRecommendation`].

    Args:
        loss: candidate softmax cross-entropy (only when ``labels`` are given).
        logits: (B, C) click scores ``dot(user, candidate)``; padded candidates hold the dtype's minimum.
        user_embedding: (B, H) user embeddings.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    user_embedding: torch.FloatTensor | None = None


class UserBertForNewsRecommendation(UserBertPreTrainedModel):
    """News recommendation: scores each candidate news by the dot product of the user embedding and the candidate's
    behaviour-encoder vector (the same encoder that reads the clicked news), as NRMS / NAML / LSTUR do.

    Inputs: the behaviour table (candidates included), ``behavior_index``/``attention_mask`` (B, L),
    ``candidate_index``/``candidate_mask`` (B, C) into the table and optionally ``labels`` (B, C) float 0/1
    (-100 for padding). Training rows hold one clicked and ``npratio`` non-clicked news of one impression; the
    loss is [`candidate_softmax_loss`]. Evaluation rows hold whole impressions. The plain layout works too:
    ``behavior_ids`` (B, L) (or ``behavior_token_ids`` (B, L, W)) and candidates as behaviour ids
    (``candidate_index``) or word ids (``candidate_token_ids`` (B, C, W)).

    Example:

    ```python
    >>> import torch
    >>> from userbert_hf import UserBertConfig, UserBertForNewsRecommendation
    >>> model = UserBertForNewsRecommendation(UserBertConfig.from_preset("gru4rec", behavior_vocab_size=50, hidden_size=16))
    >>> out = model(
    ...     behavior_ids=torch.arange(8), behavior_index=torch.tensor([[1, 2, 3]]), attention_mask=torch.ones(1, 3),
    ...     candidate_index=torch.tensor([[4, 5, 6, 7, 0]]), candidate_mask=torch.tensor([[1, 1, 1, 1, 0]]),
    ...     labels=torch.tensor([[1.0, 0, 0, 0, -100]]),
    ... )
    >>> out.logits.shape, out.loss is not None
    (torch.Size([1, 5]), True)
    ```
    """

    def __init__(self, config: UserBertConfig):
        super().__init__(config)
        self.userbert = UserBertModel(config)
        self.post_init()


    def forward(
        self,
        behavior_ids: torch.LongTensor | None = None,
        behavior_token_ids: torch.LongTensor | None = None,
        behavior_index: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        candidate_index: torch.LongTensor | None = None,
        candidate_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        candidate_token_ids: torch.LongTensor | None = None,
        return_dict: bool | None = None,
    ) -> UserBertForNewsRecommendationOutput | tuple:
        if candidate_index is None and candidate_token_ids is None:
            raise ValueError("UserBertForNewsRecommendation needs candidate_index (B, C) into the behaviour table "
                             "(or behaviour ids / candidate_token_ids in the plain layout)")
        candidate_vectors, users = _encode_users_and_candidates(
            self.userbert, behavior_ids, behavior_token_ids, behavior_index, attention_mask
        )
        candidates = candidate_vectors(candidate_index, candidate_token_ids)  # (B, C, H)
        if candidate_mask is None:
            candidate_mask = torch.ones(candidates.shape[:2], dtype=torch.bool, device=candidates.device)
        candidate_mask = candidate_mask.bool()
        scores = matching_scores(users, candidates, self.config.matching_similarity, self.config.matching_temperature)  # (B, C)
        logits = _masked_fill_min(scores, candidate_mask)
        loss = candidate_softmax_loss(scores, labels, candidate_mask) if labels is not None else None
        out = UserBertForNewsRecommendationOutput(loss=loss, logits=logits, user_embedding=users)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return out if return_dict else out.to_tuple()


@dataclass
class UserBertForCTRPredictionOutput(ModelOutput):
    """Output of [`UserBertForCTRPrediction`].

    Args:
        loss: binary cross-entropy with logits, averaged over valid candidates (only when ``labels`` are given).
        logits: (B,) or (B, C) click log-odds ``dot(user, candidate) + bias`` (the shape of ``candidate_index``);
            padded candidates hold the dtype's minimum.
        user_embedding: (B, H) user embeddings.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    user_embedding: torch.FloatTensor | None = None


class UserBertForCTRPrediction(UserBertPreTrainedModel):
    """Click-through-rate prediction for (user, candidate) pairs: ``logit = dot(user, candidate) + bias``, where
    the candidate (an ad, a movie) is encoded by the user model's behaviour encoder (NativeCTR-style).

    Inputs: the behaviour table (candidates included), ``behavior_index``/``attention_mask`` (B, L),
    ``candidate_index`` (B,) into the table and optionally ``labels`` (B,) float 0/1. Several candidates of one
    user may share a row, so the user is encoded once: ``candidate_index``/``candidate_mask``/``labels`` (B, C),
    labels -100 on padding; the loss is the mean over valid (user, candidate) pairs either way. The plain layout
    works too: ``behavior_ids`` (B, L) (or ``behavior_token_ids`` (B, L, W)) and candidates as behaviour ids
    (``candidate_index``) or word ids (``candidate_token_ids`` (B, [C,] W)).

    Example:

    ```python
    >>> import torch
    >>> from userbert_hf import UserBertConfig, UserBertForCTRPrediction
    >>> model = UserBertForCTRPrediction(UserBertConfig.from_preset("gru4rec", behavior_vocab_size=50, hidden_size=16))
    >>> out = model(
    ...     behavior_ids=torch.arange(6), behavior_index=torch.tensor([[1, 2], [3, 0]]),
    ...     attention_mask=torch.tensor([[1, 1], [1, 0]]), candidate_index=torch.tensor([4, 5]),
    ...     labels=torch.tensor([1.0, 0.0]),
    ... )
    >>> out.logits.shape, out.loss is not None
    (torch.Size([2]), True)
    ```
    """

    def __init__(self, config: UserBertConfig):
        super().__init__(config)
        self.userbert = UserBertModel(config)
        self.ctr_bias = nn.Parameter(torch.zeros(()))  # global click log-odds offset
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, UserBertForCTRPrediction):
            init.zeros_(module.ctr_bias)


    def forward(
        self,
        behavior_ids: torch.LongTensor | None = None,
        behavior_token_ids: torch.LongTensor | None = None,
        behavior_index: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        candidate_index: torch.LongTensor | None = None,
        candidate_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        candidate_token_ids: torch.LongTensor | None = None,
        return_dict: bool | None = None,
    ) -> UserBertForCTRPredictionOutput | tuple:
        if candidate_index is None and candidate_token_ids is None:
            raise ValueError("UserBertForCTRPrediction needs candidate_index (B,) or (B, C) into the behaviour table "
                             "(or behaviour ids / candidate_token_ids in the plain layout)")
        candidate_vectors, users = _encode_users_and_candidates(
            self.userbert, behavior_ids, behavior_token_ids, behavior_index, attention_mask
        )
        candidates = candidate_vectors(candidate_index, candidate_token_ids)  # (B, H) or (B, C, H)
        one_per_row = candidates.dim() == 2
        candidates = candidates.view(candidates.shape[0], -1, candidates.shape[-1])  # (B, C, H)
        logits = matching_scores(users, candidates, self.config.matching_similarity, self.config.matching_temperature)
        logits = logits + self.ctr_bias  # (B, C)
        valid = torch.ones_like(logits, dtype=torch.bool)
        if candidate_mask is not None:
            valid = candidate_mask.view_as(logits).bool()
        loss = None
        if labels is not None:
            targets = labels.view_as(logits).float()
            valid = valid & (targets != -100)
            if valid.any():
                loss = F.binary_cross_entropy_with_logits(logits.float()[valid], targets[valid])
            else:
                loss = logits.sum() * 0.0
        logits = _masked_fill_min(logits, valid)
        logits = logits.squeeze(1) if one_per_row else logits  # (B,) or (B, C)
        out = UserBertForCTRPredictionOutput(loss=loss, logits=logits, user_embedding=users)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return out if return_dict else out.to_tuple()


@dataclass
class UserBertForNextBehaviorPredictionOutput(ModelOutput):
    """Output of [`UserBertForNextBehaviorPrediction`].

    Args:
        loss: full-softmax cross-entropy over the behaviour vocabulary (only when ``labels`` are given).
        logits: (B, V) scores of every behaviour; ``-inf`` for padding id 0 and excluded behaviours.
        target_rank: (B,) 0-based rank of the target, the number of other behaviours scoring at least as high (only when
            ``labels`` are given; -100 where the label is -100). Evaluation keeps these instead of (n, V) scores.
        user_embedding: (B, H) user embeddings.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    target_rank: torch.LongTensor | None = None
    user_embedding: torch.FloatTensor | None = None


class UserBertForNextBehaviorPrediction(UserBertPreTrainedModel):
    """Next-behaviour (next-item) prediction with full ranking: ``logits = user @ E.T`` over every behaviour of
    the vocabulary, ``E`` the behaviour encoder's vectors (SASRec / BERT4Rec / GRU4Rec style).

    ID behaviours use the embedding table. Text behaviours need ``all_behavior_token_ids`` (V, W), the word ids of
    every behaviour of the vocabulary (encoded at every call: expensive for large vocabularies).

    Inputs: the behaviour table of the histories, ``behavior_index``/``attention_mask`` (B, L), optionally
    ``labels`` (B,) target behaviour ids (vocabulary ids, not table indices; -100 to ignore a row) and
    ``exclude_index`` (B, K) behaviour ids never to recommend (e.g. the history; 0 is padding). The target is
    never excluded.

    Causal user models (``config.is_causal``: GRU4Rec, SASRec) also take per-position ``labels`` (B, L): the
    behaviour after each position (-100 where there is none). The loss is then the mean cross-entropy of every
    prefix's next behaviour, scored from the contextual state at the prefix's last position, which for these
    models is the prefix's user embedding: one pass trains on every prefix (the SASRec recipe).

    Example:

    ```python
    >>> import torch
    >>> from userbert_hf import UserBertConfig, UserBertForNextBehaviorPrediction
    >>> model = UserBertForNextBehaviorPrediction(UserBertConfig.from_preset("gru4rec", behavior_vocab_size=50, hidden_size=16))
    >>> out = model(
    ...     behavior_ids=torch.tensor([0, 7, 9]), behavior_index=torch.tensor([[1, 2]]), attention_mask=torch.ones(1, 2),
    ...     labels=torch.tensor([11]), exclude_index=torch.tensor([[7, 9]]),
    ... )
    >>> out.logits.shape, out.target_rank.shape, bool(out.logits[0, 0] == float("-inf"))
    (torch.Size([1, 50]), torch.Size([1]), True)
    ```
    """

    def __init__(self, config: UserBertConfig):
        super().__init__(config)
        self.userbert = UserBertModel(config)
        self.post_init()


    def _score_all(self, users: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """(N, V) scores of users (N, H) against every behaviour vector (V, H), with the pre-training matcher."""
        if self.config.matching_similarity == "cosine":
            users, vectors = F.normalize(users, dim=-1), F.normalize(vectors, dim=-1)
        return users @ vectors.T / self.config.matching_temperature

    def all_behavior_vectors(self, all_behavior_token_ids: torch.LongTensor | None = None) -> torch.Tensor:
        """(V, H) vectors of every behaviour of the vocabulary (row 0 is padding)."""
        if self.config.behavior_type == "id":
            return self.userbert.behavior_encoder.behavior_embeddings.weight
        if all_behavior_token_ids is None:
            raise ValueError(
                "UserBertForNextBehaviorPrediction ranks every behaviour of the vocabulary: a text-behaviour model "
                "needs all_behavior_token_ids (V, W), the word ids of all behaviours (BehaviorCatalog.token_ids)"
            )
        return self.userbert.encode_behaviors(behavior_token_ids=all_behavior_token_ids)

    def forward(
        self,
        behavior_ids: torch.LongTensor | None = None,
        behavior_token_ids: torch.LongTensor | None = None,
        behavior_index: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        exclude_index: torch.LongTensor | None = None,
        all_behavior_token_ids: torch.LongTensor | None = None,
        return_dict: bool | None = None,
    ) -> UserBertForNextBehaviorPredictionOutput | tuple:
        per_position = labels is not None and labels.dim() == 2
        if per_position and not self.config.is_causal:
            raise ValueError(
                "per-position labels (B, L) train every prefix in one pass, which needs a causal user model "
                f"(config.is_causal: aggregator 'last' over a none/gru/causal-attention encoder); this one has "
                f"context_encoder={self.config.context_encoder!r}, aggregator={self.config.aggregator!r}: pass one "
                "label per row"
            )
        _, users, states = _encode_users_and_candidates(
            self.userbert, behavior_ids, behavior_token_ids, behavior_index, attention_mask, with_states=True
        )
        vectors = self.all_behavior_vectors(all_behavior_token_ids)  # (V, H)
        logits = self._score_all(users, vectors)  # (B, V)
        blocked = torch.zeros_like(logits, dtype=torch.bool)  # (B, V)
        if exclude_index is not None:
            blocked.scatter_(1, exclude_index.long().clamp(min=0), True)
            if labels is not None and not per_position:
                blocked.scatter_(1, labels.long().clamp(min=0)[:, None], False)  # never hide the target
        blocked[:, self.config.pad_token_id] = True  # padding is never a recommendation
        logits = logits.masked_fill(blocked, float("-inf"))
        loss = target_rank = None
        if per_position:
            labels = labels.long()
            scored = labels != -100  # (B, L)
            prefix_logits = self._score_all(states[scored], vectors)  # (N, V): one row per scored prefix
            prefix_logits[:, self.config.pad_token_id] = float("-inf")
            loss = F.cross_entropy(prefix_logits.float(), labels[scored]) if scored.any() else prefix_logits.sum() * 0
        elif labels is not None:
            labels = labels.long()
            loss = F.cross_entropy(logits.float(), labels, ignore_index=-100)
            target_scores = logits.gather(1, labels.clamp(min=0)[:, None])  # (B, 1)
            target_rank = (logits >= target_scores).sum(-1) - 1  # (B,) ties count against the target
            target_rank = target_rank.masked_fill(labels < 0, -100)
        out = UserBertForNextBehaviorPredictionOutput(
            loss=loss, logits=logits, target_rank=target_rank, user_embedding=users
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return out if return_dict else out.to_tuple()


@dataclass
class UserBertForUserClassificationOutput(ModelOutput):
    """Output of [`UserBertForUserClassification`].

    Args:
        loss: cross-entropy (or mean squared error when ``config.num_labels == 1``), only with ``labels``.
        logits: (B, num_labels) class scores.
        user_embedding: (B, H) user embeddings.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    user_embedding: torch.FloatTensor | None = None


class UserBertForUserClassification(UserBertPreTrainedModel):
    """User classification (e.g. demographics, churn): dropout + a linear layer on the user embedding, with
    ``config.num_labels`` classes (``config.id2label`` names them). ``num_labels == 1`` is regression.

    Example:

    ```python
    >>> import torch
    >>> from userbert_hf import UserBertConfig, UserBertForUserClassification
    >>> config = UserBertConfig.from_preset("gru4rec", behavior_vocab_size=50, hidden_size=16, num_labels=3)
    >>> out = UserBertForUserClassification(config)(
    ...     behavior_ids=torch.arange(4), behavior_index=torch.tensor([[1, 2, 3]]), attention_mask=torch.ones(1, 3),
    ...     labels=torch.tensor([2]),
    ... )
    >>> out.logits.shape, out.loss is not None
    (torch.Size([1, 3]), True)
    ```
    """

    def __init__(self, config: UserBertConfig):
        super().__init__(config)
        self.userbert = UserBertModel(config)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()


    def forward(
        self,
        behavior_ids: torch.LongTensor | None = None,
        behavior_token_ids: torch.LongTensor | None = None,
        behavior_index: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        return_dict: bool | None = None,
    ) -> UserBertForUserClassificationOutput | tuple:
        _, users = _encode_users_and_candidates(
            self.userbert, behavior_ids, behavior_token_ids, behavior_index, attention_mask
        )
        logits = self.classifier(self.dropout(users))  # (B, num_labels)
        loss = None
        if labels is not None:
            if self.config.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())
            else:
                loss = F.cross_entropy(logits.float(), labels.long())
        out = UserBertForUserClassificationOutput(loss=loss, logits=logits, user_embedding=users)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return out if return_dict else out.to_tuple()


__all__ = [
    "UserBertPreTrainedModel",
    "UserBertModel",
    "UserBertModelOutput",
    "UserBertForPreTraining",
    "UserBertForPreTrainingOutput",
    "contrastive_loss_from_scores",
    "in_batch_contrastive_loss",
    "candidate_softmax_loss",
    "UserBertForNewsRecommendation",
    "UserBertForNewsRecommendationOutput",
    "UserBertForCTRPrediction",
    "UserBertForCTRPredictionOutput",
    "UserBertForNextBehaviorPrediction",
    "UserBertForNextBehaviorPredictionOutput",
    "UserBertForUserClassification",
    "UserBertForUserClassificationOutput",
]
