"""Load behaviour logs (MovieLens, MIND, Amazon Beauty, generic event logs) into per-user sequences.

Every loader returns a :class:`BehaviorData`: a ``datasets.Dataset`` with one row per user
(``user_id``, ``behavior_ids`` oldest -> newest, ``timestamps``), the :class:`BehaviorVocabulary` that maps
raw behaviour ids to the contiguous ids used in ``behavior_ids``, and a :class:`LoadSummary` that counts
what was read, used and skipped (with ``file:line`` examples).

Bad input is never dropped silently and never surfaces as a bare pandas/pyarrow traceback:

* structural problems of a whole file (not found, empty, missing required column, not decodable) raise
  ``FileNotFoundError`` or :class:`DataFormatError` naming the file (and the column);
* a bad row (wrong number of fields, unparsable timestamp, empty id, duplicate event, ...) is skipped and
  counted, or with ``strict=True`` raises :class:`DataFormatError` naming ``file:line`` and the column;
* content filters (unknown ids, empty histories, ``min_rating``, users left with no behaviour) are counted
  but never raise, even with ``strict=True``: real MIND files, for instance, always contain history ids that
  are missing from the split's ``news.tsv``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Sequence

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa

from .vocabulary import PAD_TOKEN, BehaviorVocabulary

try:  # datasets >= 4
    from datasets import List as _ListFeature
except ImportError:  # pragma: no cover - datasets 3.x
    from datasets import Sequence as _ListFeature

logger = logging.getLogger(__name__)

DEFAULT_MAX_BEHAVIORS = 100
MAX_EXAMPLES_PER_REASON = 5
# csv's default field limit (128 KiB) would make one long title / id fail the whole file.
_CSV_FIELD_SIZE_LIMIT = 2**31 - 1
# Timestamps are stored as int64: values outside this range are unparsable, not wrapped around.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

# Reasons that are content filters, not format errors: counted, but ``strict=True`` does not raise on them.
FILTER_REASONS = frozenset(
    {
        "blank_line",
        "below_min_rating",
        "unknown_behavior",
        "unknown_news_id",
        "empty_history",
        "user_without_behaviors",
    }
)

USERS_FEATURES = datasets.Features(
    {
        "user_id": datasets.Value("string"),
        "behavior_ids": _ListFeature(datasets.Value("int32")),
        "timestamps": _ListFeature(datasets.Value("int64")),
    }
)


class DataFormatError(ValueError):
    """Malformed input data. The message names the file, and where known the 1-based line and the column.

    Attributes ``path``, ``line``, ``column`` and ``reason`` carry the same information for programs.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike | None = None,
        line: int | None = None,
        column: str | None = None,
        reason: str | None = None,
    ):
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.line = line
        self.column = column
        self.reason = reason


