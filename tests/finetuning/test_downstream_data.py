"""Tests for the fine-tuning splits (userbert_hf.finetuning): splits without leakage, labels checked against the raw files, label
fractions, MIND npratio rows and the collators' table layout."""

from __future__ import annotations

import csv
import doctest
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from userbert_hf import finetuning
from userbert_hf.collation import BehaviorCatalog
from userbert_hf.data import bundled_movielens_path, load_amazon_beauty, load_mind_impressions, load_movielens
from userbert_hf.finetuning import pretraining_users_for
from userbert_hf.finetuning.ctr import CTRCollator, build_ctr_dataset
from userbert_hf.finetuning.news import NewsRecommendationCollator, build_news_dataset, news_training_rows
from userbert_hf.finetuning.next_item import NextBehaviorCollator, build_next_item_dataset
from userbert_hf.finetuning.splits import (column_values, history_cut, pack_candidates, split_users,
                                          subsample_training)
from userbert_hf.finetuning.user_classification import (
    UserClassificationCollator,
    build_user_classification_dataset,
    movielens_demo_user_labels,
    read_user_labels,
)
from userbert_hf.vocabulary import BehaviorVocabulary

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BEAUTY_PATH = (Path(__file__).resolve().parents[2] / ".." / "shared/data/amazon-beauty/Beauty.txt").resolve()
SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def movielens():
    return load_movielens(max_behaviors=None, verbose=False)


@pytest.fixture(scope="module")
def ctr(movielens):
    return build_ctr_dataset(movielens, seed=42)


def _rows_by_user(split: datasets.Dataset) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in split:
        out.setdefault(row["user_id"], []).append(row)
    return out


def test_docstring_examples():
    for module in (finetuning.splits, finetuning.ctr, finetuning.news, finetuning.next_item,
                   finetuning.user_classification):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0 and result.attempted > 0, module.__name__


