"""Generic one-event-per-row logs (CSV, TSV, JSON Lines, JSON arrays, Parquet)."""

from __future__ import annotations

import math
import os

from ..vocabulary import BehaviorVocabulary
from .behavior_data import DEFAULT_MAX_BEHAVIORS, BehaviorData, build_behavior_data, events_from_table
from .readers import check_file, infer_format, read_table
from .summary import new_issues
from .values import as_id

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
    path = check_file(path, "event log")
    file_format = infer_format(path, file_format)
    issues = new_issues("event-log", path, strict, max_behaviors)
    table = read_table(path, file_format, issues)
    table.require(user_column, item_column, time_column, text_column)
    events = events_from_table(
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
                    texts.setdefault(as_id(item), text)
    return build_behavior_data(
        events, issues, source="event-log", vocabulary=vocabulary, item_text=texts.get,
        max_behaviors=max_behaviors, deduplicate=True, verbose=verbose,
    )