@dataclass
class LoadSummary:
    """What a loader read, used and skipped.

    Attributes:
        source: loader name (``"movielens"``, ``"mind"``, ``"amazon-beauty"``, ``"event-log"``).
        path: the file or directory read.
        rows_read: data rows (lines without header, records) read from the main file.
        rows_used: rows that passed every check (events before ``max_behaviors`` truncation; for MIND the
            ``behaviors.tsv`` lines that parsed).
        users: users in the result.
        behaviors: distinct behaviours (excluding padding) among the used events.
        events: behaviours kept in the result, after truncation.
        truncated_users: users whose sequence was cut to the most recent ``max_behaviors``.
        max_behaviors: the truncation length used (``None``: no truncation).
        skipped: reason -> count of skipped rows / ids / users.
        examples: reason -> first few ``"file:line: message"`` strings.
        notes: other observations worth reading (nothing was dropped for them).

    Example:
        >>> s = LoadSummary(source="event-log", path="log.csv", rows_read=3, rows_used=2)
        >>> s.add_skip("unparsable_timestamp", "log.csv:3: column 'timestamp': cannot parse 'soon'")
        >>> s.skipped, s.examples["unparsable_timestamp"]
        ({'unparsable_timestamp': 1}, ["log.csv:3: column 'timestamp': cannot parse 'soon'"])
    """

    source: str
    path: str = ""
    rows_read: int = 0
    rows_used: int = 0
    users: int = 0
    behaviors: int = 0
    events: int = 0
    truncated_users: int = 0
    max_behaviors: int | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add_skip(self, reason: str, example: str | None = None, count: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + count
        if example is not None:
            examples = self.examples.setdefault(reason, [])
            if len(examples) < MAX_EXAMPLES_PER_REASON:
                examples.append(example)

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def __str__(self) -> str:
        limit = "no limit" if self.max_behaviors is None else f"max_behaviors={self.max_behaviors}"
        lines = [
            f"{self.source} data from {self.path}",
            f"  rows read:   {self.rows_read:,}",
            f"  rows used:   {self.rows_used:,}",
            f"  users:       {self.users:,}",
            f"  behaviors:   {self.behaviors:,} distinct",
            f"  events kept: {self.events:,} ({limit}; {self.truncated_users:,} users truncated)",
        ]
        if self.skipped:
            lines.append(f"  skipped ({self.total_skipped:,}):")
            for reason, count in sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0])):
                lines.append(f"    {reason}: {count:,}")
                for example in self.examples.get(reason, []):
                    lines.append(f"      e.g. {example}")
        else:
            lines.append("  skipped: nothing")
        for note in self.notes:
            lines.append(f"  note: {note}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict) -> "LoadSummary":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in payload.items() if k in known})


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

    def __len__(self) -> int:
        return self.users.num_rows

    def __repr__(self) -> str:
        return (
            f"BehaviorData(source={self.source!r}, users={self.users.num_rows}, "
            f"vocabulary={len(self.vocabulary)}, columns={self.users.column_names})"
        )


# =====================================================================================================
# Bookkeeping of skipped rows
# =====================================================================================================
class _Issues:
    """Counts skips into a LoadSummary.

    With ``strict=True`` a format error is remembered rather than raised at once, and :meth:`checkpoint` raises
    the earliest one in file order: a file is checked in several passes (fields, values, duplicates), and the
    error reported must be the first bad line, whichever pass found it.
    """

    def __init__(self, summary: LoadSummary, strict: bool):
        self.summary = summary
        self.strict = strict
        self._first_error: tuple[tuple, DataFormatError] | None = None

    def skip(
        self,
        reason: str,
        path: str | os.PathLike,
        where: int | str | None,
        message: str,
        *,
        column: str | None = None,
        count: int = 1,
    ) -> None:
        text = f"{_location(path, where)}: {message}"
        if self.strict and reason not in FILTER_REASONS:
            key = (_order_of(where),)
            if self._first_error is None or key < self._first_error[0]:
                error = DataFormatError(
                    f"{text} [{reason}; strict=True, pass strict=False to skip and count such rows]",
                    path=path, line=where if isinstance(where, int) else None, column=column, reason=reason,
                )
                self._first_error = (key, error)
            return
        self.summary.add_skip(reason, text, count)

    def count(self, reason: str, n: int) -> None:
        """Count ``n`` more skips of an already exemplified reason."""
        if n:
            self.summary.add_skip(reason, None, n)

    def checkpoint(self) -> None:
        """In strict mode, raise the earliest format error seen so far."""
        if self._first_error is not None:
            raise self._first_error[1]


def _order_of(where: int | str | None) -> int:
    if isinstance(where, int):
        return where
    match = re.search(r"(\d+)$", str(where or ""))
    return int(match.group(1)) if match else 0


def _where_text(where: int | str) -> str:
    return f"line {where}" if isinstance(where, int) else str(where)


def _location(path: str | os.PathLike, where: int | str | None) -> str:
    if where is None:
        return str(path)
    if isinstance(where, int):
        return f"{path}:{where}"
    return f"{path}: {where}"


# =====================================================================================================
# Reading tables (CSV/TSV/JSON Lines/JSON/Parquet) with the location of every row
# =====================================================================================================
@dataclass
class _Table:
    path: Path
    columns: list[str]
    locations: list  # int (1-based line) or str ("row 3", "record 3")
    _rows: list = field(default_factory=list)  # list[list[str]] for CSV, list[dict] for JSON
    _arrow: pa.Table | None = None

    def __len__(self) -> int:
        return len(self.locations)

    def column(self, name: str) -> list:
        if self._arrow is not None:
            return self._arrow.column(name).to_pylist()
        if self._rows and isinstance(self._rows[0], dict):
            return [row.get(name) for row in self._rows]
        index = self.columns.index(name)
        return [row[index] for row in self._rows]

    def require(self, *names: str | None) -> None:
        missing = [n for n in names if n is not None and n not in self.columns]
        if missing:
            raise DataFormatError(
                f"{self.path}: missing required column {missing[0]!r}"
                + (f" (also missing: {missing[1:]})" if len(missing) > 1 else "")
                + f"; available columns: {self.columns}",
                path=self.path,
                column=missing[0],
                reason="missing_column",
            )


def _check_file(path: str | os.PathLike, what: str = "data file") -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if path.is_dir():
        raise DataFormatError(f"{path}: expected a {what}, got a directory", path=path)
    if path.stat().st_size == 0:
        raise DataFormatError(f"{path}: file is empty (0 bytes)", path=path, reason="empty_file")
    return path


def _infer_format(path: Path, file_format: str | None) -> str:
    formats = {"csv": "csv", "tsv": "tsv", "tab": "tsv", "jsonl": "jsonl", "ndjson": "jsonl", "json": "json",
               "parquet": "parquet", "pq": "parquet"}
    if file_format is not None:
        key = file_format.lower().lstrip(".")
        if key not in formats:
            raise ValueError(f"unknown file_format {file_format!r}; expected one of {sorted(set(formats.values()))}")
        return formats[key]
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in formats:
        raise DataFormatError(
            f"{path}: cannot infer the file format from the suffix {path.suffix!r}; pass file_format= one of "
            f"{sorted(set(formats.values()))}",
            path=path,
        )
    return formats[suffix]


def _read_table(path: Path, file_format: str, issues: _Issues) -> _Table:
    if file_format in ("csv", "tsv"):
        return _read_delimited(path, "," if file_format == "csv" else "\t", issues)
    if file_format in ("jsonl", "json"):
        return _read_json(path, file_format, issues)
    table = _read_parquet(path)
    issues.summary.rows_read += len(table)
    return table


def _read_delimited(path: Path, delimiter: str, issues: _Issues) -> _Table:
    """Read a CSV/TSV file with a header line; rows with the wrong number of fields are skipped."""
    rows: list[list[str]] = []
    lines: list[int] = []
    header: list[str] | None = None
    n_fields = 0
    rows_read = 0
    end = 0  # last physical line read so far; a record starts on the line after the previous one ended
    old_field_limit = csv.field_size_limit()
    csv.field_size_limit(max(old_field_limit, _CSV_FIELD_SIZE_LIMIT))
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=delimiter)
            for row in reader:
                start, end = end + 1, reader.line_num
                if len(row) != n_fields or header is None:
                    if not row or (len(row) == 1 and not row[0].strip()):
                        if header is not None:
                            issues.skip("blank_line", path, start, "blank line")
                        continue
                    if header is None:
                        header = _check_header([h.strip() for h in row], path, start)
                        n_fields = len(header)
                        continue
                    rows_read += 1
                    issues.skip(
                        "wrong_field_count", path, start,
                        f"expected {n_fields} fields ({', '.join(header)}), got {len(row)}: {_preview(row)}",
                    )
                    continue
                rows_read += 1
                rows.append(row)
                lines.append(start)
    except UnicodeDecodeError as e:
        raise DataFormatError(
            f"{path}: not valid UTF-8 after line {end} ({e.reason} at byte {e.start})", path=path
        ) from None
    except csv.Error as e:
        raise DataFormatError(f"{path}:{end + 1}: cannot parse the line: {e}", path=path, line=end + 1) from None
    finally:
        csv.field_size_limit(old_field_limit)
    issues.summary.rows_read += rows_read
    if header is None:
        raise DataFormatError(f"{path}: file is empty (only blank lines)", path=path, reason="empty_file")
    return _Table(path=path, columns=header, locations=lines, _rows=rows)


def _check_header(header: list[str], path: Path, line: int) -> list[str]:
    duplicates = sorted({h for h in header if header.count(h) > 1})
    if duplicates:
        raise DataFormatError(
            f"{path}:{line}: duplicate column name(s) {duplicates} in the header {header}",
            path=path, line=line, reason="duplicate_column",
        )
    return header


