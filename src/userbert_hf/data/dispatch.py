"""One entry point, :func:`load_behavior_data`, that picks the loader from what a name or path holds."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import pandas as pd

from .beauty import load_amazon_beauty
from .behavior_data import BehaviorData, load_saved_behavior_data
from .event_log import from_dataset, from_pandas, load_event_log
from .mind import load_mind
from .movielens import load_default_dataset, load_movielens
from .summary import DataFormatError, DataNotFoundError

_EVENT_LOG_SUFFIXES = {".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".parquet", ".pq"}
# Options naming the columns of one-event-per-row data (event logs, DataFrames, datasets); the command-line jobs
# expose each as --<name>.
COLUMN_OPTIONS = ("user_column", "item_column", "time_column", "text_column", "rating_column")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass(kw_only=True)
class EventLogColumnArguments:
    """The column options of one-event-per-row data, shared by the jobs' data arguments (``--user_column`` ...)."""

    user_column: str | None = field(
        default=None, metadata={"help": "Event logs / datasets: the user id column (default: user_id)."}
    )
    item_column: str | None = field(
        default=None, metadata={"help": "Event logs / datasets: the behaviour (item) id column (default: item_id)."}
    )
    time_column: str | None = field(
        default=None, metadata={"help": "Event logs / datasets: the timestamp column (default: timestamp)."}
    )
    text_column: str | None = field(
        default=None, metadata={"help": "Event logs / datasets: a behaviour text column (e.g. title), read for text "
                                        "presets (default: none)."}
    )


def column_options(args: object) -> dict[str, str]:
    """``{option: value}`` for the :data:`COLUMN_OPTIONS` set (not ``None``) on ``args`` (a job's data arguments).

    Example:
        >>> from types import SimpleNamespace
        >>> column_options(SimpleNamespace(user_column="user", item_column=None, max_behaviors=100))
        {'user_column': 'user'}
    """
    return {name: getattr(args, name) for name in COLUMN_OPTIONS if getattr(args, name, None) is not None}


def load_behavior_data(source, *, split: str = "train", **kwargs) -> BehaviorData:
    """Load behaviour data from a name, a path or an in-memory table, choosing the loader from what is there.

    * ``"movielens"`` / ``"default"``: the bundled ml-latest-small;
    * a directory with ``ratings.csv``: MovieLens; with ``news.tsv`` and ``behaviors.tsv``: MIND; with
      ``users/`` and ``behavior_vocab.json``: data written by :func:`save_behavior_data`;
    * a ``.txt`` file of space-separated integers (``Beauty.txt``): Amazon Beauty;
    * a ``.csv``/``.tsv``/``.jsonl``/``.json``/``.parquet`` file: a generic event log;
    * a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (``datasets.load_from_disk``),
      any other folder (``datasets.load_dataset(folder)``: its CSV / JSON / Parquet data files), or a Hub dataset
      id ``"namespace/name"`` that is not a local path (``datasets.load_dataset(id)``): one event per row, split
      ``split`` (a dataset with a single split uses it);
    * a ``pandas.DataFrame`` or a ``datasets.Dataset``: one event per row.

    Keyword arguments go to the chosen loader. The column options (``user_column``, ``item_column``,
    ``time_column``, ``text_column``, ``rating_column``; ``None`` means the default) apply to one-event-per-row
    data only: MovieLens, MIND, Beauty and saved data have fixed columns, and naming columns for them is refused.

    Example:
        >>> load_behavior_data("movielens", verbose=False).source
        'movielens'
    """
    columns = {name: kwargs.pop(name) for name in COLUMN_OPTIONS if name in kwargs}
    columns = {name: value for name, value in columns.items() if value is not None}
    if isinstance(source, pd.DataFrame):
        return from_pandas(source, **columns, **kwargs)
    if isinstance(source, (datasets.Dataset, datasets.DatasetDict)):
        return from_dataset(_one_split(source, split, "the dataset"), **columns, **kwargs)
    if isinstance(source, str) and source.lower() in ("movielens", "default", "ml-latest-small"):
        _refuse_columns(columns, "the bundled MovieLens data")
        return load_default_dataset(**kwargs)
    path = Path(source)
    if not path.exists():
        if isinstance(source, str) and _HUB_ID.fullmatch(source) and path.suffix.lower() not in _EVENT_LOG_SUFFIXES:
            dataset = _load_with_datasets(source, split, hub=True)
            return from_dataset(dataset, name=source, **columns, **kwargs)
        raise DataNotFoundError(
            f"behaviour data not found: {path} (expected 'movielens', a MovieLens/MIND/saved directory, "
            f"a Beauty-style .txt, an event log {sorted(_EVENT_LOG_SUFFIXES)}, a datasets folder or a Hub dataset "
            "id namespace/name)"
        )
    if path.is_dir():
        if (path / "ratings.csv").is_file():
            _refuse_columns(columns, f"{path} (MovieLens)")
            return load_movielens(path, **kwargs)
        if (path / "news.tsv").is_file() and (path / "behaviors.tsv").is_file():
            _refuse_columns(columns, f"{path} (MIND)")
            return load_mind(path, **kwargs)
        if (path / "users").is_dir() and (path / "behavior_vocab.json").is_file():
            _refuse_columns(columns, f"{path} (saved behaviour data)")
            return load_saved_behavior_data(path)
        if any((path / name).is_file() for name in ("dataset_info.json", "dataset_dict.json", "state.json")):
            try:
                dataset = datasets.load_from_disk(str(path))
            except (FileNotFoundError, ValueError, OSError) as err:
                raise DataFormatError(f"{path}: cannot read as a datasets folder: {err}", path=path) from None
            return from_dataset(_one_split(dataset, split, str(path)), name=str(path), **columns, **kwargs)
        dataset = _load_with_datasets(str(path), split, hub=False)
        return from_dataset(dataset, name=str(path), **columns, **kwargs)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        if path.name.lower().startswith("beauty") or _looks_like_integer_sequences(path):
            _refuse_columns(columns, f"{path} (Amazon Beauty)")
            return load_amazon_beauty(path, **kwargs)
        raise DataFormatError(
            f"{path}: a .txt file must hold 'user item1 item2 ...' lines of integers (Amazon Beauty format)",
            path=path,
        )
    if suffix in _EVENT_LOG_SUFFIXES:
        return load_event_log(path, **columns, **kwargs)
    raise DataFormatError(
        f"{path}: unsupported file type {suffix!r}; expected .txt (Beauty) or {sorted(_EVENT_LOG_SUFFIXES)}",
        path=path,
    )


