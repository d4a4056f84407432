"""MIND (Microsoft News Dataset) split folders: ``news.tsv`` + ``behaviors.tsv``."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Sequence

import datasets

from ..vocabulary import PAD_TOKEN, BehaviorVocabulary
from .behavior_data import DEFAULT_MAX_BEHAVIORS, BehaviorData, Events, _ListFeature, build_behavior_data
from .readers import check_file, iter_lines
from .summary import DataFormatError, Issues, LoadSummary, new_issues, report
from .values import datetime_to_unix

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
    return check_file(directory / "news.tsv", "MIND news.tsv"), check_file(directory / "behaviors.tsv",
                                                                             "MIND behaviors.tsv")


def _read_mind_news(path: Path, issues: Issues, text_fields: Sequence[str]) -> dict[str, str]:
    """news.tsv -> {news_id: text} in file order."""
    bad = [f for f in text_fields if f not in _MIND_TEXT_FIELDS]
    if bad or not text_fields:
        raise ValueError(f"text_fields must be a non-empty subset of {_MIND_TEXT_FIELDS}, got {tuple(text_fields)}")
    field_index = [MIND_NEWS_FIELDS.index(f) for f in text_fields]
    news: dict[str, str] = {}
    for line_no, line in iter_lines(path):
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
        return datetime_to_unix(datetime(year, month, day, hour, minute, second))
    except ValueError:
        return None


def _read_mind_behaviors(path: Path, issues: Issues) -> list[_MindImpression]:
    rows: list[_MindImpression] = []
    for line_no, line in iter_lines(path):
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
    ids: list[str], news: dict[str, str], vocabulary: BehaviorVocabulary, issues: Issues, path: Path, line: int,
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
    issues = new_issues("mind", behaviors_path, strict, max_behaviors)
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

    events = Events(path=behaviors_path)
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
    data = build_behavior_data(
        events, issues, source="mind", vocabulary=vocabulary, item_text=news.get,
        max_behaviors=max_behaviors, deduplicate=False, verbose=False,
    )
    data.summary.rows_used = rows_used
    data.summary.notes.append(f"{news_path}: {len(news):,} news; vocabulary has {len(vocabulary) - 1:,} behaviours")
    report(data.summary, verbose)
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
    issues = new_issues("mind-impressions", behaviors_path, strict, max_behaviors)
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
    report(summary, verbose)
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