def _read_json(path: Path, file_format: str, issues: _Issues) -> _Table:
    """Read JSON Lines (one object per line), or a JSON array of objects for ``.json`` files."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})", path=path) from None
    if not text.strip():
        raise DataFormatError(f"{path}: file is empty (only whitespace)", path=path, reason="empty_file")
    records: list[tuple[object, object]] = []  # (location, parsed value, _BLANK or exception message)
    if file_format == "json" and text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{path}:{e.lineno}: invalid JSON: {e.msg}", path=path, line=e.lineno) from None
        records = [(f"record {i}", value) for i, value in enumerate(values, start=1)]
    else:
        lines = re.split(r"\r\n|\r|\n", text)  # not str.splitlines: JSON strings may hold U+2028, U+0085, ...
        if lines[-1] == "":
            lines.pop()
        for line_no, line in enumerate(lines, start=1):
            if not line.strip():
                records.append((line_no, _BLANK))
                continue
            try:
                records.append((line_no, json.loads(line)))
            except json.JSONDecodeError as e:
                records.append((line_no, _JsonError(e.msg)))
    rows: list[dict] = []
    locations: list = []
    columns: dict[str, None] = {}
    for where, value in records:
        if value is _BLANK:  # not None: a JSON line `null` is a record that is not an object
            issues.skip("blank_line", path, where, "blank line")
            continue
        issues.summary.rows_read += 1
        if isinstance(value, _JsonError):
            issues.skip("unparsable_line", path, where, f"invalid JSON: {value.message}")
            continue
        if not isinstance(value, dict):
            issues.skip("unparsable_line", path, where, f"expected a JSON object, got {type(value).__name__}")
            continue
        for key in value:
            columns.setdefault(key, None)
        rows.append(value)
        locations.append(where)
    return _Table(path=path, columns=list(columns), locations=locations, _rows=rows)


@dataclass
class _JsonError:
    message: str


_BLANK = object()  # a blank JSON Lines line


def _read_parquet(path: Path) -> _Table:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DataFormatError(f"{path}: cannot read as Parquet: {e}", path=path) from None
    return _Table(
        path=path,
        columns=list(table.column_names),
        locations=[f"row {i}" for i in range(1, table.num_rows + 1)],
        _arrow=table,
    )


def _preview(row: Sequence[str], limit: int = 80) -> str:
    text = repr(list(row))
    return text if len(text) <= limit else text[: limit - 3] + "..."


# =====================================================================================================
# Value parsing
# =====================================================================================================
def _as_id(value: object) -> str:
    """Canonical string form of a raw user/item id ('' for missing)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (bytes, bytearray)):  # Parquet binary columns
        return bytes(value).decode("utf-8", errors="replace").strip()
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return ""
        if float(value).is_integer():
            return str(int(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value).strip()


def _parse_time(value: object, time_format: str | None) -> int | None:
    """Unix seconds (int) from int/float seconds, datetime objects or strings; None if unparsable."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return _in_int64(int(value))
    if isinstance(value, (float, np.floating)):
        return _in_int64(int(math.floor(value))) if math.isfinite(value) else None
    if isinstance(value, datetime):
        return _datetime_to_unix(value)
    if isinstance(value, date):
        return _datetime_to_unix(datetime(value.year, value.month, value.day))
    text = str(value).strip()
    if not text:
        return None
    if time_format is not None:
        try:
            return _datetime_to_unix(datetime.strptime(text, time_format))
        except ValueError:
            return None
    try:
        return _in_int64(int(text))
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return _in_int64(int(math.floor(number))) if math.isfinite(number) else None
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        return _datetime_to_unix(datetime.fromisoformat(text))
    except ValueError:
        return None


def _in_int64(seconds: int) -> int | None:
    return seconds if _INT64_MIN <= seconds <= _INT64_MAX else None


def _datetime_to_unix(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)  # naive times are read as UTC
    return int(math.floor(value.timestamp()))


def _time_hint(time_format: str | None) -> str:
    if time_format is None:
        return "expected unix seconds or an ISO-8601 date/time"
    return f"expected the format {time_format!r}"


# =====================================================================================================
# Events -> per-user sequences
# =====================================================================================================
@dataclass
class _Events:
    """Cleaned events in file order, before deduplication, vocabulary mapping, sorting and truncation."""

    path: Path
    users: Sequence[str] = field(default_factory=list)
    items: Sequence[str] = field(default_factory=list)
    times: Sequence[int] = field(default_factory=list)
    locations: Sequence = field(default_factory=list)
    floats: dict[str, Sequence[float]] = field(default_factory=dict)
    seen_users: dict[str, object] = field(default_factory=dict)  # user -> location of its first row
    numeric_times: bool = False


def _events_from_table(
    table: _Table,
    issues: _Issues,
    *,
    user_column: str,
    item_column: str,
    time_column: str,
    time_format: str | None,
    float_columns: dict[str, str] | None = None,
) -> _Events:
    """Validate every row; bad rows are reported in file order with their first problem.

    The checks run column-wise (vectorised where the values allow it); only the rows that fail a fast check
    are examined one by one.
    """
    float_columns = float_columns or {}
    path = table.path
    locations = np.asarray(table.locations, dtype=object)
    raw_users, raw_items, raw_times = (table.column(c) for c in (user_column, item_column, time_column))
    users, items = _ids(raw_users), _ids(raw_items)
    times, time_ok = _times(raw_times, time_format)
    raw_floats = {name: table.column(name) for name in float_columns}
    floats = {name: _floats(values) for name, values in raw_floats.items()}

    reserved = items == PAD_TOKEN  # the padding behaviour's raw id cannot name a real behaviour
    bad = (users == "") | (items == "") | reserved | ~time_ok
    for _, ok in floats.values():
        bad |= ~ok
    for i in np.flatnonzero(bad):
        where = locations[i]
        if users[i] == "":
            issues.skip("empty_user_id", path, where, f"column {user_column!r} is empty", column=user_column)
        elif items[i] == "":
            issues.skip("empty_item_id", path, where, f"column {item_column!r} is empty", column=item_column)
        elif reserved[i]:
            issues.skip("reserved_item_id", path, where,
                        f"column {item_column!r}: {PAD_TOKEN!r} is reserved for padding", column=item_column)
        elif not time_ok[i]:
            issues.skip(
                "unparsable_timestamp", path, where,
                f"column {time_column!r}: cannot parse {raw_times[i]!r} as a timestamp ({_time_hint(time_format)})",
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
    return _Events(
        path=path,
        users=users[keep],
        items=items[keep],
        times=times[keep],
        locations=locations[keep],
        floats={out: floats[name][0][keep].astype(np.float32) for name, out in float_columns.items()},
        seen_users=dict(zip(user_names, locations[named[first_row]])),
    )


def _ids(values: list) -> np.ndarray:
    """Canonical string ids ('' for missing) as an object array."""
    if all(type(v) is str for v in values):
        return np.asarray([v.strip() for v in values] or [], dtype=object)
    return np.asarray([_as_id(v) for v in values] or [], dtype=object)  # JSON / Parquet values (numbers, bytes)


def _times(values: list, time_format: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(unix seconds int64, parsed mask). Numbers take a vectorised path; other values go through _parse_time."""
    n = len(values)
    seconds = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    if time_format is None and n:
        try:
            numeric = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
        except (OverflowError, TypeError, ValueError):  # e.g. a JSON integer beyond float range
            numeric = np.full(n, np.nan)
        # float64 is exact below 2**53; larger numbers (e.g. nanoseconds, or beyond int64) are parsed one by one
        # by _parse_time, exactly and range-checked, instead of being rounded or wrapped around.
        ok = np.isfinite(numeric) & (np.abs(numeric) < 2.0**53)
        ok &= np.fromiter((type(v) is not bool for v in values), dtype=bool, count=n)  # as _parse_time: no bools
        seconds[ok] = np.floor(numeric[ok]).astype(np.int64)
        slow = np.flatnonzero(~ok)
    else:
        slow = range(n)
    for i in slow:
        parsed = _parse_time(values[i], time_format)
        if parsed is not None:
            seconds[i], ok[i] = parsed, True
    return seconds, ok


def _floats(values: list) -> tuple[np.ndarray, np.ndarray]:
    numeric = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    # stored as float32: a larger magnitude would become inf
    return numeric, np.isfinite(numeric) & (np.abs(numeric) <= np.finfo(np.float32).max)


def _build_behavior_data(
    events: _Events,
    issues: _Issues,
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
            first_seen: dict[tuple, object] = {}
            for j in range(n):
                first_seen.setdefault((users[j], items[j], times[j]), events.locations[j])
            dup_index = np.flatnonzero(duplicated)
            for j in dup_index[:MAX_EXAMPLES_PER_REASON]:
                original = first_seen[(users[j], items[j], times[j])]
                issues.skip(
                    "duplicate_event", path, events.locations[j],
                    f"duplicate of {_where_text(original)} "
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
        "behavior_ids": _list_array(offsets, ids[sorted_index].astype(np.int32), pa.int32()),
        "timestamps": _list_array(offsets, times[sorted_index], pa.int64()),
    }
    features = dict(USERS_FEATURES)
    for name, values in events.floats.items():
        values = np.asarray(values, dtype=np.float32)
        columns[name] = _list_array(offsets, values[sorted_index], pa.float32())
        features[name] = _ListFeature(datasets.Value("float32"))
    users_dataset = datasets.Dataset.from_dict(columns, features=datasets.Features(features))

    _report(summary, verbose)
    return BehaviorData(users=users_dataset, vocabulary=vocabulary, summary=summary, source=source)


def _list_array(offsets: np.ndarray, values: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), pa.array(values, type=value_type))


def _report(summary: LoadSummary, verbose: bool) -> None:
    logger.info("%s", summary)
    if verbose:
        print(summary)


def _new_issues(source: str, path: str | os.PathLike, strict: bool, max_behaviors: int | None) -> _Issues:
    if max_behaviors is not None and (not isinstance(max_behaviors, (int, np.integer)) or max_behaviors < 1):
        raise ValueError(f"max_behaviors must be a positive integer or None, got {max_behaviors!r}")
    return _Issues(LoadSummary(source=source, path=str(path), max_behaviors=max_behaviors), strict)


# =====================================================================================================
# Generic event logs
# =====================================================================================================
def load_event_log(
    path: str | os.PathLike,
    *,
    user_column: str = "user_id",
    item_column: str = "item_id",
    time_column: str = "timestamp",
    text_column: str | None = None,
    file_format: str | None = None,
    time_format: str | None = None,
    max_behaviors: int | None = DEFAULT_MAX_BEHAVIORS,
    vocabulary: BehaviorVocabulary | None = None,
    strict: bool = False,
    verbose: bool = True,
) -> BehaviorData:
    """Load a one-event-per-row log (CSV, TSV, JSON Lines, JSON array or Parquet).

    Args:
        path: the file; its suffix gives the format unless ``file_format`` is passed.
        user_column, item_column, time_column: required columns.
        text_column: optional column with the behaviour's text; the first non-empty text seen for an item wins.
        file_format: ``"csv"``, ``"tsv"``, ``"jsonl"``, ``"json"`` or ``"parquet"``.
        time_format: ``None`` accepts unix seconds (int/float) and ISO-8601 strings (naive times are UTC);
            otherwise a ``strptime`` format.
        max_behaviors: keep the most recent N behaviours per user (``None``: all).
        vocabulary: an existing vocabulary to extend, or a frozen one whose unknown ids are skipped and
            counted as ``unknown_behavior`` (fine-tuning time).
        strict: raise :class:`DataFormatError` at the first malformed row instead of skipping it.
        verbose: print the summary (it is always logged at INFO level).

    Duplicate events (same user, item and timestamp) keep the first row. Lines are 1-based with the header on
    line 1; Parquet rows and JSON array records are reported as ``row N`` / ``record N``.

    Example:
        >>> import tempfile, pathlib
        >>> log = pathlib.Path(tempfile.mkdtemp()) / "log.csv"
        >>> _ = log.write_text("user_id,item_id,timestamp\\nu1,b,20\\nu1,a,10\\nu2,a,2024-01-01T00:00:00Z\\n")
        >>> data = load_event_log(log, verbose=False)
        >>> [data.vocabulary.raw_id(i) for i in data.users[0]["behavior_ids"]], data.users[1]["timestamps"]
        (['a', 'b'], [1704067200])
    """
    path = _check_file(path, "event log")
    file_format = _infer_format(path, file_format)
    issues = _new_issues("event-log", path, strict, max_behaviors)
    table = _read_table(path, file_format, issues)
    table.require(user_column, item_column, time_column, text_column)
    events = _events_from_table(
        table, issues, user_column=user_column, item_column=item_column, time_column=time_column,
        time_format=time_format,
    )
    events.numeric_times = time_format is None
    texts: dict[str, str] = {}
    if text_column is not None:
        for item, text in zip(table.column(item_column), table.column(text_column)):
            if text is not None and not (isinstance(text, float) and math.isnan(text)):
                text = str(text).strip()
                if text:
                    texts.setdefault(_as_id(item), text)
    return _build_behavior_data(
        events, issues, source="event-log", vocabulary=vocabulary, item_text=texts.get,
        max_behaviors=max_behaviors, deduplicate=True, verbose=verbose,
    )


# =====================================================================================================
# MovieLens
# =====================================================================================================
def bundled_movielens_path() -> Path:
    """The directory of the bundled MovieLens ``ml-latest-small`` (ratings.csv, movies.csv, README)."""
    return Path(str(resources.files("userbert_hf") / "data" / "ml-latest-small"))


def load_movielens(
    directory: str | os.PathLike | None = None,
    *,
    min_rating: float | None = None,
    max_behaviors: int | None = DEFAULT_MAX_BEHAVIORS,
    vocabulary: BehaviorVocabulary | None = None,
    strict: bool = False,
    verbose: bool = True,
) -> BehaviorData:
    """Load MovieLens ``ratings.csv`` + ``movies.csv`` (default: the bundled ``ml-latest-small``).

    Each rating is a behaviour with the movie's text ``"{title} {genres}"`` (genres space-separated,
    ``"(no genres listed)"`` dropped). The users dataset has an extra column ``ratings`` (``List(float32)``)
    aligned with ``behavior_ids`` (a CTR label is ``rating >= 4``). ``min_rating`` drops lower ratings (counted
    as ``below_min_rating``).

    Example:
        >>> data = load_movielens(verbose=False, max_behaviors=None)
        >>> data.summary.rows_used, data.summary.users, data.summary.behaviors
        (100836, 610, 9724)
    """
    directory = bundled_movielens_path() if directory is None else Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"MovieLens directory not found: {directory}")
    ratings_path = _check_file(directory / "ratings.csv", "MovieLens ratings.csv")
    movies_path = _check_file(directory / "movies.csv", "MovieLens movies.csv")
    issues = _new_issues("movielens", ratings_path, strict, max_behaviors)

    # movies.csv: movieId -> text (its rows are not counted in rows_read, which is about ratings).
    movies_issues = _Issues(LoadSummary(source="movielens", path=str(movies_path)), strict)
    movies = _read_delimited(movies_path, ",", movies_issues)
    movies.require("movieId", "title", "genres")
    texts: dict[str, str] = {}
    for where, movie_id, title, genres in zip(
        movies.locations, movies.column("movieId"), movies.column("title"), movies.column("genres")
    ):
        movie_id = movie_id.strip()
        if not movie_id:
            movies_issues.skip("empty_item_id", movies_path, where, "column 'movieId' is empty", column="movieId")
            continue
        if movie_id in texts:
            movies_issues.skip("duplicate_movie", movies_path, where, f"movieId {movie_id!r} appears again")
            continue
        genre_words = "" if genres.strip() == "(no genres listed)" else genres.replace("|", " ").strip()
        texts[movie_id] = " ".join(part for part in (title.strip(), genre_words) if part)
    movies_issues.checkpoint()
    for reason, count in movies_issues.summary.skipped.items():
        issues.summary.add_skip(f"movies_{reason}", None, count)
        issues.summary.examples[f"movies_{reason}"] = movies_issues.summary.examples.get(reason, [])

    ratings = _read_delimited(ratings_path, ",", issues)
    ratings.require("userId", "movieId", "rating", "timestamp")
    events = _events_from_table(
        ratings, issues, user_column="userId", item_column="movieId", time_column="timestamp",
        time_format=None, float_columns={"rating": "ratings"},
    )
    events.numeric_times = True
    if min_rating is not None:
        events = _filter_min_rating(events, issues, float(min_rating))
    missing = {item for item in events.items if item not in texts}
    if missing:
        issues.summary.notes.append(
            f"{len(missing)} rated movies are not in movies.csv and have no text, e.g. {sorted(missing)[:3]}"
        )
    return _build_behavior_data(
        events, issues, source="movielens", vocabulary=vocabulary, item_text=texts.get,
        max_behaviors=max_behaviors, deduplicate=True, verbose=verbose,
    )


