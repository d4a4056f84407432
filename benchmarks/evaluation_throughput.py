"""Evaluation throughput: full-ranking next-item evaluation on Amazon Beauty and per-impression metrics.

    python benchmarks/evaluation_throughput.py [--users 22363] [--impressions 50000] [--baseline_src /tmp/userbert-baseline/src]

1. Full ranking on Beauty (22,363 users, 12,101 items + padding): an (untrained) GRU4Rec next-behaviour head,
   hidden 64, last 50 items as history, target = each user's last item, history excluded from the ranking
   (S3-Rec protocol). The model scores every item and ranks the target in the same batched op
   (``UserBertForNextBehaviorPrediction``: logits (B, V) and ``target_rank``), 256 users per batch; against a
   loop that evaluates one user at a time (timed on ``--loop_users`` users, extrapolated per user).
2. Per-impression metrics (MIND AUC / MRR / nDCG@5 / nDCG@10) on synthetic impressions with MIND-like sizes
   (2-300 candidates, 1-3 clicks): ``userbert_hf.finetuning.metrics.impression_metrics`` (all impressions at once) against
   the baseline checkout's per-impression loop (its ``finetuning/metrics.py``, or the flat ``metrics.py`` of older checkouts, loaded from ``--baseline_src``), alternating;
   both must give the same numbers.

Writes ``benchmarks/results/evaluation_throughput.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _sides import DEFAULT_BASELINE_SRC, command_line, median, write_markdown  # noqa: E402

from userbert_hf import UserBertConfig, UserBertForNextBehaviorPrediction  # noqa: E402
from userbert_hf.finetuning import metrics  # noqa: E402
from userbert_hf.collation import BehaviorCatalog, build_behavior_table, pad_sequences  # noqa: E402
from userbert_hf.data import load_amazon_beauty  # noqa: E402

BEAUTY = os.environ.get("USERBERT_BEAUTY", "/work/shared/data/amazon-beauty/Beauty.txt")


def full_ranking(args) -> str:
    data = load_amazon_beauty(BEAUTY)
    config = UserBertConfig.from_preset("gru4rec", behavior_vocab_size=len(data.vocabulary), hidden_size=64, max_behaviors=50)
    torch.manual_seed(0)
    model = UserBertForNextBehaviorPrediction(config).eval()
    catalog = BehaviorCatalog(len(data.vocabulary))
    sequences = data.users["behavior_ids"][: args.users]
    histories = [s[:-1][-50:] for s in sequences]
    targets = torch.tensor([s[-1] for s in sequences])

    def evaluate(rows: list[int]) -> np.ndarray:  # (len(rows),) 0-based ranks
        ids = pad_sequences([histories[r] for r in rows])  # (B, L)
        table, (index,) = build_behavior_table(catalog, ids)
        with torch.no_grad():
            out = model(**table, behavior_index=index, attention_mask=ids != 0, labels=targets[rows], exclude_index=ids)
        return out.target_rank.numpy()

    evaluate(list(range(256)))  # warm-up
    start = time.perf_counter()
    ranks = np.concatenate([evaluate(list(range(i, min(i + 256, len(histories))))) for i in range(0, len(histories), 256)])
    batched = time.perf_counter() - start
    start = time.perf_counter()
    loop_ranks = np.concatenate([evaluate([r]) for r in range(args.loop_users)])
    loop = (time.perf_counter() - start) / args.loop_users
    assert np.array_equal(loop_ranks, ranks[: args.loop_users]), "one-at-a-time ranks differ from batched ranks"
    result = metrics.metrics_from_ranks(ranks, ks=(10,))
    n = len(histories)
    return (
        f"**Full ranking, Amazon Beauty** ({n:,} users x {len(data.vocabulary) - 1:,} items, GRU4Rec hidden 64, untrained: "
        f"HR@10 {result['hr@10']:.4f}):\n\n"
        "| evaluation | time for all users | users / s |\n|---|---|---|\n"
        f"| batched (256 users per forward, ranks inside the model) | {batched:.1f} s | {n / batched:,.0f} |\n"
        f"| one user per forward (timed on {args.loop_users} users) | {loop * n:.0f} s (extrapolated) | {1 / loop:,.0f} |\n\n"
        f"Batched: **{loop * n / batched:.0f}x** faster; both give the same ranks."
    )


def synthetic_impressions(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    sizes = np.clip(rng.geometric(1 / 37, n), 2, 300)  # MIND: 37 candidates on average
    labels, scores = [], []
    for size in sizes:
        y = np.zeros(size, dtype=np.int64)
        y[rng.choice(size, min(int(rng.integers(1, 4)), size - 1), replace=False)] = 1
        labels.append(y)
        scores.append(rng.normal(size=size).astype(np.float32))
    return labels, scores


def per_impression(args) -> str:
    labels, scores = synthetic_impressions(args.impressions)
    candidates = sum(len(y) for y in labels)
    sides = {"new (all impressions at once)": metrics.impression_metrics}
    paths = [os.path.join(args.baseline_src or "", "userbert_hf", *parts)
             for parts in (("finetuning", "metrics.py"), ("metrics.py",))]  # the package layout, then the flat one
    path = next((p for p in paths if os.path.exists(p)), None)
    if path is not None:
        spec = importlib.util.spec_from_file_location("baseline_metrics", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sides["baseline (loop per impression)"] = module.impression_metrics
    times = {name: [] for name in sides}
    values = {}
    for rep in range(args.repetitions):
        for name in (list(sides) if rep % 2 == 0 else list(sides)[::-1]):
            start = time.perf_counter()
            values[name] = sides[name](labels, scores, ks=(5, 10))
            times[name].append(time.perf_counter() - start)
    rows = ["| implementation | time | impressions / s | AUC | MRR | nDCG@10 |", "|---|---|---|---|---|---|"]
    for name in sides:
        t = median(times[name])
        v = values[name]
        rows.append(f"| {name} | {t:.2f} s | {args.impressions / t:,.0f} | {v['auc']:.6f} | {v['mrr']:.6f} | {v['ndcg@10']:.6f} |")
    text = (
        f"**Per-impression metrics** ({args.impressions:,} synthetic impressions, {candidates:,} candidates; median of "
        f"{args.repetitions} alternating repetitions):\n\n" + "\n".join(rows)
    )
    if len(sides) == 2:
        new, old = (median(times[name]) for name in sides)
        text += f"\n\n**{old / new:.0f}x** faster, same values."
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=22363)
    parser.add_argument("--loop_users", type=int, default=300)
    parser.add_argument("--impressions", type=int, default=50000)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--baseline_src", default=DEFAULT_BASELINE_SRC)
    parser.add_argument("--quick", action="store_true", help="1,000 users, 2,000 impressions, no file written")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "evaluation_throughput.md"))
    args = parser.parse_args()
    if args.quick:
        args.users, args.loop_users, args.impressions, args.repetitions, args.output = 1000, 20, 2000, 1, None
    body = full_ranking(args) + "\n\n" + per_impression(args)
    print(write_markdown(args.output, "Evaluation throughput", command_line(), body))


if __name__ == "__main__":
    main()
