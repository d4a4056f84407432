"""Pre-training data at scale: user rows in Parquet shards, read memory-mapped instead of into RAM.

At the paper's scale (500k users, 63M behaviours) the per-user rows are prepared once (e.g. with Spark or
DuckDB: one row per user with ``user_id``, ``behavior_ids`` (list of ints, oldest first, ids from a saved
``behavior_vocab.json``) and ``timestamps``) and written as Parquet shards. ``load_user_shards`` turns them into
a memory-mapped ``datasets.Dataset`` (Arrow files in the datasets cache): every rank of a multi-process run maps
the same files, the Trainer's distributed sampler gives each rank its share of users, and the negative sampler's
random access to users for the sequence pool reads only the rows it touches.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .data import BehaviorData, DataFormatError, LoadSummary
from .vocabulary import BehaviorVocabulary

USER_COLUMNS = ("user_id", "behavior_ids", "timestamps")


def write_user_shards(users: datasets.Dataset, directory: str | os.PathLike, rows_per_shard: int = 100_000) -> list[str]:
    """Write user rows as Parquet shards ``users-00000.parquet``, ... (the format ``load_user_shards`` reads)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard, start in enumerate(range(0, len(users), rows_per_shard)):
        part = users.select(range(start, min(start + rows_per_shard, len(users)))).select_columns(list(USER_COLUMNS))
        path = directory / f"users-{shard:05d}.parquet"
        pq.write_table(part.data.table if hasattr(part.data, "table") else part.to_arrow(), path)
        paths.append(str(path))
    return paths


def load_user_shards(
    data_files: str | list[str],
    vocabulary: BehaviorVocabulary | str | os.PathLike,
    cache_dir: str | None = None,
    max_behaviors: int | None = None,
) -> BehaviorData:
    """Memory-mapped user rows from Parquet shards (a glob, a folder or a list of files).

    Args:
        data_files: Parquet files with columns ``user_id``, ``behavior_ids``, ``timestamps``.
        vocabulary: the ``BehaviorVocabulary`` (or a folder / ``behavior_vocab.json``) the ids refer to.
        cache_dir: where ``datasets`` writes its Arrow cache (memory-mapped afterwards).
        max_behaviors: if set, rows longer than this raise a clear error (truncate when preparing shards).

    Example:

    ```python
    >>> data = load_user_shards("pretraining-users/*.parquet", "pretraining-users/behavior_vocab.json")
    >>> data.users  # memory-mapped; RAM use does not grow with the number of users
    ```
    """
    if isinstance(data_files, (str, os.PathLike)):
        path = Path(data_files)
        files = sorted(glob.glob(str(path / "*.parquet"))) if path.is_dir() else sorted(glob.glob(str(path)))
    else:
        files = [str(f) for f in data_files]
    if not files:
        raise FileNotFoundError(f"no Parquet shards found at {data_files}")
    for file in files[:1] + files[-1:]:
        schema = pq.read_schema(file)
        missing = [c for c in USER_COLUMNS if c not in schema.names]
        if missing:
            raise DataFormatError(f"{file}: missing column(s) {missing}; found {schema.names}", path=file)
        for column in ("behavior_ids", "timestamps"):
            if not pa.types.is_list(schema.field(column).type) and not pa.types.is_large_list(schema.field(column).type):
                raise DataFormatError(f"{file}: column {column!r} must be a list of integers", path=file, column=column)
    if not isinstance(vocabulary, BehaviorVocabulary):
        vocabulary = BehaviorVocabulary.load(vocabulary)
    users = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=cache_dir)
    wanted = datasets.Features(
        {
            **{k: v for k, v in users.features.items() if k not in USER_COLUMNS},
            "user_id": datasets.Value("string"),
            "behavior_ids": datasets.List(datasets.Value("int32")),
            "timestamps": datasets.List(datasets.Value("int64")),
        }
    )
    if users.features != wanted:  # casting writes another Arrow copy: only when the shards' types differ
        users = users.cast(wanted)
    _check_rows(users, len(vocabulary), max_behaviors, files)
    summary = LoadSummary(source="user_shards")
    summary.rows_read = summary.rows_used = summary.users = len(users)
    summary.behaviors = len(vocabulary) - 1
    return BehaviorData(users=users, vocabulary=vocabulary, summary=summary, source="user_shards")


def _check_rows(users: datasets.Dataset, vocab_size: int, max_behaviors: int | None, files: list[str]) -> None:
    """Validate ids, lengths and time order batch by batch (Arrow, without materialising the dataset)."""
    offset = 0
    for batch in users.with_format("arrow").iter(batch_size=10_000):
        ids, times = batch["behavior_ids"].combine_chunks(), batch["timestamps"].combine_chunks()
        id_lengths = np.diff(ids.offsets.to_numpy())
        if not np.array_equal(id_lengths, np.diff(times.offsets.to_numpy())):
            row = offset + int(np.nonzero(id_lengths != np.diff(times.offsets.to_numpy()))[0][0])
            raise DataFormatError(f"{files}: user row {row} has different numbers of behaviour ids and timestamps", line=row)
        if (id_lengths == 0).any():
            row = offset + int(np.nonzero(id_lengths == 0)[0][0])
            raise DataFormatError(f"{files}: user row {row} has no behaviours", line=row)
        if max_behaviors is not None and (id_lengths > max_behaviors).any():
            row = offset + int(np.nonzero(id_lengths > max_behaviors)[0][0])
            raise DataFormatError(f"{files}: user row {row} has more than max_behaviors={max_behaviors} behaviours", line=row)
        flat = ids.flatten().to_numpy()
        if len(flat) and (flat.min() < 1 or flat.max() >= vocab_size):
            raise DataFormatError(f"{files}: behaviour ids must be in [1, {vocab_size}) (the vocabulary's range)")
        offset += len(id_lengths)


__all__ = ["write_user_shards", "load_user_shards", "USER_COLUMNS"]
