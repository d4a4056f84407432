"""UserBertModel.encode(), the user-feature-extraction pipeline and the transformers conventions of UserBertModel
(input embeddings, hidden states, attentions, pooler_output)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import pipeline

from userbert_hf import UserBertConfig, UserBertModel, UserBertProcessor
from userbert_hf.processing_userbert import save_processor
from userbert_hf.vocabulary import BehaviorVocabulary

VOCAB = BehaviorVocabulary([str(i) for i in range(1, 41)])
USERS = [["1", "5", "9"], ["2", "77", "3", "4", "8", "12"], ["40"], ["7", "7", "6"], ["11"]]


def _model(preset="gru4rec", **overrides) -> UserBertModel:
    settings = dict(behavior_vocab_size=len(VOCAB), hidden_size=16, num_attention_heads=2, attention_query_size=8,
                    max_behaviors=8, dropout=0.0, word_vocab_size=30, word_embedding_size=12, max_words=6)
    settings.update(overrides)
    torch.manual_seed(0)
    return UserBertModel(UserBertConfig.from_preset(preset, **settings)).eval()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("encode") / "model"
    model = _model()
    model.save_pretrained(path)
    save_processor(path, model.config, VOCAB)
    return path


def _reference(model, processor, users):
    with torch.no_grad():
        return model(**processor(users)).user_embedding


@pytest.mark.parametrize("batch_size", [1, 2, 32])
def test_encode_equals_one_forward_pass_in_input_order(batch_size):
    model, processor = _model(), UserBertProcessor(VOCAB, max_behaviors=8)
    expected = _reference(model, processor, USERS)
    got = model.encode(USERS, processor=processor, batch_size=batch_size)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == (5, 16)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-6, rtol=0)


def test_encode_options():
    model, processor = _model(), UserBertProcessor(VOCAB, max_behaviors=8)
    model.train()
    tensor = model.encode(USERS, processor=processor, convert_to_tensor=True, normalize_embeddings=True,
                          show_progress_bar=True)
    assert model.training  # restored
    assert isinstance(tensor, torch.Tensor) and not tensor.requires_grad
    torch.testing.assert_close(tensor.norm(dim=-1), torch.ones(5))
    single = model.encode(["2", "77", "3"], processor=processor)
    assert single.shape == (16,)
    np.testing.assert_allclose(single, model.encode([["2", "77", "3"]], processor=processor)[0], atol=1e-6)
    timed = model.encode([["3", "2"]], processor=processor, timestamps=[[2, 1]])
    np.testing.assert_allclose(timed, model.encode([["2", "3"]], processor=processor), atol=1e-6)
    assert model.encode([], processor=processor).shape == (0, 16)
    with pytest.raises(ValueError, match="batch_size"):
        model.encode(USERS, processor=processor, batch_size=0)


def test_encode_loads_the_processor_saved_next_to_the_model(folder):
    model = UserBertModel.from_pretrained(folder)
    expected = _reference(model, UserBertProcessor.from_pretrained(folder), USERS)
    np.testing.assert_allclose(model.encode(USERS), expected.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="pass processor"):
        _model().encode(USERS)  # built in memory: no folder to read a processor from


def test_user_feature_extraction_pipeline_equals_encode(folder):
    extractor = pipeline("user-feature-extraction", model=str(folder), device="cpu")
    expected = UserBertModel.from_pretrained(folder).encode(USERS)
    vectors = extractor(USERS)
    assert len(vectors) == 5 and isinstance(vectors[0], list)
    np.testing.assert_allclose(np.array(vectors), expected, atol=1e-6)
    timed = extractor([{"behaviors": ["9", "5", "1"], "timestamps": [3, 2, 1]}], normalize_embeddings=True,
                      return_tensors=True)
    torch.testing.assert_close(timed[0], torch.nn.functional.normalize(torch.tensor(expected[0]), dim=-1))


# ---------------------------------------------------------------------------------------------------------------
# transformers conventions
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["gru4rec", "nrms"])
def test_input_embeddings_get_and_set(preset):
    model = _model(preset)
    embeddings = model.get_input_embeddings()
    expected_rows = model.config.behavior_vocab_size if preset == "gru4rec" else model.config.word_vocab_size
    assert isinstance(embeddings, torch.nn.Embedding) and embeddings.num_embeddings == expected_rows
    replacement = torch.nn.Embedding(embeddings.num_embeddings, embeddings.embedding_dim, padding_idx=0)
    model.set_input_embeddings(replacement)
    assert model.get_input_embeddings() is replacement
    ids = torch.tensor([[3, 4, 0]])
    inputs = {"behavior_ids": ids} if preset == "gru4rec" else {"behavior_token_ids": ids[..., None].expand(1, 3, 2)}
    before = model(**inputs).user_embedding
    with torch.no_grad():
        replacement.weight.mul_(2.0)
    assert not torch.allclose(model(**inputs).user_embedding, before)  # the model reads the new table


@pytest.mark.parametrize("preset", ["nrms", "bert4rec"])
def test_attentions_reproduce_the_attention_output(preset):
    """The returned weights are the ones the forward pass used: weights @ values (+ output projection) equals the
    attention module's own output, and padded keys get weight 0."""
    model = _model(preset, num_hidden_layers=2) if preset == "bert4rec" else _model(preset)
    ids = torch.tensor([[3, 4, 5, 0], [6, 7, 0, 0]])
    inputs = {"behavior_ids": ids} if preset == "bert4rec" else {
        "behavior_token_ids": torch.stack([ids, ids % 5], -1), "attention_mask": (ids != 0).long()}
    with torch.no_grad():
        out = model(**inputs, output_attentions=True, output_hidden_states=True)
    blocks = list(model.context_encoder.layers) if preset == "bert4rec" else [model.context_encoder.self_attention]
    assert len(out.attentions) == len(blocks) and len(out.hidden_states) == len(blocks) + 1
    torch.testing.assert_close(out.hidden_states[-1], out.last_hidden_state)
    mask = ids != 0
    for weights, block, layer_input in zip(out.attentions, blocks, out.hidden_states):
        attention = block.attention if preset == "bert4rec" else block
        assert weights.shape == (2, 2, 4, 4)
        assert (weights[..., ~mask[0]][0] == 0).all() and (weights[1, :, :, 2:] == 0).all()
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 4))
        v = attention.value(layer_input).view(2, 4, 2, 8).transpose(1, 2)  # (B, heads, L, head_size)
        context = (weights @ v).transpose(1, 2).reshape(2, 4, 16)
        with torch.no_grad():
            expected = attention(layer_input, mask)
        torch.testing.assert_close(attention.output(context)[mask], expected[mask], atol=1e-5, rtol=1e-5)