def _filter_min_rating(events: _Events, issues: _Issues, min_rating: float) -> _Events:
    low = np.asarray(events.floats["ratings"]) < min_rating
    low_index = np.flatnonzero(low)
    for j in low_index[:MAX_EXAMPLES_PER_REASON]:
        issues.skip("below_min_rating", events.path, events.locations[j],
                    f"rating {events.floats['ratings'][j]:g} < min_rating {min_rating:g}")
    issues.count("below_min_rating", max(0, len(low_index) - MAX_EXAMPLES_PER_REASON))
    keep = ~low
    return replace(
        events,
        users=np.asarray(events.users, dtype=object)[keep],
        items=np.asarray(events.items, dtype=object)[keep],
        times=np.asarray(events.times)[keep],
        locations=np.asarray(events.locations, dtype=object)[keep],
        floats={name: np.asarray(values)[keep] for name, values in events.floats.items()},
    )


def load_default_dataset(**kwargs) -> BehaviorData:
    """The bundled MovieLens ``ml-latest-small`` (keyword arguments go to :func:`load_movielens`)."""
    kwargs.pop("directory", None)
    return load_movielens(bundled_movielens_path(), **kwargs)


# =====================================================================================================
# MIND
# =====================================================================================================
MIND_NEWS_FIELDS = ("news_id", "category", "subcategory", "title", "abstract", "url", "title_entities",
                    "abstract_entities")
