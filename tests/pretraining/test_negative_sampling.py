"""The negative samplers: pools, refresh schedule, top-K by cosine, exclusions, per-user random draws, state."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from userbert_hf import UserBertConfig, UserBertModel
from userbert_hf.collation import BehaviorCatalog
from userbert_hf.data import load_default_dataset
from userbert_hf.collation import pad_sequences
from userbert_hf.pretraining.samplers import (
    HardestNegativeSampler,
    MediumHardNegativeSampler,
    RandomNegativeSampler,
    build_sampler,
    top_k_by_cosine,
)


@pytest.fixture(scope="module")
def movielens():
    data = load_default_dataset(verbose=False)
    return data


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


def test_paper_defaults():
    sampler = MediumHardNegativeSampler(BehaviorCatalog(5000))
    assert (sampler.behavior_pool_size, sampler.sequence_pool_size, sampler.sequence_pool_interval) == (1000, 100, 50)
    assert (sampler.num_behavior_negatives, sampler.num_sequence_negatives, sampler.strategy) == (4, 4, "medium_hard")


def test_behavior_pool_is_uniform_distinct_and_changes_every_step(movielens):
    sampler = make_sampler(movielens)
    pools = [sampler.behavior_pool_ids(step) for step in range(5)]
    for pool in pools:
        assert len(pool) == 1000 and len(set(pool.tolist())) == 1000
        assert pool.min() >= 1 and pool.max() < len(movielens.vocabulary)  # never padding
    for a, b in zip(pools, pools[1:]):
        assert not torch.equal(a, b)
    # Same seed and step -> same pool (identical on every rank and after resume).
    assert torch.equal(make_sampler(movielens).behavior_pool_ids(3), pools[3])
    # Roughly uniform: over many steps every region of the id space is drawn about equally.
    draws = torch.cat([sampler.behavior_pool_ids(s) for s in range(200)])
    counts = torch.histc(draws.float(), bins=10, min=1, max=len(movielens.vocabulary))
    assert counts.min() / counts.max() > 0.9


def test_behavior_negatives_are_exact_top_k_by_cosine_and_never_the_target(movielens, id_model):
    sampler = make_sampler(movielens)
    step = 4
    targets = torch.tensor([1, 50, 300, 2000, 9000])
    pool = sampler.behavior_pool_ids(step)
    targets[0] = pool[0]  # a target that is in the pool must not be its own negative
    negatives = sampler.behavior_negatives(id_model, targets, torch.zeros_like(targets), step)
    assert negatives.shape == (5, 4)
    with torch.no_grad():
        table = id_model.encode_behaviors(behavior_ids=torch.arange(len(movielens.vocabulary)))
    for t, row in zip(targets.tolist(), negatives.tolist()):
        assert t not in row
        candidates = [p for p in pool.tolist() if p != t]
        sims = F.cosine_similarity(table[t][None], table[candidates], dim=-1)
        expected = [candidates[i] for i in sims.topk(4).indices.tolist()]
        assert row == expected
        assert set(row) <= set(pool.tolist())


def test_identical_text_is_not_a_negative():
    # Behaviours 1 and 2 have the same text under different ids ("NFL Schedule: Week 1" twice).
    tokens = torch.tensor([[0, 0], [5, 6], [5, 6], [7, 0], [8, 0], [9, 0], [10, 0], [11, 0]])
    catalog = BehaviorCatalog(8, tokens)
    config = UserBertConfig.from_preset(
        "naml", behavior_vocab_size=8, word_vocab_size=12, hidden_size=8, attention_query_size=4, max_words=2
    )
    model = UserBertModel(config).eval()
    sampler = MediumHardNegativeSampler(catalog, behavior_pool_size=7, num_behavior_negatives=4, seed=0)
    for step in range(5):
        negatives = sampler.behavior_negatives(model, torch.tensor([1]), torch.tensor([0]), step)
        assert 1 not in negatives.tolist()[0] and 2 not in negatives.tolist()[0]
    assert catalog.identical(torch.tensor([[1]]), torch.tensor([[2, 3]])).tolist() == [[True, False]]


def test_top_k_by_cosine_respects_allowed_and_reports_shortage():
    targets = torch.tensor([[1.0, 0.0]])
    pool = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    allowed = torch.tensor([[False, True, True, True]])
    picks, ok = top_k_by_cosine(targets, pool, allowed, 2)
    assert picks.tolist() == [[1, 2]] and ok.all()
    picks, ok = top_k_by_cosine(targets, pool, torch.tensor([[False, True, False, False]]), 2)
    assert ok.tolist() == [[True, False]]


def test_sequence_pool_refreshes_exactly_every_t_steps(movielens, id_model):
    sampler = make_sampler(movielens, sequence_pool_interval=5, sequence_pool_size=20)
    refreshed, pools = [], {}
    for step in range(16):
        if sampler.maybe_refresh_sequence_pool(id_model, step):
            refreshed.append(step)
        pools[step] = sampler.sequence_pool.ids.clone()
    assert refreshed == [0, 5, 10, 15]
    for step in range(16):
        same_interval = step // 5 == (step - 1) // 5 if step else True
        if step and same_interval:
            assert torch.equal(pools[step], pools[step - 1]), f"pool changed inside an interval at step {step}"
        elif step:
            assert not torch.equal(pools[step][: len(pools[step - 1])], pools[step - 1][: len(pools[step])])
    assert sampler.sequence_pool.ids.shape[0] == 20
    assert sampler.counters["sequence_pool_refreshes"] == 4


def test_sequence_pool_crops_are_real_contiguous_subsequences(movielens, id_model):
    sampler = make_sampler(movielens)
    sampler.maybe_refresh_sequence_pool(id_model, 0)
    pool = sampler.sequence_pool
    assert len(pool.ids) == 100
    for ids, user, window in zip(pool.ids, pool.users, pool.windows):
        crop = ids[ids != 0].tolist()
        row = movielens.users[int(user)]
        seq, ts = row["behavior_ids"], row["timestamps"]
        starts = [i for i in range(len(seq) - len(crop) + 1) if seq[i : i + len(crop)] == crop]
        assert starts, "a pool sequence is not a crop of its user's behaviours"
        assert len(crop) >= 2 or len(seq) < 2
        s = starts[0]
        assert window.tolist() == [min(ts[s : s + len(crop)]), max(ts[s : s + len(crop)])]


def test_sequence_negatives_never_overlap_a_and_are_top_p_by_cosine(movielens, id_model):
    sampler = make_sampler(movielens)
    step = 0
    users = torch.arange(0, 40)
    windows, seqs = [], []
    for u in users.tolist():
        row = movielens.users[u]
        half = max(1, len(row["behavior_ids"]) // 2)
        seqs.append(row["behavior_ids"][:half])
        windows.append([min(row["timestamps"][:half]), max(row["timestamps"][:half])])
    windows = torch.tensor(windows)
    ids = pad_sequences(seqs)
    targets = sampler.encode_sequences(id_model, ids)
    result = sampler.sequence_negatives(id_model, ids, None, users, windows, step)
    pool = sampler.sequence_pool
    for b in range(len(users)):
        assert result.has_negatives[b]
        assert len(result.ids[b]) == 4
        for neg_user, span in zip(result.users[b], result.windows[b]):
            assert neg_user != int(users[b])
            assert span[1] < windows[b, 0] or span[0] > windows[b, 1], "negative overlaps A in time"
        # Negatives from the pool are exactly the most cosine-similar allowed candidates.
        allowed = [
            j for j in range(len(pool.ids))
            if int(pool.users[j]) != int(users[b])
            and (pool.windows[j, 1] < windows[b, 0] or pool.windows[j, 0] > windows[b, 1])
        ]
        if len(allowed) >= 4:
            sims = F.cosine_similarity(targets[b][None], pool.embeddings[allowed], dim=-1)
            expected = [pool.ids[allowed[i]][pool.ids[allowed[i]] != 0].tolist() for i in sims.topk(4).indices.tolist()]
            assert result.ids[b] == expected


def test_fallback_negatives_when_the_pool_has_no_valid_candidate(movielens, id_model):
    sampler = make_sampler(movielens, sequence_pool_size=1)
    sampler.maybe_refresh_sequence_pool(id_model, 0)
    user = int(sampler.sequence_pool.users[0])  # the only pool sequence belongs to the target's user
    row = movielens.users[user]
    window = torch.tensor([[min(row["timestamps"]), max(row["timestamps"])]])
    result = sampler.sequence_negatives(id_model, pad_sequences([row["behavior_ids"][:3]]), None, torch.tensor([user]), window, 0)
    assert result.has_negatives == [True]
    for span, neg_user in zip(result.windows[0], result.users[0]):
        assert neg_user != user and (span[1] < window[0, 0] or span[0] > window[0, 1])
    assert sampler.counters["bsm_fallback_negatives"] == 4


def test_random_and_hardest_strategies(movielens, id_model):
    targets = torch.tensor([10, 20, 30])
    users = torch.tensor([0, 0, 1])
    random_neg = make_sampler(movielens, strategy="random").behavior_negatives(id_model, targets, users, 0)
    assert random_neg.shape == (3, 4) and not (random_neg == targets[:, None]).any()
    hardest = make_sampler(movielens, strategy="hardest").behavior_negatives(id_model, targets, users, 0)
    with torch.no_grad():
        table = id_model.encode_behaviors(behavior_ids=torch.arange(len(movielens.vocabulary)))
    sims = F.normalize(table[targets], dim=-1) @ F.normalize(table[1:], dim=-1).T
    sims[torch.arange(3), targets - 1] = -2  # the target itself is excluded
    assert hardest.tolist() == (sims.topk(4).indices + 1).tolist()
    with pytest.raises(ValueError, match="strategy"):
        make_sampler(movielens, strategy="easiest")


def test_state_round_trip(tmp_path, movielens, id_model):
    sampler = make_sampler(movielens, sequence_pool_interval=3)
    sampler.maybe_refresh_sequence_pool(id_model, 4)
    sampler.save(tmp_path)
    restored = make_sampler(movielens, sequence_pool_interval=3)
    assert restored.load(tmp_path)
    assert restored.sequence_pool.step == 3
    assert torch.equal(restored.sequence_pool.embeddings, sampler.sequence_pool.embeddings)
    assert not restored.maybe_refresh_sequence_pool(id_model, 5)  # same interval: no refresh after resume
    (tmp_path / "negative_sampler.safetensors").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="negative sampler state"):
        make_sampler(movielens).load(tmp_path)


def test_sampler_classes_are_registered_and_share_one_constructor(movielens):
    for strategy, cls in (("medium_hard", MediumHardNegativeSampler), ("random", RandomNegativeSampler),
                          ("hardest", HardestNegativeSampler)):
        sampler = make_sampler(movielens, strategy=strategy, behavior_table_interval=7)
        assert type(sampler) is cls and sampler.strategy == strategy
    assert make_sampler(movielens, strategy="hardest", behavior_table_interval=7).behavior_table_interval == 7


def test_random_negatives_depend_on_the_user_not_on_the_batch(movielens):
    # A user's draws are the same whether it is alone or next to other users (micro-batch / rank layout).
    sampler = make_sampler(movielens, strategy="random")
    targets, users = torch.tensor([10, 11, 12, 13, 14]), torch.tensor([3, 3, 8, 9, 9])
    together = sampler.behavior_negatives(None, targets, users, step=5)
    for user in (3, 8, 9):
        rows = users == user
        alone = sampler.behavior_negatives(None, targets[rows], users[rows], step=5)
        assert torch.equal(together[rows], alone)
    assert not torch.equal(together[:2], together[3:])  # different users draw differently
    assert not torch.equal(sampler.behavior_negatives(None, targets, users, step=6), together)


def test_hardest_table_refresh_follows_its_own_interval(movielens, id_model):
    sampler = make_sampler(movielens, strategy="hardest", behavior_table_interval=3, sequence_pool_interval=100)
    encoded_at = []
    for step in range(7):
        sampler.behavior_negatives(id_model, torch.tensor([10]), torch.tensor([0]), step)
        encoded_at.append(sampler.full_behavior_step)
    assert encoded_at == [0, 0, 0, 3, 3, 3, 6]
