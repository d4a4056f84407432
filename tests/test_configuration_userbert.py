"""Tests for UserBertConfig: presets, overrides, validation and serialisation."""

from __future__ import annotations

import json

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig

from userbert_hf import PRESETS, UserBertConfig, UserBertModel
from userbert_hf.configuration_userbert import AGGREGATORS

# What each preset's comment in configuration_userbert.py promises.
EXPECTED_PRESETS = {
    "nrms": dict(behavior_type="text", text_encoder="self_attention", context_encoder="self_attention",
                 aggregator="attention", use_position_embeddings=True),
    "naml": dict(behavior_type="text", text_encoder="cnn", context_encoder="none", aggregator="attention",
                 cnn_window_size=3),
    "lstur": dict(behavior_type="text", text_encoder="cnn", context_encoder="gru", aggregator="last"),
    "gru4rec": dict(behavior_type="id", context_encoder="gru", aggregator="last", use_position_embeddings=False),
    "nativectr": dict(behavior_type="text", text_encoder="cnn", context_encoder="none", aggregator="attention"),
    "bert4rec": dict(behavior_type="id", context_encoder="transformer", aggregator="mean",
                     use_position_embeddings=True, num_hidden_layers=2, num_attention_heads=4),
    "sasrec": dict(behavior_type="id", context_encoder="transformer", causal_attention=True, aggregator="last",
                   use_position_embeddings=True, num_hidden_layers=2, num_attention_heads=2),
}


def _raises_naming(field: str, **kwargs):
    """Constructing the config raises, and the (wrapped) ValueError message names ``field``."""
    with pytest.raises((ValueError, StrictDataclassError)) as info:
        UserBertConfig(**kwargs)
    err = info.value
    chain = [err, err.__cause__, err.__context__]
    assert any(isinstance(e, ValueError) for e in chain) or "ValueError" in str(err), repr(err)
    assert field in str(err), str(err)


def test_expected_table_covers_every_preset():
    assert set(EXPECTED_PRESETS) == set(PRESETS) == set(UserBertConfig.preset_names())


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_maps_to_documented_architecture(name):
    config = UserBertConfig.from_preset(name)
    for field, value in EXPECTED_PRESETS[name].items():
        assert getattr(config, field) == value, (name, field)
    # Everything the preset does not set keeps the class default.
    default = UserBertConfig()
    for field in ("hidden_size", "max_words", "max_behaviors", "dropout", "attention_query_size"):
        if field not in PRESETS[name]:
            assert getattr(config, field) == getattr(default, field)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_full_size_preset_model_builds_and_runs(name):
    torch.manual_seed(0)
    config = UserBertConfig.from_preset(name)
    model = UserBertModel(config).eval()
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    if config.behavior_type == "id":
        inputs = dict(behavior_ids=torch.tensor([[5, 7, 9, 0], [3, 0, 0, 0]]))
    else:
        tokens = torch.randint(1, config.word_vocab_size, (2, 4, 5))
        tokens[mask == 0] = 0
        inputs = dict(behavior_token_ids=tokens)
    with torch.no_grad():
        out = model(**inputs, attention_mask=mask)
    assert out.user_embedding.shape == (2, config.hidden_size)
    assert out.last_hidden_state.shape == (2, 4, config.hidden_size)
    assert torch.isfinite(out.user_embedding).all()
    assert out.user_embedding.abs().sum() > 0


def test_overrides_win_over_preset():
    config = UserBertConfig.from_preset("nrms", num_attention_heads=8, aggregator="mean", hidden_size=64)
    assert config.num_attention_heads == 8  # preset says 16
    assert config.aggregator == "mean"  # preset says attention
    assert config.hidden_size == 64
    assert config.context_encoder == "self_attention"  # untouched preset value
    # Overrides do not leak into the shared preset table.
    assert PRESETS["nrms"]["num_attention_heads"] == 16
    assert UserBertConfig.from_preset("nrms").aggregator == "attention"