MIND_BEHAVIOR_FIELDS = ("impression_id", "user_id", "time", "history", "impressions")
_MIND_TEXT_FIELDS = ("category", "subcategory", "title", "abstract")
_MIND_TIME = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4}) (\d{1,2}):(\d{2}):(\d{2}) ?([AaPp][Mm])")


@dataclass
class _MindImpression:
    line: int
    impression_id: str
    user: str
    time: int
    history: list[str]
    impressions: str


def _mind_paths(directory: str | os.PathLike) -> tuple[Path, Path]:
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"MIND directory not found: {directory}")
    return _check_file(directory / "news.tsv", "MIND news.tsv"), _check_file(directory / "behaviors.tsv",
                                                                             "MIND behaviors.tsv")


def _iter_lines(path: Path) -> Iterable[tuple[int, str]]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            for line_no, line in enumerate(f, start=1):
                yield line_no, line.rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})", path=path) from None


def _read_mind_news(path: Path, issues: _Issues, text_fields: Sequence[str]) -> dict[str, str]:
    """news.tsv -> {news_id: text} in file order."""
    bad = [f for f in text_fields if f not in _MIND_TEXT_FIELDS]
    if bad or not text_fields:
        raise ValueError(f"text_fields must be a non-empty subset of {_MIND_TEXT_FIELDS}, got {tuple(text_fields)}")
    field_index = [MIND_NEWS_FIELDS.index(f) for f in text_fields]
    news: dict[str, str] = {}
    for line_no, line in _iter_lines(path):
        if not line.strip():
            issues.skip("blank_line", path, line_no, "blank line")
            continue
        parts = line.split("\t")
        if len(parts) != len(MIND_NEWS_FIELDS):
            issues.skip("news_wrong_field_count", path, line_no,
                        f"expected {len(MIND_NEWS_FIELDS)} tab-separated fields ({', '.join(MIND_NEWS_FIELDS)}), "
                        f"got {len(parts)}")
            continue
        news_id = parts[0].strip()
        if not news_id:
            issues.skip("news_empty_id", path, line_no, "field 'news_id' is empty", column="news_id")
            continue
        if news_id == PAD_TOKEN:
            issues.skip("news_reserved_id", path, line_no, f"news id {PAD_TOKEN!r} is reserved for padding",
                        column="news_id")
            continue
        if news_id in news:
            issues.skip("news_duplicate_id", path, line_no, f"news id {news_id!r} appears again", column="news_id")
            continue
        news[news_id] = " ".join(parts[i].strip() for i in field_index if parts[i].strip())
    if not news:
        raise DataFormatError(f"{path}: no valid news line", path=path, reason="no_data")
    return news


