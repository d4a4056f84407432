"""Sampler options for small catalogues: pool as a share of the catalogue, the user's own behaviours kept out of
its MBP negatives, mixed hard + random negatives, and the balanced BSM split."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from userbert_hf import UserBertConfig, UserBertModel
from userbert_hf.collation import BehaviorCatalog, pad_sequences
from userbert_hf.data import load_default_dataset
from userbert_hf.pretraining.masking import choose_balanced_split, choose_period_split
from userbert_hf.pretraining.samplers import build_sampler
from userbert_hf.pretraining.trainer import UserBertTrainingArguments


@pytest.fixture(scope="module")
def movielens():
    return load_default_dataset(verbose=False)


@pytest.fixture(scope="module")
def id_model(movielens):
    torch.manual_seed(0)
    config = UserBertConfig.from_preset(
        "gru4rec", behavior_vocab_size=len(movielens.vocabulary), hidden_size=16, max_behaviors=100
    )
    return UserBertModel(config).eval()


def make_sampler(movielens, strategy="medium_hard", **kwargs):
    settings = dict(behavior_pool_size=1000, sequence_pool_size=100, sequence_pool_interval=50, seed=7)
    settings.update(kwargs)
    return build_sampler(strategy, BehaviorCatalog(len(movielens.vocabulary)), movielens.users, **settings)


def test_pool_size_is_the_fraction_of_the_catalogue(movielens):
    catalogue = len(movielens.vocabulary) - 1
    sampler = make_sampler(movielens, behavior_pool_fraction=0.01)
    assert sampler.behavior_pool_size == round(0.01 * catalogue) != 1000
    pool = sampler.behavior_pool_ids(3)
    assert len(pool) == len(set(pool.tolist())) == round(0.01 * catalogue)
    assert make_sampler(movielens, behavior_pool_fraction=1.0).behavior_pool_size == catalogue
    assert make_sampler(movielens, behavior_pool_fraction=1e-6).behavior_pool_size == 4  # never below K
    with pytest.raises(ValueError, match="behavior_pool_fraction"):
        make_sampler(movielens, behavior_pool_fraction=1.5)


def busy_users(movielens, count=6):
    """Users with many behaviours, whose own behaviours the hard negatives would otherwise often hit."""
    lengths = np.array([len(row) for row in movielens.users["behavior_ids"]])
    return np.argsort(-lengths, kind="stable")[:count].tolist()  # stable: many users tie at the length cap


def clustered_model(id_model, movielens, users):
    """A copy of ``id_model`` whose behaviour table puts each user's own behaviours around a direction of that
    user's, far from the rest: the hardest negatives of a user's behaviour are then that user's other behaviours,
    by construction rather than by the chance of a random initialisation."""
    import copy

    model = copy.deepcopy(id_model)
    table = model.behavior_encoder.behavior_embeddings.weight  # (V, H)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for user in users:
            own = torch.tensor(movielens.users[user]["behavior_ids"])
            direction = torch.randn(table.shape[1], generator=generator)
            table[own] = direction + 0.01 * torch.randn(len(own), table.shape[1], generator=generator)
    return model


@pytest.mark.parametrize("strategy", ["medium_hard", "random", "hardest"])
def test_own_behaviours_never_appear_among_the_users_negatives(movielens, id_model, strategy):
    users = busy_users(movielens)
    targets, target_users = [], []
    for user in users:
        own = movielens.users[user]["behavior_ids"]
        targets += own[:5]
        target_users += [user] * 5
    targets, target_users = torch.tensor(targets), torch.tensor(target_users)
    id_model = clustered_model(id_model, movielens, users)
    hits = {}
    for exclude in (False, True):
        sampler = make_sampler(movielens, strategy, exclude_own_behaviors=exclude, behavior_pool_fraction=1.0)
        hits[exclude] = 0
        for step in range(3):
            negatives = sampler.behavior_negatives(id_model, targets, target_users, step)  # (N, K)
            assert negatives.shape == (len(targets), 4) and not (negatives == targets[:, None]).any()
            for row, user in zip(negatives.tolist(), target_users.tolist()):
                hits[exclude] += len(set(row) & set(movielens.users[user]["behavior_ids"]))
    assert hits[True] == 0
    if strategy != "random":  # hard negatives over the whole catalogue do hit these users' own behaviours
        assert hits[False] > 0


def test_exclusion_needs_the_users():
    with pytest.raises(ValueError, match="users"):
        build_sampler("medium_hard", BehaviorCatalog(50), None, behavior_pool_size=20, exclude_own_behaviors=True)


def test_mixed_negatives_are_hard_then_random(movielens, id_model):
    targets, users = torch.tensor([10, 500, 3000]), torch.tensor([0, 1, 2])
    step = 2
    mixed = make_sampler(movielens, hard_negative_fraction=0.5)
    assert (mixed.num_hard_behavior_negatives, mixed.num_hard_sequence_negatives) == (2, 2)
    negatives = mixed.behavior_negatives(id_model, targets, users, step)  # (3, 4)
    hard = make_sampler(movielens).behavior_negatives(id_model, targets, users, step)
    random = make_sampler(movielens, strategy="random").behavior_negatives(id_model, targets, users, step)
    assert torch.equal(negatives[:, :2], hard[:, :2])  # the two most similar pool behaviours
    assert torch.equal(negatives[:, 2:], random[:, 2:])  # then the user's uniform draws
    all_random = make_sampler(movielens, hard_negative_fraction=0.0).behavior_negatives(id_model, targets, users, step)
    assert torch.equal(all_random, random)


def test_mixed_sequence_negatives_are_top_cosine_then_distinct_random(movielens, id_model):
    sampler = make_sampler(movielens, hard_negative_fraction=0.5)
    users = torch.arange(0, 30)
    seqs, windows = [], []
    for u in users.tolist():
        row = movielens.users[u]
        half = max(1, len(row["behavior_ids"]) // 2)
        seqs.append(row["behavior_ids"][:half])
        windows.append([min(row["timestamps"][:half]), max(row["timestamps"][:half])])
    ids, windows = pad_sequences(seqs), torch.tensor(windows)
    targets = sampler.encode_sequences(id_model, ids)
    result = sampler.sequence_negatives(id_model, ids, None, users, windows, 0)
    pool = sampler.sequence_pool
    checked = 0
    for b in range(len(users)):
        allowed = [j for j in range(len(pool.ids)) if int(pool.users[j]) != int(users[b])
                   and (pool.windows[j, 1] < windows[b, 0] or pool.windows[j, 0] > windows[b, 1])]
        if len(allowed) < 4:
            continue
        checked += 1
        as_list = [pool.ids[j][pool.ids[j] != 0].tolist() for j in allowed]
        sims = F.cosine_similarity(targets[b][None], pool.embeddings[allowed], dim=-1)
        order = sims.argsort(descending=True).tolist()
        assert result.ids[b][:2] == [as_list[i] for i in order[:2]]  # the two hardest
        random_part = result.ids[b][2:]
        assert len(random_part) == 2 and all(seq in as_list for seq in random_part)
        assert not any(seq in result.ids[b][:2] for seq in random_part)  # never a hard pick again
    assert checked > 10
    # Over the targets, the random half is not simply the next most similar candidates.
    assert any(result.ids[b][2:] != [as_list[i] for i in order[2:4]] for b in range(len(users)))


def test_balanced_split_cuts_near_the_middle():
    rng = np.random.default_rng(0)
    ts = np.arange(12)
    assert {choose_balanced_split(ts, 2, 2, 0, rng) for _ in range(20)} == {6}
    assert {choose_balanced_split(np.arange(7), 2, 2, 0, rng) for _ in range(50)} == {3, 4}  # ties at random
    uniform = {choose_period_split(ts, 2, 2, 0, rng) for _ in range(200)}
    assert uniform == set(range(2, 11))
    # Only time gaps can be split points: the valid one nearest the middle.
    ts = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 2])
    assert choose_balanced_split(ts, 2, 2, 0, rng) == 8
    assert choose_balanced_split(np.zeros(6, dtype=int), 2, 2, 0, rng) is None


def test_options_are_validated_by_name(tmp_path):
    with pytest.raises(ValueError, match="--hard_negative_fraction"):
        UserBertTrainingArguments(output_dir=str(tmp_path), hard_negative_fraction=1.2)
    with pytest.raises(ValueError, match="--behavior_pool_fraction"):
        UserBertTrainingArguments(output_dir=str(tmp_path), behavior_pool_fraction=0.0)
    with pytest.raises(ValueError, match="--bsm_positive"):
        UserBertTrainingArguments(output_dir=str(tmp_path), bsm_positive="halves")
    args = UserBertTrainingArguments(output_dir=str(tmp_path), bsm_positive="balanced", hard_negative_fraction=0.5)
    assert args.hard_negative_fraction == 0.5


def test_balanced_bsm_positive_halves_each_history(movielens):
    from userbert_hf.collation import UserBertPretrainingCollator
    from userbert_hf.pretraining.objectives import OBJECTIVES, ObjectiveSettings

    users = movielens.users.add_column("user_index", list(range(len(movielens.users))))
    batch = UserBertPretrainingCollator(100)([users[i] for i in range(48)])
    lengths = batch["attention_mask"].sum(1)
    gaps = {}
    for positive in ("period", "balanced"):
        prepared = OBJECTIVES["userbert"](ObjectiveSettings(seed=1, bsm_positive=positive), BehaviorCatalog(20_000)).prepare(batch, step=3)
        gaps[positive] = []
        for row in range(len(lengths)):
            if not prepared.bsm_valid[row]:
                continue
            a_len = int(prepared.attention_mask[row].sum())
            b_len = int((prepared.positive_ids[row] != 0).sum())
            assert a_len + b_len == int(lengths[row])
            expected = choose_balanced_split(batch["timestamps"][row, : int(lengths[row])].numpy(), 2, 2, 0, np.random.default_rng(0))
            if positive == "balanced" and expected is not None and abs(2 * expected - int(lengths[row])) <= 1:
                assert a_len == expected or abs(2 * a_len - int(lengths[row])) <= 1  # the middle (a tie at random)
            gaps[positive].append(abs(a_len - b_len))
    assert np.mean(gaps["balanced"]) < np.mean(gaps["period"]) / 2  # far more even than a uniform split