def test_hidden_states_and_no_attentions_for_recurrent_encoders():
    model = _model("gru4rec")
    out = model(behavior_ids=torch.tensor([[3, 4, 0]]), output_hidden_states=True, output_attentions=True)
    assert out.attentions is None and len(out.hidden_states) == 2
    torch.testing.assert_close(out.hidden_states[-1], out.last_hidden_state)
    plain = model(behavior_ids=torch.tensor([[3, 4, 0]]))
    assert plain.hidden_states is None and plain.attentions is None
    model.config.output_hidden_states = True  # the config default is honoured too
    assert model(behavior_ids=torch.tensor([[3, 4, 0]])).hidden_states is not None


def test_a_processor_of_another_model_is_refused_by_name(folder):
    """encode() and the pipeline check that the processor belongs to the model: settings or a vocabulary that do
    not match are an error naming each mismatch, never embeddings computed through the wrong mapping."""
    model = UserBertModel.from_pretrained(folder).eval()
    matching = UserBertProcessor.from_config(model.config, VOCAB)
    matching.check_model_config(model.config)  # silent
    longer = UserBertProcessor(VOCAB, max_behaviors=20)  # another model's history length
    with pytest.raises(ValueError, match="max_behaviors 20 \\(model: 8\\)"):
        model.encode(USERS, processor=longer)
    bigger = UserBertProcessor(BehaviorVocabulary([str(i) for i in range(1, 101)]), max_behaviors=8)
    with pytest.raises(ValueError, match="101 behaviours in the vocabulary \\(model: behavior_vocab_size 41\\)"):
        model.encode(USERS, processor=bigger)
    with pytest.raises(ValueError, match="does not belong to the model"):
        pipeline("user-feature-extraction", model=model, processor=longer)
    np.testing.assert_allclose(model.encode(USERS, processor=matching), model.encode(USERS), atol=1e-6)