def _parse_mind_time(text: str) -> int | None:
    match = _MIND_TIME.fullmatch(text.strip())
    if match is None:
        return None
    month, day, year, hour, minute, second = (int(g) for g in match.groups()[:6])
    if not 1 <= hour <= 12:
        return None
    hour = hour % 12 + (12 if match.group(7).lower() == "pm" else 0)
    try:
        return _datetime_to_unix(datetime(year, month, day, hour, minute, second))
    except ValueError:
        return None


def _read_mind_behaviors(path: Path, issues: _Issues) -> list[_MindImpression]:
    rows: list[_MindImpression] = []
    for line_no, line in _iter_lines(path):
        if not line.strip():
            issues.skip("blank_line", path, line_no, "blank line")
            continue
        issues.summary.rows_read += 1
        parts = line.split("\t")
        if len(parts) != len(MIND_BEHAVIOR_FIELDS):
            issues.skip("wrong_field_count", path, line_no,
                        f"expected {len(MIND_BEHAVIOR_FIELDS)} tab-separated fields "
                        f"({', '.join(MIND_BEHAVIOR_FIELDS)}), got {len(parts)}")
            continue
        impression_id, user, time_text, history, impressions = (p.strip() for p in parts)
        if not user:
            issues.skip("empty_user_id", path, line_no, "field 'user_id' is empty", column="user_id")
            continue
        timestamp = _parse_mind_time(time_text)
        if timestamp is None:
            issues.skip("unparsable_timestamp", path, line_no,
                        f"field 'time': cannot parse {time_text!r} (expected M/D/YYYY h:mm:ss AM|PM)", column="time")
            continue
        rows.append(_MindImpression(line_no, impression_id, user, timestamp, history.split(), impressions))
    issues.summary.rows_used = len(rows)
    return rows


def _map_news_ids(
    ids: list[str], news: dict[str, str], vocabulary: BehaviorVocabulary, issues: _Issues, path: Path, line: int,
    what: str,
) -> list[int]:
    """News ids -> vocabulary ids, skipping (and counting) ids not in news.tsv or not in a frozen vocabulary."""
    out = []
    for news_id in ids:
        if news_id not in news:
            issues.skip("unknown_news_id", path, line, f"{what} id {news_id!r} is not in news.tsv")
            continue
        index = vocabulary.get(news_id)
        if index is None:
            issues.skip("unknown_behavior", path, line, f"{what} id {news_id!r} is not in the (frozen) vocabulary")
            continue
        out.append(index)
    return out


def _prepare_mind_vocabulary(
    news: dict[str, str], vocabulary: BehaviorVocabulary | None
) -> BehaviorVocabulary:
    vocabulary = BehaviorVocabulary() if vocabulary is None else vocabulary
    if not vocabulary.frozen:
        for news_id, text in news.items():
            vocabulary.add(news_id, text)
    return vocabulary


def load_mind(
    directory: str | os.PathLike,
    *,
    max_behaviors: int | None = DEFAULT_MAX_BEHAVIORS,
    vocabulary: BehaviorVocabulary | None = None,
    strict: bool = False,
    verbose: bool = True,
    text_fields: Sequence[str] = ("title",),
) -> BehaviorData:
    """Load a MIND split folder (``news.tsv`` + ``behaviors.tsv``) as one click history per user.

    The vocabulary holds every news of ``news.tsv`` (in file order, text = the ``text_fields`` joined) so that
    impression candidates map too. A user's history is the one of their latest impression (by time, then
    line). MIND gives no time per click, so ``timestamps`` are ordinal positions 0, 1, 2, ... in the cleaned
    history (truncation keeps the positions of the most recent clicks). History ids missing from ``news.tsv``
    (``unknown_news_id``) or from a frozen vocabulary (``unknown_behavior``) are dropped and counted; users
    whose history ends up empty are counted as ``empty_history``.

    Example:
        >>> data = load_mind("tests/fixtures/mind", verbose=False)  # doctest: +SKIP
    """
    news_path, behaviors_path = _mind_paths(directory)
    issues = _new_issues("mind", behaviors_path, strict, max_behaviors)
    news = _read_mind_news(news_path, issues, text_fields)
    issues.checkpoint()
    vocabulary = _prepare_mind_vocabulary(news, vocabulary)
    impressions = _read_mind_behaviors(behaviors_path, issues)
    issues.checkpoint()
    rows_used = issues.summary.rows_used

    latest: dict[str, _MindImpression] = {}
    for row in impressions:
        current = latest.get(row.user)
        if current is None or row.time >= current.time:
            latest[row.user] = row

    events = _Events(path=behaviors_path)
    for user, row in latest.items():
        events.seen_users.setdefault(user, row.line)
        history = _map_news_ids(row.history, news, vocabulary, issues, behaviors_path, row.line, "history")
        if not history:
            issues.skip("empty_history", behaviors_path, row.line, f"user {user!r} has an empty history")
            del events.seen_users[user]
            continue
        for position, index in enumerate(history):
            events.users.append(user)
            events.items.append(vocabulary.raw_id(index))
            events.times.append(position)
            events.locations.append(row.line)
    data = _build_behavior_data(
        events, issues, source="mind", vocabulary=vocabulary, item_text=news.get,
        max_behaviors=max_behaviors, deduplicate=False, verbose=False,
    )
    data.summary.rows_used = rows_used
    data.summary.notes.append(f"{news_path}: {len(news):,} news; vocabulary has {len(vocabulary) - 1:,} behaviours")
    _report(data.summary, verbose)
    return data


