"""Tests for userbert_hf.collation: padding, per-batch behaviour tables and the pre-training collator."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

from userbert_hf import collation
from userbert_hf.collation import (
    BehaviorCatalog,
    UserBertCollator,
    UserBertPretrainingCollator,
    build_behavior_table,
    pad_sequences,
)


def _text_catalog():
    # ids 0..5; 2 and 4 have the same title, 5 has a title that is a prefix of 1's.
    tokens = torch.tensor([[0, 0, 0], [5, 6, 7], [8, 9, 0], [3, 0, 0], [8, 9, 0], [5, 6, 0]])
    return BehaviorCatalog(6, tokens)


class _FencedParser(doctest.DocTestParser):
    """Docstring examples sit inside markdown code fences: drop the ``` lines."""

    def parse(self, string, name="<string>"):
        lines = [line for line in string.splitlines() if not line.strip().startswith("```")]
        return super().parse("\n".join(lines), name)


_DOCTESTS = {t.name.split(".")[-1]: t for t in doctest.DocTestFinder(parser=_FencedParser()).find(collation) if t.examples}


@pytest.mark.parametrize("name", sorted(_DOCTESTS))
def test_docstring_example(name):
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(_DOCTESTS[name])
    assert runner.failures == 0 and runner.tries > 0


def test_docstring_examples_exist():
    assert {"BehaviorCatalog", "UserBertCollator"} <= set(_DOCTESTS)


# ----- pad_sequences -----
def test_pad_sequences_left_aligns_and_right_pads():
    out = pad_sequences([[3, 4, 5], [7], []])
    assert out.dtype == torch.long
    assert out.tolist() == [[3, 4, 5], [7, 0, 0], [0, 0, 0]]


def test_pad_sequences_pad_value_length_and_dtype():
    out = pad_sequences([[1, 2], [3]], pad_value=-1, length=4, dtype=torch.int32)
    assert out.dtype == torch.int32
    assert out.tolist() == [[1, 2, -1, -1], [3, -1, -1, -1]]


def test_pad_sequences_truncates_to_length_and_accepts_tuples_and_arrays():
    out = pad_sequences([(1, 2, 3, 4), np.array([5, 6])], length=3)
    assert out.tolist() == [[1, 2, 3], [5, 6, 0]]


def test_pad_sequences_all_empty_gives_one_padding_column():
    assert pad_sequences([[], []]).tolist() == [[0], [0]]


# ----- build_behavior_table -----
def test_build_behavior_table_indices_reconstruct_ids():
    catalog = BehaviorCatalog(20)
    a = torch.tensor([[3, 4, 0], [4, 9, 9]])
    b = torch.tensor([[9, 17], [3, 3]])
    table, (ia, ib) = build_behavior_table(catalog, a, b)
    ids = table["behavior_ids"]
    assert ids.tolist() == [0, 3, 4, 9, 17]  # sorted distinct ids, each once
    assert ia.shape == a.shape and ib.shape == b.shape
    assert torch.equal(ids[ia], a) and torch.equal(ids[ib], b)


def test_build_behavior_table_text_rows_are_catalog_tokens():
    catalog = _text_catalog()
    ids = torch.tensor([[1, 2, 0], [2, 4, 1]])
    table, (index,) = build_behavior_table(catalog, ids)
    tokens = table["behavior_token_ids"]
    assert tokens.shape == (4, 3)  # ids {0, 1, 2, 4}
    assert torch.equal(tokens[index], catalog.token_ids[ids])


def test_text_table_drops_word_columns_padded_for_every_row():
    tokens = torch.tensor([[0, 0, 0, 0], [5, 6, 7, 0], [8, 0, 0, 0], [9, 4, 0, 0]])
    catalog = BehaviorCatalog(4, tokens)
    assert catalog.table_inputs(torch.tensor([0, 2, 3]))["behavior_token_ids"].tolist() == [[0, 0], [8, 0], [9, 4]]
    assert catalog.table_inputs(torch.tensor([1]))["behavior_token_ids"].tolist() == [[5, 6, 7]]
    # A table of padding only keeps one word column.
    assert catalog.table_inputs(torch.tensor([0]))["behavior_token_ids"].tolist() == [[0]]


