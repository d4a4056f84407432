"""One entry point, :func:`load_behavior_data`, that picks the loader from what a name or path holds."""

from __future__ import annotations

import os
from pathlib import Path

from .beauty import load_amazon_beauty
from .behavior_data import BehaviorData, load_saved_behavior_data
from .event_log import load_event_log
from .mind import load_mind
from .movielens import load_default_dataset, load_movielens
from .summary import DataFormatError

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


