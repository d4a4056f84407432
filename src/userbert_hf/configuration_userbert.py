"""UserBERT model configuration.

One config holds the hyperparameters of a user model (behaviour encoder + behaviour context encoder +
aggregator) and of the pre-training heads. Sampler settings (pool sizes, refresh interval) are training
arguments, not model hyperparameters, and live in ``UserBertTrainingArguments``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

BEHAVIOR_TYPES = ("id", "text", "plm")
PLM_POOLINGS = ("mean", "cls")
TEXT_ENCODERS = ("cnn", "self_attention")
CONTEXT_ENCODERS = ("none", "self_attention", "transformer", "gru", "cnn")
AGGREGATORS = ("attention", "mean", "max", "last")
SIMILARITIES = ("dot", "cosine")
MBP_QUERIES = ("masked", "previous")
# Published pre-training recipes (``userbert pretrain --recipe``; settings in userbert_hf/pretraining/recipes.py).
RECIPE_NAMES = ("paper", "ptum_paper", "cp_paper")

# Upper bounds that reject absurd (or hostile) configs before any memory is allocated.
MAX_VOCAB_SIZE = 50_000_000
MAX_HIDDEN_SIZE = 16_384
MAX_BEHAVIORS = 100_000
MAX_WORDS = 4_096
MAX_LAYERS = 128
# Bounds on the whole, checked before any allocation: each size may be inside its bound and the product not.
MAX_PARAMETERS = 1_000_000_000  # 4 GB of float32 weights (16 GB with Adam's moments and gradients)
MAX_USER_ACTIVATION_FLOATS = 500_000_000  # one user's attention maps and word states in one forward pass (2 GB)

# Presets for the user models evaluated in the paper. Each maps a published user model onto the
# behaviour encoder / context encoder / aggregator framework of Section 3.1.
# Attention-probability dropout (``attention_probs_dropout_prob``) follows each reference implementation: NRMS
# applies dropout to word embeddings and attention outputs, not to attention probabilities, and NAML, LSTUR,
# GRU4Rec and NativeCTR have no self-attention, so they keep the default 0 (which also lets training use the fused
# scaled_dot_product_attention kernel). BERT4Rec (its BERT config: attention_probs_dropout_prob 0.2) and SASRec
# (its multihead_attention drops the softmax weights at the model's dropout rate, 0.2 on MovieLens-1M) do apply
# it, so their presets set 0.2, the value of their papers' settings that matches our ``dropout``.
PRESETS: dict[str, dict] = {
    # NRMS (Wu et al. 2019c): titles -> word multi-head self-attention + additive attention;
    # behaviours -> multi-head self-attention; attentive pooling.
    "nrms": dict(
        behavior_type="text", text_encoder="self_attention", context_encoder="self_attention",
        aggregator="attention", num_attention_heads=16,
    ),
    # NAML (Wu et al. 2019a): titles -> CNN (window 3) + additive attention; no behaviour context
    # encoder; attentive pooling of behaviour embeddings.
    "naml": dict(
        behavior_type="text", text_encoder="cnn", context_encoder="none", aggregator="attention",
    ),
    # LSTUR (An et al. 2019b, short-term part): titles -> CNN + attention; GRU over behaviours;
    # the user embedding is the GRU state after the last behaviour.
    "lstur": dict(
        behavior_type="text", text_encoder="cnn", context_encoder="gru", aggregator="last",
    ),
    # GRU4Rec (Hidasi et al. 2016): ID embeddings; GRU; last hidden state.
    "gru4rec": dict(
        behavior_type="id", context_encoder="gru", aggregator="last", use_position_embeddings=False,
    ),
    # NativeCTR (An et al. 2019a): texts -> CNN + attention; attentive pooling of behaviours.
    "nativectr": dict(
        behavior_type="text", text_encoder="cnn", context_encoder="none", aggregator="attention",
    ),
    # BERT4Rec (Sun et al. 2019): ID + position embeddings; bidirectional Transformer encoder;
    # the user embedding is the mean of contextual states.
    "bert4rec": dict(
        behavior_type="id", context_encoder="transformer", aggregator="mean", num_hidden_layers=2,
        num_attention_heads=4, attention_probs_dropout_prob=0.2,
    ),
    # SASRec (Kang & McAuley 2018): ID + position embeddings; causal (left-to-right) Transformer; the user
    # embedding is the state at the last behaviour. Causal with a "last" aggregator, its state at each position
    # is the user embedding of that prefix, so next-item training covers every prefix in one pass.
    "sasrec": dict(
        behavior_type="id", context_encoder="transformer", causal_attention=True, aggregator="last",
        num_hidden_layers=2, num_attention_heads=2, attention_probs_dropout_prob=0.2,
    ),
}


def registered_objectives() -> tuple[str, ...] | None:
    """The names of the pre-training objective registry (``userbert_hf.pretraining.objectives.OBJECTIVES``, the one
    list), or ``None`` where the package is not installed (this file loaded from a Hub folder with
    ``trust_remote_code``: any name is then accepted; it only decides whether PTUM's heads are built)."""
    try:
        from userbert_hf.pretraining.objectives import OBJECTIVES
    except ImportError:
        return None
    return tuple(OBJECTIVES)


# The files ``save_pretrained`` copies next to a checkpoint; ``auto_map`` may name nothing else.
OWN_CODE_MODULES = ("configuration_userbert", "modeling_userbert", "processing_userbert")


def own_auto_map(auto_map: dict | None) -> dict:
    """The entries of ``auto_map`` that point at this package's own code files in the same folder (no
    ``repo--`` prefix, no other module); every other entry is dropped."""

    def own(ref) -> bool:
        return isinstance(ref, str) and "--" not in ref and ref.count(".") == 1 and ref.split(".")[0] in OWN_CODE_MODULES

    kept = {}
    if not isinstance(auto_map, dict):
        return kept
    for key, ref in auto_map.items():
        refs = [r for r in (ref if isinstance(ref, (list, tuple)) else [ref]) if r is not None]
        if refs and all(own(r) for r in refs):
            kept[key] = ref
    return kept


# Keys transformers writes into config.json besides the config's own fields.
TRANSFORMERS_CONFIG_KEYS = frozenset({"model_type", "transformers_version", "auto_map", "_name_or_path",
                                      "output_attentions"})
_OWN_CLASS = re.compile(r"UserBert[A-Za-z0-9]*")


def allowed_config_keys(config_class) -> frozenset:
    """The keys a saved ``config.json`` may hold: the config class's own fields (transformers' base fields
    included) and :data:`TRANSFORMERS_CONFIG_KEYS`."""
    return frozenset(f.name for f in dataclasses.fields(config_class)) | TRANSFORMERS_CONFIG_KEYS


def estimate_parameters(config) -> dict[str, int]:
    """Approximate parameter count of each part of a user model with its pre-training heads, computed from the
    config alone (nothing is allocated): used to refuse a config that would not fit before building it."""
    h, w, q, inter = config.hidden_size, config.word_embedding_size, config.attention_query_size, config.intermediate_size
    parts = {"position_embeddings": config.max_behaviors * h if config.use_position_embeddings else 0}
    if config.behavior_type == "text":
        parts["word_embeddings"] = config.word_vocab_size * w
        if config.text_encoder == "cnn":
            parts["text_encoder"] = config.cnn_window_size * w * h + h * q + q
        else:
            parts["text_encoder"] = 4 * (w * h + h * h) + h * q + q
    else:
        parts["behavior_embeddings"] = config.behavior_vocab_size * h
    layers = config.num_hidden_layers
    parts["context_encoder"] = {
        "none": 0, "self_attention": 4 * h * h, "transformer": layers * (4 * h * h + 2 * h * inter),
        "gru": layers * 6 * h * h, "cnn": config.cnn_window_size * h * h,
    }.get(config.context_encoder, 0)
    parts["heads"] = h * q + (2 * h * h if config.projection_head else 0) + config.ptum_next_k * h * h + 4 * h * h
    parts["biases_and_norms"] = (layers + 4) * (10 * max(h, w) + inter) + 4 * q
    return parts


def estimate_user_activations(config) -> int:
    """Floats held by one user's forward pass in its largest tensors (attention maps, word states)."""
    b, heads = config.max_behaviors, config.num_attention_heads
    floats = b * config.hidden_size * 8
    if config.context_encoder in ("self_attention", "transformer"):
        floats += heads * b * b
    if config.behavior_type == "text":
        floats += b * config.max_words * (config.word_embedding_size + config.hidden_size)
        if config.text_encoder == "self_attention":
            floats += b * heads * config.max_words * config.max_words
    return floats


@strict
class UserBertConfig(PreTrainedConfig):
    r"""Configuration of a UserBERT user model.

    Sizes follow the paper's Table 4 (hidden 256, CNN window 3, attention query 200, dropout 0.2, at most 30
    words per behaviour text and 100 behaviours per user); the matchers (cosine / 0.1, CP's cosine / 1.0) and the
    uniformity loss are this project's defaults, not the paper's (see docs/pretraining.md).

    Example:

    ```python
    >>> from userbert_hf import UserBertConfig, UserBertModel
    >>> config = UserBertConfig.from_preset("nrms", behavior_vocab_size=5000, word_vocab_size=8000)
    >>> model = UserBertModel(config)
    >>> config.context_encoder, config.aggregator
    ('self_attention', 'attention')
    ```
    """

    model_type = "userbert"
    # Trainer.predict/evaluate leave these outputs out, so a head's predictions (and compute_metrics) are its logits
    keys_to_ignore_at_inference = ["user_embedding"]

    # What a behaviour is: an ID looked up in a table, or a text (e.g. a news title) encoded from words.
    behavior_type: str = "text"
    behavior_vocab_size: int = 10_000  # distinct behaviours incl. padding id 0
    word_vocab_size: int = 30_000  # words of the behaviour-text tokenizer incl. [PAD]=0, [UNK]=1
    hidden_size: int = 256
    word_embedding_size: int = 256
    text_encoder: str = "cnn"  # "cnn" (NAML) or "self_attention" (NRMS)
    cnn_window_size: int = 3
    attention_query_size: int = 200  # additive attention query vector size
    max_words: int = 30  # words per behaviour text
    max_behaviors: int = 100  # behaviours per user (positions)
    use_position_embeddings: bool = True
    context_encoder: str = "self_attention"
    aggregator: str = "attention"
    # Self-attention / Transformer context encoders: each behaviour attends only to itself and earlier ones
    # (SASRec); position embeddings then count forward from the oldest behaviour of the window.
    causal_attention: bool = False
    num_hidden_layers: int = 1  # layers of the transformer / gru context encoder
    num_attention_heads: int = 16
    intermediate_size: int = 512  # feed-forward size of "transformer" layers
    dropout: float = 0.2
    # Dropout on the attention probabilities of self-attention / Transformer encoders (transformers' name). 0 (the
    # default, as in NRMS) lets training use PyTorch's fused scaled_dot_product_attention kernel; setting it to
    # ``dropout`` gives the behaviour of models saved before this field existed, which applied ``dropout`` there.
    attention_probs_dropout_prob: float = 0.0
    initializer_range: float = 0.02
    # Multiplies the scale of every random initialisation (the Glorot gain of dense, convolution and GRU weights,
    # and the std of embeddings, initializer_range x gain); constant ones (norms, biases) are kept. 1 is the
    # default scale; a smaller one can suit a from-scratch model (docs/pretraining.md).
    initializer_gain: float = 1.0
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0  # behaviour padding id (and word padding id)
    word_pad_token_id: int = 0
    # Pre-training heads / losses (the sampler settings are training arguments).
    pretraining_objective: str = "userbert"
    mbp_loss_weight: float = 1.0
    bsm_loss_weight: float = 1.0
    # PTUM's next-behaviour prediction (configs saved without this field weighted it by bsm_loss_weight; from_dict
    # reads them so).
    next_behavior_loss_weight: float = 1.0
    # Which contextual state predicts a masked behaviour: "masked" (the state at the masked position, the paper)
    # or "previous" (left-to-right encoders only: the state at the position before it, i.e. the user embedding of
    # the prefix, read the way next-behaviour heads read the model; causal attention hides the target from that
    # state, so the target is not replaced by [MASK] in the input, and the first behaviour is never a target).
    mbp_query: str = "masked"
    ptum_next_k: int = 2
    # CP's own matcher (its in-batch NT-Xent): "cosine" or "dot", scores divided by cp_matching_temperature. Kept
    # apart from matching_similarity / matching_temperature (UserBERT's and PTUM's matchers, the downstream heads).
    cp_matching_similarity: str = "cosine"
    cp_matching_temperature: float = 1.0
    # How every matcher (pre-training tasks and downstream heads) scores a query against candidates: "cosine"
    # (default) or "dot" (the paper); scores are divided by matching_temperature. With the dot product, user
    # embeddings collapse to one direction in pre-training (it adds the same amount to every candidate's score, so
    # nothing removes a shared direction); see docs/pretraining.md for the measurements.
    matching_similarity: str = "cosine"
    matching_temperature: float = 0.1
    # A 2-layer MLP between the user embedding and the sequence matchers (BSM, CP), as in SimCLR.
    projection_head: bool = False
    # Weight of the uniformity loss (Wang & Isola 2020) on the batch's user embeddings in pre-training: keeps them
    # spread over the sphere instead of collapsing to one direction. 0 turns it off (the paper has none).
    uniformity_loss_weight: float = 1.0
    # The published recipe this model was pre-trained with ("paper", "ptum_paper", "cp_paper"), or None: this
    # project's own settings (a record; the settings themselves are the fields above and the training arguments).
    recipe: str | None = None
    # What the model was pre-trained on, where pre-training read a folder of `userbert finetune
    # --export_pretraining_data`: {"task", "data_sha256" (of the file the export was read from),
    # "trains_on_whole_export"}; None otherwise. Fine-tuning on that task and file softens the start by default
    # (finetuning/warm_start.py, same_data_warm_start).
    pretraining_data: dict | None = None
    tie_word_embeddings: bool = False
    # behavior_type="plm": behaviour texts read by a pre-trained language model (plm_encoder.py). plm_config is
    # the encoder's transformers config, kept here so a saved user model rebuilds the encoder without a download
    # (its weights are in the user model's model.safetensors); plm_name_or_path only records where it came from.
    plm_name_or_path: str | None = None
    plm_config: dict | None = None
    plm_pooling: str = "mean"  # "mean" over tokens or the "cls" state, as the sentence-transformers folder says
    plm_trainable_layers: int = 0  # 0: frozen (vectors cacheable); k: the top k layers learn; -1: all of it

    # ----- validation (run at construction by @strict) -----
    def validate_choices(self):
        for name, allowed in (
            ("behavior_type", BEHAVIOR_TYPES),
            ("text_encoder", TEXT_ENCODERS),
            ("context_encoder", CONTEXT_ENCODERS),
            ("aggregator", AGGREGATORS),
            ("pretraining_objective", registered_objectives()),
            ("matching_similarity", SIMILARITIES),
            ("cp_matching_similarity", SIMILARITIES),
            ("mbp_query", MBP_QUERIES),
            ("plm_pooling", PLM_POOLINGS),
        ):
            value = getattr(self, name)
            if allowed is not None and value not in allowed:
                raise ValueError(f"UserBertConfig.{name}={value!r} is not one of {allowed}")
        if self.recipe is not None and self.recipe not in RECIPE_NAMES:
            raise ValueError(f"UserBertConfig.recipe={self.recipe!r} is not one of {RECIPE_NAMES} (or None)")

    def validate_sizes(self):
        self._validate_finite()
        bounds = {
            "behavior_vocab_size": (2, MAX_VOCAB_SIZE),
            "word_vocab_size": (2, MAX_VOCAB_SIZE),
            "hidden_size": (1, MAX_HIDDEN_SIZE),
            "word_embedding_size": (1, MAX_HIDDEN_SIZE),
            "attention_query_size": (1, MAX_HIDDEN_SIZE),
            "intermediate_size": (1, 8 * MAX_HIDDEN_SIZE),
            "cnn_window_size": (1, 63),
            "max_words": (1, MAX_WORDS),
            "max_behaviors": (1, MAX_BEHAVIORS),
            "num_hidden_layers": (1, MAX_LAYERS),
            "num_attention_heads": (1, MAX_HIDDEN_SIZE),
            "ptum_next_k": (1, 100),
        }
        for name, (low, high) in bounds.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"UserBertConfig.{name}={value!r} must be an integer in [{low}, {high}]")
        if self.cnn_window_size % 2 == 0:
            raise ValueError(f"UserBertConfig.cnn_window_size={self.cnn_window_size} must be odd")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"UserBertConfig.dropout={self.dropout} must be in [0, 1)")
        if not 0.0 <= self.attention_probs_dropout_prob < 1.0:
            raise ValueError(
                f"UserBertConfig.attention_probs_dropout_prob={self.attention_probs_dropout_prob} must be in [0, 1)"
            )
        attention_users = {self.context_encoder} | ({self.text_encoder} if self.behavior_type == "text" else set())
        if attention_users & {"self_attention", "transformer"}:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(
                    f"UserBertConfig.hidden_size={self.hidden_size} must be divisible by "
                    f"num_attention_heads={self.num_attention_heads}"
                )
        if self.causal_attention and self.context_encoder not in ("self_attention", "transformer"):
            raise ValueError(
                f"UserBertConfig.causal_attention=True needs an attention context encoder (self_attention, "
                f"transformer), not {self.context_encoder!r}"
            )
        if self.pretraining_objective == "cp" and self.mbp_query == "previous":
            raise ValueError(
                "UserBertConfig.mbp_query='previous' does not go with pretraining_objective='cp': it would leave CP's "
                "masked view unmasked (the model reads [MASK] only with mbp_query='masked')"
            )
        if self.mbp_query == "previous" and not self.is_left_to_right:
            raise ValueError(
                "UserBertConfig.mbp_query='previous' needs a left-to-right context encoder (gru, or self_attention/"
                f"transformer with causal_attention=True), not context_encoder={self.context_encoder!r} with "
                f"causal_attention={self.causal_attention}"
            )
        if min(self.mbp_loss_weight, self.bsm_loss_weight, self.next_behavior_loss_weight) < 0:
            raise ValueError("UserBertConfig loss weights must be >= 0")
        second = "next_behavior_loss_weight" if self.uses_next_behavior_prediction else "bsm_loss_weight"
        if self.mbp_loss_weight == 0 and getattr(self, second) == 0:
            raise ValueError(f"UserBertConfig: mbp_loss_weight and {second} cannot both be 0")
        if self.pad_token_id != 0 or self.word_pad_token_id != 0:
            raise ValueError("UserBertConfig: padding ids must be 0 (vocabularies reserve id 0 for padding)")
        if not self.cp_matching_temperature > 0:
            raise ValueError(f"UserBertConfig.cp_matching_temperature={self.cp_matching_temperature} must be > 0")
        if self.uniformity_loss_weight < 0:
            raise ValueError(f"UserBertConfig.uniformity_loss_weight={self.uniformity_loss_weight} must be >= 0")
        if self.behavior_type == "plm":
            if not isinstance(self.plm_config, dict) or "model_type" not in self.plm_config:
                raise ValueError("UserBertConfig.plm_config must be the encoder's transformers config (a dict with "
                                 "model_type) when behavior_type='plm'")
            layers = self.plm_config.get("num_hidden_layers", MAX_LAYERS)
            if not isinstance(self.plm_trainable_layers, int) or not -1 <= self.plm_trainable_layers <= layers:
                raise ValueError(f"UserBertConfig.plm_trainable_layers={self.plm_trainable_layers!r} must be -1 (all), "
                                 f"0 (frozen) or a number of top layers up to {layers}")
        if not self.matching_temperature > 0:
            raise ValueError(f"UserBertConfig.matching_temperature={self.matching_temperature} must be > 0")
        self._validate_total()

    def _validate_finite(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name, None)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"UserBertConfig.{f.name}={value!r} must be a finite number")

    def _validate_total(self):
        """The model as a whole within bounds (parameters, one user's activations), before anything is allocated."""
        if not 0 < self.layer_norm_eps < 1:
            raise ValueError(f"UserBertConfig.layer_norm_eps={self.layer_norm_eps} must be in (0, 1)")
        if not 0 <= self.initializer_range <= 10:
            raise ValueError(f"UserBertConfig.initializer_range={self.initializer_range} must be in [0, 10]")
        if not 0 < self.initializer_gain <= 10:
            raise ValueError(f"UserBertConfig.initializer_gain={self.initializer_gain} must be in (0, 10]")
        parts = estimate_parameters(self)
        total = sum(parts.values())
        if total > MAX_PARAMETERS:
            largest = ", ".join(f"{k} {v:,}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])[:3])
            raise ValueError(
                f"UserBertConfig: about {total:,} parameters ({largest}) exceeds the bound of {MAX_PARAMETERS:,}; "
                "reduce the vocabulary or hidden sizes"
            )
        activations = estimate_user_activations(self)
        if activations > MAX_USER_ACTIVATION_FLOATS:
            raise ValueError(
                f"UserBertConfig: one user's forward pass needs about {activations * 4 / 1e9:.1f} GB "
                f"(max_behaviors={self.max_behaviors}, max_words={self.max_words}, num_attention_heads="
                f"{self.num_attention_heads}), over the bound of {MAX_USER_ACTIVATION_FLOATS * 4 / 1e9:.0f} GB"
            )

    @property
    def is_causal(self) -> bool:
        """Whether the contextual state at each position is the user embedding of the prefix ending there: a
        left-to-right context encoder (none, GRU, causal attention) with the "last" aggregator. Such a model
        can be trained on every prefix of a sequence in one forward pass (per-position labels)."""
        return self.aggregator == "last" and (self.context_encoder == "none" or self.is_left_to_right)

    @property
    def is_left_to_right(self) -> bool:
        """Whether the contextual state at each position sees only that behaviour and earlier ones (GRU, causal
        attention)."""
        return self.context_encoder == "gru" or self.causal_attention

    @property
    def uses_next_behavior_prediction(self) -> bool:
        """Whether the pre-training model has PTUM's next-behaviour projections."""
        return self.pretraining_objective == "ptum"

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        """As transformers; a PTUM config saved before ``next_behavior_loss_weight`` existed weighted the next-behaviour
        loss by ``bsm_loss_weight`` and still does."""
        if config_dict.get("pretraining_objective") == "ptum" and "next_behavior_loss_weight" not in config_dict:
            config_dict = {**config_dict, "next_behavior_loss_weight": config_dict.get("bsm_loss_weight", 1.0)}
        return super().from_dict(config_dict, **kwargs)

    # ----- config.json: written from an allow-list -----
    def to_dict(self) -> dict:
        """As transformers, but written from an allow-list: this config's own fields and the keys transformers
        writes (``model_type``, ``transformers_version``, ...). Any other key inherited from a loaded
        ``config.json`` (``custom_pipelines``, ``tokenizer_class``, ``processor_class``, ``*_class``, ...) is left
        out, ``auto_map`` keeps only entries that name this package's own code in the saved folder and
        ``architectures`` only this package's class names: a foreign entry would make
        ``from_pretrained(folder, trust_remote_code=True)`` download and run someone else's code."""
        output = super().to_dict()
        allowed = allowed_config_keys(type(self))
        output = {key: value for key, value in output.items() if key in allowed}
        auto_map = own_auto_map(output.pop("auto_map", None))
        if auto_map:
            output["auto_map"] = auto_map
        architectures = output.get("architectures")
        if architectures is not None:
            kept = [a for a in architectures if isinstance(a, str) and _OWN_CLASS.fullmatch(a)] if isinstance(
                architectures, (list, tuple)) else []
            output["architectures"] = kept or None
        return output

    # ----- presets -----
    @classmethod
    def preset_names(cls) -> tuple[str, ...]:
        return tuple(PRESETS)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "UserBertConfig":
        """Config for one of the paper's user models (``nrms``, ``naml``, ``lstur``, ``gru4rec``,
        ``nativectr``, ``bert4rec``) or ``sasrec``; keyword arguments override any field."""
        key = name.lower()
        if key not in PRESETS:
            raise ValueError(f"Unknown UserBERT preset {name!r}; choose one of {sorted(PRESETS)}")
        settings = copy.deepcopy(PRESETS[key])
        settings.update(overrides)
        return cls(**settings)


__all__ = ["UserBertConfig", "PRESETS", "own_auto_map", "allowed_config_keys", "estimate_parameters"]
