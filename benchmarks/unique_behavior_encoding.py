"""Encoding each distinct behaviour once per batch vs encoding every position, measured side by side.

    python benchmarks/unique_behavior_encoding.py [--batches 10] [--batch_size 32] [--preset nrms]

Prints the time per batch of both paths on the bundled MovieLens data (NRMS text encoder, 100 behaviours per
user), their ratio, and the largest difference between the user embeddings they produce.
"""

import argparse
import time

import torch

from userbert_hf import UserBertConfig, UserBertModel
from userbert_hf.collation import BehaviorCatalog, UserBertCollator
from userbert_hf.data import load_default_dataset
from userbert_hf.tokenization_userbert import build_word_tokenizer


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--preset", default="nrms")
    parser.add_argument("--hidden_size", type=int, default=64)
    args = parser.parse_args()

    data = load_default_dataset(verbose=False)
    tokenizer = build_word_tokenizer(data.vocabulary.texts)
    config = UserBertConfig.from_preset(
        args.preset, behavior_vocab_size=len(data.vocabulary), word_vocab_size=len(tokenizer),
        hidden_size=args.hidden_size, word_embedding_size=args.hidden_size, num_attention_heads=4,
    )
    torch.manual_seed(0)
    model = UserBertModel(config).eval()
    catalog = BehaviorCatalog.from_vocabulary(data.vocabulary, tokenizer, config.max_words)
    collate = UserBertCollator(catalog, config.max_behaviors)
    rows = [data.users[i] for i in range(args.batches * args.batch_size)]
    batches = [collate(rows[i : i + args.batch_size]) for i in range(0, len(rows), args.batch_size)]

    def per_position(batch):  # (B, L, W): every position encoded, shared behaviours again and again
        return {"behavior_token_ids": batch["behavior_token_ids"][batch["behavior_index"]], "attention_mask": batch["attention_mask"]}

    timings, worst = {"table": 0.0, "per_position": 0.0}, 0.0
    positions = distinct = 0
    with torch.no_grad():
        for batch in batches:
            positions += int(batch["attention_mask"].sum())
            distinct += batch["behavior_token_ids"].shape[0] - 1
            start = time.perf_counter()
            table = model(**batch).user_embedding
            timings["table"] += time.perf_counter() - start
            start = time.perf_counter()
            naive = model(**per_position(batch)).user_embedding
            timings["per_position"] += time.perf_counter() - start
            worst = max(worst, float((table - naive).abs().max()))
    n = len(batches)
    print(f"preset={args.preset} hidden={args.hidden_size} batches={n} x {args.batch_size} users")
    print(f"behaviour positions per batch: {positions / n:.0f}; distinct behaviours per batch: {distinct / n:.0f}")
    print(f"per-position encoding: {1000 * timings['per_position'] / n:.1f} ms/batch")
    print(f"distinct-behaviour table: {1000 * timings['table'] / n:.1f} ms/batch")
    print(f"speed-up: {timings['per_position'] / timings['table']:.2f}x; max |difference| of user embeddings: {worst:.2e}")


if __name__ == "__main__":
    main()
