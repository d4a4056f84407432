"""Bounded resources and no success reported for a broken run: a config is bounded as a whole before anything is
allocated, held-out evaluation memory does not grow with the catalogue, non-finite settings are refused, and a
model with missing, empty or non-finite weights ends in an error naming the cause, never in embeddings."""

from __future__ import annotations

import json
import math
import shutil
import types

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from job_helpers import tiny_pretrain_args
from userbert_hf import UserBertConfig, UserBertForPreTraining, embedding_export
from userbert_hf.pretraining import job as pretraining_job
from userbert_hf.configuration_userbert import (
    MAX_BEHAVIORS, MAX_HIDDEN_SIZE, MAX_PARAMETERS, MAX_VOCAB_SIZE, PRESETS, estimate_parameters,
)
from userbert_hf.pretraining.evaluation import SCORE_BUDGET, item_incidence, knn_future_recall


# ---------------------------------------------------------------------------------------------- bounded resources
def test_a_config_with_every_size_inside_its_bound_is_refused_as_a_whole():
    hostile = dict(behavior_type="id", behavior_vocab_size=MAX_VOCAB_SIZE // 2, hidden_size=MAX_HIDDEN_SIZE // 4,
                   num_attention_heads=8)
    with pytest.raises(Exception, match="parameters .* exceeds the bound"):
        UserBertConfig.from_preset("bert4rec", **hostile)
    with pytest.raises(Exception, match="one user's forward pass needs"):
        UserBertConfig.from_preset("bert4rec", max_behaviors=MAX_BEHAVIORS)


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(preset=st.sampled_from(sorted(PRESETS)), objective=st.sampled_from(["userbert", "ptum", "cp"]),
       vocab=st.integers(2, 400), words=st.integers(2, 400), hidden=st.sampled_from([4, 8, 16]),
       layers=st.integers(1, 3), projection=st.booleans())
def test_the_parameter_estimate_bounds_the_real_count(preset, objective, vocab, words, hidden, layers, projection):
    config = UserBertConfig.from_preset(
        preset, behavior_vocab_size=vocab, word_vocab_size=words, hidden_size=hidden, word_embedding_size=hidden,
        num_attention_heads=2, attention_query_size=8, intermediate_size=2 * hidden, num_hidden_layers=layers,
        max_behaviors=12, max_words=5, pretraining_objective=objective, projection_head=projection)
    real = UserBertForPreTraining(config).num_parameters()
    estimate = sum(estimate_parameters(config).values())
    assert real <= estimate <= 2 * real + 500  # an upper bound, tight up to a factor 2 (plus small constants)


@settings(max_examples=20, deadline=None)
@given(vocab=st.integers(10, MAX_VOCAB_SIZE), hidden=st.integers(1, MAX_HIDDEN_SIZE))
def test_configs_near_the_bounds_are_refused_exactly_when_too_large(vocab, hidden):
    config_kwargs = dict(behavior_type="id", behavior_vocab_size=vocab, hidden_size=hidden, num_attention_heads=1,
                         attention_query_size=1, intermediate_size=1, max_behaviors=2, context_encoder="none",
                         use_position_embeddings=False)
    estimate = sum(estimate_parameters(types.SimpleNamespace(**{**UserBertConfig().to_dict(), **config_kwargs})).values())
    try:
        UserBertConfig(**config_kwargs)
    except Exception as err:
        assert "exceeds the bound" in str(err) and estimate > MAX_PARAMETERS
    else:
        assert estimate <= MAX_PARAMETERS  # refused exactly when the estimate is over the bound


def _dense_recall(query, histories, futures, base, items, k=20, cutoff=20):
    """The evaluation's recall computed in one dense pass (what it did before chunking)."""
    sim = torch.nn.functional.normalize(query, dim=-1) @ torch.nn.functional.normalize(base, dim=-1).T
    values, indices = sim.topk(min(k, sim.shape[1]), dim=-1)
    scores = torch.zeros_like(sim).scatter_(1, indices, values.clamp(min=0) + 1e-6) @ items
    scores[:, 0] = float("-inf")
    recalls = []
    for q, (h, f) in enumerate(zip(histories, futures)):
        row = scores[q].clone()
        row[torch.as_tensor(h)] = float("-inf")
        top = set(row.topk(min(cutoff, len(row))).indices.tolist())
        recalls.append(len(top & set(f)) / min(len(set(f)), cutoff))
    return round(float(np.mean(recalls)), 4)


