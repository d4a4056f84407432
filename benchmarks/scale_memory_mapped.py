"""Pre-training data at the paper's scale from Parquet shards, read memory-mapped; user embedding throughput.

    nice -n 19 python benchmarks/scale_memory_mapped.py [--users 500000] [--behaviors_per_user 126] [--steps 20] [--embed_users 100000]

Writes Parquet shards of synthetic user rows (the paper's 500k users x 126 behaviours on average = 63M
behaviours; lengths uniform in [2, 250], the most recent 100 used per user as in the paper), builds the
pre-training data with ``load_user_shards`` (Parquet -> memory-mapped Arrow cache, once; every later run and
every rank maps the cache), runs ``--steps`` pre-training steps on it (GRU4Rec ids, hidden 32, batch 32), saves the
model and embeds ``--embed_users`` users with ``userbert_hf.embedding_export.embed_users`` (what ``userbert embed``
runs). A background thread samples resident memory every 0.1 s: reported are the peak RSS (``ru_maxrss``, which
counts touched pages of the memory-mapped files too) and the peak anonymous RSS (RSS minus file-backed pages: what
the process itself holds). Writes ``benchmarks/results/scale_memory_mapped.md``.
"""

import argparse
import dataclasses
import os
import resource
import sys
import tempfile
import threading
import time

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _sides import command_line, write_markdown  # noqa: E402

from userbert_hf import UserBertConfig, UserBertForPreTraining
from userbert_hf.assets import save_user_model_assets
from userbert_hf.embedding_export import embed_users
from userbert_hf.collation import BehaviorCatalog
from userbert_hf.sharded_data import load_user_shards
from userbert_hf.pretraining.trainer import UserBertTrainer, UserBertTrainingArguments
from userbert_hf.vocabulary import BehaviorVocabulary


def rss_mib():
    """Anonymous resident memory: RSS minus file-backed pages (memory-mapped Arrow pages are page cache the
    kernel can drop, not memory the process holds)."""
    info = psutil.Process().memory_info()
    return (info.rss - info.shared) / 2**20


def write_shards(directory, users, per_user, num_behaviors, rows_per_shard=50_000, seed=0):
    rng = np.random.default_rng(seed)
    for shard, start in enumerate(range(0, users, rows_per_shard)):
        n = min(rows_per_shard, users - start)
        lengths = rng.integers(2, 2 * per_user - 1, n)  # mean per_user
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        ids = rng.integers(1, num_behaviors, offsets[-1]).astype(np.int32)
        starts = rng.integers(1_500_000_000, 1_600_000_000, n)
        times = (np.repeat(starts, lengths) + np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths) * 1).astype(np.int64) * 60
        table = pa.table({
            "user_id": pa.array([f"u{start + i}" for i in range(n)]),
            "behavior_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids)),
            "timestamps": pa.ListArray.from_arrays(pa.array(offsets), pa.array(times)),
        })
        pq.write_table(table, os.path.join(directory, f"users-{shard:05d}.parquet"))
    return sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory))