def load_mind_impressions(
    directory: str | os.PathLike,
    vocabulary: BehaviorVocabulary,
    *,
    max_behaviors: int | None = DEFAULT_MAX_BEHAVIORS,
    strict: bool = False,
    verbose: bool = True,
    text_fields: Sequence[str] = ("title",),
    return_summary: bool = False,
) -> datasets.Dataset | tuple[datasets.Dataset, LoadSummary]:
    """Load MIND impressions for news-recommendation fine-tuning / evaluation.

    Returns a ``datasets.Dataset`` with one row per impression: ``impression_id`` (string), ``user_id``,
    ``time`` (int64 unix seconds, the naive MIND time read as UTC), ``history`` (``List(int32)`` vocabulary
    ids, most recent ``max_behaviors``), ``candidates`` (``List(int32)``) and ``labels`` (``List(int8)``: 1
    clicked, 0 not, -1 where the test split gives no label).

    A vocabulary that is not frozen is extended with this split's news (and their texts), so dev/test news
    unseen in training get ids. With a frozen vocabulary unknown candidates are dropped and counted as
    ``unknown_behavior``. Impressions left without candidates are skipped (``empty_impressions``).

    Example:
        >>> data = load_mind("tests/fixtures/mind", verbose=False)  # doctest: +SKIP
        >>> impressions = load_mind_impressions("tests/fixtures/mind", data.vocabulary)  # doctest: +SKIP
    """
    news_path, behaviors_path = _mind_paths(directory)
    issues = _new_issues("mind-impressions", behaviors_path, strict, max_behaviors)
    news = _read_mind_news(news_path, issues, text_fields)
    issues.checkpoint()
    vocabulary = _prepare_mind_vocabulary(news, vocabulary)
    rows = _read_mind_behaviors(behaviors_path, issues)

    out: dict[str, list] = {k: [] for k in ("impression_id", "user_id", "time", "history", "candidates", "labels")}
    users, distinct = set(), set()
    for row in rows:
        parsed = _parse_mind_impressions(row.impressions)
        if isinstance(parsed, str):
            issues.skip("unparsable_impressions", behaviors_path, row.line, f"field 'impressions': {parsed}",
                        column="impressions")
            continue
        news_ids, labels = parsed
        candidates, candidate_labels = [], []
        for news_id, label in zip(news_ids, labels):
            mapped = _map_news_ids([news_id], news, vocabulary, issues, behaviors_path, row.line, "candidate")
            if mapped:
                candidates.append(mapped[0])
                candidate_labels.append(label)
        if not candidates:
            issues.skip("empty_impressions", behaviors_path, row.line, "no usable candidate news",
                        column="impressions")
            continue
        history = _map_news_ids(row.history, news, vocabulary, issues, behaviors_path, row.line, "history")
        if max_behaviors is not None and len(history) > max_behaviors:
            history = history[-max_behaviors:]
            issues.summary.truncated_users += 1
        out["impression_id"].append(row.impression_id)
        out["user_id"].append(row.user)
        out["time"].append(row.time)
        out["history"].append(history)
        out["candidates"].append(candidates)
        out["labels"].append(candidate_labels)
        users.add(row.user)
        distinct.update(history)
        distinct.update(candidates)
    issues.checkpoint()
    summary = issues.summary
    summary.users, summary.behaviors = len(users), len(distinct)
    summary.events = sum(len(h) for h in out["history"])
    summary.notes.append(f"{len(out['impression_id']):,} impressions kept; {len(news):,} news in {news_path}")
    if not out["impression_id"]:
        raise DataFormatError(f"{behaviors_path}: no usable impression\n{summary}", path=behaviors_path,
                              reason="no_data")
    features = datasets.Features(
        {
            "impression_id": datasets.Value("string"),
            "user_id": datasets.Value("string"),
            "time": datasets.Value("int64"),
            "history": _ListFeature(datasets.Value("int32")),
            "candidates": _ListFeature(datasets.Value("int32")),
            "labels": _ListFeature(datasets.Value("int8")),
        }
    )
    dataset = datasets.Dataset.from_dict(out, features=features)
    _report(summary, verbose)
    return (dataset, summary) if return_summary else dataset


def _parse_mind_impressions(text: str) -> tuple[list[str], list[int]] | str:
    """``"N1-1 N2-0"`` -> (ids, labels); ``"N1 N2"`` (test split) -> labels -1; a message if malformed."""
    tokens = text.split()
    if not tokens:
        return "empty"
    ids, labels = [], []
    for token in tokens:
        news_id, sep, label = token.rpartition("-")
        if not sep:
            ids.append(token)
            labels.append(-1)
        elif label in ("0", "1") and news_id:
            ids.append(news_id)
            labels.append(int(label))
        else:
            return f"cannot parse {token!r} (expected NEWSID-0, NEWSID-1 or NEWSID)"
    if -1 in labels and any(label != -1 for label in labels):
        return "mixes labelled (NEWSID-0/1) and unlabelled candidates"
    return ids, labels


