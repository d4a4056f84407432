"""torch.export (the route to ONNX and other runtimes) for the user model of every preset: the exported program
gives the eager model's outputs, also for batch sizes, sequence lengths and table sizes it was not traced with.

Two limits, both checked here: GRU context encoders (``gru4rec``, ``lstur``) export with a fixed sequence length
(export decomposes the GRU into one step per position), so inputs are padded to ``config.max_behaviors``, which
changes no output (positions count back from the most recent behaviour, the GRU reads forward, padding is
masked); text behaviours export for tables of at most 511 distinct behaviours (larger tables take the CPU
length-sorted chunking path, which reads the text lengths)."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim

from userbert_hf import PRESETS, UserBertConfig, UserBertModel

TINY = dict(behavior_vocab_size=50, word_vocab_size=30, hidden_size=16, num_attention_heads=2, word_embedding_size=12,
            attention_query_size=8, max_words=6, max_behaviors=16, dropout=0.0)


def _inputs(config, batch: int, length: int, table: int, seed: int, pad_to: int | None = None):
    """Batch-table inputs: a table of ``table`` distinct behaviours and ragged left-aligned users into it, padded
    to ``pad_to`` positions."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths[0] = length
    mask = (torch.arange(length) < lengths[:, None]).long()  # (B, L)
    index = torch.randint(1, table, (batch, length), generator=generator) * mask  # (B, L); row 0 is padding
    if config.behavior_type == "id":
        table_inputs = {"behavior_ids": torch.randperm(config.behavior_vocab_size - 1, generator=generator)[:table] + 1}
    else:
        tokens = torch.randint(1, config.word_vocab_size, (table, config.max_words), generator=generator)
        table_inputs = {"behavior_token_ids": tokens * (torch.arange(config.max_words) < 3)}  # (U, W)
    if pad_to is not None:
        index, mask = (torch.nn.functional.pad(t, (0, pad_to - length)) for t in (index, mask))
    return {**table_inputs, "behavior_index": index, "attention_mask": mask}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_exports_with_dynamic_shapes(preset):
    config = UserBertConfig.from_preset(preset, **TINY)
    torch.manual_seed(0)
    model = UserBertModel(config).eval()
    fixed_length = config.max_behaviors if config.context_encoder == "gru" else None
    example = _inputs(config, batch=3, length=5, table=9, seed=0, pad_to=fixed_length)
    batch = Dim("batch", min=2, max=64)
    length = Dim.STATIC if fixed_length else Dim("length", min=2, max=config.max_behaviors)
    table = Dim("table", min=2, max=None if config.behavior_type == "id" else 511)
    table_key = "behavior_ids" if config.behavior_type == "id" else "behavior_token_ids"
    dynamic = {
        table_key: {0: table},
        "behavior_index": {0: batch, 1: length},
        "attention_mask": {0: batch, 1: length},
    }
    program = torch.export.export(model, (), kwargs=example, dynamic_shapes=dynamic)
    exported = program.module()
    for seed, shape in enumerate([(3, 5, 9), (7, 11, 20), (2, 2, 3)]):
        inputs = _inputs(config, *shape, seed=seed, pad_to=fixed_length)
        with torch.no_grad():
            expected = model(**inputs)
            got = exported(**inputs)
        torch.testing.assert_close(got.user_embedding, expected.user_embedding, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state, atol=1e-5, rtol=1e-5)
        if fixed_length:  # padding to the fixed length changed nothing
            with torch.no_grad():
                unpadded = model(**_inputs(config, *shape, seed=seed)).user_embedding
            torch.testing.assert_close(got.user_embedding, unpadded, atol=1e-5, rtol=1e-5)
