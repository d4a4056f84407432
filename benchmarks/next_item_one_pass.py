"""Next-item training on every prefix: one row per prefix against one row per user (causal models, one pass).

    python benchmarks/next_item_one_pass.py [--users 3000] [--repetitions 2]

On the first ``--users`` users of Amazon Beauty (S3-Rec file), with the training targets of the leave-one-out
protocol (every prefix before the validation item), for SASRec and GRU4Rec (hidden 64, the last 50 items):

1. the same objective: with dropout off and the same weights, the mean loss over every training target is the
   same whether the targets come as prefix rows (``NextBehaviorCollator`` over
   ``build_next_item_dataset(max_train_targets_per_user=None)``) or as sequence rows (``sequence_rows=True``,
   per-position labels);
2. the time of one training epoch (forward, backward, Adam) over all those targets: prefix rows in batches of
   256 rows (the every-prefix recipe before), sequence rows in batches of 64 users (about as many targets per
   batch as 256 prefix rows when sequences hold ~7 targets). Repetitions alternate the two layouts.

Writes ``benchmarks/results/next_item_one_pass.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _sides import command_line, median, write_markdown  # noqa: E402

from userbert_hf import UserBertConfig, UserBertForNextBehaviorPrediction  # noqa: E402
from userbert_hf.collation import BehaviorCatalog  # noqa: E402
from userbert_hf.data import load_amazon_beauty  # noqa: E402
from userbert_hf.finetuning import NextBehaviorCollator, build_next_item_dataset  # noqa: E402

BEAUTY = os.environ.get("USERBERT_BEAUTY", "/work/shared/data/amazon-beauty/Beauty.txt")


def batches(rows, collator, size):
    rows = list(rows)
    return [collator(rows[i : i + size]) for i in range(0, len(rows), size)]


def mean_loss(model, prepared) -> float:
    """Target-weighted mean loss over every batch (eval mode)."""
    total = count = 0.0
    with torch.no_grad():
        for batch in prepared:
            targets = int((batch["labels"] != -100).sum())
            total += model(**batch).loss.item() * targets
            count += targets
    return total / count


def epoch_seconds(model, prepared) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    start = time.perf_counter()
    for batch in prepared:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results", "next_item_one_pass.md"))
    args = parser.parse_args()
    data = load_amazon_beauty(BEAUTY)
    data.users = data.users.select(range(min(args.users, len(data.users))))
    prefix = build_next_item_dataset(data, max_train_targets_per_user=None, max_behaviors=50)["train"]
    sequence = build_next_item_dataset(data, max_train_targets_per_user=None, max_behaviors=50,
                                       sequence_rows=True)["train"]
    collator = NextBehaviorCollator(BehaviorCatalog(len(data.vocabulary)), max_behaviors=50)
    layouts = {"prefix rows, batch 256": batches(prefix, collator, 256),
               "sequence rows, batch 64 users": batches(sequence, collator, 64)}
    targets = {name: int(sum(int((b["labels"] != -100).sum()) for b in prepared)) for name, prepared in layouts.items()}
    lines = [f"{len(data.users):,} Beauty users, {targets['prefix rows, batch 256']:,} training targets "
             f"({len(prefix):,} prefix rows, {len(sequence):,} sequence rows). Median of {args.repetitions} "
             "alternating repetitions.", "",
             "| model | layout | batches | mean loss, same weights (eval) | seconds per epoch | speed-up |",
             "|---|---|---|---|---|---|"]
    for preset in ("sasrec", "gru4rec"):
        config = UserBertConfig.from_preset(preset, behavior_vocab_size=len(data.vocabulary), hidden_size=64,
                                            num_attention_heads=2, max_behaviors=50, dropout=0.3)
        torch.manual_seed(0)
        reference = UserBertForNextBehaviorPrediction(config).eval()
        losses = {name: mean_loss(reference, prepared) for name, prepared in layouts.items()}
        seconds = {name: [] for name in layouts}
        for _ in range(args.repetitions):
            for name, prepared in layouts.items():
                torch.manual_seed(0)
                seconds[name].append(epoch_seconds(UserBertForNextBehaviorPrediction(config), prepared))
        base = median(seconds["prefix rows, batch 256"])
        for name, prepared in layouts.items():
            lines.append(f"| {preset} | {name} | {len(prepared)} | {losses[name]:.5f} | {median(seconds[name]):.2f} | "
                         f"{base / median(seconds[name]):.2f}x |")
        assert targets["prefix rows, batch 256"] == targets["sequence rows, batch 64 users"]
        # Equal unless a user has more than 50 training targets (its early targets then see a shorter context).
        if len(sequence) == len(data.users.filter(lambda ids: len(ids) >= 4, input_columns="behavior_ids")):
            assert abs(losses["prefix rows, batch 256"] - losses["sequence rows, batch 64 users"]) < 1e-3, losses
    print(write_markdown(args.output, "Next-item training on every prefix: one pass per user", command_line(),
                         "\n".join(lines)))


if __name__ == "__main__":
    main()
