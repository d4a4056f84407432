"""Means, confidence intervals and paired tests for comparing runs (scipy.stats).

Runs are paired when they share everything but the method: the same user split, fine-tuning seed and label
fraction. A paired comparison reports the mean difference ``a - b`` with a Student-t 95% confidence interval, the
paired t-test p-value and the Wilcoxon signed-rank p-value (exact for small samples), both two-sided.

Pairs that share a pre-trained model are not independent: :func:`clustered_comparison` averages the pairs within
each (pre-training seed, split) cluster over the fine-tuning seeds and tests over the clusters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

NAN = float("nan")


def mean_confidence_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)`` of the Student-t interval ``mean ± t_{(1+c)/2, n-1} · sd / sqrt(n)``.

    One value gives ``(value, nan, nan)``; no value gives three ``nan``.

    Example:
        >>> [round(x, 4) for x in mean_confidence_interval([1.0, 2.0, 3.0])]
        [2.0, -0.4841, 4.4841]
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return NAN, NAN, NAN
    mean = float(x.mean())
    if x.size < 2:
        return mean, NAN, NAN
    half = float(stats.t.ppf((1 + confidence) / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


@dataclass
class PairedComparison:
    """A paired comparison of ``a`` against ``b`` over the same runs (difference ``a - b``).

    Example:
        >>> c = paired_comparison([0.62, 0.60, 0.64], [0.60, 0.59, 0.61])
        >>> c.n, round(c.mean_difference, 4), c.wins
        (3, 0.02, 3)
    """

    n: int
    mean_a: float
    mean_b: float
    mean_difference: float
    ci_low: float
    ci_high: float
    t_pvalue: float
    wilcoxon_pvalue: float
    wins: int  # pairs where a > b

    def to_dict(self) -> dict:
        return asdict(self)


def paired_comparison(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedComparison:
    """Compare paired samples: mean difference, its confidence interval, paired t-test and Wilcoxon p-values.

    Pairs where either value is missing (``nan``) are dropped. With fewer than two pairs the interval and the
    p-values are ``nan``. When every difference is zero both tests give p = 1 (no evidence of a difference).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples need the same length, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    d = a - b
    mean, low, high = mean_confidence_interval(d, confidence)
    t_p = w_p = NAN
    if d.size >= 2:
        if np.all(d == 0):
            t_p = w_p = 1.0
        else:
            t_p = float(stats.ttest_rel(a, b).pvalue) if d.std(ddof=1) > 0 else 0.0
            w_p = float(stats.wilcoxon(d).pvalue) if np.any(d != 0) else 1.0
    return PairedComparison(
        n=int(d.size), mean_a=float(a.mean()) if a.size else NAN, mean_b=float(b.mean()) if b.size else NAN,
        mean_difference=mean, ci_low=low, ci_high=high, t_pvalue=t_p, wilcoxon_pvalue=w_p, wins=int((d > 0).sum()),
    )


@dataclass
class ClusteredComparison(PairedComparison):
    """A paired comparison over clusters (pre-training seed x split), each the mean of its pairs over the
    fine-tuning seeds; ``n`` counts clusters, ``pairs`` the runs behind them.

    ``pretrain_seed_sd``: the standard deviation of the cluster differences over pre-training seeds, within a
    split, averaged over splits (how much the gain moves with the pre-trained model). ``finetune_seed_sd``: the
    standard deviation of the pair differences over fine-tuning seeds, within a cluster, averaged over clusters
    (how much it moves with fine-tuning alone). ``nan`` where no split has two pre-training seeds / no cluster two
    fine-tuning seeds.
    """

    pairs: int = 0
    pretrain_seeds: int = 0
    splits: int = 0
    pretrain_seed_sd: float = NAN
    finetune_seed_sd: float = NAN


def clustered_comparison(pairs: Sequence[tuple], confidence: float = 0.95) -> ClusteredComparison:
    """Compare ``a`` with ``b`` over pairs ``(pretrain_seed, split, a, b)`` that share a pre-trained model within a
    (pre-training seed, split) cluster: average each cluster over its fine-tuning seeds (its pairs), then run
    :func:`paired_comparison` over the clusters. Pairs with a missing value are dropped.

    Example:
        >>> c = clustered_comparison([(0, 0, 0.62, 0.60), (0, 0, 0.64, 0.61), (1, 0, 0.61, 0.60), (1, 0, 0.60, 0.61),
        ...                           (0, 1, 0.70, 0.66), (1, 1, 0.69, 0.66)])
        >>> c.n, c.pairs, round(c.mean_difference, 4)
        (4, 6, 0.0237)
    """
    clusters: dict[tuple, list[tuple[float, float]]] = {}
    for pretrain_seed, split, a, b in pairs:
        if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
            continue
        clusters.setdefault((pretrain_seed, split), []).append((float(a), float(b)))
    keys = sorted(clusters, key=lambda k: (str(k[0]), str(k[1])))
    mean_a = [float(np.mean([a for a, _ in clusters[k]])) for k in keys]
    mean_b = [float(np.mean([b for _, b in clusters[k]])) for k in keys]
    base = paired_comparison(mean_a, mean_b, confidence)
    gain = {k: ma - mb for k, ma, mb in zip(keys, mean_a, mean_b)}
    splits = sorted({k[1] for k in keys}, key=str)
    across_pretraining = [np.std([gain[k] for k in keys if k[1] == s], ddof=1) for s in splits
                          if sum(k[1] == s for k in keys) >= 2]
    across_finetuning = [np.std([a - b for a, b in clusters[k]], ddof=1) for k in keys if len(clusters[k]) >= 2]
    return ClusteredComparison(
        **base.to_dict(), pairs=sum(len(v) for v in clusters.values()), pretrain_seeds=len({k[0] for k in keys}),
        splits=len(splits), pretrain_seed_sd=float(np.mean(across_pretraining)) if across_pretraining else NAN,
        finetune_seed_sd=float(np.mean(across_finetuning)) if across_finetuning else NAN,
    )


__all__ = ["mean_confidence_interval", "PairedComparison", "paired_comparison", "ClusteredComparison",
           "clustered_comparison"]
