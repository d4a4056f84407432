"""Held-out pre-training evaluation: health metrics and the retrieval probe against hand-computed values, a fixed
evaluation batch, and the trainer/job reporting them."""

import math

import numpy as np
import pytest
import torch

from userbert_hf import UserBertConfig, UserBertForPreTraining
from userbert_hf.collation import BehaviorCatalog
from userbert_hf.data import load_default_dataset
from userbert_hf.modeling_userbert import matching_scores, uniformity_loss
from userbert_hf.pretraining.evaluation import (
    PretrainingEvaluator,
    embedding_health,
    knn_future_recall,
    split_history_future,
)
from userbert_hf.pretraining.trainer import UserBertTrainer, UserBertTrainingArguments

MAX_BEHAVIORS = 50


# ------------------------------------------------------------------------------------------ pure metrics
def test_health_of_a_collapsed_set_is_one_direction():
    direction = torch.tensor([3.0, 4.0, 0.0])
    collapsed = torch.stack([direction * s for s in (1.0, 2.0, 3.0, 5.0)])  # one line through the origin
    health = embedding_health(collapsed)
    assert health["embedding_mean_cosine"] == pytest.approx(1.0)
    assert health["embedding_participation_ratio"] == pytest.approx(1.0)
    assert health["embedding_top_component_share"] == pytest.approx(1.0)


def test_health_of_an_isotropic_set_by_hand():
    # +-e1, +-e2, +-e3: centred covariance is I/3 -> three equal eigenvalues -> participation ratio 3; each vector
    # has cosine -1 with its opposite and 0 with the other four: mean (-1 * 6) / 30 = -0.2.
    eye = torch.eye(3)
    health = embedding_health(torch.cat([eye, -eye]))
    assert health["embedding_participation_ratio"] == pytest.approx(3.0)
    assert health["embedding_top_component_share"] == pytest.approx(1 / 3, abs=1e-4)
    assert health["embedding_mean_cosine"] == pytest.approx(-0.2)


def test_health_by_hand_for_unequal_spread_and_skips_empty_users():
    # Points (+-2, 0) and (0, +-1): eigenvalues proportional to 8 and 2 -> shares 0.8 / 0.2,
    # participation ratio 1 / (0.64 + 0.04) = 1.4706; a zero row (a user without behaviours) is ignored.
    x = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0], [0.0, 0.0]])
    health = embedding_health(x)
    assert health["embedding_top_component_share"] == pytest.approx(0.8)
    assert health["embedding_participation_ratio"] == pytest.approx(1 / 0.68, abs=1e-3)
    with pytest.raises(ValueError, match="at least two"):
        embedding_health(torch.zeros(3, 2))


def test_knn_probe_by_hand():
    # Base users: u0 has items {1, 2}, u1 has {3}, u2 has {4}. The query is closest to u0 then u1.
    base_items = torch.zeros(3, 6)
    base_items[0, [1, 2]] = 1
    base_items[1, 3] = 1
    base_items[2, 4] = 1
    base = torch.tensor([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0]])
    query = torch.tensor([[1.0, 0.1]])
    # History {1}: item 1 is never recommended. k=2 neighbours -> scores: item2 ~0.995, item3 ~0.68; top-1 = item 2.
    assert knn_future_recall(query, [[1]], [[2]], base, base_items, k=2, cutoff=1) == 1.0
    assert knn_future_recall(query, [[1]], [[3]], base, base_items, k=2, cutoff=1) == 0.0
    assert knn_future_recall(query, [[1]], [[3]], base, base_items, k=2, cutoff=2) == 1.0
    # Recall divides by min(|future|, cutoff): with future {3, 2} and cutoff 1, the single pick (item 2) is a full hit.
    assert knn_future_recall(query, [[1]], [[3, 2]], base, base_items, k=1, cutoff=1) == 1.0
    # Popularity ranking (no embeddings): all items appear once; history excluded.
    assert knn_future_recall(None, [[1, 2, 3]], [[4]], None, base_items, cutoff=1) == 1.0


def test_split_history_future():
    assert split_history_future(list(range(10))) == (list(range(8)), [8, 9])
    assert split_history_future([5]) == ([5], [])
    assert split_history_future([5, 6]) == ([5], [6])


def test_matching_scores_and_uniformity_by_hand():
    q, c = torch.tensor([[3.0, 0.0]]), torch.tensor([[[1.0, 0.0], [0.0, 2.0], [-2.0, 0.0]]])
    assert matching_scores(q, c).tolist() == [[3.0, 0.0, -6.0]]
    assert matching_scores(q, c, "cosine", 0.1)[0].tolist() == pytest.approx([10.0, 0.0, -10.0])
    # Uniformity: two orthogonal unit vectors are sqrt(2) apart -> log(exp(-2 * 2)) = -4; scale does not matter.
    assert float(uniformity_loss(torch.tensor([[1.0, 0.0], [0.0, 5.0]]))) == pytest.approx(-4.0)
    collapsed = float(uniformity_loss(torch.tensor([[1.0, 0.1], [2.0, 0.21], [3.0, 0.3]])))
    spread = float(uniformity_loss(torch.tensor([[1.0, 0.0], [-0.5, 0.87], [-0.5, -0.87]])))
    assert collapsed > -0.1 > spread  # near 0 when collapsed, lower when spread