# ----------------------------------------------------------------------------------------------
# MovieLens CTR
# ----------------------------------------------------------------------------------------------
def test_history_cut_moves_to_a_time_boundary():
    assert history_cut([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.8) == 8
    assert history_cut([1, 1, 1, 1, 2, 2, 2, 2, 2, 3], 0.8) == 9  # the nearer boundary: after the 2s
    assert history_cut([1, 1, 1, 1, 1, 1, 1, 2, 2, 2], 0.8) == 7  # before the 2s (after them nothing is left)
    assert history_cut([1, 1, 1, 1, 1, 1, 2, 2, 2, 2], 0.8) == 6
    assert history_cut([5, 5, 5], 0.8) == 2  # one timestamp for all: no boundary exists, the cut is kept
    assert history_cut([5], 0.8) is None


def test_ctr_splits_are_disjoint_by_user_and_cover_users(movielens, ctr):
    users = {s: set(ctr[s]["user_id"]) for s in SPLITS}
    assert not users["train"] & users["validation"] and not users["train"] & users["test"]
    assert not users["validation"] & users["test"]
    total = sum(len(u) for u in users.values())
    assert total == movielens.users.num_rows  # every ml-latest-small user has >= 2 ratings
    assert abs(len(users["train"]) / total - 0.8) < 0.01 and abs(len(users["test"]) / total - 0.1) < 0.01
    again = build_ctr_dataset(movielens, seed=42)
    assert set(again["test"]["user_id"]) == users["test"]
    assert set(build_ctr_dataset(movielens, seed=7)["test"]["user_id"]) != users["test"]


def test_ctr_history_precedes_candidates(movielens, ctr):
    rows = {}
    for split in SPLITS:
        rows.update(_rows_by_user(ctr[split]))
    strict = 0
    for user in movielens.users:
        ids, times = user["behavior_ids"], user["timestamps"]
        user_rows = rows[user["user_id"]]
        cut = len(ids) - len(user_rows)
        assert [r["candidate"] for r in user_rows] == ids[cut:]  # candidates are the later ratings, in order
        assert all(r["history"] == ids[:cut][-100:] for r in user_rows)  # history: the earlier ones, recent 100
        assert times[cut - 1] <= times[cut]
        if times[cut - 1] < times[cut]:
            strict += 1
        else:
            assert len(set(times)) == 1  # only when every rating shares one timestamp
    assert strict == movielens.users.num_rows


def test_ctr_labels_match_raw_ratings_csv(movielens, ctr):
    user = ctr["test"][0]["user_id"]
    raw = {}
    with open(bundled_movielens_path() / "ratings.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["userId"] == user:
                raw[row["movieId"]] = float(row["rating"])
    rows = [r for r in ctr["test"] if r["user_id"] == user]
    assert rows
    for row in rows:
        rating = raw[movielens.vocabulary.raw_id(row["candidate"])]
        assert row["label"] == (1.0 if rating >= 4 else 0.0)
    assert 0 < sum(r["label"] for r in rows) < len(rows) or len(rows) < 3


def test_ctr_needs_ratings():
    data = load_amazon_beauty(FIXTURES / "beauty_small.txt", verbose=False)
    with pytest.raises(ValueError, match="rating"):
        build_ctr_dataset(data)


def test_pretraining_users_for_ctr_never_contains_candidates(movielens, ctr):
    users = pretraining_users_for("ctr", movielens)
    assert users.column_names == movielens.users.column_names
    candidates: dict[str, set] = {}
    for split in SPLITS:
        for user, item in zip(ctr[split]["user_id"], ctr[split]["candidate"]):
            candidates.setdefault(user, set()).add(item)
    seen = 0
    for row in users:
        assert not set(row["behavior_ids"]) & candidates[row["user_id"]]
        assert len(row["behavior_ids"]) == len(row["timestamps"]) == len(row["ratings"])
        seen += len(row["behavior_ids"])
    assert seen + sum(len(c) for c in candidates.values()) == movielens.summary.events


def test_pack_candidates_keeps_every_pair(ctr):
    rows = ctr["validation"]
    packed = pack_candidates(rows, candidates_per_row=5, seed=0)
    assert max(len(c) for c in packed["candidates"]) == 5
    pairs = Counter(zip(rows["user_id"], rows["candidate"], rows["label"]))
    packed_pairs = Counter(
        (u, c, y)
        for u, cs, ys in zip(packed["user_id"], packed["candidates"], packed["labels"])
        for c, y in zip(cs, ys)
    )
    assert packed_pairs == pairs
    assert pack_candidates(rows)["user_id"] == list(dict.fromkeys(rows["user_id"]))  # None: one row per user


def test_column_values_are_what_iterating_the_column_gives(ctr):
    # The batch read pack_candidates, subsample_training and the baselines use: same values, same order, same types,
    # also through an indices mapping (select) and for a formatted dataset (read row by row).
    rows = ctr["validation"]
    picked = rows.select(np.random.default_rng(0).permutation(len(rows))[:500].tolist())
    for dataset in (rows, picked, rows.select([])):
        for name in dataset.column_names:
            values = column_values(dataset, name)
            assert values == list(dataset[name]), name
            assert [type(v) for v in values] == [type(v) for v in dataset[name]], name
    formatted = picked.with_format("numpy")
    for name in ("history", "candidate", "label"):
        values, expected = column_values(formatted, name), list(formatted[name])
        assert len(values) == len(expected)
        assert all(type(a) is type(b) and np.array_equal(a, b) for a, b in zip(values, expected)), name


# ----------------------------------------------------------------------------------------------
# label fractions
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fraction", [0.1, 0.25])
def test_subsample_training_keeps_the_share_of_users_reproducibly(ctr, fraction):
    train = ctr["train"]
    users = set(train["user_id"])
    kept = subsample_training(train, fraction, seed=3)
    kept_users = set(kept["user_id"])
    assert len(kept_users) == round(fraction * len(users)) and kept_users <= users
    assert len(kept) == sum(1 for u in train["user_id"] if u in kept_users)  # all rows of a kept user
    assert set(subsample_training(train, fraction, seed=3)["user_id"]) == kept_users
    assert set(subsample_training(train, fraction, seed=4)["user_id"]) != kept_users
    assert subsample_training(train, 1.0, seed=3) is train
    with pytest.raises(ValueError):
        subsample_training(train, 0.0)


def test_split_users_is_a_partition():
    parts = split_users([f"u{i}" for i in range(103)] * 2, (0.8, 0.1, 0.1), seed=1)
    assert sum(len(p) for p in parts.values()) == 103
    assert not (parts["train"] & parts["test"]) and len(parts["validation"]) == len(parts["test"]) == 10


# ----------------------------------------------------------------------------------------------
# next item (leave-one-out)
# ----------------------------------------------------------------------------------------------
def _raw_sequences(path: Path) -> dict[str, list[str]]:
    out = {}
    for line in path.read_text().splitlines():
        tokens = line.split()
        if len(tokens) > 1 and tokens[0] not in out and all(t.isdigit() for t in tokens[1:]):
            out[tokens[0]] = tokens[1:]
    return out


def _check_leave_one_out(data, splits, raw, max_behaviors):
    vocab = data.vocabulary
    for split, offset in (("test", 1), ("validation", 2), ("train", 3)):
        for row in splits[split]:
            sequence = raw[row["user_id"]]
            assert vocab.raw_id(row["target"]) == sequence[-offset]
            prefix = sequence[:-offset]
            assert [vocab.raw_id(i) for i in row["history"]] == prefix[-max_behaviors:]
            if split != "train":
                assert {vocab.raw_id(i) for i in row["exclude"]} == set(prefix)


def test_next_item_leave_one_out_on_fixture():
    path = FIXTURES / "beauty_small.txt"
    data = load_amazon_beauty(path, max_behaviors=None, verbose=False)
    splits = build_next_item_dataset(data, max_behaviors=3)
    raw = {u: [t for t in seq] for u, seq in _raw_sequences(path).items()}
    # The fixture has a non-integer token the loader skips: compare with what was loaded.
    raw = {row["user_id"]: [data.vocabulary.raw_id(i) for i in row["behavior_ids"]] for row in data.users}
    _check_leave_one_out(data, splits, raw, 3)
    lengths = {u: len(s) for u, s in raw.items()}
    assert len(splits["test"]) == sum(n >= 2 for n in lengths.values())
    assert len(splits["train"]) == sum(n >= 4 for n in lengths.values())
    every = build_next_item_dataset(data, max_train_targets_per_user=None)
    assert len(every["train"]) == sum(max(n - 3, 0) for n in lengths.values())


@pytest.mark.skipif(not BEAUTY_PATH.exists(), reason=f"{BEAUTY_PATH} not available")
def test_next_item_leave_one_out_on_amazon_beauty():
    data = load_amazon_beauty(BEAUTY_PATH, max_behaviors=None, verbose=False)
    splits = build_next_item_dataset(data, max_behaviors=50)
    raw = _raw_sequences(BEAUTY_PATH)
    assert len(splits["test"]) == len(splits["validation"]) == len(raw) == 22363  # the S3-Rec 5-core file
    subset = {s: splits[s].select(range(0, len(splits[s]), 97)) for s in SPLITS}
    _check_leave_one_out(data, subset, raw, 50)
    users = pretraining_users_for("next_item", data)
    for row in users.select(range(0, len(users), 97)):
        assert [data.vocabulary.raw_id(i) for i in row["behavior_ids"]] == raw[row["user_id"]][:-2]


def test_pretraining_users_for_next_item_drops_evaluation_targets():
    data = load_amazon_beauty(FIXTURES / "beauty_small.txt", max_behaviors=None, verbose=False)
    users = pretraining_users_for("next_item", data)
    sequences = {row["user_id"]: row["behavior_ids"] for row in data.users}
    for row in users:
        assert row["behavior_ids"] == sequences[row["user_id"]][:-2]
    assert set(users["user_id"]) == {u for u, s in sequences.items() if len(s) > 2}
    with pytest.raises(ValueError, match="task"):
        pretraining_users_for("nope", data)


# ----------------------------------------------------------------------------------------------
# MIND news recommendation
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mind():
    vocabulary = BehaviorVocabulary()
    return load_mind_impressions(FIXTURES / "mind", vocabulary, verbose=False), vocabulary


def test_mind_npratio_rows_come_from_one_impression(mind):
    impressions, _ = mind
    rows = news_training_rows(impressions, npratio=4, seed=0)
    by_id = {row["impression_id"]: dict(zip(row["candidates"], row["labels"])) for row in impressions}
    clicks = sum(
        sum(1 for y in row["labels"] if y == 1) for row in impressions if 0 in row["labels"]
    )
    assert len(rows) == clicks > 0
    for row in rows:
        labels_of = by_id[row["impression_id"]]
        assert row["labels"] == [1.0, 0.0, 0.0, 0.0, 0.0]
        assert labels_of[row["candidates"][0]] == 1
        assert all(labels_of[c] == 0 for c in row["candidates"][1:])
    again = news_training_rows(impressions, npratio=4, seed=0)
    assert again["candidates"] == rows["candidates"]


def test_mind_splits(mind):
    impressions, _ = mind
    splits = build_news_dataset(impressions, npratio=4, seed=0)
    users = {s: set(splits[s]["user_id"]) for s in SPLITS}
    assert not (users["train"] & users["validation"]) and not (users["train"] & users["test"])
    for split in ("validation", "test"):
        for row in splits[split]:
            assert all(y in (0.0, 1.0) for y in row["labels"])  # unlabelled (test-split) impressions dropped
            assert len(row["candidates"]) == len(row["labels"])
    assert "5" not in set(splits["validation"]["impression_id"]) | set(splits["test"]["impression_id"])
    with_test = build_news_dataset(impressions, impressions, seed=0)
    assert len(with_test["test"]) == sum(1 for row in impressions if -1 not in row["labels"])
    kept = subsample_training(splits["train"], 0.5, seed=0, group_column="impression_id")
    assert len(set(kept["impression_id"])) == round(0.5 * len(set(splits["train"]["impression_id"])))


# ----------------------------------------------------------------------------------------------
# user classification
# ----------------------------------------------------------------------------------------------
def test_user_labels_file_and_demo_labels(tmp_path, movielens):
    path = tmp_path / "labels.csv"
    path.write_text("user_id,label\n1,a\n2,b\n3,a\n99999,b\n")
    labels = read_user_labels(path)
    assert labels == {"1": "a", "2": "b", "3": "a", "99999": "b"}
    splits, names = build_user_classification_dataset(movielens, labels, split_fractions=(1, 0, 0))
    assert names == ["a", "b"] and sorted(splits["train"]["label"]) == [0, 0, 1]
    demo = movielens_demo_user_labels(movielens)
    assert set(demo.values()) == {"high_rater", "low_rater"} and len(demo) == movielens.users.num_rows
    (tmp_path / "bad.csv").write_text("user,label\n1,a\n")
    with pytest.raises(ValueError, match="user_id,label"):
        read_user_labels(tmp_path / "bad.csv")


# ----------------------------------------------------------------------------------------------
# collators
# ----------------------------------------------------------------------------------------------
def test_collators_build_one_table_for_histories_and_candidates():
    catalog = BehaviorCatalog(20)
    ctr_batch = CTRCollator(catalog, max_behaviors=2)(
        [{"history": [3, 4, 5], "candidate": 5, "label": 1.0}, {"history": [6], "candidate": 9, "label": 0.0}]
    )
    table = ctr_batch["behavior_ids"]
    assert table[ctr_batch["behavior_index"]].tolist() == [[4, 5], [6, 0]]  # most recent 2 kept
    assert table[ctr_batch["candidate_index"]].tolist() == [5, 9] and ctr_batch["labels"].tolist() == [1.0, 0.0]
    packed = CTRCollator(catalog)([{"history": [3], "candidates": [7, 8], "labels": [1.0, 0.0]},
                                   {"history": [4], "candidates": [9], "labels": [0.0]}])
    assert packed["candidate_mask"].tolist() == [[1, 1], [1, 0]]
    assert packed["labels"].tolist() == [[1.0, 0.0], [0.0, -100.0]]
    news = NewsRecommendationCollator(catalog)([{"history": [1, 2], "candidates": [3, 4, 5], "labels": [1.0, 0, 0]}])
    assert news["behavior_ids"][news["candidate_index"]].tolist() == [[3, 4, 5]]
    nxt = NextBehaviorCollator(catalog)([{"history": [1, 2], "target": 7, "exclude": [1, 2]},
                                         {"history": [3], "target": 2, "exclude": [3]}])
    assert nxt["labels"].tolist() == [7, 2]  # vocabulary ids: the head ranks the whole vocabulary
    assert nxt["exclude_index"].tolist() == [[1, 2], [3, 0]]
    assert "exclude_index" not in NextBehaviorCollator(catalog)([{"history": [1], "target": 2, "exclude": []}])
    cls = UserClassificationCollator(catalog)([{"history": [1, 2], "label": 1}])
    assert cls["labels"].dtype == torch.long and cls["attention_mask"].tolist() == [[1, 1]]