def test_preset_name_is_case_insensitive():
    assert UserBertConfig.from_preset("GRU4Rec").to_dict() == UserBertConfig.from_preset("gru4rec").to_dict()


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError) as info:
        UserBertConfig.from_preset("caser")
    message = str(info.value)
    assert "caser" in message
    for name in PRESETS:
        assert name in message


def test_invalid_override_through_preset_raises():
    with pytest.raises((ValueError, StrictDataclassError), match="aggregator"):
        UserBertConfig.from_preset("naml", aggregator="sum")


@pytest.mark.parametrize(
    "field, kwargs",
    [
        ("hidden_size", dict(hidden_size=-16)),
        ("hidden_size", dict(hidden_size=0)),
        ("behavior_vocab_size", dict(behavior_vocab_size=10**12)),
        ("word_vocab_size", dict(word_vocab_size=10**12)),
        ("aggregator", dict(aggregator="sum")),
        ("context_encoder", dict(context_encoder="lstm")),
        ("text_encoder", dict(text_encoder="rnn")),
        ("behavior_type", dict(behavior_type="image")),
        ("pretraining_objective", dict(pretraining_objective="bert")),
        ("cnn_window_size", dict(cnn_window_size=4)),
        ("num_attention_heads", dict(hidden_size=30, num_attention_heads=4, context_encoder="self_attention")),
        ("dropout", dict(dropout=1.5)),
        ("dropout", dict(dropout=-0.1)),
        ("max_behaviors", dict(max_behaviors=10**9)),
        ("cp_matching_temperature", dict(cp_matching_temperature=0.0)),
        ("cp_matching_similarity", dict(cp_matching_similarity="euclidean")),
        ("mbp_query", dict(pretraining_objective="cp", mbp_query="previous", context_encoder="gru", aggregator="last")),
        ("mbp_loss_weight", dict(mbp_loss_weight=0.0, bsm_loss_weight=0.0)),
    ],
)
def test_invalid_values_raise_at_construction(field, kwargs):
    _raises_naming(field, **kwargs)


def test_heads_divisibility_only_checked_where_attention_is_used():
    # A GRU model over ID behaviours has no attention: 30 / 4 is fine there ...
    config = UserBertConfig(behavior_type="id", context_encoder="gru", hidden_size=30, num_attention_heads=4)
    assert config.hidden_size == 30
    # ... but a self-attention text encoder needs it even without a context encoder.
    _raises_naming("num_attention_heads", behavior_type="text", text_encoder="self_attention",
                   context_encoder="none", hidden_size=30, num_attention_heads=4)


def test_every_aggregator_is_accepted():
    for aggregator in AGGREGATORS:
        assert UserBertConfig(aggregator=aggregator).aggregator == aggregator


def test_save_pretrained_round_trip_keeps_every_field(tmp_path):
    config = UserBertConfig(
        behavior_type="id", behavior_vocab_size=123, word_vocab_size=77, hidden_size=48, word_embedding_size=24,
        text_encoder="self_attention", cnn_window_size=5, attention_query_size=17, max_words=11, max_behaviors=33,
        use_position_embeddings=False, context_encoder="transformer", aggregator="max", num_hidden_layers=3,
        num_attention_heads=6, intermediate_size=96, dropout=0.05, initializer_range=0.01, layer_norm_eps=1e-6,
        pretraining_objective="ptum", mbp_loss_weight=0.5, bsm_loss_weight=2.0, ptum_next_k=3, cp_matching_temperature=0.3,
    )
    config.save_pretrained(tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["model_type"] == "userbert"

    for loaded in (UserBertConfig.from_pretrained(tmp_path), AutoConfig.from_pretrained(tmp_path)):
        assert type(loaded) is UserBertConfig
        for field in UserBertConfig.__annotations__:
            assert getattr(loaded, field) == getattr(config, field), field
        ignore = {"transformers_version", "_name_or_path"}
        assert {k: v for k, v in loaded.to_dict().items() if k not in ignore} == {
            k: v for k, v in config.to_dict().items() if k not in ignore
        }
    # Every declared field is written to config.json.
    for field in UserBertConfig.__annotations__:
        assert field in stored, field