# =====================================================================================================
# Amazon Beauty (S3-Rec format)
# =====================================================================================================
def load_amazon_beauty(
    path: str | os.PathLike,
    *,
    max_behaviors: int | None = DEFAULT_MAX_BEHAVIORS,
    vocabulary: BehaviorVocabulary | None = None,
    strict: bool = False,
    verbose: bool = True,
) -> BehaviorData:
    """Load ``Beauty.txt``-style sequences: ``user item1 item2 ...`` per line, chronological, integer items.

    There is no time and no text: ``timestamps`` are ordinal positions 0, 1, 2, ... Non-integer item tokens
    are skipped (``invalid_item_id``, the rest of the line is kept); lines with a user and no items
    (``empty_history``) and repeated users (``duplicate_user``) are skipped, all with line numbers.

    Example:
        >>> data = load_amazon_beauty("../shared/data/amazon-beauty/Beauty.txt", verbose=False)  # doctest: +SKIP
    """
    path = _check_file(path, "Amazon Beauty sequence file")
    issues = _new_issues("amazon-beauty", path, strict, max_behaviors)
    events = _Events(path=path)
    lines_used = 0
    for line_no, line in _iter_lines(path):
        tokens = line.split()
        if not tokens:
            issues.skip("blank_line", path, line_no, "blank line")
            continue
        issues.summary.rows_read += 1
        user = tokens[0]
        if user in events.seen_users:
            issues.skip("duplicate_user", path, line_no,
                        f"user {user!r} already has a sequence on line {events.seen_users[user]}")
            continue
        events.seen_users[user] = line_no
        position = 0
        for column, token in enumerate(tokens[1:], start=2):
            if not (token.isascii() and token.isdigit()):
                issues.skip("invalid_item_id", path, line_no,
                            f"token {column} ({token!r}) is not an integer item id", column=f"token {column}")
                continue
            events.users.append(user)
            events.items.append(token)
            events.times.append(position)
            events.locations.append(line_no)
            position += 1
        if position == 0:
            issues.skip("empty_history", path, line_no, f"user {user!r} has no items")
            del events.seen_users[user]
            continue
        lines_used += 1
    if issues.summary.rows_read == 0:
        raise DataFormatError(f"{path}: file is empty (only blank lines)", path=path, reason="empty_file")
    data = _build_behavior_data(
        events, issues, source="amazon-beauty", vocabulary=vocabulary, item_text=lambda _: None,
        max_behaviors=max_behaviors, deduplicate=False, verbose=False,
    )
    data.summary.rows_used = lines_used
    _report(data.summary, verbose)
    return data


# =====================================================================================================
# Dispatcher and persistence
# =====================================================================================================
_EVENT_LOG_SUFFIXES = {".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet", ".pq"}


def load_behavior_data(source: str | os.PathLike, **kwargs) -> BehaviorData:
    """Load behaviour data from a name or a path, choosing the loader from what is there.

    * ``"movielens"`` / ``"default"``: the bundled ml-latest-small;
    * a directory with ``ratings.csv``: MovieLens; with ``news.tsv`` and ``behaviors.tsv``: MIND; with
      ``users/`` and ``behavior_vocab.json``: data written by :func:`save_behavior_data`;
    * a ``.txt`` file of space-separated integers (``Beauty.txt``): Amazon Beauty;
    * a ``.csv``/``.tsv``/``.jsonl``/``.json``/``.parquet`` file: a generic event log.

    Keyword arguments go to the chosen loader.

    Example:
        >>> load_behavior_data("movielens", verbose=False).source
        'movielens'
    """
    if isinstance(source, str) and source.lower() in ("movielens", "default", "ml-latest-small"):
        return load_default_dataset(**kwargs)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(
            f"behaviour data not found: {path} (expected 'movielens', a MovieLens/MIND/saved directory, "
            f"a Beauty-style .txt or an event log {sorted(_EVENT_LOG_SUFFIXES)})"
        )
    if path.is_dir():
        if (path / "ratings.csv").is_file():
            return load_movielens(path, **kwargs)
        if (path / "news.tsv").is_file() and (path / "behaviors.tsv").is_file():
            return load_mind(path, **kwargs)
        if (path / "users").is_dir() and (path / "behavior_vocab.json").is_file():
            return load_saved_behavior_data(path)
        raise DataFormatError(
            f"{path}: directory holds neither MovieLens (ratings.csv, movies.csv), MIND (news.tsv, behaviors.tsv) "
            f"nor saved behaviour data (users/, behavior_vocab.json); found: {sorted(p.name for p in path.iterdir())[:20]}",
            path=path,
        )
    suffix = path.suffix.lower()
    if suffix == ".txt":
        if path.name.lower().startswith("beauty") or _looks_like_integer_sequences(path):
            return load_amazon_beauty(path, **kwargs)
        raise DataFormatError(
            f"{path}: a .txt file must hold 'user item1 item2 ...' lines of integers (Amazon Beauty format)",
            path=path,
        )
    if suffix in _EVENT_LOG_SUFFIXES:
        return load_event_log(path, **kwargs)
    raise DataFormatError(
        f"{path}: unsupported file type {suffix!r}; expected .txt (Beauty) or {sorted(_EVENT_LOG_SUFFIXES)}",
        path=path,
    )


def _looks_like_integer_sequences(path: Path, lines: int = 5) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = [line.split() for line, _ in zip(f, range(lines))]
    except OSError:
        return False
    head = [tokens for tokens in head if tokens]
    return bool(head) and all(len(t) >= 2 and all(x.isdigit() for x in t[1:]) for t in head)


_SUMMARY_FILE_NAME = "load_summary.json"


def save_behavior_data(data: BehaviorData, directory: str | os.PathLike) -> Path:
    """Write ``users/`` (``Dataset.save_to_disk``), ``behavior_vocab.json`` and ``load_summary.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data.users.save_to_disk(str(directory / "users"))
    data.vocabulary.save(directory)
    payload = {"source": data.source, "frozen_vocabulary": data.vocabulary.frozen, "summary": data.summary.to_dict()}
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
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataFormatError(f"{directory / _SUMMARY_FILE_NAME}: malformed summary ({e})",
                              path=directory / _SUMMARY_FILE_NAME) from None
    if payload.get("frozen_vocabulary"):
        vocabulary.freeze()
    return BehaviorData(users=users, vocabulary=vocabulary, summary=summary, source=source)
