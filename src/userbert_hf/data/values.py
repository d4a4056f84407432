"""Raw values -> canonical ids (strings) and unix seconds (int64), column-wise where the values allow it."""

from __future__ import annotations

import math
from datetime import date, datetime, timezone

import numpy as np
import pandas as pd

# Timestamps are stored as int64: values outside this range are unparsable, not wrapped around.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def as_id(value: object) -> str:
    """Canonical string form of a raw user/item id ('' for missing)."""
    if value is None or value is pd.NA or value is pd.NaT:
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


def parse_time(value: object, time_format: str | None) -> int | None:
    """Unix seconds (int) from int/float seconds, datetime objects or strings; None if unparsable."""
    if value is None or value is pd.NA or value is pd.NaT or isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return in_int64(int(value))
    if isinstance(value, (float, np.floating)):
        return in_int64(int(math.floor(value))) if math.isfinite(value) else None
    if isinstance(value, datetime):
        return datetime_to_unix(value)
    if isinstance(value, date):
        return datetime_to_unix(datetime(value.year, value.month, value.day))
    text = str(value).strip()
    if not text:
        return None
    if time_format is not None:
        try:
            return datetime_to_unix(datetime.strptime(text, time_format))
        except ValueError:
            return None
    try:
        return in_int64(int(text))
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return in_int64(int(math.floor(number))) if math.isfinite(number) else None
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        return datetime_to_unix(datetime.fromisoformat(text))
    except ValueError:
        return None


def in_int64(seconds: int) -> int | None:
    return seconds if _INT64_MIN <= seconds <= _INT64_MAX else None


def datetime_to_unix(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)  # naive times are read as UTC
    return int(math.floor(value.timestamp()))


def time_hint(time_format: str | None) -> str:
    if time_format is None:
        return "expected unix seconds or an ISO-8601 date/time"
    return f"expected the format {time_format!r}"


def parse_ids(values: list) -> tuple[np.ndarray, np.ndarray]:
    """(canonical string ids as an object array, '' for missing; mask of values that cannot be an id).

    A list, tuple, dict or array (a JSON / Parquet list or struct cell) is not an id: its mask entry is True
    and its id is ''.
    """
    if all(type(v) is str for v in values):
        return np.asarray([v.strip() for v in values] or [], dtype=object), np.zeros(len(values), dtype=bool)
    nested = np.fromiter((is_nested(v) for v in values), dtype=bool, count=len(values))
    ids = [("" if bad else as_id(v)) for v, bad in zip(values, nested)]  # JSON / Parquet values (numbers, bytes)
    return np.asarray(ids or [], dtype=object), nested


def is_nested(value: object) -> bool:
    """A list / struct / map cell (JSON array or object, Parquet list or struct): never a valid id or time."""
    return isinstance(value, (list, tuple, dict, set, np.ndarray))


def parse_times(values: list, time_format: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(unix seconds int64, parsed mask). Numbers take a vectorised path; other values go through parse_time."""
    n = len(values)
    seconds = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    if time_format is None and n:
        try:
            numeric = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
        except (OverflowError, TypeError, ValueError):  # e.g. a JSON integer beyond float range
            numeric = np.full(n, np.nan)
        # float64 is exact below 2**53; larger numbers (e.g. nanoseconds, or beyond int64) are parsed one by one
        # by parse_time, exactly and range-checked, instead of being rounded or wrapped around.
        ok = np.isfinite(numeric) & (np.abs(numeric) < 2.0**53)
        ok &= np.fromiter((type(v) is not bool for v in values), dtype=bool, count=n)  # as parse_time: no bools
        seconds[ok] = np.floor(numeric[ok]).astype(np.int64)
        slow = np.flatnonzero(~ok)
    else:
        slow = range(n)
    for i in slow:
        parsed = parse_time(values[i], time_format)
        if parsed is not None:
            seconds[i], ok[i] = parsed, True
    return seconds, ok


def parse_floats(values: list) -> tuple[np.ndarray, np.ndarray]:
    numeric = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    # stored as float32: a larger magnitude would become inf
    return numeric, np.isfinite(numeric) & (np.abs(numeric) <= np.finfo(np.float32).max)


