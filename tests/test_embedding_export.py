"""Tests for userbert_hf.embedding_export: user embeddings equal the model's own outputs, files round-trip, and
faiss neighbours equal a numpy brute force."""

from __future__ import annotations

import math
import sys

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from userbert_hf import UserBertConfig, UserBertForPreTraining
from userbert_hf.assets import build_catalog, save_user_model_assets
from userbert_hf.cli import main as cli_main
from userbert_hf.data import BehaviorData, load_behavior_data, save_behavior_data
from userbert_hf.embedding_export import (
    embed_users,
    embedding_matrix,
    export_user_embeddings,
    load_user_embeddings,
    main,
    nearest_users,
)
from userbert_hf.tokenization_userbert import build_word_tokenizer
from userbert_hf.vocabulary import BehaviorVocabulary
from model_helpers import randomize_weights

SMALL = dict(hidden_size=16, word_embedding_size=16, attention_query_size=8, intermediate_size=32,
             num_attention_heads=2, dropout=0.2)  # dropout > 0: embedding must switch it off (eval mode)


# ---------------------------------------------------------------------------------------------------------------
# fixtures: MovieLens with 40 users, and tiny "pre-trained" folders (random non-default weights) for a text and an
# ID user model
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def movielens():
    return load_behavior_data("movielens", verbose=False)


@pytest.fixture(scope="module")
def small_data(movielens):
    return BehaviorData(movielens.users.select(range(40)), movielens.vocabulary, movielens.summary, movielens.source)


def _save_model_folder(preset: str, vocabulary: BehaviorVocabulary, path):
    """Save a tiny user model with random weights plus its vocabulary (and tokenizer) as a "pre-trained" folder."""
    tokenizer = build_word_tokenizer(vocabulary.texts) if preset == "nrms" else None
    config = UserBertConfig.from_preset(
        preset, behavior_vocab_size=len(vocabulary), word_vocab_size=len(tokenizer) if tokenizer else 2, **SMALL
    )
    model = randomize_weights(UserBertForPreTraining(config))
    model.save_pretrained(path)
    save_user_model_assets(str(path), vocabulary, tokenizer)
    return path, model.userbert.eval(), tokenizer


@pytest.fixture(scope="module", params=["nrms", "gru4rec"])
def folder(request, movielens, tmp_path_factory):
    """``(path, model, tokenizer)``: a text (NRMS) or ID (GRU4Rec) user model folder and the in-memory model."""
    return _save_model_folder(request.param, movielens.vocabulary, tmp_path_factory.mktemp(f"userbert-{request.param}"))


@pytest.fixture(scope="module")
def id_folder(movielens, tmp_path_factory):
    return _save_model_folder("gru4rec", movielens.vocabulary, tmp_path_factory.mktemp("userbert-id"))


def _direct_embeddings(model, tokenizer, data: BehaviorData) -> torch.Tensor:
    """User embeddings from the model itself, one user at a time, in the per-position layout (no behaviour table,
    no collator)."""
    catalog = build_catalog(data.vocabulary, model.config, tokenizer)
    out = []
    with torch.no_grad():
        for ids in data.users["behavior_ids"]:
            ids = torch.tensor([ids])  # (1, L)
            mask = torch.ones_like(ids)
            if catalog.is_text:
                inputs = {"behavior_token_ids": catalog.token_ids[ids]}  # (1, L, W)
            else:
                inputs = {"behavior_ids": ids}
            out.append(model(**inputs, attention_mask=mask).user_embedding[0])
    return torch.stack(out)  # (N, H)


# ---------------------------------------------------------------------------------------------------------------
# embed_users
# ---------------------------------------------------------------------------------------------------------------
def test_embeddings_equal_the_models_own_outputs(folder, small_data):
    path, model, tokenizer = folder
    embeddings = embed_users(str(path), small_data, batch_size=16, device="cpu")
    assert embeddings.features["embedding"] == datasets.List(datasets.Value("float32"))
    assert embeddings["user_id"] == list(small_data.users["user_id"])
    actual = torch.from_numpy(embedding_matrix(embeddings))
    assert actual.shape == (40, model.config.hidden_size)
    few = BehaviorData(small_data.users.select(range(0, 40, 4)), small_data.vocabulary, small_data.summary, "movielens")
    expected = _direct_embeddings(model, tokenizer, few)
    torch.testing.assert_close(actual[::4], expected, rtol=1e-4, atol=1e-5)
    # Batch size changes nothing (each batch has its own behaviour table).
    other = embed_users(str(path), small_data, batch_size=7, device="cpu")
    torch.testing.assert_close(torch.from_numpy(embedding_matrix(other)), actual, rtol=1e-5, atol=1e-6)