class MemoryWatch(threading.Thread):
    """Samples anonymous RSS every ``interval`` seconds and keeps the peak."""

    def __init__(self, interval: float = 0.1):
        super().__init__(daemon=True)
        self.interval, self.peak_anonymous, self.running = interval, rss_mib(), True

    def run(self):
        while self.running:
            self.peak_anonymous = max(self.peak_anonymous, rss_mib())
            time.sleep(self.interval)

    def stop(self) -> float:
        self.running = False
        self.join()
        return max(self.peak_anonymous, rss_mib())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=500_000)
    parser.add_argument("--behaviors_per_user", type=int, default=126)
    parser.add_argument("--num_behaviors", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--embed_users", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="5,000 users, 3 steps, 1,000 embedded users, no file written")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "scale_memory_mapped.md"))
    args = parser.parse_args()
    if args.quick:
        args.users, args.steps, args.embed_users, args.output = 5_000, 3, 1_000, None
    watch = MemoryWatch()
    watch.start()
    with tempfile.TemporaryDirectory() as work:
        shards, cache, model_dir = (os.path.join(work, name) for name in ("shards", "cache", "model"))
        os.makedirs(shards)
        start = time.perf_counter()
        parquet_bytes = write_shards(shards, args.users, args.behaviors_per_user, args.num_behaviors)
        written = time.perf_counter() - start
        vocabulary = BehaviorVocabulary([str(i) for i in range(1, args.num_behaviors)])
        before = rss_mib()
        start = time.perf_counter()
        load_user_shards(shards, vocabulary, cache_dir=cache)  # first run: converts Parquet to the Arrow cache
        converted = time.perf_counter() - start
        after_conversion = rss_mib()
        start = time.perf_counter()
        data = load_user_shards(shards, vocabulary, cache_dir=cache)  # every later run and every rank
        mapped = time.perf_counter() - start
        loaded = rss_mib()
        lengths = pc.list_value_length(data.users.data.table.column("behavior_ids"))  # offsets only: no pages read
        events = int(pc.sum(lengths).as_py())
        arrow_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(cache) for f in fs if f.endswith(".arrow"))

        # Pre-training steps on the memory-mapped users.
        config = UserBertConfig.from_preset("gru4rec", behavior_vocab_size=len(vocabulary), hidden_size=32)
        torch.manual_seed(0)
        training = UserBertTrainingArguments(
            os.path.join(work, "out"), max_steps=args.steps, per_device_train_batch_size=32, use_cpu=True,
            save_strategy="no", disable_tqdm=True, report_to=[], logging_steps=10, sequence_pool_interval=5,
        )
        model = UserBertForPreTraining(config)
        trainer = UserBertTrainer(model=model, args=training, train_dataset=data.users, catalog=BehaviorCatalog(len(vocabulary)))
        start = time.perf_counter()
        trainer.train()
        trained = time.perf_counter() - start
        after_training = rss_mib()
        trained_behaviours = args.steps * 32 * min(100, events / len(data.users))

        # userbert embed on the first users.
        model.userbert.save_pretrained(model_dir)
        save_user_model_assets(model_dir, vocabulary, None)
        subset = dataclasses.replace(data, users=data.users.select(range(min(args.embed_users, len(data.users)))))
        start = time.perf_counter()
        embeddings = embed_users(model_dir, subset, batch_size=256, device="cpu")
        embedded = time.perf_counter() - start
        peak_anonymous = watch.stop()
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB

    rows = [
        "| measure | value |", "|---|---|",
        f"| users / behaviours | {len(data.users):,} / {events:,} |",
        f"| Parquet shards written (synthetic) | {parquet_bytes / 2**20:,.0f} MiB in {written:.0f} s |",
        f"| first load: Parquet -> Arrow cache ({arrow_bytes / 2**20:,.0f} MiB) | {converted:.0f} s, **{events / converted / 1e6:.2f}M behaviours/s**; anonymous RSS +{after_conversion - before:.0f} MiB |",
        f"| later loads (memory-mapped) | {mapped:.1f} s; anonymous RSS +{loaded - after_conversion:.0f} MiB |",
        f"| {args.steps} pre-training steps (GRU4Rec ids, hidden 32, batch 32) | {trained:.0f} s, {trained_behaviours / trained:,.0f} behaviours/s; anonymous RSS after {after_training:.0f} MiB |",
        f"| `embed_users` (`userbert embed`), {embeddings.num_rows:,} users, batch 256 | {embedded:.0f} s, **{embeddings.num_rows / embedded:,.0f} users/s** |",
        f"| **peak memory** | anonymous RSS {peak_anonymous:,.0f} MiB; RSS incl. mapped file pages {peak_rss:,.0f} MiB (target: at most 2 GB) |",
    ]
    print(write_markdown(args.output, "Scale: paper-size pre-training data, memory-mapped", command_line(), "\n".join(rows)))


if __name__ == "__main__":
    main()
