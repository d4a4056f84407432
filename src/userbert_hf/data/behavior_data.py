"""Per-user behaviour sequences (:class:`BehaviorData`): cleaned events -> deduplicated, vocabulary-mapped,
time-sorted, truncated ``datasets.Dataset`` rows; saving and reloading them."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa

from ..vocabulary import PAD_TOKEN, BehaviorVocabulary
from .readers import Table
from .summary import MAX_EXAMPLES_PER_REASON, DataFormatError, Issues, LoadSummary, report, where_text
from .values import parse_floats, parse_ids, parse_times, time_hint

try:  # datasets >= 4
    from datasets import List as _ListFeature
except ImportError:  # pragma: no cover - datasets 3.x
    from datasets import Sequence as _ListFeature

DEFAULT_MAX_BEHAVIORS = 100

USERS_FEATURES = datasets.Features(
    {
        "user_id": datasets.Value("string"),
        "behavior_ids": _ListFeature(datasets.Value("int32")),
        "timestamps": _ListFeature(datasets.Value("int64")),
    }
)



@dataclass
class BehaviorData:
    """Per-user behaviour sequences plus the vocabulary and a load summary.

    Attributes:
        users: one row per user: ``user_id`` (string), ``behavior_ids`` (``List(int32)``, vocabulary ids,
            oldest -> newest), ``timestamps`` (``List(int64)``, unix seconds, or ordinal positions where the
            source has no time); MovieLens adds ``ratings`` (``List(float32)``).
        vocabulary: raw behaviour id <-> id, with the behaviour texts.
        summary: counts of rows read / used / skipped.
        source: loader name.
        export_info: for a folder written by ``userbert finetune --export_pretraining_data``: the task it was
            written for, the content hash of the file it was read from and whether that task trains on every
            exported sequence (``{"task", "data_sha256", "trains_on_whole_export"}``); ``None`` otherwise.

    Example:
        >>> data = load_default_dataset(verbose=False)
        >>> data.users.num_rows, len(data.vocabulary)
        (610, 9725)
        >>> data.users.column_names
        ['user_id', 'behavior_ids', 'timestamps', 'ratings']
        >>> data.vocabulary.texts[data.vocabulary["1"]]  # movieId 1
        'Toy Story (1995) Adventure Animation Children Comedy Fantasy'
    """

    users: datasets.Dataset
    vocabulary: BehaviorVocabulary
    summary: LoadSummary
    source: str
    export_info: dict | None = None

    def __len__(self) -> int:
        return self.users.num_rows

    def __repr__(self) -> str:
        return (
            f"BehaviorData(source={self.source!r}, users={self.users.num_rows}, "
            f"vocabulary={len(self.vocabulary)}, columns={self.users.column_names})"
        )


# =====================================================================================================
# Events -> per-user sequences
# =====================================================================================================
@dataclass
class Events:
    """Cleaned events in file order, before deduplication, vocabulary mapping, sorting and truncation."""

    path: Path
    users: Sequence[str] = field(default_factory=list)
    items: Sequence[str] = field(default_factory=list)
    times: Sequence[int] = field(default_factory=list)
    locations: Sequence = field(default_factory=list)
    floats: dict[str, Sequence[float]] = field(default_factory=dict)
    seen_users: dict[str, object] = field(default_factory=dict)  # user -> location of its first row
    numeric_times: bool = False


def events_from_table(
    table: Table,
    issues: Issues,
    *,
    user_column: str,
    item_column: str,
    time_column: str,
    time_format: str | None,
    float_columns: dict[str, str] | None = None,
) -> Events:
    """Validate every row; bad rows are reported in file order with their first problem.

    The checks run column-wise (vectorised where the values allow it); only the rows that fail a fast check
    are examined one by one.
    """
    float_columns = float_columns or {}
    path = table.path
    locations = np.asarray(table.locations, dtype=object)
    raw_users, raw_items, raw_times = (table.column(c) for c in (user_column, item_column, time_column))
    (users, nested_users), (items, nested_items) = parse_ids(raw_users), parse_ids(raw_items)
    times, time_ok = parse_times(raw_times, time_format)
    raw_floats = {name: table.column(name) for name in float_columns}
    floats = {name: parse_floats(values) for name, values in raw_floats.items()}

    reserved = items == PAD_TOKEN  # the padding behaviour's raw id cannot name a real behaviour
    # An id never holds a line break: in a CSV it is the mark of stray quotes that merged lines into one field.
    broken = np.fromiter((("\n" in u or "\r" in u) for u in users), dtype=bool, count=len(users)) | np.fromiter(
        (("\n" in i or "\r" in i) for i in items), dtype=bool, count=len(items))
    bad = (users == "") | (items == "") | reserved | broken | ~time_ok  # a nested (list / struct) id is "" too
    for _, ok in floats.values():
        bad |= ~ok
    for i in np.flatnonzero(bad):
        where = locations[i]
        if nested_users[i]:
            issues.skip("invalid_user_id", path, where, _nested_message(user_column, raw_users[i]),
                        column=user_column)
        elif users[i] == "":
            issues.skip("empty_user_id", path, where, f"column {user_column!r} is empty", column=user_column)
        elif nested_items[i]:
            issues.skip("invalid_item_id", path, where, _nested_message(item_column, raw_items[i]),
                        column=item_column)
        elif items[i] == "":
            issues.skip("empty_item_id", path, where, f"column {item_column!r} is empty", column=item_column)
        elif reserved[i]:
            issues.skip("reserved_item_id", path, where,
                        f"column {item_column!r}: {PAD_TOKEN!r} is reserved for padding", column=item_column)
        elif broken[i]:
            column = user_column if ("\n" in users[i] or "\r" in users[i]) else item_column
            issues.skip("id_with_line_break", path, where,
                        f"column {column!r} holds a line break (stray quotes merging lines?): "
                        f"{(users[i] if column == user_column else items[i])[:60]!r}", column=column)
        elif not time_ok[i]:
            issues.skip(
                "unparsable_timestamp", path, where,
                f"column {time_column!r}: cannot parse {raw_times[i]!r} as a timestamp ({time_hint(time_format)})",
                column=time_column,
            )
        else:
            name = next(name for name, (_, ok) in floats.items() if not ok[i])
            issues.skip(f"invalid_{name.lower()}", path, where,
                        f"column {name!r}: {raw_floats[name][i]!r} is not a number", column=name)

    named = np.flatnonzero(users != "")
    user_codes, user_names = pd.factorize(users[named])
    _, first_row = np.unique(user_codes, return_index=True)
    keep = ~bad
    return Events(
        path=path,
        users=users[keep],
        items=items[keep],
        times=times[keep],
        locations=locations[keep],
        floats={out: floats[name][0][keep].astype(np.float32) for name, out in float_columns.items()},
        seen_users=dict(zip(user_names, locations[named[first_row]])),
    )


def _nested_message(column: str, value: object) -> str:
    kind = "an object / struct" if isinstance(value, dict) else "a list"
    return f"column {column!r}: {kind} value {value!r:.60} is not an id"


def build_behavior_data(
    events: Events,
    issues: Issues,
    *,
    source: str,
    vocabulary: BehaviorVocabulary | None,
    item_text: Callable[[str], str | None],
    max_behaviors: int | None,
    deduplicate: bool,
    verbose: bool,
) -> BehaviorData:
    """Deduplicate, map ids through the vocabulary, sort each user's events by time, truncate, build the Dataset."""
    summary = issues.summary
    path = events.path
    summary.max_behaviors = max_behaviors
    vocabulary = BehaviorVocabulary() if vocabulary is None else vocabulary

    n = len(events.users)
    users = np.asarray(events.users, dtype=object)
    items = np.asarray(events.items, dtype=object)
    times = np.asarray(events.times, dtype=np.int64)
    keep = np.ones(n, dtype=bool)

    # 1. duplicate events (same user, item, timestamp): keep the first in file order.
    if deduplicate and n:
        frame = pd.DataFrame({"u": users, "i": items, "t": times})
        duplicated = frame.duplicated(keep="first").to_numpy()
        if duplicated.any():
            dup_index = np.flatnonzero(duplicated)
            for j in dup_index[:MAX_EXAMPLES_PER_REASON]:
                original = _first_occurrence(users, items, times, j)
                issues.skip(
                    "duplicate_event", path, events.locations[j],
                    f"duplicate of {where_text(events.locations[original])} "
                    f"(user {users[j]!r}, item {items[j]!r}, timestamp {times[j]})",
                )
            issues.count("duplicate_event", len(dup_index) - min(len(dup_index), MAX_EXAMPLES_PER_REASON))
            keep &= ~duplicated
    issues.checkpoint()  # strict: the earliest malformed row found by any pass

    # 2. vocabulary ids (new behaviours are added in order of first appearance unless the vocabulary is frozen).
    codes, uniques = pd.factorize(items[keep]) if n else (np.zeros(0, np.int64), np.zeros(0, object))
    lookup = np.empty(len(uniques), dtype=np.int64)
    for k, raw_id in enumerate(uniques):
        if vocabulary.frozen:
            index = vocabulary.get(raw_id)
            lookup[k] = -1 if index is None else index
        else:
            lookup[k] = vocabulary.add(raw_id, item_text(raw_id))
    ids = np.zeros(n, dtype=np.int64)
    ids[keep] = lookup[codes]
    unknown = keep & (ids < 0)
    if unknown.any():
        unknown_index = np.flatnonzero(unknown)
        for j in unknown_index[:MAX_EXAMPLES_PER_REASON]:
            issues.skip("unknown_behavior", path, events.locations[j],
                        f"behaviour {items[j]!r} is not in the (frozen) vocabulary")
        issues.count("unknown_behavior", len(unknown_index) - min(len(unknown_index), MAX_EXAMPLES_PER_REASON))
        keep &= ~unknown

    summary.rows_used = int(keep.sum())
    summary.behaviors = int(len(np.unique(ids[keep])))
    if summary.rows_used and int(times[keep].max()) > 10**11 and events.numeric_times:
        summary.notes.append(
            "some timestamps exceed 1e11: they look like milliseconds, but numbers are read as unix seconds"
        )

    # 3. group by user (users in order of first appearance), stable sort by time, keep the most recent.
    kept = np.flatnonzero(keep)
    user_codes, user_ids = pd.factorize(users[kept]) if len(kept) else (np.zeros(0, np.int64), [])
    order = np.lexsort((np.arange(len(kept)), times[kept], user_codes))
    sorted_index = kept[order]
    sorted_codes = user_codes[order]
    counts = np.bincount(sorted_codes, minlength=len(user_ids))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    if max_behaviors is not None and len(sorted_index):
        position = np.arange(len(sorted_index)) - starts[sorted_codes]
        recent = position >= (counts - max_behaviors)[sorted_codes]
        sorted_index = sorted_index[recent]
        summary.truncated_users = int((counts > max_behaviors).sum())
        counts = np.minimum(counts, max_behaviors)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)

    # 4. users whose every row was skipped.
    final_users = set(user_ids)
    lost = [(u, where) for u, where in events.seen_users.items() if u not in final_users]
    for user, where in lost[:MAX_EXAMPLES_PER_REASON]:
        issues.skip("user_without_behaviors", path, where, f"user {user!r} has no usable behaviour left")
    issues.count("user_without_behaviors", max(0, len(lost) - MAX_EXAMPLES_PER_REASON))

    summary.users = len(user_ids)
    summary.events = int(len(sorted_index))
    if summary.users == 0:
        raise DataFormatError(f"{path}: no usable behaviours: every row was skipped or filtered\n{summary}",
                              path=path, reason="no_data")

    columns = {
        "user_id": pa.array([str(u) for u in user_ids], type=pa.string()),
        "behavior_ids": list_array(offsets, ids[sorted_index].astype(np.int32), pa.int32()),
        "timestamps": list_array(offsets, times[sorted_index], pa.int64()),
    }
    features = dict(USERS_FEATURES)
    for name, values in events.floats.items():
        values = np.asarray(values, dtype=np.float32)
        columns[name] = list_array(offsets, values[sorted_index], pa.float32())
        features[name] = _ListFeature(datasets.Value("float32"))
    users_dataset = datasets.Dataset.from_dict(columns, features=datasets.Features(features))

    report(summary, verbose)
    return BehaviorData(users=users_dataset, vocabulary=vocabulary, summary=summary, source=source)