def test_data_with_another_vocabulary_is_mapped_to_the_models(folder, small_data):
    """A BehaviorData whose vocabulary numbers behaviours differently (and knows behaviours the model does not)
    gives the same embeddings: ids are mapped through the raw behaviour ids, unknown behaviours dropped."""
    path, _, _ = folder
    model_vocab = small_data.vocabulary
    used = sorted({i for seq in small_data.users["behavior_ids"] for i in seq})
    raw_ids = ["new-movie"] + [model_vocab.raw_id(i) for i in reversed(used)]  # other order + an unknown id
    texts = [model_vocab.text(model_vocab[r]) if r in model_vocab else "x" for r in raw_ids]
    other_vocab = BehaviorVocabulary(raw_ids, texts)

    def renumber(row):
        ids = [other_vocab[model_vocab.raw_id(i)] for i in row["behavior_ids"]]
        return {"behavior_ids": [other_vocab["new-movie"]] + ids, "timestamps": [0] + list(row["timestamps"])}

    users = small_data.users.map(renumber)
    remapped = BehaviorData(users, other_vocab, small_data.summary, "other")
    expected = embedding_matrix(embed_users(str(path), small_data, device="cpu"))
    actual = embed_users(str(path), remapped, device="cpu")
    assert actual["user_id"] == list(small_data.users["user_id"])
    np.testing.assert_allclose(embedding_matrix(actual), expected, rtol=1e-5, atol=1e-6)


def test_data_by_name_is_read_with_the_models_vocabulary(id_folder, movielens):
    path, model, _ = id_folder  # an ID model: all 610 users embed in a second
    embeddings = embed_users(str(path), "movielens", batch_size=128, device="cpu")
    assert embeddings.num_rows == movielens.users.num_rows == 610
    small = BehaviorData(movielens.users.select([0, 300, 609]), movielens.vocabulary, movielens.summary, "movielens")
    direct = _direct_embeddings(model, None, small).numpy()
    np.testing.assert_allclose(embedding_matrix(embeddings.select([0, 300, 609])), direct, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["embeddings.parquet", "embeddings_dataset"])
def test_outputs_round_trip(folder, small_data, tmp_path, name):
    path, _, _ = folder
    output = str(tmp_path / name)
    written = export_user_embeddings(str(path), small_data, output, batch_size=32)
    loaded = load_user_embeddings(output)
    assert loaded.column_names == ["user_id", "embedding"]
    assert loaded.features["embedding"] == datasets.List(datasets.Value("float32"))
    assert loaded["user_id"] == written["user_id"]
    np.testing.assert_array_equal(embedding_matrix(loaded), embedding_matrix(written))
    if name.endswith(".parquet"):
        schema = pq.read_schema(output)
        assert str(schema.field("embedding").type) in ("list<item: float>", "list<element: float>")
    else:
        assert datasets.load_from_disk(output).num_rows == 40