def _refuse_columns(columns: dict[str, str], what: str) -> None:
    if columns:
        names = ", ".join(f"{name}={value!r}" for name, value in columns.items())
        raise ValueError(f"{names}: column options apply to one-event-per-row data (event logs, datasets, "
                         f"DataFrames); {what} has fixed columns")


def _one_split(dataset, split: str, name: str) -> datasets.Dataset:
    if not isinstance(dataset, datasets.DatasetDict):
        return dataset
    if split in dataset:
        return dataset[split]
    if len(dataset) == 1:
        return next(iter(dataset.values()))
    raise ValueError(f"{name} has splits {sorted(dataset)} and no {split!r} split: pass split= one of them")


def _load_with_datasets(source: str, split: str, hub: bool) -> datasets.Dataset:
    """``datasets.load_dataset(source)`` (a Hub id or a local folder of data files), one split."""
    try:
        dataset = datasets.load_dataset(source)
    except Exception as err:  # datasets raises many types (DatasetNotFoundError, ConnectionError, ValueError, ...)
        message = f"{type(err).__name__}: {err}".splitlines()[0]
        if hub and isinstance(err, OSError):  # not found, unreachable, offline (ConnectionError is an OSError)
            raise DataNotFoundError(
                f"behaviour data not found: {source!r} is not a local path, and loading it as a Hub dataset "
                f"failed ({message})"
            ) from None
        if hub:
            raise DataFormatError(f"{source}: cannot load the Hub dataset ({message})", path=source) from None
        raise DataFormatError(
            f"{source}: directory holds neither MovieLens (ratings.csv, movies.csv), MIND (news.tsv, behaviors.tsv), "
            f"saved behaviour data (users/, behavior_vocab.json) nor data files datasets.load_dataset can read "
            f"({message})",
            path=source,
        ) from None
    return _one_split(dataset, split, source)


def _looks_like_integer_sequences(path: Path, lines: int = 5) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = [line.split() for line, _ in zip(f, range(lines))]
    except OSError:
        return False
    head = [tokens for tokens in head if tokens]
    return bool(head) and all(len(t) >= 2 and all(x.isdigit() for x in t[1:]) for t in head)


