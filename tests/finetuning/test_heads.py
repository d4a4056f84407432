"""Behavioural tests for the downstream heads of modeling_userbert (news, CTR, next behaviour, user classification).

Tiny configs (conftest.py) and random, non-default parameters: the default init zeroes biases, which would hide
padding leaks through them.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoModel, AutoModelForMultipleChoice, AutoModelForSequenceClassification

from userbert_hf import (
    UserBertForCTRPrediction,
    UserBertForNewsRecommendation,
    UserBertForNextBehaviorPrediction,
    UserBertForPreTraining,
    UserBertForUserClassification,
    UserBertModel,
)
from userbert_hf.collation import BehaviorCatalog, build_behavior_table, pad_sequences
from userbert_hf.modeling_userbert import candidate_softmax_loss
from model_helpers import randomize_weights

HEADS = [UserBertForNewsRecommendation, UserBertForCTRPrediction, UserBertForNextBehaviorPrediction,
         UserBertForUserClassification]


def _text_catalog(config, seed=0) -> BehaviorCatalog:
    generator = torch.Generator().manual_seed(seed)
    n, words = config.behavior_vocab_size, 5
    tokens = torch.randint(1, config.word_vocab_size, (n, words), generator=generator)
    tokens = tokens * (torch.arange(words) < torch.randint(1, words + 1, (n, 1), generator=generator))
    tokens[0] = 0
    return BehaviorCatalog(n, tokens)


def _catalog(config) -> BehaviorCatalog:
    return _text_catalog(config) if config.behavior_type == "text" else BehaviorCatalog(config.behavior_vocab_size)


def _batch(config, histories, *candidates):
    """Table-layout inputs for ``histories`` (lists of ids) and candidate id tensors sharing the table."""
    ids = pad_sequences(histories)
    table, indices = build_behavior_table(_catalog(config), ids, *candidates)
    return {**table, "behavior_index": indices[0], "attention_mask": (ids != 0).long()}, indices[1:]


def _users_and_vectors(model, inputs):
    """Reference user embeddings and behaviour-table vectors computed with the base model."""
    table = model.userbert.encode_behaviors(inputs.get("behavior_ids"), inputs.get("behavior_token_ids"))
    users = model.userbert(**inputs).user_embedding
    return users, table


HISTORIES = [[3, 5, 7], [2, 9], [11, 4, 6, 8]]


# ----------------------------------------------------------------------------------------------
# the pure loss
# ----------------------------------------------------------------------------------------------
def test_candidate_softmax_loss_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.5, -1.0, 7.0], [0.0, 1.0, 3.0, 0.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0, -100.0], [1.0, 0.0, 1.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    row0 = -torch.log_softmax(torch.tensor([2.0, 0.5, -1.0]), 0)[0]
    lp1 = torch.log_softmax(torch.tensor([0.0, 1.0, 3.0, 0.0]), 0)
    row1 = -(lp1[0] + lp1[2]) / 2
    torch.testing.assert_close(candidate_softmax_loss(logits, labels, mask), (row0 + row1) / 2)
    # Rows without any positive do not count; no positive at all gives a zero loss, not NaN.
    only_row0 = candidate_softmax_loss(logits, torch.tensor([[1.0, 0, 0, -100], [0, 0, 0, 0]]), mask)
    torch.testing.assert_close(only_row0, row0)
    assert candidate_softmax_loss(logits, torch.zeros(2, 4), mask).item() == 0.0


# ----------------------------------------------------------------------------------------------
# shapes, losses, hand computations
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["gru4rec", "nrms"])
def test_news_recommendation_scores_and_loss(tiny_config, preset):
    config = tiny_config(preset)
    model = randomize_weights(UserBertForNewsRecommendation(config))
    candidates = torch.tensor([[12, 13, 14, 15, 16], [17, 3, 18, 19, 20], [21, 22, 23, 24, 25]])
    labels = torch.tensor([[1.0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0], [0, 0, 1.0, 0, 1.0]])
    inputs, (candidate_index,) = _batch(config, HISTORIES, candidates)
    with torch.no_grad():
        out = model(**inputs, candidate_index=candidate_index, labels=labels)
        no_labels = model(**inputs, candidate_index=candidate_index)
        users, table = _users_and_vectors(model, inputs)
    assert out.logits.shape == (3, 5) and no_labels.loss is None and out.loss is not None
    expected = torch.einsum("bh,bch->bc", users, table[candidate_index])
    torch.testing.assert_close(out.logits, expected)
    log_probs = torch.log_softmax(expected, -1)
    hand = torch.stack([-log_probs[0, 0], -log_probs[1, 1], -(log_probs[2, 2] + log_probs[2, 4]) / 2]).mean()
    torch.testing.assert_close(out.loss, hand)


def test_news_padding_candidates_change_nothing(tiny_config):
    config = tiny_config("nrms")
    model = randomize_weights(UserBertForNewsRecommendation(config))
    candidates = torch.tensor([[12, 13, 14], [17, 3, 18], [21, 22, 23]])
    labels = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    # Two extra candidates per row pointing at real behaviours (not zeros) but masked, labels -100.
    padded = torch.cat([candidates, torch.tensor([[30, 31], [32, 33], [34, 35]])], 1)
    padded_labels = torch.cat([labels, torch.full((3, 2), -100.0)], 1)
    inputs, (index,) = _batch(config, HISTORIES, candidates)
    padded_inputs, (padded_index,) = _batch(config, HISTORIES, padded)
    with torch.no_grad():
        out = model(**inputs, candidate_index=index, labels=labels)
        pad_out = model(**padded_inputs, candidate_index=padded_index, candidate_mask=(padded_labels != -100).long(),
                        labels=padded_labels)
    torch.testing.assert_close(pad_out.logits[:, :3], out.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(pad_out.loss, out.loss, atol=1e-6, rtol=0)
    assert (pad_out.logits[:, 3:] == torch.finfo(pad_out.logits.dtype).min).all()


@pytest.mark.parametrize("preset", ["gru4rec", "nrms"])
def test_ctr_logits_bias_and_bce(tiny_config, preset):
    config = tiny_config(preset)
    model = randomize_weights(UserBertForCTRPrediction(config))
    candidates = torch.tensor([12, 3, 25])
    labels = torch.tensor([1.0, 0.0, 1.0])
    inputs, (candidate_index,) = _batch(config, HISTORIES, candidates)
    with torch.no_grad():
        out = model(**inputs, candidate_index=candidate_index, labels=labels)
        users, table = _users_and_vectors(model, inputs)
    assert out.logits.shape == (3,)
    expected = (users * table[candidate_index]).sum(-1) + model.ctr_bias
    torch.testing.assert_close(out.logits, expected)
    hand = -(labels * F.logsigmoid(expected) + (1 - labels) * F.logsigmoid(-expected)).mean()
    torch.testing.assert_close(out.loss, hand)
    assert model(**inputs, candidate_index=candidate_index).loss is None


def test_heads_score_with_the_pretraining_matcher(tiny_config):
    # With the default cosine matcher, heads score as pre-training did: cos(user, candidate) / temperature.
    config = tiny_config("gru4rec", matching_similarity="cosine", matching_temperature=0.2)
    ctr = randomize_weights(UserBertForCTRPrediction(config))
    candidates = torch.tensor([12, 3, 25])
    inputs, (candidate_index,) = _batch(config, HISTORIES, candidates)
    with torch.no_grad():
        out = ctr(**inputs, candidate_index=candidate_index)
        users, table = _users_and_vectors(ctr, inputs)
    expected = F.cosine_similarity(users, table[candidate_index], dim=-1) / 0.2 + ctr.ctr_bias
    torch.testing.assert_close(out.logits, expected)
    assert out.logits.abs().max() <= 1 / 0.2 + ctr.ctr_bias.abs() + 1e-5
    next_item = randomize_weights(UserBertForNextBehaviorPrediction(config))
    with torch.no_grad():
        logits = next_item(**inputs).logits
        users, _ = _users_and_vectors(next_item, inputs)
        vectors = next_item.userbert.behavior_encoder.behavior_embeddings.weight
    expected = F.normalize(users, dim=-1) @ F.normalize(vectors, dim=-1).T / 0.2
    torch.testing.assert_close(logits[:, 1:], expected[:, 1:])  # column 0 is padding, never ranked


def test_ctr_packed_rows_equal_one_candidate_rows(tiny_config):
    """Several candidates of a user in one row (padded) give the same logits and loss as one row per pair."""
    config = tiny_config("nrms")
    model = randomize_weights(UserBertForCTRPrediction(config))
    pairs = [(0, 12, 1.0), (0, 13, 0.0), (0, 14, 1.0), (1, 15, 0.0), (2, 16, 1.0), (2, 17, 0.0)]
    flat_histories = [HISTORIES[u] for u, _, _ in pairs]
    flat_inputs, (flat_index,) = _batch(config, flat_histories, torch.tensor([c for _, c, _ in pairs]))
    flat_labels = torch.tensor([y for _, _, y in pairs])
    packed = torch.tensor([[12, 13, 14], [15, 30, 31], [16, 17, 32]])  # padding points at real behaviours
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0]])
    packed_labels = torch.tensor([[1.0, 0, 1], [0, -100, -100], [1, 0, -100]])
    packed_inputs, (packed_index,) = _batch(config, HISTORIES, packed)
    with torch.no_grad():
        flat = model(**flat_inputs, candidate_index=flat_index, labels=flat_labels)
        out = model(**packed_inputs, candidate_index=packed_index, candidate_mask=mask, labels=packed_labels)
    assert out.logits.shape == (3, 3)
    torch.testing.assert_close(out.logits[mask.bool()], flat.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.loss, flat.loss, atol=1e-6, rtol=0)


@pytest.mark.parametrize("preset", ["gru4rec", "bert4rec"])
def test_next_behavior_rank_matches_brute_force(tiny_config, preset):
    config = tiny_config(preset)
    model = randomize_weights(UserBertForNextBehaviorPrediction(config))
    histories = [[3, 5, 7], [2, 9], [11, 4, 6, 8], [20]]
    labels = torch.tensor([5, 30, 11, -100])  # row 0: target in the history (a repeat); row 3 ignored
    exclude = pad_sequences(histories)
    inputs, _ = _batch(config, histories)
    with torch.no_grad():
        out = model(**inputs, labels=labels, exclude_index=exclude)
        plain = model(**inputs, labels=labels)
        users = model.userbert(**inputs).user_embedding
    raw = users @ model.userbert.behavior_encoder.behavior_embeddings.weight.T  # (B, V)
    assert out.logits.shape == (4, config.behavior_vocab_size)
    assert torch.isinf(out.logits[:, 0]).all() and (out.logits[:, 0] < 0).all()
    for row, target in enumerate(labels.tolist()):
        if target < 0:
            assert out.target_rank[row] == -100
            continue
        blocked = {0} | (set(histories[row]) - {target})
        expected = sum(
            1 for j in range(config.behavior_vocab_size)
            if j not in blocked and j != target and raw[row, j] >= raw[row, target]  # ties count against the target
        )
        assert out.target_rank[row].item() == expected
        assert out.logits[row, target] == raw[row, target]  # the target is never excluded
        without_exclusion = sum(
            1 for j in range(1, config.behavior_vocab_size) if j != target and raw[row, j] >= raw[row, target]
        )
        assert plain.target_rank[row].item() == without_exclusion
    # Loss: full softmax cross-entropy over the allowed behaviours, ignored rows left out.
    allowed = out.logits[:3]
    hand = -torch.log_softmax(allowed, -1)[torch.arange(3), labels[:3]].mean()
    torch.testing.assert_close(out.loss, hand)
    assert model(**inputs).loss is None and model(**inputs).target_rank is None


def test_next_behavior_rank_counts_ties_against_the_target(tiny_config):
    # Every behaviour vector equal: all scores tie, so the target ranks behind every other allowed behaviour.
    config = tiny_config("gru4rec")
    model = randomize_weights(UserBertForNextBehaviorPrediction(config))
    with torch.no_grad():
        model.userbert.behavior_encoder.behavior_embeddings.weight[1:] = 0.5
    inputs, _ = _batch(config, [[3, 5, 7], [2, 9]])
    with torch.no_grad():
        out = model(**inputs, labels=torch.tensor([4, 30]), exclude_index=pad_sequences([[3, 5, 7], [2, 9]]))
    allowed = config.behavior_vocab_size - 1  # padding never ranked
    assert out.target_rank.tolist() == [allowed - 3 - 1, allowed - 2 - 1]  # minus the history, minus the target


def test_next_behavior_text_model_needs_all_behaviors(tiny_config):
    config = tiny_config("nrms")
    model = randomize_weights(UserBertForNextBehaviorPrediction(config))
    catalog = _text_catalog(config)
    inputs, _ = _batch(config, HISTORIES)
    with pytest.raises(ValueError, match="all_behavior_token_ids"):
        model(**inputs, labels=torch.tensor([1, 2, 3]))
    with torch.no_grad():
        out = model(**inputs, labels=torch.tensor([1, 2, 3]), all_behavior_token_ids=catalog.token_ids)
    assert out.logits.shape == (3, config.behavior_vocab_size) and out.target_rank.min() >= 0


def test_user_classification_dropout_linear_and_ce(tiny_config):
    config = tiny_config("gru4rec", num_labels=3)
    model = randomize_weights(UserBertForUserClassification(config))
    inputs, _ = _batch(config, HISTORIES)
    labels = torch.tensor([2, 0, 1])
    with torch.no_grad():
        out = model(**inputs, labels=labels)
        users = model.userbert(**inputs).user_embedding
    expected = model.classifier(users)
    assert out.logits.shape == (3, 3)
    torch.testing.assert_close(out.logits, expected)
    torch.testing.assert_close(out.loss, F.cross_entropy(expected, labels))
    assert model(**inputs).loss is None


@pytest.mark.parametrize("preset", ["gru4rec", "nrms"])
@pytest.mark.parametrize("head", HEADS)
def test_heads_accept_the_plain_padded_layout(tiny_config, head, preset):
    """The plain (B, L) layout of UserBertModel (candidates as behaviour ids, or word ids for text behaviours)
    gives the logits and loss of the batch-table layout."""
    config = tiny_config(preset)
    model = randomize_weights(head(config))
    candidates = torch.tensor([[12, 3], [13, 14], [2, 15]])  # (B, C) behaviour ids, some also in histories
    table_inputs, (candidate_index,) = _batch(config, HISTORIES, candidates)
    ids = pad_sequences(HISTORIES)  # (B, L)
    if config.behavior_type == "id":
        plain = {"behavior_ids": ids}
    else:
        tokens = _catalog(config).token_ids
        plain = {"behavior_token_ids": tokens[ids], "attention_mask": (ids != 0).long()}  # (B, L, W)
    extra_table, extra_plain = {}, {}
    if head in (UserBertForNewsRecommendation, UserBertForCTRPrediction):
        extra_table = {"candidate_index": candidate_index, "labels": torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])}
        extra_plain = {"labels": extra_table["labels"]}
        if config.behavior_type == "id":
            extra_plain["candidate_index"] = candidates
        else:
            extra_plain["candidate_token_ids"] = _catalog(config).token_ids[candidates]  # (B, C, W)
    elif head is UserBertForNextBehaviorPrediction:
        if config.behavior_type == "text":
            pytest.skip("full ranking of text behaviours needs all_behavior_token_ids either way")
        extra_table = extra_plain = {"labels": torch.tensor([12, 13, 15])}
    else:
        extra_table = extra_plain = {"labels": torch.tensor([0, 1, 0])}
    with torch.no_grad():
        expected = model(**table_inputs, **extra_table)
        got = model(**plain, **extra_plain)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=1e-5)


def test_plain_layout_text_candidates_need_word_ids(tiny_config):
    model = UserBertForCTRPrediction(tiny_config("nrms"))
    tokens = _catalog(model.config).token_ids
    with pytest.raises(ValueError, match="candidate_token_ids"):
        model(behavior_token_ids=tokens[pad_sequences(HISTORIES)], candidate_index=torch.tensor([1, 2, 3]))


# ----------------------------------------------------------------------------------------------
# loading pre-trained user models, freezing
# ----------------------------------------------------------------------------------------------
@pytest.fixture
def transformers_logs(caplog):
    transformers.logging.enable_propagation()
    caplog.set_level(logging.WARNING, logger="transformers")
    yield caplog
    transformers.logging.disable_propagation()


@pytest.mark.parametrize("source", [UserBertForPreTraining, UserBertModel])
@pytest.mark.parametrize("head", HEADS)
def test_from_pretrained_keeps_user_model_and_initialises_head(tiny_config, tmp_path, transformers_logs, source, head):
    config = tiny_config("gru4rec")
    pretrained = randomize_weights(source(config))
    pretrained.save_pretrained(tmp_path)
    user_model = pretrained.userbert if source is UserBertForPreTraining else pretrained
    model, info = head.from_pretrained(tmp_path, output_loading_info=True)
    loaded = model.userbert.state_dict()
    for name, tensor in user_model.state_dict().items():
        assert torch.equal(loaded[name], tensor), name  # bitwise
    head_keys = {k for k in model.state_dict() if not k.startswith("userbert.")}
    assert set(info["missing_keys"]) == head_keys
    assert not any(r.levelno >= logging.ERROR for r in transformers_logs.records)
    if head is UserBertForCTRPrediction:
        assert model.ctr_bias.item() == 0.0
    if head is UserBertForUserClassification:
        assert model.classifier.weight.abs().sum() > 0 and (model.classifier.bias == 0).all()


def test_fine_tuned_heads_save_and_reload_with_auto_classes(tiny_config, tmp_path):
    config = tiny_config("gru4rec", num_labels=2)
    classifier = randomize_weights(UserBertForUserClassification(config))
    classifier.save_pretrained(tmp_path / "cls")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "cls")
    assert type(reloaded) is UserBertForUserClassification
    assert torch.equal(reloaded.classifier.weight, classifier.classifier.weight)
    auto_map = json.loads((tmp_path / "cls" / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForSequenceClassification"] == "modeling_userbert.UserBertForUserClassification"
    assert auto_map["AutoModel"] == "modeling_userbert.UserBertModel"
    news = randomize_weights(UserBertForNewsRecommendation(config))
    news.save_pretrained(tmp_path / "news")
    assert type(AutoModelForMultipleChoice.from_pretrained(tmp_path / "news")) is UserBertForNewsRecommendation
    base = AutoModel.from_pretrained(tmp_path / "news")
    assert torch.equal(base.behavior_encoder.behavior_embeddings.weight,
                       news.userbert.behavior_encoder.behavior_embeddings.weight)


@pytest.mark.parametrize("head", [UserBertForCTRPrediction, UserBertForUserClassification])
def test_freeze_user_model_keeps_it_unchanged(tiny_config, head):
    config = tiny_config("nrms", dropout=0.1)
    model = randomize_weights(head(config)).train()
    model.freeze_user_model()
    before = {k: v.clone() for k, v in model.userbert.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.named_parameters() if not k.startswith("userbert.")}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(not p.requires_grad for p in model.userbert.parameters())
    optimizer = torch.optim.AdamW(trainable, lr=0.1)
    inputs, (candidate_index,) = _batch(config, HISTORIES, torch.tensor([12, 13, 14]))
    extra = {"candidate_index": candidate_index, "labels": torch.tensor([1.0, 0.0, 1.0])}
    if head is UserBertForUserClassification:
        extra = {"labels": torch.tensor([1, 0, 1])}
    for _ in range(2):
        model(**inputs, **extra).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for name, tensor in model.userbert.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert any(not torch.equal(p, head_before[k]) for k, p in model.named_parameters() if k in head_before)


def test_trainer_predict_gives_compute_metrics_the_logits(tiny_config, tmp_path):
    """As with any transformers head: ``Trainer.predict`` returns the logits as predictions (the user embedding is
    in ``config.keys_to_ignore_at_inference``), and ``compute_metrics`` receives them."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    config = tiny_config("gru4rec")
    model = randomize_weights(UserBertForCTRPrediction(config)).eval()
    rows = {"behavior_ids": [[1, 2, 3], [4, 5, 0], [6, 7, 8], [9, 0, 0]], "attention_mask": [[1, 1, 1], [1, 1, 0],
            [1, 1, 1], [1, 0, 0]], "candidate_index": [10, 11, 12, 13], "labels": [1.0, 0.0, 1.0, 0.0]}
    seen = []

    def compute_metrics(prediction):
        seen.append(prediction.predictions)
        return {"mean_logit": float(prediction.predictions.mean())}

    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to="none", use_cpu=True)
    trainer = Trainer(model=model, args=args, compute_metrics=compute_metrics)
    out = trainer.predict(Dataset.from_dict(rows))
    with torch.no_grad():
        expected = model(**{k: torch.tensor(v) for k, v in rows.items()}).logits
    assert not isinstance(out.predictions, tuple) and out.predictions.shape == (4,)
    torch.testing.assert_close(torch.from_numpy(out.predictions), expected, atol=1e-6, rtol=1e-5)
    assert seen and seen[0].shape == (4,)
    assert out.metrics["test_mean_logit"] == pytest.approx(expected.mean().item(), abs=1e-6)