def _first_occurrence(users: np.ndarray, items: np.ndarray, times: np.ndarray, j: int) -> int:
    """Index of the first event equal to event ``j`` (column-wise comparisons, no Python loop over rows)."""
    same_time = np.flatnonzero(times[:j] == times[j])
    same = same_time[(items[same_time] == items[j]) & (users[same_time] == users[j])]
    return int(same[0])


def list_array(offsets: np.ndarray, values: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), pa.array(values, type=value_type))


_SUMMARY_FILE_NAME = "load_summary.json"


def save_behavior_data(data: BehaviorData, directory: str | os.PathLike) -> Path:
    """Write ``users/`` (``Dataset.save_to_disk``), ``behavior_vocab.json`` and ``load_summary.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data.users.save_to_disk(str(directory / "users"))
    data.vocabulary.save(directory)
    payload = {"source": data.source, "frozen_vocabulary": data.vocabulary.frozen, "summary": data.summary.to_dict()}
    if data.export_info is not None:
        payload["export"] = data.export_info
    (directory / _SUMMARY_FILE_NAME).write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")
    return directory


def load_saved_behavior_data(directory: str | os.PathLike) -> BehaviorData:
    """Reload what :func:`save_behavior_data` wrote (the users dataset is memory-mapped)."""
    directory = Path(directory)
    for name in ("users", "behavior_vocab.json", _SUMMARY_FILE_NAME):
        if not (directory / name).exists():
            raise FileNotFoundError(f"saved behaviour data incomplete: {directory / name} not found")
    users = datasets.load_from_disk(str(directory / "users"))
    vocabulary = BehaviorVocabulary.load(directory)
    try:
        payload = json.loads((directory / _SUMMARY_FILE_NAME).read_text(encoding="utf-8"))
        summary = LoadSummary.from_dict(payload["summary"])
        source = payload["source"]
        export_info = payload.get("export")
        if export_info is not None and not isinstance(export_info, dict):
            raise TypeError(f"'export' is a {type(export_info).__name__}, not an object")
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataFormatError(f"{directory / _SUMMARY_FILE_NAME}: malformed summary ({e})",
                              path=directory / _SUMMARY_FILE_NAME) from None
    if payload.get("frozen_vocabulary"):
        vocabulary.freeze()
    _check_saved_ids(users, len(vocabulary), directory / "users")
    return BehaviorData(users=users, vocabulary=vocabulary, summary=summary, source=source, export_info=export_info)


def _check_saved_ids(users: datasets.Dataset, vocab_size: int, where: Path) -> None:
    """Every behaviour id of saved users in the vocabulary's range [1, vocab_size): checked on loading (batch by
    batch, in Arrow) rather than found out of range half-way through training."""
    if "behavior_ids" not in users.column_names:
        raise DataFormatError(f"{where}: no 'behavior_ids' column (found {users.column_names})", path=where)
    offset = 0
    for batch in users.select_columns(["behavior_ids"]).with_format("arrow").iter(batch_size=10_000):
        column = batch["behavior_ids"].combine_chunks()
        flat = column.flatten().to_numpy(zero_copy_only=False)
        if len(flat) and (flat.min() < 1 or flat.max() >= vocab_size):
            lengths = np.diff(column.offsets.to_numpy())
            bad = np.repeat(np.arange(len(lengths)), lengths)[(flat < 1) | (flat >= vocab_size)][0]
            raise DataFormatError(
                f"{where}: user row {offset + int(bad)} has a behaviour id outside the vocabulary's range "
                f"[1, {vocab_size}) of behavior_vocab.json", path=where, line=offset + int(bad))
        offset += len(batch)
