"""Objectives' batch preparation: masking, non-overlapping periods, PTUM targets and CP augmentations, as the
papers specify them."""

import numpy as np
import pytest
import torch

from userbert_hf.collation import BehaviorCatalog, UserBertPretrainingCollator
from userbert_hf.data import load_default_dataset
from userbert_hf.pretraining.masking import (
    choose_masked_positions,
    choose_period_split,
    crop_view,
    mask_view,
    num_masked,
    reorder_view,
)
from userbert_hf.pretraining.objectives import OBJECTIVES, ObjectiveSettings


def PretrainingBatchBuilder(objective="userbert", **settings):
    """The objective's batch preparation alone (no sampler needed to prepare)."""
    return OBJECTIVES[objective](ObjectiveSettings(**settings), BehaviorCatalog(20_000))


@pytest.fixture(scope="module")
def movielens_batch():
    data = load_default_dataset(verbose=False)
    users = data.users.add_column("user_index", list(range(len(data.users))))
    return UserBertPretrainingCollator(100)([users[i] for i in range(64)])


@pytest.mark.parametrize("length,expected", [(1, 1), (5, 1), (9, 1), (10, 1), (19, 1), (20, 2), (100, 10), (0, 0)])
def test_ten_percent_masked_and_at_least_one(length, expected):
    assert num_masked(length, 0.1) == expected
    rng = np.random.default_rng(0)
    positions = choose_masked_positions(length, 0.1, rng)
    assert len(positions) == expected
    assert len(set(positions.tolist())) == expected
    assert all(0 <= p < length for p in positions)


def test_builder_masks_only_valid_positions_on_real_data(movielens_batch):
    prepared = PretrainingBatchBuilder(seed=3).prepare(movielens_batch, step=0)
    masked, valid = prepared.masked_positions, prepared.attention_mask
    assert not (masked & ~valid).any(), "padding was masked"
    lengths = valid.sum(1)
    for row in range(len(lengths)):
        expected = max(1, int(int(lengths[row]) * 0.1)) if lengths[row] >= 2 else 0  # one behaviour: sits out MBP
        assert int(masked[row].sum()) == expected
    # masked_ids are the original behaviours at the masked positions, row-major.
    assert torch.equal(prepared.masked_ids, prepared.sequence_ids[masked])
    assert (prepared.masked_ids > 0).all()


def test_periods_never_overlap_in_time(movielens_batch):
    prepared = PretrainingBatchBuilder(seed=1, bsm_min_behaviors=2).prepare(movielens_batch, step=5)
    times = movielens_batch["timestamps"]
    lengths = movielens_batch["attention_mask"].sum(1)
    checked = 0
    for row in range(len(lengths)):
        n = int(lengths[row])
        if not prepared.bsm_valid[row]:
            continue
        a_len = int(prepared.attention_mask[row].sum())
        b_len = int((prepared.positive_ids[row] != 0).sum())
        assert a_len >= 2 and b_len >= 2 and a_len + b_len == n
        a_times, b_times = times[row, :a_len], times[row, a_len:n]
        assert a_times.max() < b_times.min(), "A and B overlap in time"
        assert prepared.target_window[row].tolist() == [int(a_times.min()), int(a_times.max())]
        # A then B is the user's sequence, split once.
        joined = torch.cat([prepared.sequence_ids[row, :a_len], prepared.positive_ids[row, :b_len]])
        assert torch.equal(joined, movielens_batch["sequence_ids"][row, :n])
        checked += 1
    assert checked > 50


def test_split_respects_gap_and_minimum_sizes():
    rng = np.random.default_rng(0)
    ts = np.array([1, 1, 1, 5, 5, 9])
    for _ in range(20):
        s = choose_period_split(ts, 2, 2, 0, rng)
        assert s == 3  # the only split with >= 2 on each side and a strict time gap
    assert choose_period_split(ts, 2, 2, 4, rng) is None  # gap must exceed 4: no split qualifies
    assert choose_period_split(np.array([7, 7, 7, 7]), 1, 1, 0, rng) is None  # one instant: no two periods
    assert choose_period_split(np.array([1]), 1, 1, 0, rng) is None


def test_users_without_two_periods_are_counted_not_crashed():
    batch = {
        "sequence_ids": torch.tensor([[4, 5, 6, 0], [7, 0, 0, 0], [1, 2, 3, 4]]),
        "timestamps": torch.tensor([[3, 3, 3, 0], [1, 0, 0, 0], [1, 2, 3, 4]]),
        "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]]),
        "user_index": torch.tensor([0, 1, 2]),
    }
    builder = PretrainingBatchBuilder(seed=0)
    prepared = builder.prepare(batch, step=0)
    assert prepared.bsm_valid.tolist() == [False, False, True]
    assert builder.stats["bsm_excluded_users"] == 2
    assert int(prepared.bsm_valid.sum()) == 1
    # Users without two periods still take part in MBP with their whole sequence...
    assert prepared.attention_mask[0].sum() == 3 and prepared.masked_positions[0].sum() == 1
    # ...but a one-behaviour user sits out MBP (its masked position would see only [MASK]) and is counted.
    assert not prepared.masked_positions[1].any()
    assert builder.stats["mbp_excluded_users"] == 1
    assert prepared.masked_ids.tolist() == prepared.sequence_ids[prepared.masked_positions].tolist()


def test_decisions_depend_on_user_and_step_not_on_batch_layout(movielens_batch):
    builder = PretrainingBatchBuilder(seed=9)
    whole = builder.prepare(movielens_batch, step=2)
    half = {k: v[32:] for k, v in movielens_batch.items()}
    part = builder.prepare(half, step=2)
    width = part.masked_positions.shape[1]
    assert torch.equal(whole.masked_positions[32:, :width], part.masked_positions)
    assert torch.equal(whole.bsm_valid[32:], part.bsm_valid)
    other_step = builder.prepare(movielens_batch, step=3)
    assert not torch.equal(whole.masked_positions, other_step.masked_positions)


def test_cl4srec_augmentations():
    rng = np.random.default_rng(0)
    seq = list(range(1, 11))
    cropped, _ = crop_view(seq, 0.6, rng)
    assert len(cropped) == 6 and cropped == seq[cropped[0] - 1 : cropped[0] + 5]
    same, masked = mask_view(seq, 0.3, rng)
    assert same == seq and len(masked) == 3 and len(set(masked)) == 3
    reordered, _ = reorder_view(seq, 0.6, rng)
    assert sorted(reordered) == seq
    changed = [i for i in range(10) if reordered[i] != seq[i]]
    assert changed and max(changed) - min(changed) < 6  # only a window of 6 moved


def test_ptum_targets_are_the_last_k():
    batch = {
        "sequence_ids": torch.tensor([[4, 5, 6, 7, 8], [9, 3, 0, 0, 0]]),
        "timestamps": torch.zeros(2, 5, dtype=torch.long),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]),
        "user_index": torch.tensor([0, 1]),
    }
    prepared = PretrainingBatchBuilder(objective="ptum", ptum_next_k=2, seed=0).prepare(batch, step=0)
    assert prepared.next_ids.tolist() == [[7, 8], [3, 0]]
    assert prepared.next_valid.tolist() == [[True, True], [True, False]]
    assert prepared.sequence_ids[0, :3].tolist() == [4, 5, 6]
    assert prepared.sequence_ids[1].tolist()[:1] == [9]