def test_held_out_recall_is_chunked_over_the_catalogue_and_unchanged(monkeypatch):
    rng = np.random.default_rng(0)
    num_items, base_users, queries = 300, 40, 25
    sequences = [rng.integers(1, num_items, 12).tolist() for _ in range(base_users)]
    histories = [rng.integers(1, num_items, 8).tolist() for _ in range(queries)]
    futures = [rng.integers(1, num_items, 4).tolist() for _ in range(queries)]
    query, base = torch.randn(queries, 6), torch.randn(base_users, 6)
    sparse = item_incidence(sequences, num_items)
    dense = sparse.to_dense()
    assert dense.max() == 1 and sparse._nnz() == sum(len(set(s)) for s in sequences)  # memory ~ behaviours, not V
    expected = _dense_recall(query, histories, futures, base, dense)
    import userbert_hf.pretraining.evaluation as evaluation

    monkeypatch.setattr(evaluation, "SCORE_BUDGET", 3 * num_items)  # 3 users per chunk
    assert knn_future_recall(query, histories, futures, base, sparse) == expected
    assert knn_future_recall(query, histories, futures, base, dense) == expected


def test_a_million_item_catalogue_scores_in_bounded_chunks():
    num_items = 1_000_000
    sparse = item_incidence([[1, 5, 999_999], [2, 5]], num_items)
    seen = []
    original = torch.sparse.mm

    def spy(a, b):
        out = original(a, b)
        seen.append(out.numel())
        return out

    torch.sparse.mm = spy
    try:
        recall = knn_future_recall(torch.randn(200, 4), [[1]] * 200, [[5]] * 200, torch.randn(2, 4), sparse, k=2)
    finally:
        torch.sparse.mm = original
    assert recall == 1.0  # item 5 is held by both neighbours
    assert max(seen) <= SCORE_BUDGET and len(seen) == math.ceil(200 / (SCORE_BUDGET // num_items))


# ---------------------------------------------------------------------------------------------- broken runs
@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("broken") / "run"
    pretraining_job.main(tiny_pretrain_args(folder))
    return folder


@pytest.mark.parametrize("damage", ["empty", "missing_tensor", "nan"])
def test_embed_refuses_weights_that_are_not_the_trained_model(pretrained_run, tmp_path, capsys, damage):
    folder = tmp_path / "model"
    shutil.copytree(pretrained_run, folder, ignore=shutil.ignore_patterns("checkpoint-*"))
    weights = load_file(folder / "model.safetensors")
    if damage == "empty":
        weights = {}
    elif damage == "missing_tensor":
        weights.pop(sorted(k for k in weights if "embedding" in k)[0])
    else:
        name = sorted(weights)[0]
        weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, folder / "model.safetensors")
    output = tmp_path / "embeddings.parquet"
    with pytest.raises(SystemExit) as exit_info:
        embedding_export.main(["--model_name_or_path", str(folder), "--output", str(output)])
    assert exit_info.value.code == 2
    assert str(folder) in capsys.readouterr().err
    assert not output.exists()


@pytest.mark.parametrize("option", ["--learning_rate", "--mbp_loss_weight", "--bsm_loss_weight", "--adam_epsilon",
                                    "--uniformity_loss_weight", "--matching_temperature", "--weight_decay"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_settings_are_usage_errors(tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as exit_info:
        pretraining_job.main(tiny_pretrain_args(tmp_path / "run", option, value))
    assert exit_info.value.code == 2 and option in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@settings(max_examples=25, deadline=None)
@given(field=st.sampled_from(["mbp_loss_weight", "bsm_loss_weight", "uniformity_loss_weight", "dropout",
                              "initializer_range", "initializer_gain", "layer_norm_eps", "cp_matching_temperature",
                              "matching_temperature"]),
       value=st.sampled_from([float("nan"), float("inf"), float("-inf")]))
def test_no_config_field_accepts_a_non_finite_value(field, value):
    with pytest.raises(Exception, match=field):
        UserBertConfig.from_preset("gru4rec", **{field: value})


@pytest.mark.parametrize("eps", [-1e-5, 0.0])
def test_a_non_positive_layer_norm_eps_is_refused(eps):
    with pytest.raises(Exception, match="layer_norm_eps"):
        UserBertConfig.from_preset("bert4rec", layer_norm_eps=eps)


def test_an_eval_fraction_that_holds_out_nobody_is_an_error():
    users = list(range(30))

    class Users(list):
        def select(self, rows):
            return Users(self[i] for i in rows)

    with pytest.raises(ValueError, match="--eval_fraction 0.01 of 30 users holds out 0"):
        pretraining_job.split_held_out_users(Users(users), 0.01, seed=0)
    train, held_out = pretraining_job.split_held_out_users(Users(users), 0.1, seed=0)
    assert len(held_out) == 3 and sorted(train + held_out) == users


# ---------------------------------------------------------------------------------------------- loader defects
def _events(users=3, items=5) -> list[tuple[str, str, int]]:
    return [(f"u{u}", f"i{k}", k) for u in range(users) for k in range(items)]


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(where=st.integers(0, 13), column=st.sampled_from([0, 1]), gap=st.integers(1, 12))
def test_no_id_with_a_line_break_is_accepted(tmp_path_factory, where, column, gap):
    """A quoted id with line breaks, as stray quotes ``gap`` lines apart make, is skipped and counted."""
    from userbert_hf.data import load_behavior_data

    rows = [list(map(str, e)) for e in _events()]
    rows[where][column] = '"' + rows[where][column]
    closing = min(where + gap, len(rows) - 1)
    rows[closing][column] = rows[closing][column] + '"'
    path = tmp_path_factory.mktemp("csv") / "events.csv"
    path.write_text("user_id,item_id,timestamp\n" + "".join(",".join(r) + "\n" for r in rows))
    try:
        data = load_behavior_data(str(path), verbose=False)
    except Exception:
        return  # refused as a whole: nothing merged either
    ids = list(data.users["user_id"]) + list(data.vocabulary.raw_ids)
    assert not any("\n" in str(i) or "\r" in str(i) for i in ids)
    assert data.summary.to_dict()["skipped"]  # the summary never says "skipped: nothing"


def test_duplicate_jsonl_keys_and_deep_nesting_are_skipped_and_named(tmp_path):
    from userbert_hf.data import load_behavior_data

    lines = [json.dumps({"user_id": u, "item_id": i, "timestamp": t}) for u, i, t in _events()]
    lines.append('{"user_id": "u1", "item_id": "i1", "item_id": "i2", "timestamp": 9}')
    lines.append('{"user_id": ' + "[" * 50_000 + "]" * 50_000 + "}")
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    data = load_behavior_data(str(path), verbose=False)
    text = str(data.summary)
    assert f"{path}:16: invalid JSON: duplicate key 'item_id'" in text and f"{path}:17: invalid JSON: nested too deeply" in text
    assert sum(len(h) for h in data.users["behavior_ids"]) == 15


def test_saved_data_with_ids_beyond_the_vocabulary_is_refused_on_loading(tmp_path):
    from userbert_hf.data import load_behavior_data
    from userbert_hf.data.behavior_data import save_behavior_data

    source = tmp_path / "events.csv"
    source.write_text("user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in _events()))
    data = load_behavior_data(str(source), verbose=False)
    saved = save_behavior_data(data, tmp_path / "saved")
    assert len(load_behavior_data(str(saved), verbose=False).users) == 3  # as saved: fine
    vocab = json.loads((saved / "behavior_vocab.json").read_text())
    shrunk = {k: v[:3] if isinstance(v, list) else v for k, v in vocab.items()} if isinstance(vocab, dict) else vocab[:3]
    (saved / "behavior_vocab.json").write_text(json.dumps(shrunk))
    with pytest.raises(ValueError, match="outside the vocabulary's range"):
        load_behavior_data(str(saved), verbose=False)


def test_data_on_which_no_pretraining_task_can_run_is_refused(tmp_path):
    data = tmp_path / "single.csv"
    data.write_text("user_id,item_id,timestamp\n" + "".join(f"u{u},i{u % 7},{u}\n" for u in range(40)))
    with pytest.raises(ValueError, match="no pre-training task can run on this data"):
        pretraining_job.main(tiny_pretrain_args(tmp_path / "run", "--data", str(data)))
    assert not (tmp_path / "run" / "model.safetensors").exists()
