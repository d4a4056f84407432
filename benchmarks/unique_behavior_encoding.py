"""Encoding each distinct behaviour once per batch vs encoding every position, measured side by side.

    python benchmarks/unique_behavior_encoding.py [--batches 5] [--batch_sizes 32 128] [--preset nrms] [--train]

On the bundled MovieLens data (text behaviours: titles and genres, 100 behaviours per user), each batch is encoded
both ways by the same model, alternating: the collator's distinct-behaviour table (``behavior_token_ids`` (U, W)
+ ``behavior_index`` (B, L)) and every position on its own (``behavior_token_ids`` (B, L, W)). Prints the time
per batch of both layouts for the behaviour (text) encoder alone and for the whole user model, their ratios, and
the largest difference between the user embeddings they produce. ``--train`` times
forward + backward in training mode instead of inference. Writes a markdown summary
(``benchmarks/results/unique_behavior_encoding.md``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _sides import command_line, median, write_markdown  # noqa: E402

from userbert_hf import UserBertConfig, UserBertModel  # noqa: E402
from userbert_hf.collation import BehaviorCatalog, UserBertCollator  # noqa: E402
from userbert_hf.data import load_default_dataset  # noqa: E402
from userbert_hf.tokenization_userbert import build_word_tokenizer  # noqa: E402


def measure(model, batches, train: bool) -> dict:
    def per_position(batch):  # (B, L, W): every position encoded, shared behaviours again and again
        return {"behavior_token_ids": batch["behavior_token_ids"][batch["behavior_index"]], "attention_mask": batch["attention_mask"]}

    def run(inputs, encode_only=False):
        forward = (lambda: model.encode_behaviors(behavior_token_ids=inputs["behavior_token_ids"])) if encode_only else (lambda: model(**inputs).user_embedding)
        start = time.perf_counter()
        if train:
            forward().sum().backward()
            out = None
        else:
            with torch.no_grad():
                out = forward()
        return time.perf_counter() - start, out

    times = {"table": [], "per_position": [], "encode_table": [], "encode_per_position": []}
    worst = 0.0
    for i, batch in enumerate(batches):
        order = ("table", "per_position") if i % 2 == 0 else ("per_position", "table")
        outs = {}
        for name in order:
            elapsed, outs[name] = run(batch if name == "table" else per_position(batch))
            times[name].append(elapsed)
            times["encode_" + name].append(run(batch if name == "table" else per_position(batch), encode_only=True)[0])
        if not train:
            worst = max(worst, float((outs["table"] - outs["per_position"]).abs().max()))
    positions = sum(int(b["attention_mask"].sum()) for b in batches) / len(batches)
    slots = sum(b["attention_mask"].numel() for b in batches) / len(batches)
    distinct = sum(b["behavior_token_ids"].shape[0] - 1 for b in batches) / len(batches)
    return {
        "table_ms": 1000 * median(times["table"]), "per_position_ms": 1000 * median(times["per_position"]),
        "encode_table_ms": 1000 * median(times["encode_table"]), "encode_per_position_ms": 1000 * median(times["encode_per_position"]),
        "positions": positions, "slots": slots, "distinct": distinct, "worst": worst,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=5, help="batches per batch size (both paths each)")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--preset", default="nrms")
    parser.add_argument("--hidden_size", type=int, default=64)
    parser.add_argument("--train", action="store_true", help="forward + backward in training mode")
    parser.add_argument("--quick", action="store_true", help="1 batch of 8 users, no file written")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "unique_behavior_encoding.md"))
    args = parser.parse_args()
    if args.quick:
        args.batches, args.batch_sizes, args.output = 1, [8], None

    data = load_default_dataset(verbose=False)
    tokenizer = build_word_tokenizer(data.vocabulary.texts)
    config = UserBertConfig.from_preset(
        args.preset, behavior_vocab_size=len(data.vocabulary), word_vocab_size=len(tokenizer),
        hidden_size=args.hidden_size, word_embedding_size=args.hidden_size, num_attention_heads=4, attention_query_size=32,
    )
    torch.manual_seed(0)
    model = UserBertModel(config).train(args.train)
    catalog = BehaviorCatalog.from_vocabulary(data.vocabulary, tokenizer, config.max_words)
    collate = UserBertCollator(catalog, config.max_behaviors)
    rows = [
        "| users per batch | positions (slots) per batch | distinct behaviours | behaviour encoding: per-position / table | speed-up | whole user model: per-position / table | speed-up | max abs. difference |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for batch_size in args.batch_sizes:
        users = torch.randperm(len(data.users), generator=torch.Generator().manual_seed(batch_size))[: args.batches * batch_size].tolist()
        features = [data.users[i] for i in users]
        batches = [collate(features[i : i + batch_size]) for i in range(0, len(features), batch_size)]
        measure(model, batches[:1], args.train)  # warm-up
        r = measure(model, batches, args.train)
        rows.append(
            f"| {batch_size} | {r['positions']:,.0f} ({r['slots']:,.0f}) | {r['distinct']:,.0f} "
            f"| {r['encode_per_position_ms']:.0f} / {r['encode_table_ms']:.0f} ms | **{r['encode_per_position_ms'] / r['encode_table_ms']:.2f}x** "
            f"| {r['per_position_ms']:.0f} / {r['table_ms']:.0f} ms | {r['per_position_ms'] / r['table_ms']:.2f}x | "
            + (f"{r['worst']:.1e} |" if not args.train else "(training) |")
        )
        print(rows[-1], flush=True)
    mode = "forward + backward, training mode" if args.train else "inference"
    body = (
        f"{args.preset}, hidden {args.hidden_size}, bundled MovieLens (titles + genres), at most 100 behaviours per user, "
        f"{mode}; median over {args.batches} batches, the two paths alternating. \"Behaviour encoding\" is the text "
        "encoder alone (the work the table saves: positions / distinct behaviours at most); \"whole user model\" adds "
        "the behaviour-level self-attention and pooling, the same for both layouts.\n\n" + "\n".join(rows)
    )
    print(write_markdown(args.output, "Distinct-behaviour encoding", command_line(), body))


if __name__ == "__main__":
    main()
