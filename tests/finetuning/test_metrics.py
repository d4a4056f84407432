"""Tests for userbert_hf.finetuning.metrics (hand-computed cases + sklearn / brute-force cross-checks)."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import ndcg_score as sk_ndcg_score

from userbert_hf.finetuning import metrics as M
from userbert_hf.finetuning.metrics import (
    RankingAccumulator,
    auc_score,
    average_precision,
    compute_ranks,
    ctr_metrics,
    dcg_score,
    full_ranking_metrics,
    grouped_impression_metrics,
    impression_metrics,
    metrics_from_ranks,
    mrr_score,
    ndcg_score,
)
from userbert_hf.finetuning.ctr import make_ctr_compute_metrics
from userbert_hf.finetuning.news import make_news_compute_metrics
from userbert_hf.finetuning.next_item import make_next_item_compute_metrics

LABELS = np.array([1, 0, 0, 1])
SCORES = np.array([0.9, 0.8, 0.1, 0.3])
# ranking by score: idx0 (0.9, clicked), idx1 (0.8), idx3 (0.3, clicked), idx2 (0.1)
LOG2_3 = math.log2(3)


# ---------------------------------------------------------------- reference MIND script
def _mind_mrr(y_true, y_score):
    order = np.argsort(y_score)[::-1]
    y_true = np.take(y_true, order)
    rr_score = y_true / (np.arange(len(y_true)) + 1)
    return np.sum(rr_score) / np.sum(y_true)


def _mind_dcg(y_true, y_score, k=10):
    order = np.argsort(y_score)[::-1]
    y_true = np.take(y_true, order[:k])
    gains = 2**y_true - 1
    discounts = np.log2(np.arange(len(y_true)) + 2)
    return np.sum(gains / discounts)


def _mind_ndcg(y_true, y_score, k=10):
    return _mind_dcg(y_true, y_score, k) / _mind_dcg(y_true, y_true, k)


def _random_impressions(rng, n, min_len=2, max_len=30, continuous=True):
    labels, scores = [], []
    for _ in range(n):
        length = rng.integers(min_len, max_len + 1)
        y = (rng.random(length) < 0.2).astype(int)
        s = rng.normal(size=length) if continuous else rng.integers(0, 4, size=length).astype(float)
        labels.append(y)
        scores.append(s)
    return labels, scores


# ---------------------------------------------------------------- per-impression, by hand
def test_auc_hand():
    # positives {0.9, 0.3}, negatives {0.8, 0.1}: pairs (0.9>0.8) (0.9>0.1) (0.3<0.8) (0.3>0.1) -> 3/4
    assert auc_score(LABELS, SCORES) == pytest.approx(0.75)


def test_auc_ties_average_rank():
    # pos {0.5, 0.2}, neg {0.5, 0.1}: (0.5 vs 0.5 tie -> 0.5) + 1 + 0 + 1 = 2.5 / 4
    y, s = [1, 0, 1, 0], [0.5, 0.5, 0.2, 0.1]
    assert auc_score(y, s) == pytest.approx(0.625)
    assert auc_score(y, s) == pytest.approx(roc_auc_score(y, s))
    # all tied -> 0.5
    assert auc_score([1, 0, 0], [0.3, 0.3, 0.3]) == pytest.approx(0.5)


def test_auc_single_class_raises():
    with pytest.raises(ValueError):
        auc_score([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError):
        auc_score([1, 0], [0.1])
    with pytest.raises(ValueError):
        auc_score([2, 0], [0.1, 0.2])  # non-binary


def test_mrr_hand():
    # clicked items at ranks 1 and 3 -> (1/1 + 1/3) / 2 = 2/3
    assert mrr_score(LABELS, SCORES) == pytest.approx((1 + 1 / 3) / 2)
    # ties count against the clicks: the tied non-clicked item 1 first -> labels [0,1,1,0] -> (1/2 + 1/3) / 2
    assert mrr_score([1, 0, 1, 0], [0.5, 0.5, 0.2, 0.1]) == pytest.approx(5 / 12)
    with pytest.raises(ValueError):
        mrr_score([0, 0], [0.1, 0.2])


def test_ndcg_hand():
    # DCG@5 = (2^1-1)/log2(2) + (2^1-1)/log2(4) = 1 + 0.5 = 1.5
    # IDCG@5 = 1/log2(2) + 1/log2(3) = 1 + 0.63093 = 1.63093 -> 0.91972
    assert dcg_score(LABELS, SCORES, 5) == pytest.approx(1.5)
    assert ndcg_score(LABELS, SCORES, 5) == pytest.approx(1.5 / (1 + 1 / LOG2_3))
    assert ndcg_score(LABELS, SCORES, 10) == pytest.approx(1.5 / (1 + 1 / LOG2_3))
    # @1: top item is clicked -> 1/1
    assert ndcg_score(LABELS, SCORES, 1) == pytest.approx(1.0)
    # @2: DCG = 1 + 0/log2(3) = 1 ; IDCG = 1 + 1/log2(3) -> 0.61315
    assert ndcg_score(LABELS, SCORES, 2) == pytest.approx(1 / (1 + 1 / LOG2_3))
    with pytest.raises(ValueError):
        ndcg_score([0, 0, 0], [0.1, 0.2, 0.3], 5)


def test_per_impression_match_mind_reference_and_sklearn():
    rng = np.random.default_rng(0)
    labels, scores = _random_impressions(rng, 80)
    checked = 0
    for y, s in zip(labels, scores):
        if y.sum() == 0:
            continue
        assert mrr_score(y, s) == pytest.approx(_mind_mrr(y, s))
        for k in (1, 5, 10):
            assert ndcg_score(y, s, k) == pytest.approx(_mind_ndcg(y, s, k))
            # binary labels: 2^rel - 1 == rel, so sklearn's linear-gain nDCG agrees (no ties here)
            assert ndcg_score(y, s, k) == pytest.approx(sk_ndcg_score([y], [s], k=k))
        if 0 < y.sum() < len(y):
            assert auc_score(y, s) == pytest.approx(roc_auc_score(y, s))
            checked += 1
    assert checked > 20


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    labels, scores = _random_impressions(rng, 40, continuous=False)
    for y, s in zip(labels, scores):
        if 0 < y.sum() < len(y):
            assert auc_score(y, s) == pytest.approx(roc_auc_score(y, s))


# ---------------------------------------------------------------- impression aggregation
def test_impression_metrics_skips_and_counts():
    labels = [LABELS, [1, 1], [0, 0, 0], [0, 1]]
    scores = [SCORES, [0.1, 0.2], [0.3, 0.2, 0.1], [0.4, 0.6]]
    m = impression_metrics(labels, scores)
    # AUC: impression 0 -> 0.75, impression 3 -> 1.0 ; [1,1] and [0,0,0] skipped
    assert m["auc"] == pytest.approx((0.75 + 1.0) / 2)
    assert m["num_auc_skipped"] == 2
    # MRR over impressions with a click: [1,1] -> (1/1 + 1/2) / 2 = 3/4 ; [0,1] -> 1
    # -> (2/3 + 3/4 + 1) / 3
    assert m["mrr"] == pytest.approx((2 / 3 + 3 / 4 + 1) / 3)
    ndcg0 = 1.5 / (1 + 1 / LOG2_3)
    assert m["ndcg@5"] == pytest.approx((ndcg0 + 1 + 1) / 3)
    assert m["ndcg@10"] == pytest.approx((ndcg0 + 1 + 1) / 3)
    assert m["num_impressions"] == 4
    assert m["num_no_click_skipped"] == 1


def test_impression_metrics_all_skipped_is_nan_and_length_check():
    m = impression_metrics([[0, 0]], [[0.1, 0.2]])
    assert math.isnan(m["auc"]) and math.isnan(m["mrr"]) and math.isnan(m["ndcg@5"])
    assert m["num_impressions"] == 1 and m["num_auc_skipped"] == 1
    with pytest.raises(ValueError):
        impression_metrics([[0, 1]], [[0.1, 0.2], [0.3]])
    with pytest.raises(ValueError):
        impression_metrics([[0, 1]], [[0.1, 0.2, 0.3]])


def test_grouped_matches_list_version():
    rng = np.random.default_rng(2)
    labels, scores = _random_impressions(rng, 60)
    ref = impression_metrics(labels, scores)
    gids = np.concatenate([np.full(len(y), 1000 - i) for i, y in enumerate(labels)])
    flat_y, flat_s = np.concatenate(labels), np.concatenate(scores)
    # interleave impressions (rows need not be contiguous) while keeping within-impression order:
    # shuffle the sequence of group ids, then fill each slot with that group's next unused row
    slots = rng.permutation(gids)
    next_row = {g: iter(np.flatnonzero(gids == g)) for g in np.unique(gids)}
    rows = np.array([next(next_row[g]) for g in slots])
    out = grouped_impression_metrics(gids[rows], flat_y[rows], flat_s[rows])
    for key, val in ref.items():
        assert out[key] == pytest.approx(val, nan_ok=True)
    # a fully shuffled flat array still gives the same AUC (AUC is order-independent)
    perm = rng.permutation(len(gids))
    out2 = grouped_impression_metrics(gids[perm], flat_y[perm], flat_s[perm])
    assert out2["auc"] == pytest.approx(ref["auc"])
    assert out2["num_impressions"] == len(labels)


# ---------------------------------------------------------------- CTR
def test_ctr_hand():
    m = ctr_metrics(LABELS, SCORES)
    assert m["auc"] == pytest.approx(0.75)
    # thresholds descending: 0.9 -> P=1, R=1/2 ; 0.8 -> P=1/2, R=1/2 ; 0.3 -> P=2/3, R=1 ; 0.1
    # AP = 0.5*1 + 0 + 0.5*(2/3) = 5/6
    assert m["ap"] == pytest.approx(5 / 6)
    # logloss = -(ln .9 + ln .2 + ln .9 + ln .3) / 4
    assert m["logloss"] == pytest.approx(-(math.log(0.9) + math.log(0.2) + math.log(0.9) + math.log(0.3)) / 4)
    assert m["num_examples"] == 4 and m["auc_undefined"] is False


def test_ctr_matches_sklearn_random():
    rng = np.random.default_rng(3)
    y = (rng.random(2000) < 0.3).astype(int)
    logits = rng.normal(size=2000) + y
    probs = 1 / (1 + np.exp(-logits))
    m = ctr_metrics(y, probs)
    assert m["auc"] == pytest.approx(roc_auc_score(y, probs))
    assert m["ap"] == pytest.approx(average_precision_score(y, probs))
    assert m["logloss"] == pytest.approx(sk_log_loss(y, probs))
    ml = ctr_metrics(y, logits, from_logits=True)
    for key in ("auc", "ap", "logloss"):
        assert ml[key] == pytest.approx(m[key])
    # ties in scores
    coarse = np.round(probs, 1)
    assert average_precision(y, coarse) == pytest.approx(average_precision_score(y, coarse))
    assert ctr_metrics(y, coarse)["auc"] == pytest.approx(roc_auc_score(y, coarse))


def test_ctr_edge_cases():
    m = ctr_metrics([1, 1, 1], [0.2, 0.5, 0.9])
    assert math.isnan(m["auc"]) and m["auc_undefined"] is True
    assert m["ap"] == pytest.approx(1.0)
    m0 = ctr_metrics([0, 0], [0.2, 0.5])
    assert m0["auc_undefined"] and math.isnan(m0["ap"])
    # clipping at eps = 1e-7: p = 0 for a positive -> -ln(1e-7)
    assert ctr_metrics([1, 0], [0.0, 0.0])["logloss"] == pytest.approx(-math.log(1e-7) / 2)
    # extreme logits do not overflow
    assert math.isfinite(ctr_metrics([1, 0], [1000.0, -1000.0], from_logits=True)["logloss"])
    with pytest.raises(ValueError):
        ctr_metrics([1, 0, 1], [0.2, 0.3])
    with pytest.raises(ValueError):
        ctr_metrics([], [])
    with pytest.raises(ValueError):
        ctr_metrics([1, 0], [2.0, -1.0])  # logits passed as probabilities


# ---------------------------------------------------------------- full ranking
def _brute_force_ranks(scores, targets, exclude=None, pad_id=0):
    ranks = []
    for u in range(scores.shape[0]):
        t = targets[u]
        excl = set() if exclude is None else {int(i) for i in exclude[u]}
        r = 0
        for j in range(scores.shape[1]):
            if j == t or j == pad_id or j in excl:
                continue
            if scores[u, j] >= scores[u, t]:  # ties count against the target
                r += 1
        ranks.append(r)
    return np.array(ranks)


def _brute_force_metrics(ranks, ks):
    out = {}
    for k in ks:
        out[f"hr@{k}"] = np.mean([1.0 if r < k else 0.0 for r in ranks])
        out[f"ndcg@{k}"] = np.mean([1 / math.log2(r + 2) if r < k else 0.0 for r in ranks])
    out["mrr"] = np.mean([1 / (r + 1) for r in ranks])
    out["num_users"] = len(ranks)
    return out


def _random_ranking_problem(seed, n_users=40, n_items=60, hist=8):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 20, size=(n_users, n_items)).astype(np.float32)  # many ties
    targets = rng.integers(1, n_items, size=n_users)
    exclude = [rng.integers(0, n_items, size=rng.integers(0, hist + 1)) for _ in range(n_users)]
    for u in range(0, n_users, 5):  # some histories contain the target itself
        exclude[u] = np.append(exclude[u], targets[u])
    return scores, targets, exclude


def test_full_ranking_hand():
    # column 0 is the pad item (huge score, ignored). user 0: target 3 (score 3); ahead: items 1 (5), 2 (4)
    scores = np.array([[99.0, 5.0, 4.0, 3.0, 2.0], [99.0, 1.0, 1.0, 1.0, 0.0]])
    targets = np.array([3, 2])
    # no exclusion: ranks [2, 2] (user 1: items 1 and 3 tie with the target and count against it)
    np.testing.assert_array_equal(compute_ranks(scores, targets), [2, 2])
    # exclude history [1, 3, 2] for user 0: item 3 is the target -> kept; rank 0
    np.testing.assert_array_equal(compute_ranks(scores, targets, exclude=[[1, 3, 2], []]), [0, 2])
    m = full_ranking_metrics(scores, targets, ks=(1, 5))
    # ranks [2, 2]: hr@1 = 0, hr@5 = 1, ndcg@5 = 1/log2(4) = 0.5, mrr = 1/3
    assert m["hr@1"] == pytest.approx(0.0)
    assert m["hr@5"] == pytest.approx(1.0)
    assert m["ndcg@5"] == pytest.approx(0.5)
    assert m["ndcg@1"] == pytest.approx(0.0)
    assert m["mrr"] == pytest.approx(1 / 3)
    assert m["num_users"] == 2
    # pad_id=None: the pad column now counts -> ranks [3, 3]
    np.testing.assert_array_equal(compute_ranks(scores, targets, pad_id=None), [3, 3])


def test_constant_scores_give_the_worst_rank_in_every_ranking_metric():
    # A model whose scores all tie (collapsed, or rounded by bf16) ranks nothing: ties count against the target.
    scores = np.zeros((3, 21))  # pad column 0 + 20 candidates
    targets = [1, 7, 20]
    np.testing.assert_array_equal(compute_ranks(scores, targets), [19, 19, 19])
    np.testing.assert_array_equal(compute_ranks(torch.zeros(3, 21, dtype=torch.bfloat16), targets), [19, 19, 19])
    m = full_ranking_metrics(scores, targets, ks=(10, 20))
    assert m["hr@10"] == 0.0 and m["ndcg@10"] == 0.0
    assert m["hr@20"] == 1.0 and m["ndcg@20"] == pytest.approx(1 / math.log2(21))
    assert m["mrr"] == pytest.approx(1 / 20)
    acc = RankingAccumulator(ks=(10,))
    acc.add(scores, targets)
    assert acc.compute()["hr@10"] == 0.0
    # Per impression: wherever the click sits, it is placed after the tied non-clicks; AUC counts ties as 1/2.
    for labels in ([1, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0]):
        assert mrr_score(labels, [0.3] * 4) == pytest.approx(1 / 4)
        assert ndcg_score(labels, [0.3] * 4, 10) == pytest.approx(1 / math.log2(5))
        assert auc_score(labels, [0.3] * 4) == pytest.approx(roc_auc_score(labels, [0.3] * 4)) == 0.5
    m = impression_metrics([[1, 0, 0, 0], [0, 0, 0, 1], [0, 1, 1, 0]], [[0.3] * 4] * 3, ks=(1, 10))
    assert m["auc"] == pytest.approx(0.5)
    assert m["mrr"] == pytest.approx((1 / 4 + 1 / 4 + (1 / 3 + 1 / 4) / 2) / 3)
    assert m["ndcg@1"] == 0.0
    ideal_two = 1 + 1 / LOG2_3
    assert m["ndcg@10"] == pytest.approx((2 / math.log2(5) + (1 / 2 + 1 / math.log2(5)) / ideal_two) / 3)
    grouped = grouped_impression_metrics([0, 0, 0, 0], [0, 0, 0, 1], [0.3] * 4, ks=(10,))
    assert grouped["mrr"] == pytest.approx(1 / 4) and grouped["auc"] == pytest.approx(0.5)


def test_full_ranking_vs_brute_force():
    scores, targets, exclude = _random_ranking_problem(4)
    ks = (1, 5, 10, 20)
    ranks = compute_ranks(scores, targets, exclude)
    bf = _brute_force_ranks(scores, targets, exclude)
    np.testing.assert_array_equal(ranks, bf)
    m = full_ranking_metrics(scores, targets, ks=ks, exclude=exclude, chunk_size=7)
    ref = _brute_force_metrics(bf, ks)
    for key, val in ref.items():
        assert m[key] == pytest.approx(val)
    # exclusion only removes items, so ranks never increase; target-in-history is never masked
    assert np.all(ranks <= compute_ranks(scores, targets))


def test_exclusion_never_masks_target_and_duplicates_ok():
    scores = np.array([[0.0, 0.1, 0.9, 0.5]])
    # duplicated history ids, negative padding ids, the pad id and the target itself
    r = compute_ranks(scores, [3], exclude=[[2, 2, -100, 0, 3]])
    assert r.tolist() == [0]
    r = compute_ranks(scores, [1], exclude=[[1]])  # target 1 stays; items 2,3 ahead
    assert r.tolist() == [2]
    with pytest.raises(ValueError):
        compute_ranks(scores, [3], exclude=[[7]])  # out of range id
    with pytest.raises(ValueError):
        compute_ranks(scores, [0])  # target == pad
    with pytest.raises(ValueError):
        compute_ranks(scores, [3, 2])  # wrong number of targets


def test_accumulator_chunks_equal_one_shot_and_torch():
    scores, targets, exclude = _random_ranking_problem(5, n_users=53)
    ks = (5, 10, 20)
    one_shot = full_ranking_metrics(scores, targets, ks=ks, exclude=exclude)
    acc = RankingAccumulator(ks=ks)
    for start in range(0, 53, 10):
        acc.add(scores[start : start + 10], targets[start : start + 10], exclude[start : start + 10])
    assert len(acc) == 53
    assert acc.compute() == pytest.approx(one_shot)
    # torch input (float and integer tensors) gives identical ranks
    t_ranks = compute_ranks(torch.from_numpy(scores), torch.from_numpy(targets), exclude)
    np.testing.assert_array_equal(t_ranks, compute_ranks(scores, targets, exclude))
    t_int = compute_ranks(torch.from_numpy(scores).long(), targets, exclude)
    np.testing.assert_array_equal(t_int, t_ranks)
    assert full_ranking_metrics(torch.from_numpy(scores), targets, ks=ks, exclude=exclude) == pytest.approx(one_shot)
    acc.reset()
    assert len(acc) == 0 and acc.compute()["num_users"] == 0


def test_metrics_from_ranks_equals_score_based():
    scores, targets, _ = _random_ranking_problem(6)
    ranks = _brute_force_ranks(scores, targets)
    assert metrics_from_ranks(ranks, (5, 10)) == pytest.approx(full_ranking_metrics(scores, targets, ks=(5, 10)))
    # by hand: ranks [0, 1, 30]; hr@5 = 2/3 ; ndcg@5 = (1 + 1/log2(3)) / 3 ; mrr = (1 + 1/2 + 1/31) / 3
    m = metrics_from_ranks([0, 1, 30], ks=(5,))
    assert m["hr@5"] == pytest.approx(2 / 3)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / LOG2_3) / 3)
    assert m["mrr"] == pytest.approx((1 + 0.5 + 1 / 31) / 3)
    with pytest.raises(ValueError):
        metrics_from_ranks([-1, 0])
    assert math.isnan(metrics_from_ranks([])["mrr"])


# ---------------------------------------------------------------- Trainer factories
def test_news_compute_metrics_padded():
    from transformers import EvalPrediction

    rng = np.random.default_rng(7)
    labels, scores = _random_impressions(rng, 30, max_len=12)
    width = max(len(y) for y in labels)
    P = np.full((30, width), -100.0)
    L = np.full((30, width), -100)
    for i, (y, s) in enumerate(zip(labels, scores)):
        P[i, : len(s)] = s
        L[i, : len(y)] = y
    out = make_news_compute_metrics()(EvalPrediction(predictions=P, label_ids=L))
    ref = impression_metrics(labels, scores)
    assert set(out) == set(ref)
    assert all(isinstance(v, float) for v in out.values())
    for key, val in ref.items():
        assert out[key] == pytest.approx(val, nan_ok=True)
    # tuple predictions (model returned several outputs) -> first is used
    out_t = make_news_compute_metrics()(EvalPrediction(predictions=(P, P * 0), label_ids=L))
    assert out_t["auc"] == pytest.approx(ref["auc"])


def test_ctr_compute_metrics():
    from transformers import EvalPrediction

    rng = np.random.default_rng(8)
    y = (rng.random(300) < 0.4).astype(int)
    logits = rng.normal(size=300) + y
    probs = 1 / (1 + np.exp(-logits))
    fn = make_ctr_compute_metrics()
    out = fn(EvalPrediction(predictions=logits[:, None].astype(np.float32), label_ids=y))
    assert out["auc"] == pytest.approx(roc_auc_score(y, logits))
    assert out["logloss"] == pytest.approx(sk_log_loss(y, probs), rel=1e-5)
    assert out["auc_undefined"] == 0.0 and out["num_examples"] == 300.0
    assert all(isinstance(v, float) for v in out.values())
    # two-class logits (z0, z1) reduce to log-odds z1 - z0
    two = np.stack([np.zeros(300), logits], axis=1)
    assert fn(EvalPrediction(predictions=two, label_ids=y))["logloss"] == pytest.approx(sk_log_loss(y, probs))
    # probabilities + -100 padded labels dropped
    fn_p = make_ctr_compute_metrics(from_logits=False)
    out_p = fn_p((np.append(probs, 0.5), np.append(y, -100)))
    assert out_p["num_examples"] == 300.0
    assert out_p["ap"] == pytest.approx(average_precision_score(y, probs))


def test_next_item_compute_metrics_ranks_and_scores():
    from transformers import EvalPrediction

    scores, targets, _ = _random_ranking_problem(9)
    ks = (5, 10, 20)
    fn = make_next_item_compute_metrics(ks=ks)
    from_scores = fn(EvalPrediction(predictions=scores, label_ids=targets))
    ranks = compute_ranks(scores, targets)
    from_ranks = fn(EvalPrediction(predictions=ranks, label_ids=targets))
    assert from_scores == pytest.approx(from_ranks)
    assert from_scores == pytest.approx(metrics_from_ranks(ranks, ks))
    assert all(isinstance(v, float) for v in from_ranks.values())
    # Trainer padding (-100) in ranks / targets is dropped
    padded = fn(EvalPrediction(predictions=np.append(ranks, -100), label_ids=np.append(targets, -100)))
    assert padded == pytest.approx(from_ranks)
    padded_scores = np.vstack([scores, np.zeros((1, scores.shape[1]))])
    out = fn(EvalPrediction(predictions=padded_scores, label_ids=np.append(targets, -100)))
    assert out == pytest.approx(from_scores)


def test_docstring_examples():
    result = doctest.testmod(M, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 20
