"""Shared fixtures: tiny UserBERT configs that build and run in milliseconds on CPU."""

from __future__ import annotations

import gc

import pytest

from userbert_hf import UserBertConfig

# Small sizes for every field that scales the model; word_embedding_size != hidden_size on purpose (exercises the
# word projection of the NRMS text encoder).
TINY_SIZES = dict(
    behavior_vocab_size=40,
    word_vocab_size=60,
    hidden_size=16,
    word_embedding_size=12,
    attention_query_size=8,
    intermediate_size=32,
    max_words=8,
    max_behaviors=16,
    # The paper's matcher (plain dot products, no uniformity term): the model tests check its exact arithmetic;
    # tests of the cosine matcher and the uniformity loss ask for them explicitly.
    matching_similarity="dot",
    matching_temperature=1.0,
    uniformity_loss_weight=0.0,
    num_attention_heads=4,
    dropout=0.0,
    attention_probs_dropout_prob=0.0,
)


@pytest.fixture
def tiny_config():
    """Factory: ``tiny_config("nrms", aggregator="max")`` -> a tiny ``UserBertConfig`` (preset optional)."""

    def make(preset: str | None = None, **overrides) -> UserBertConfig:
        settings = {**TINY_SIZES, **overrides}
        if preset is None:
            return UserBertConfig(**settings)
        return UserBertConfig.from_preset(preset, **settings)

    return make


def pytest_collection_finish(session):
    """Move everything alive after collection (torch, transformers, datasets and the test modules: several hundred
    thousand objects that live as long as the session) out of the garbage collector's reach. Every
    ``Trainer.train`` runs a full ``gc.collect()`` (accelerate's ``free_memory``), and each such collection, like
    the interpreter's own full collections, would otherwise walk all of them again: tenths of a second each, about a
    hundred times in a run. Objects the tests create are collected as before."""
    gc.collect()
    gc.freeze()