def test_command_line(folder, small_data, tmp_path):
    path, model, _ = folder
    data_dir = save_behavior_data(small_data, tmp_path / "data")
    output = tmp_path / "out.parquet"
    assert cli_main(["embed", "--model_name_or_path", str(path), "--data", str(data_dir), "--output", str(output),
                     "--batch_size", "8", "--device", "cpu"]) == 0
    loaded = load_user_embeddings(str(output))
    assert loaded.num_rows == 40 and len(loaded[0]["embedding"]) == model.config.hidden_size
    again = main(["--model_name_or_path", str(path), "--data", str(data_dir), "--output", str(tmp_path / "ds")])
    np.testing.assert_allclose(embedding_matrix(again), embedding_matrix(loaded), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# nearest_users
# ---------------------------------------------------------------------------------------------------------------
def _dataset(vectors: np.ndarray, ids=None) -> datasets.Dataset:
    ids = ids or [f"u{i}" for i in range(len(vectors))]
    return datasets.Dataset.from_dict(
        {"user_id": ids, "embedding": vectors.astype(np.float32).tolist()},
        features=datasets.Features(
            {"user_id": datasets.Value("string"), "embedding": datasets.List(datasets.Value("float32"))}
        ),
    )


def _brute_force(vectors: np.ndarray, rows, k: int, metric: str):
    x = vectors.astype(np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    if metric == "l2":
        scores = ((x[rows, None, :] - x[None, :, :]) ** 2).sum(-1)  # (Q, N), lower is closer
        scores[np.arange(len(rows)), rows] = np.inf
        order = np.argsort(scores, axis=1, kind="stable")[:, :k]
    else:
        scores = x[rows] @ x.T  # (Q, N), higher is closer
        scores[np.arange(len(rows)), rows] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, 1)


@pytest.mark.parametrize("backend", ["faiss", "numpy"])
@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_neighbours_equal_brute_force(metric, backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    vectors = np.random.default_rng(0).normal(size=(300, 24)) * np.random.default_rng(1).uniform(0.2, 3.0, (300, 1))
    rows = [0, 5, 17, 299]
    ids, scores = nearest_users(_dataset(vectors), [f"u{r}" for r in rows], k=10, metric=metric, backend=backend)
    order, expected = _brute_force(vectors, rows, 10, metric)
    assert ids == [[f"u{j}" for j in row] for row in order]
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)


def test_without_faiss_the_search_falls_back_to_numpy(monkeypatch):
    vectors = np.random.default_rng(2).normal(size=(50, 8))
    expected = nearest_users(_dataset(vectors), ["u3", "u7"], k=5, backend="numpy")
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    ids, scores = nearest_users(_dataset(vectors), ["u3", "u7"], k=5)
    assert ids == expected[0]
    np.testing.assert_allclose(scores, expected[1])
    with pytest.raises(ImportError, match=r"userbert_hf\[faiss\]"):
        nearest_users(_dataset(vectors), ["u3"], backend="faiss")


def test_neighbours_are_ordered_by_cosine_not_by_length():
    angles = {"query": 0, "a10": 10, "b30": 30, "big45": 45, "c60": 60, "opposite": 180}
    norms = {"big45": 50.0}
    vectors = np.array([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in angles.values()])
    vectors *= np.array([[norms.get(name, 1.0)] for name in angles])
    embeddings = _dataset(vectors, list(angles))
    ids, scores = nearest_users(embeddings, "query", k=5)
    assert ids == [["a10", "b30", "big45", "c60", "opposite"]]  # the query itself is left out
    np.testing.assert_allclose(scores[0], [math.cos(math.radians(a)) for a in (10, 30, 45, 60, 180)], atol=1e-6)
    ids, _ = nearest_users(embeddings, "query", k=1, metric="dot")
    assert ids == [["big45"]]  # an inner product favours long vectors; cosine does not
    ids, _ = nearest_users(embeddings, "query", k=2, exclude_self=False)
    assert ids == [["query", "a10"]]
    np.testing.assert_allclose(embedding_matrix(embeddings), vectors, rtol=1e-6)  # searching normalised a copy


def test_real_users_nearest_neighbour_has_the_highest_cosine(folder, small_data):
    path, _, _ = folder
    embeddings = embed_users(str(path), small_data, device="cpu")
    vectors = torch.from_numpy(embedding_matrix(embeddings))
    queries = embeddings["user_id"][:5]
    ids, scores = nearest_users(embeddings, queries, k=39)
    row_of = {u: i for i, u in enumerate(embeddings["user_id"])}
    for query, neighbours, query_scores in zip(queries, ids, scores):
        assert query not in neighbours and len(neighbours) == 39
        others = vectors[[row_of[n] for n in neighbours]]  # (39, H)
        cosine = torch.nn.functional.cosine_similarity(vectors[row_of[query]][None], others)
        np.testing.assert_allclose(query_scores, cosine.numpy(), rtol=1e-4, atol=1e-5)
        assert np.all(np.diff(query_scores) <= 1e-6), "neighbours must come best first"


def test_nearest_users_rejects_unknown_users_and_metrics():
    embeddings = _dataset(np.eye(3))
    with pytest.raises(KeyError, match="nobody"):
        nearest_users(embeddings, ["nobody"])
    with pytest.raises(ValueError, match="metric"):
        nearest_users(embeddings, ["u0"], metric="manhattan")
    ids, scores = nearest_users(embeddings, ["u0"], k=10)  # k larger than the other users: all of them
    assert sorted(ids[0]) == ["u1", "u2"] and scores.shape == (1, 2)


def test_nearest_users_example_runs(id_folder, tmp_path, capsys, monkeypatch):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).parents[1] / "examples" / "nearest_users.py"
    spec = importlib.util.spec_from_file_location("nearest_users_example", script)
    example = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, example)  # dataclasses look their module up
    spec.loader.exec_module(example)
    output = tmp_path / "embeddings.parquet"
    ids, scores = example.main(["--model_name_or_path", str(id_folder[0]), "--output", str(output),
                                "--query_user_ids", "1", "42", "--k", "3"])
    assert len(ids) == 2 and all(len(n) == 3 for n in ids) and "1" not in ids[0] and "42" not in ids[1]
    assert load_user_embeddings(str(output)).num_rows == 610
    printed = capsys.readouterr().out
    assert "4. nearest users (cosine):" in printed and f"user {ids[0][0]}:" in printed