# ------------------------------------------------------------------------------------------ evaluator
@pytest.fixture(scope="module")
def movielens():
    return load_default_dataset(verbose=False, max_behaviors=MAX_BEHAVIORS)


def _split(users, held_out=60):
    order = np.random.default_rng(0).permutation(len(users))
    return users.select(np.sort(order[held_out:]).tolist()), users.select(np.sort(order[:held_out]).tolist())


def _model(vocab_size, seed=0, **overrides):
    config = UserBertConfig.from_preset(
        "bert4rec", behavior_vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_attention_heads=2,
        max_behaviors=MAX_BEHAVIORS, dropout=0.1, **overrides,
    )
    torch.manual_seed(seed)
    return UserBertForPreTraining(config)


def test_evaluator_is_fixed_and_reports_every_figure(movielens):
    train, held_out = _split(movielens.users)
    catalog = BehaviorCatalog(len(movielens.vocabulary))
    args = UserBertTrainingArguments("unused", use_cpu=True, report_to=[], seed=3)
    model = _model(len(movielens.vocabulary))
    evaluator = PretrainingEvaluator(model.config, catalog, held_out, train, args)
    first, second = evaluator.evaluate(model), evaluator.evaluate(model)
    assert first == second  # a fixed batch, fixed negatives, eval mode: the same model gives the same numbers
    for key in ("mbp_loss", "mbp_accuracy", "bsm_loss", "bsm_accuracy", "embedding_mean_cosine",
                "embedding_participation_ratio", "knn_recall_at_20", "init_embedding_mean_cosine",
                "init_embedding_participation_ratio", "init_knn_recall_at_20", "popularity_recall_at_20"):
        assert math.isfinite(first[key]), key
    # At initialisation the chance level of K + 1 = 5 candidates shows (accuracy about 1 / 5).
    assert first["mbp_accuracy"] == pytest.approx(0.2, abs=0.1)
    assert first["bsm_accuracy"] == pytest.approx(0.2, abs=0.1)
    # The model here *is* the same architecture at initialisation (same seed): the reference equals it.
    fresh = PretrainingEvaluator(model.config, catalog, held_out, train,
                                 UserBertTrainingArguments("unused", use_cpu=True, report_to=[], seed=0))
    reference = fresh.evaluate(_model(len(movielens.vocabulary), seed=0))
    assert reference["embedding_participation_ratio"] == reference["init_embedding_participation_ratio"]
    # The evaluation batch holds only held-out users: none of its sequences belongs to a training user.
    train_sequences = {tuple(s) for s in train["behavior_ids"]}
    assert not any(tuple(s) in train_sequences for s in evaluator.sequences)
    # The global random state is not touched by building the initialisation reference.
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    PretrainingEvaluator(model.config, catalog, held_out, train, args)
    assert torch.equal(torch.rand(3), expected)


def test_trainer_logs_held_out_metrics_and_pretraining_improves_them(movielens, tmp_path):
    train, held_out = _split(movielens.users)
    model = _model(len(movielens.vocabulary), matching_similarity="cosine", matching_temperature=0.1,
                   uniformity_loss_weight=1.0)
    args = UserBertTrainingArguments(
        str(tmp_path), max_steps=30, per_device_train_batch_size=32, logging_steps=10, learning_rate=3e-3,
        use_cpu=True, save_strategy="no", disable_tqdm=True, report_to=[], seed=11, eval_strategy="steps",
        eval_steps=30, behavior_pool_size=500, sequence_pool_size=100, sequence_pool_interval=1000,
    )
    trainer = UserBertTrainer(model=model, args=args, train_dataset=train, eval_dataset=held_out,
                              catalog=BehaviorCatalog(len(movielens.vocabulary)))
    before = trainer.evaluate()
    trainer.train()
    after = [e for e in trainer.state.log_history if "eval_mbp_loss" in e][-1]
    assert before["eval_init_embedding_mean_cosine"] == after["eval_init_embedding_mean_cosine"]  # computed once
    # Held-out tasks improve, and the held-out users' embeddings do not gather in one direction.
    assert after["eval_mbp_loss"] < before["eval_mbp_loss"] - 0.05
    assert after["eval_bsm_accuracy"] > before["eval_bsm_accuracy"]
    assert after["eval_embedding_mean_cosine"] < after["eval_init_embedding_mean_cosine"]
    assert "uniformity_loss" in trainer.state.log_history[0]
    with pytest.raises(ValueError, match="held-out users"):
        UserBertTrainer(model=model, args=UserBertTrainingArguments(str(tmp_path), use_cpu=True, report_to=[]),
                        train_dataset=train, catalog=BehaviorCatalog(len(movielens.vocabulary))).evaluate()
