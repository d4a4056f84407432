"""What a loader read, used and skipped (:class:`LoadSummary`), and the error it raises (:class:`DataFormatError`).

Structural problems of a whole file raise :class:`DataFormatError` naming the file (and the column); a bad row is
skipped and counted under a reason, or with ``strict=True`` raises naming ``file:line`` and the column; content
filters (:data:`FILTER_REASONS`) are counted but never raise.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import asdict, dataclass, field

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_MAX_BEHAVIORS = 100
MAX_EXAMPLES_PER_REASON = 5
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


class DataNotFoundError(FileNotFoundError):
    """Behaviour data that is not there: no such file or folder, and not a loadable Hub dataset."""


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
        lines_read: physical lines of the main file (header, blank lines and every line of a record that spans
            several lines included; 0 where not counted: Parquet, JSON arrays, MIND). Every one is either the
            header, a blank line (``skipped``), or part of a row read.
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
    lines_read: int = 0
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
            f"  rows read:   {self.rows_read:,}" + (f" (from {self.lines_read:,} lines)" if self.lines_read else ""),
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


# =====================================================================================================
# Bookkeeping of skipped rows
# =====================================================================================================
class Issues:
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


def where_text(where: int | str) -> str:
    return f"line {where}" if isinstance(where, int) else str(where)


def _location(path: str | os.PathLike, where: int | str | None) -> str:
    if where is None:
        return str(path)
    if isinstance(where, int):
        return f"{path}:{where}"
    return f"{path}: {where}"


def report(summary: LoadSummary, verbose: bool) -> None:
    logger.info("%s", summary)
    if verbose:
        print(summary)


def new_issues(source: str, path: str | os.PathLike, strict: bool, max_behaviors: int | None) -> Issues:
    if max_behaviors is not None and (not isinstance(max_behaviors, (int, np.integer)) or max_behaviors < 1):
        raise ValueError(f"max_behaviors must be a positive integer or None, got {max_behaviors!r}")
    return Issues(LoadSummary(source=source, path=str(path), max_behaviors=max_behaviors), strict)