def test_catalog_rejects_token_table_of_wrong_shape():
    with pytest.raises(ValueError, match="num_behaviors"):
        BehaviorCatalog(5, torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(ValueError):
        BehaviorCatalog(5, torch.zeros(5, dtype=torch.long))


def test_catalog_table_inputs():
    assert BehaviorCatalog(10).table_inputs(torch.tensor([0, 7]))["behavior_ids"].tolist() == [0, 7]
    catalog = _text_catalog()
    assert not BehaviorCatalog(10).is_text and catalog.is_text
    assert catalog.table_inputs(torch.tensor([3, 1]))["behavior_token_ids"].tolist() == [[3, 0, 0], [5, 6, 7]]


# ----- UserBertCollator -----
def test_user_collator_id_table_and_index():
    collate = UserBertCollator(BehaviorCatalog(50))
    features = [{"behavior_ids": [7, 3, 7, 12]}, {"behavior_ids": [12]}, {"behavior_ids": []}]
    batch = collate(features)
    assert set(batch) == {"behavior_ids", "behavior_index", "attention_mask"}
    assert batch["behavior_ids"].tolist() == [0, 3, 7, 12]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]]
    ids = batch["behavior_ids"][batch["behavior_index"]]
    assert ids.tolist() == [[7, 3, 7, 12], [12, 0, 0, 0], [0, 0, 0, 0]]


def test_user_collator_text_shares_a_behaviour_once():
    catalog = _text_catalog()
    features = [{"behavior_ids": [1, 3]} for _ in range(20)] + [{"behavior_ids": [2]}]
    batch = UserBertCollator(catalog)(features)
    tokens = batch["behavior_token_ids"]
    assert tokens.shape == (4, 3)  # pad + {1, 2, 3}: behaviour 1 of 20 users appears once
    assert (tokens == catalog.token_ids[1]).all(-1).sum() == 1
    assert torch.equal(tokens[batch["behavior_index"]], catalog.token_ids[pad_sequences([f["behavior_ids"] for f in features])])


def test_user_collator_max_behaviors_keeps_most_recent():
    batch = UserBertCollator(BehaviorCatalog(50), max_behaviors=2)([{"behavior_ids": [5, 6, 7]}, {"behavior_ids": [9]}])
    ids = batch["behavior_ids"][batch["behavior_index"]]
    assert ids.tolist() == [[6, 7], [9, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1], [1, 0]]


# ----- UserBertPretrainingCollator -----
def test_pretraining_collator_shapes_and_alignment():
    features = [
        {"behavior_ids": [4, 5, 6], "timestamps": [10, 20, 30], "user_index": 7},
        {"behavior_ids": [8], "timestamps": [15], "user_index": 2},
    ]
    batch = UserBertPretrainingCollator()(features)
    assert set(batch) == {"sequence_ids", "timestamps", "attention_mask", "user_index"}
    assert batch["sequence_ids"].tolist() == [[4, 5, 6], [8, 0, 0]]
    assert batch["timestamps"].tolist() == [[10, 20, 30], [15, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["user_index"].tolist() == [7, 2]
    assert batch["user_index"].dtype == torch.long


def test_pretraining_collator_truncation_keeps_timestamps_aligned():
    features = [
        {"behavior_ids": [1, 2, 3, 4, 5], "timestamps": [100, 200, 300, 400, 500], "user_index": 0},
        {"behavior_ids": [6, 7], "timestamps": [1, 2], "user_index": 1},
    ]
    batch = UserBertPretrainingCollator(max_behaviors=3)(features)
    assert batch["sequence_ids"].tolist() == [[3, 4, 5], [6, 7, 0]]
    assert batch["timestamps"].tolist() == [[300, 400, 500], [1, 2, 0]]
    assert batch["sequence_ids"].shape == batch["timestamps"].shape


def test_pretraining_collator_ordinal_time_without_timestamps():
    batch = UserBertPretrainingCollator()([{"behavior_ids": [3, 4], "user_index": 5}, {"behavior_ids": [9], "user_index": 6}])
    assert batch["timestamps"].tolist() == [[0, 1], [0, 1]]
    batch["timestamps"][0, 0] = 99  # a real tensor, not an expanded view sharing memory
    assert batch["timestamps"][1, 0] == 0


# ----- BehaviorCatalog.identical -----
def test_identical_id_catalog_is_id_equality():
    catalog = BehaviorCatalog(10)
    a = torch.tensor([[1], [2], [3]])
    b = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(catalog.identical(a, b), a == b)


def test_identical_text_catalog_matches_duplicate_titles():
    catalog = _text_catalog()
    a = torch.tensor([[1], [2], [4], [5]])
    b = torch.tensor([[1, 2, 3, 4, 5]])
    expected = torch.tensor(
        [
            [True, False, False, False, False],  # 1: only itself (5 is a prefix, not the same title)
            [False, True, False, True, False],  # 2 == 4 (same words)
            [False, True, False, True, False],
            [False, False, False, False, True],
        ]
    )
    assert torch.equal(catalog.identical(a, b), expected)
