"""Pre-training data far larger than RAM needs: synthetic user shards read memory-mapped.

    python benchmarks/scale_memory_mapped.py [--users 200000] [--behaviors_per_user 126] [--steps 20]

Writes Parquet shards of synthetic user rows (the paper's 500k users x 126 behaviours on average is 63M
behaviours; the default is 200k users, about 25M behaviours), loads them with `load_user_shards`, runs a few
pre-training steps (ID model, sequence pool crops read by random access) and prints the on-disk size of the
rows beside the growth of resident memory: side by side in one run.
"""

import argparse
import os
import tempfile
import time

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from userbert_hf import UserBertConfig, UserBertForPreTraining
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
        lengths = rng.integers(max(2, per_user // 4), min(100, 2 * per_user) + 1, n)
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


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--behaviors_per_user", type=int, default=126)
    parser.add_argument("--num_behaviors", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        shards, cache = os.path.join(work, "shards"), os.path.join(work, "cache")
        os.makedirs(shards)
        start = time.time()
        parquet_bytes = write_shards(shards, args.users, args.behaviors_per_user, args.num_behaviors)
        vocabulary = BehaviorVocabulary([str(i) for i in range(1, args.num_behaviors)])
        first = rss_mib()
        load_user_shards(shards, vocabulary, cache_dir=cache)  # first run: converts Parquet to the Arrow cache
        converted = rss_mib()
        before = rss_mib()
        data = load_user_shards(shards, vocabulary, cache_dir=cache)  # every later run and every rank
        loaded = rss_mib()
        events = sum(len(b["behavior_ids"].combine_chunks().flatten()) for b in data.users.with_format("arrow").iter(50_000))
        arrow_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(cache) for f in fs if f.endswith(".arrow"))
        config = UserBertConfig.from_preset("gru4rec", behavior_vocab_size=len(vocabulary), hidden_size=32)
        torch.manual_seed(0)
        training = UserBertTrainingArguments(
            os.path.join(work, "out"), max_steps=args.steps, per_device_train_batch_size=32, use_cpu=True,
            save_strategy="no", disable_tqdm=True, report_to=[], logging_steps=10, sequence_pool_interval=5,
        )
        trainer = UserBertTrainer(model=UserBertForPreTraining(config), args=training, train_dataset=data.users,
                                  catalog=BehaviorCatalog(len(vocabulary)))
        trainer.train()
        after = rss_mib()
        print(f"users {len(data.users):,}, behaviours {events:,}; parquet {parquet_bytes / 2**20:.0f} MiB, "
              f"arrow cache {arrow_bytes / 2**20:.0f} MiB (built in {time.time() - start:.0f} s)")
        print(f"first load (Parquet -> Arrow cache conversion): anonymous RSS +{converted - first:.0f} MiB, kept by the allocator")
        print(f"Anonymous RSS before loading {before:.0f} MiB, after loading {loaded:.0f} MiB (+{loaded - before:.0f}), "
              f"after {args.steps} training steps {after:.0f} MiB")
        print(f"Anonymous RSS growth from loading / arrow data size: {(loaded - before) / max(arrow_bytes / 2**20, 1e-9):.3f}")


if __name__ == "__main__":
    main()
