"""Generic one-event-per-row logs: files (CSV, TSV, JSON Lines, JSON arrays, Parquet), pandas DataFrames and
``datasets.Dataset`` tables, all checked and counted the same way."""

from __future__ import annotations

import math
import os

import datasets
import pandas as pd

from ..vocabulary import BehaviorVocabulary
from .behavior_data import DEFAULT_MAX_BEHAVIORS, BehaviorData, build_behavior_data, events_from_table
from .readers import Table, check_file, infer_format, read_table
from .summary import DataFormatError, Issues, new_issues
from .values import as_id, is_nested

def load_event_log(
    path: str | os.PathLike,
    *,
    user_column: str = "user_id",
    item_column: str = "item_id",
    time_column: str = "timestamp",
    text_column: str | None = None,
    rating_column: str | None = None,
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
        rating_column: optional numeric column, kept per behaviour as the users' ``ratings`` (``List(float32)``)
            column that the ``ctr`` task labels by; a value that is not a finite number is a bad field
            (``invalid_<column>``).
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
    return _load_events(
        table, issues, "event-log", user_column=user_column, item_column=item_column, time_column=time_column,
        text_column=text_column, rating_column=rating_column, time_format=time_format, max_behaviors=max_behaviors,
        vocabulary=vocabulary, verbose=verbose,
    )


def from_pandas(
    frame: pd.DataFrame,
    *,
    strict: bool = False,
    max_behaviors: int | None = DEFAULT_MAX_BEHAVIORS,
    name: str = "DataFrame",
    **options,
) -> BehaviorData:
    """Load a one-event-per-row ``pandas.DataFrame`` exactly as :func:`load_event_log` loads a file.

    ``options`` are those of :func:`load_event_log`: ``user_column``, ``item_column``, ``time_column``,
    ``text_column``, ``rating_column``, ``time_format``, ``vocabulary``, ``verbose``. Bad rows are skipped and
    counted (or raise with ``strict=True``) as ``"{name}: row N"``, N being the 1-based position of the row (not
    its index label). Missing values (``None``, ``NaN``, ``pd.NA``, ``NaT``) are empty fields. Exported as
    ``userbert_hf.data.from_pandas``.

    Example:
        >>> import pandas as pd
        >>> frame = pd.DataFrame({"user": ["u1", "u1", "u2"], "item": ["b", "a", "a"], "timestamp": [20, 10, 5]})
        >>> data = from_pandas(frame, user_column="user", item_column="item", verbose=False)
        >>> [data.vocabulary.raw_id(i) for i in data.users[0]["behavior_ids"]]
        ['a', 'b']
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a pandas.DataFrame, got {type(frame).__name__}")
    columns = [str(c) for c in frame.columns]
    if len(set(columns)) != len(columns):
        raise DataFormatError(f"{name}: duplicate column names in {columns}", path=name, reason="duplicate_column")
    table = Table(
        path=name, columns=columns, locations=[f"row {i}" for i in range(1, len(frame) + 1)],
        _columns={str(c): frame[c].tolist() for c in frame.columns},
    )
    return _load_table(table, "dataframe", strict, max_behaviors, **options)


def from_dataset(
    dataset: datasets.Dataset,
    *,
    strict: bool = False,
    max_behaviors: int | None = DEFAULT_MAX_BEHAVIORS,
    name: str | None = None,
    **options,
) -> BehaviorData:
    """Load a one-event-per-row ``datasets.Dataset`` exactly as :func:`load_event_log` loads a file.

    ``options`` are those of :func:`load_event_log` (``user_column``, ..., see :func:`from_pandas`). Rows are
    reported as ``"{name}: row N"`` (1-based, in the dataset's current order, ``select`` / ``shuffle``
    included). ``userbert ... --data`` reaches it for a Hub
    dataset id or a ``save_to_disk`` folder (:func:`~userbert_hf.data.dispatch.load_behavior_data`).

    Example:
        >>> import datasets
        >>> events = datasets.Dataset.from_dict({"user_id": ["u1", "u1"], "item_id": ["a", "b"], "timestamp": [2, 1]})
        >>> from_dataset(events, verbose=False).users[0]["timestamps"]
        [1, 2]
    """
    if isinstance(dataset, datasets.DatasetDict):
        raise ValueError(f"expected one split, got a DatasetDict with splits {sorted(dataset)}: pick one, e.g. "
                         f"dataset[{sorted(dataset)[0]!r}]")
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(f"expected a datasets.Dataset, got {type(dataset).__name__}")
    name = name or f"Dataset({dataset.info.dataset_name or 'in memory'})"
    arrow = dataset.with_format("arrow")[:]  # honours select / filter / shuffle
    table = Table(path=name, columns=list(arrow.column_names),
                  locations=[f"row {i}" for i in range(1, arrow.num_rows + 1)], _arrow=arrow)
    return _load_table(table, "dataset", strict, max_behaviors, **options)


def _load_table(table: Table, source: str, strict: bool, max_behaviors: int | None, **options) -> BehaviorData:
    """An in-memory table (every row read) -> BehaviorData."""
    issues = new_issues(source, table.path, strict, max_behaviors)
    issues.summary.rows_read = len(table)
    return _load_events(table, issues, source, max_behaviors=max_behaviors, **options)


def _load_events(
    table: Table,
    issues: Issues,
    source: str,
    *,
    user_column: str = "user_id",
    item_column: str = "item_id",
    time_column: str = "timestamp",
    text_column: str | None = None,
    rating_column: str | None = None,
    time_format: str | None = None,
    max_behaviors: int | None = DEFAULT_MAX_BEHAVIORS,
    vocabulary: BehaviorVocabulary | None = None,
    verbose: bool = True,
) -> BehaviorData:
    """Table -> checked events -> BehaviorData, the same for files, DataFrames and Datasets."""
    table.require(user_column, item_column, time_column, text_column, rating_column,
                  hint=" (name yours with user_column= / item_column= / time_column= / text_column=; "
                       "--user_column ... on the command line)")
    events = events_from_table(
        table, issues, user_column=user_column, item_column=item_column, time_column=time_column,
        time_format=time_format, float_columns={rating_column: "ratings"} if rating_column else None,
    )
    events.numeric_times = time_format is None
    texts = _first_texts(table.column(item_column), table.column(text_column)) if text_column else {}
    return build_behavior_data(
        events, issues, source=source, vocabulary=vocabulary, item_text=texts.get,
        max_behaviors=max_behaviors, deduplicate=True, verbose=verbose,
    )


def _first_texts(items: list, texts: list) -> dict[str, str]:
    """item id -> its first non-empty text, in row order."""
    first: dict[str, str] = {}
    for item, text in zip(items, texts):
        if text is None or is_nested(text) or (isinstance(text, float) and math.isnan(text)) or text is pd.NA:
            continue
        text = str(text).strip()
        if text:
            first.setdefault(as_id(item), text)
    return first
