"""Property-based fuzzing of the behaviour loaders (MIND, MovieLens, event logs in CSV/TSV/JSONL/Parquet, Amazon
Beauty) with hypothesis.

Three properties:

(a) whatever the bytes (wrong column counts, invalid UTF-8, BOMs, NUL bytes, \\r\\n / \\r line ends, 1 MB fields,
    empty and header-only files, odd timestamps, quotes, ...), a loader either returns data or raises
    ``DataFormatError`` / ``ValueError`` / ``FileNotFoundError`` whose message names the file; never another
    exception, never a hang (pytest-timeout);
(b) when valid rows are mixed with broken rows of known kinds, the summary counts exactly the injected problems
    (per reason), ``rows_used`` is the number of valid rows, the sequences equal an independent oracle, and with
    ``strict=True`` the error names the first broken line (blank lines and other content filters never raise);
(c) every successful load is well formed: each user has >= 1 behaviour, timestamps are non-decreasing per user,
    ids are in ``[1, len(vocab))``, there are no more users than distinct valid users.
"""

from __future__ import annotations

import os
import csv
import io
import json
import math
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from userbert_hf.data import (
    FILTER_REASONS,
    DataFormatError,
    load_amazon_beauty,
    load_event_log,
    load_mind,
    load_movielens,
)
from userbert_hf.vocabulary import PAD_TOKEN

# Never a hang; and a numpy RuntimeWarning (e.g. an overflowing cast) is a bug here, not noise.
pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("error::RuntimeWarning")]

# CI runs a fixed, derandomized set of examples so a submission cannot fail on luck; set
# HYPOTHESIS_RANDOM=1 to explore new examples locally.
_DERANDOMIZE = os.environ.get("HYPOTHESIS_RANDOM") != "1"
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), print_blob=True,
                derandomize=_DERANDOMIZE, database=None)
INJECT = settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), print_blob=True,
                  derandomize=_DERANDOMIZE, database=None)

HUGE = "x" * 1_000_000  # a 1 MB field (title, id, ...)
ALLOWED_ERRORS = (DataFormatError, ValueError, FileNotFoundError)
MAX_BEHAVIORS = st.sampled_from([None, 1, 3, 100])
STRICT = st.sampled_from([False, False, False, True])  # strict loads of fuzz nearly always (rightly) raise


# ----------------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def fresh_dir(base: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=base))


def load_or_clean_error(load, *paths):
    """Run ``load()``: its data, or None after checking that an allowed error names one of ``paths``. Any other
    exception propagates (and fails the test)."""
    try:
        data = load()
    except ALLOWED_ERRORS as error:
        event(f"error: {type(error).__name__} ({getattr(error, 'reason', None)})")
        message = str(error)
        assert any(str(p) in message for p in paths), f"{type(error).__name__} does not name the file: {message[:300]!r}"
        return None
    event("loaded")
    return data


def assert_well_formed(data, max_behaviors, max_users: int | None = None):
    """Property (c)."""
    columns = data.users.to_dict()
    vocab_size = len(data.vocabulary)
    assert data.vocabulary.raw_id(0) == PAD_TOKEN and PAD_TOKEN not in data.vocabulary.raw_ids[1:]
    assert len(columns["user_id"]) == data.summary.users >= 1
    assert len(set(columns["user_id"])) == len(columns["user_id"])
    if max_users is not None:
        assert data.summary.users <= max_users
    assert data.summary.users <= data.summary.rows_used
    events, distinct = 0, set()
    for index, (ids, times) in enumerate(zip(columns["behavior_ids"], columns["timestamps"])):
        assert 1 <= len(ids) == len(times)
        if max_behaviors is not None:
            assert len(ids) <= max_behaviors
        assert all(1 <= i < vocab_size for i in ids), ids
        assert all(a <= b for a, b in zip(times, times[1:])), times
        if "ratings" in columns:
            ratings = columns["ratings"][index]
            assert len(ratings) == len(ids) and all(math.isfinite(r) for r in ratings)
        events += len(ids)
        distinct.update(ids)
    assert events == data.summary.events
    assert len(distinct) <= data.summary.behaviors <= vocab_size - 1


def raw_sequences(data) -> dict[str, tuple[list[str], list[int]]]:
    columns = data.users.to_dict()
    return {
        user: ([data.vocabulary.raw_id(i) for i in ids], list(times))
        for user, ids, times in zip(columns["user_id"], columns["behavior_ids"], columns["timestamps"])
    }


def truncate(seq: list, max_behaviors: int | None) -> list:
    return seq if max_behaviors is None else seq[-max_behaviors:]


def assert_strict_error(load, path, line, reason, where_text=None):
    with pytest.raises(DataFormatError) as info:
        load()
    error = info.value
    prefix = f"{path}:{line}: " if where_text is None else f"{path}: {where_text}: "
    assert str(error).startswith(prefix), (prefix, str(error)[:300])
    assert (error.line, error.reason) == ((line if where_text is None else None), reason)
    assert error.path == str(path)


# --------------------------------------------------------------------------------- strategies: (a) fuzz
SPECIAL_FIELDS = [
    "", " ", '"', '""', '"a,b"', 'a"b', '"unterminated', "\x00", "\ufeff", "nan", "NaN", "inf", "-inf", "1e400",
    "1e30", "-1", "0", "1.5", "-0.25", "99999999999999999999", "9223372036854775807", "-9223372036854775809",
    PAD_TOKEN, "NULL", "\\N", "\t", ",", "[]", "{}", "2020-01-01T00:00:00Z", "2019-12-31T23:00:00-01:00",
    "11/11/2019 9:05:58 AM", "13/45/2019 9:05:58 PM", "11/11/2019 13:05:58 PM", "N1-1", "N1", "N2-0", "N3-x",
    "(no genres listed)", "Action|Comedy", "\u2028", "\x85", "\r", "\n", "\r\n", HUGE,
]
TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=10)
FIELD = st.one_of(
    TEXT,
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(SPECIAL_FIELDS),
)


def weighted(*choices: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """Pick a strategy with the given integer weights (``st.one_of`` ignores repeated strategies)."""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(range(len(pool))).flatmap(lambda i: pool[i])


# Mostly a harmless cell (no delimiter, quote or line break), sometimes any fuzz field.
CELL = weighted((3, st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters='\t\r\n,"'),
                            max_size=10)), (1, FIELD))


def joined(fields: st.SearchStrategy, delimiter: str) -> st.SearchStrategy:
    return st.lists(fields, max_size=9).map(delimiter.join)


@st.composite
def fuzzed_file(draw, structured: st.SearchStrategy, header: str | None = None) -> bytes:
    """Bytes of a file: lines drawn from ``structured`` (near-valid), random fields, random text or bytes; random
    line ends, optional BOM, optional header; sometimes empty, blank-only or header-only."""
    shape = draw(st.sampled_from(["lines"] * 30 + ["empty", "blank", "header"]))
    if shape == "empty":
        return b""
    if shape == "blank":
        return draw(st.sampled_from([b"\n", b"\n\n  \n", b"\r\n\r\n", b"\xef\xbb\xbf", b"\xef\xbb\xbf\n \t\n"]))
    noise = [joined(FIELD, draw(st.sampled_from([",", "\t", " "]))), TEXT]
    if draw(st.integers(0, 5)) == 2:  # a file with random (often invalid UTF-8) bytes: fails as a whole
        noise.append(st.binary(max_size=24))
    line = weighted((6, structured), *((1, n) for n in noise))
    lines = [] if shape == "header" else draw(st.lists(line, min_size=1, max_size=10))
    if header is not None and draw(st.integers(0, 19)) != 7:
        lines.insert(0, header)
    ending = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    body = ending.join(x if isinstance(x, bytes) else x.encode("utf-8") for x in lines)
    if draw(st.booleans()):
        body += ending
    return (b"\xef\xbb\xbf" if draw(st.integers(0, 4)) == 0 else b"") + body


def small(values) -> st.SearchStrategy:
    """A value from a small pool (so users / items repeat) or any fuzz field."""
    return weighted((4, st.sampled_from(values)), (1, FIELD))


TIME_TEXT = st.one_of(
    st.sampled_from(["1", "2", "-5", "1.5", "1e30", "99999999999999999999", "1700000000000000001", "nan", "",
                     "2020-01-01T00:00:00Z", "2020-01-01 00:00:00+05:30", "soon", "true"]),
    st.integers(-(10**12), 10**12).map(str), st.integers(-(2**64), 2**64).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr), st.sampled_from(SPECIAL_FIELDS),
    st.datetimes().map(datetime.isoformat),
)


@st.composite
def event_line(draw, delimiter: str) -> str:
    fields = [draw(small(["u1", "u2", "u3", " "])), draw(small(["a", "b", "c", "d", PAD_TOKEN])), draw(TIME_TEXT)]
    if draw(st.booleans()):
        fields.append(draw(CELL))  # title
    if draw(st.integers(0, 7)) == 3:  # wrong column count
        fields = fields[: draw(st.integers(0, len(fields)))] + draw(st.lists(FIELD, max_size=2))
    if draw(st.booleans()):  # proper quoting
        buffer = io.StringIO()
        csv.writer(buffer, delimiter=delimiter, lineterminator="").writerow(fields)
        return buffer.getvalue()
    return delimiter.join(fields)


JSON_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**80), 2**80), st.floats(), TEXT, st.sampled_from(SPECIAL_FIELDS)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=5,
)


@st.composite
def json_line(draw) -> str:
    record = {}
    for key, pool in (("user_id", ["u1", "u2", 7, None]), ("item_id", ["a", "b", 3, 3.0, PAD_TOKEN]),
                      ("timestamp", [1, 2.5, "3", -4, True, 10**30, 2**63, 1700000000000000001, "2020-01-01"])):
        if draw(st.integers(0, 9)) != 3:
            record[key] = draw(weighted((4, st.sampled_from(pool)), (1, JSON_VALUE)))
    if draw(st.booleans()):
        record["title"] = draw(JSON_VALUE)
    text = json.dumps(record, ensure_ascii=draw(st.booleans()))
    if draw(st.integers(0, 7)) == 3:  # raw literals json.dumps cannot write, or a broken record
        text = draw(st.sampled_from(["1e400", "NaN", "-Infinity", str(10**400), "null", "[1, 2]", "{oops"]))
        text = '{"user_id": "u1", "item_id": "a", "timestamp": %s}' % text if draw(st.booleans()) else text
    return text


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
@FUZZ
@given(data=st.data(), max_behaviors=MAX_BEHAVIORS, strict=STRICT, text=st.booleans())
def test_fuzz_event_log_text_formats(workdir, fmt, data, max_behaviors, strict, text):
    delimiter = "\t" if fmt == "tsv" else ","
    header = delimiter.join(["user_id", "item_id", "timestamp", "title"])
    structured = json_line() if fmt == "jsonl" else event_line(delimiter)
    content = data.draw(fuzzed_file(structured, None if fmt == "jsonl" else header), label="content")
    path = fresh_dir(workdir) / f"log.{fmt}"
    path.write_bytes(content)
    loaded = load_or_clean_error(
        lambda: load_event_log(path, max_behaviors=max_behaviors, strict=strict, verbose=False,
                               text_column="title" if text else None),
        path,
    )
    if loaded is not None:
        assert_well_formed(loaded, max_behaviors)


PARQUET_TYPES = {  # column type -> (arrow type, values); ids are mostly strings, times mostly numbers / datetimes
    "string": (pa.string(), weighted((1, st.none()), (1, TEXT), (1, st.sampled_from(SPECIAL_FIELDS[:-1])),
                                     (6, st.sampled_from(["u1", "u2", "a", "b", "12"])))),
    "int64": (pa.int64(), weighted((1, st.none()), (1, st.integers(-(2**63), 2**63 - 1)), (4, st.integers(-5, 5)))),
    "uint64": (pa.uint64(), st.one_of(st.none(), st.integers(0, 2**64 - 1))),
    "float64": (pa.float64(), weighted((1, st.none()), (1, st.floats()), (4, st.floats(-1e6, 1e6)))),
    "bool": (pa.bool_(), st.one_of(st.none(), st.booleans())),
    "binary": (pa.binary(), st.one_of(st.none(), st.binary(max_size=6))),
    "timestamp": (pa.timestamp("s"), st.one_of(st.none(), st.datetimes(datetime(1800, 1, 1), datetime(2200, 1, 1)))),
    "list": (pa.list_(pa.int64()), st.one_of(st.none(), st.lists(st.integers(-3, 3), max_size=2))),
}


@st.composite
def parquet_table(draw) -> pa.Table:
    n = draw(st.sampled_from([0, 1, 2, 3, 5, 8, 8, 8]))
    columns = {}
    likely = {"user_id": ["string"] * 8, "item_id": ["string"] * 8, "timestamp": ["int64", "float64", "timestamp"] * 3,
              "title": ["string"] * 8}
    for name in ("user_id", "item_id", "timestamp", "title"):
        if draw(st.integers(0, 11)) == 5:
            continue  # a missing column
        value_type, values = PARQUET_TYPES[draw(st.sampled_from(likely[name] + sorted(PARQUET_TYPES)))]
        columns[name] = pa.array(draw(st.lists(values, min_size=n, max_size=n)), type=value_type)
    return pa.table(columns) if columns else pa.table({"other": pa.array([1] * n)})


@FUZZ
@given(table=parquet_table(), garbage=st.one_of(st.none(), st.binary(max_size=40)), max_behaviors=MAX_BEHAVIORS,
       strict=STRICT)
def test_fuzz_event_log_parquet(workdir, table, garbage, max_behaviors, strict):
    path = fresh_dir(workdir) / "log.parquet"
    if garbage is None:
        pq.write_table(table, path)
    else:
        path.write_bytes(garbage)
    data = load_or_clean_error(lambda: load_event_log(path, max_behaviors=max_behaviors, strict=strict, verbose=False), path)
    if data is not None:
        assert_well_formed(data, max_behaviors, max_users=table.num_rows)


NEWS_IDS = ["N1", "N2", "N3", "N4", PAD_TOKEN]


@st.composite
def news_line(draw) -> str:
    fields = [draw(small(NEWS_IDS))] + draw(st.lists(CELL, min_size=7, max_size=7))
    if draw(st.integers(0, 7)) == 3:
        fields = fields[: draw(st.integers(0, 8))] + draw(st.lists(FIELD, max_size=2))
    return "\t".join(fields)


VALID_MIND_TIME = st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31)).map(
    lambda t: f"{t.month}/{t.day}/{t.year} {t.hour % 12 or 12}:{t.minute:02d}:{t.second:02d} {'AM' if t.hour < 12 else 'PM'}"
)
MIND_TIME = weighted((4, VALID_MIND_TIME), (1, FIELD))


@st.composite
def behaviors_line(draw) -> str:
    history = " ".join(draw(st.lists(small(NEWS_IDS + ["N99"]), min_size=draw(st.sampled_from([0, 1, 1, 1])),
                                      max_size=6)))
    impressions = " ".join(draw(st.lists(st.sampled_from(["N1-1", "N2-0", "N3", "N4-x", "-1"]), max_size=3)))
    fields = [draw(st.integers(0, 99).map(str)), draw(small(["U1", "U2", "U3"])), draw(MIND_TIME), history, impressions]
    if draw(st.integers(0, 7)) == 3:
        fields = fields[: draw(st.integers(0, 5))] + draw(st.lists(FIELD, max_size=2))
    return "\t".join(fields)


@FUZZ
@given(news=fuzzed_file(news_line()), behaviors=fuzzed_file(behaviors_line()), max_behaviors=MAX_BEHAVIORS,
       strict=STRICT)
def test_fuzz_mind(workdir, news, behaviors, max_behaviors, strict):
    directory = fresh_dir(workdir)
    (directory / "news.tsv").write_bytes(news)
    (directory / "behaviors.tsv").write_bytes(behaviors)
    data = load_or_clean_error(
        lambda: load_mind(directory, max_behaviors=max_behaviors, strict=strict, verbose=False),
        directory / "news.tsv", directory / "behaviors.tsv",
    )
    if data is not None:
        assert_well_formed(data, max_behaviors)
        assert set(data.vocabulary.raw_ids[1:]) <= set(NEWS_IDS + ["N99"]) | {
            line.split("\t")[0].strip() for line in re.split(r"\r\n|\r|\n", news.decode("utf-8-sig"))
        }


@st.composite
def ratings_line(draw) -> str:
    fields = [draw(small(["1", "2", "3"])), draw(small(["1", "2", "3", "4"])),
              draw(small(["4.0", "3.5", "5", "0.5", "nan", "five"])), draw(TIME_TEXT)]
    if draw(st.integers(0, 7)) == 3:
        fields = fields[: draw(st.integers(0, 4))] + draw(st.lists(FIELD, max_size=2))
    return ",".join(fields)


@st.composite
def movies_line(draw) -> str:
    fields = [draw(small(["1", "2", "3"])), draw(st.one_of(CELL, st.just('"Heat, Again (1995)"'))),
              draw(small(["Action|Crime", "(no genres listed)"]))]
    if draw(st.integers(0, 7)) == 3:
        fields = fields[: draw(st.integers(0, 3))] + draw(st.lists(FIELD, max_size=2))
    return ",".join(fields)


@FUZZ
@given(ratings=fuzzed_file(ratings_line(), "userId,movieId,rating,timestamp"),
       movies=fuzzed_file(movies_line(), "movieId,title,genres"), max_behaviors=MAX_BEHAVIORS, strict=STRICT,
       min_rating=st.sampled_from([None, 3.0]))
def test_fuzz_movielens(workdir, ratings, movies, max_behaviors, strict, min_rating):
    directory = fresh_dir(workdir)
    (directory / "ratings.csv").write_bytes(ratings)
    (directory / "movies.csv").write_bytes(movies)
    data = load_or_clean_error(
        lambda: load_movielens(directory, max_behaviors=max_behaviors, strict=strict, verbose=False,
                               min_rating=min_rating),
        directory / "ratings.csv", directory / "movies.csv",
    )
    if data is not None:
        assert_well_formed(data, max_behaviors)
        if min_rating is not None:
            assert all(r >= min_rating for ratings_ in data.users["ratings"] for r in ratings_)


@st.composite
def beauty_line(draw) -> str:
    tokens = [draw(small(["1", "2", "3"]))] + draw(st.lists(small(["1", "2", "3", "10", "007"]), max_size=6))
    return draw(st.sampled_from([" ", "\t", "  "])).join(tokens)


@FUZZ
@given(content=fuzzed_file(beauty_line()), max_behaviors=MAX_BEHAVIORS, strict=STRICT)
def test_fuzz_amazon_beauty(workdir, content, max_behaviors, strict):
    path = fresh_dir(workdir) / "Beauty.txt"
    path.write_bytes(content)
    data = load_or_clean_error(lambda: load_amazon_beauty(path, max_behaviors=max_behaviors, strict=strict, verbose=False), path)
    if data is not None:
        assert_well_formed(data, max_behaviors)
        assert all(raw.isascii() and raw.isdigit() for raw in data.vocabulary.raw_ids[1:])


def test_missing_files_are_named(workdir):
    missing = fresh_dir(workdir) / "nothing"
    for load, name in ((lambda: load_event_log(missing / "log.csv", verbose=False), "log.csv"),
                       (lambda: load_amazon_beauty(missing / "Beauty.txt", verbose=False), "Beauty.txt"),
                       (lambda: load_mind(missing, verbose=False), "nothing"),
                       (lambda: load_movielens(missing, verbose=False), "nothing")):
        with pytest.raises(FileNotFoundError, match=name):
            load()


# ------------------------------------------------------------------ strategies: (b) known broken rows
# Ids are a prefix letter plus any text without line breaks (\r, \n) and surrogates: quotes, commas, tabs, NUL,
# U+2028, U+0085, BOM characters, ... all allowed. Leading / trailing whitespace of ids is stripped by the
# loaders, so the oracle compares stripped ids.
ID_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\r\n"), max_size=6)
# TSV is read unquoted (as logs are written): a TSV id cannot hold a tab.
TSV_ID_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\r\n\t"), max_size=6)
BAD_TIMES = ["soon", "", "  ", "nan", "inf", "-inf", "1e400", "1e30", "99999999999999999999",
             "-9223372036854775809", "2020-13-45", "12:00", "0x10", "1,5"]


@dataclass
class Row:
    """One event-log row: raw values as written and the canonical key the loader must derive."""

    user: object
    item: object
    time: object
    ts: int

    @property
    def key(self):
        return (str(self.user).strip(), str(self.item).strip(), self.ts)


def _iso(moment: datetime, offset: int | None, zulu: bool) -> tuple[str, int]:
    if offset is None:
        return moment.isoformat(), math.floor(moment.replace(tzinfo=timezone.utc).timestamp())
    aware = moment.replace(tzinfo=timezone(timedelta(minutes=offset)))
    text = aware.isoformat()
    if offset == 0 and zulu:
        text = text[: -len("+00:00")] + "Z"
    return text, math.floor(aware.timestamp())


ISO_TIME = st.builds(_iso, st.datetimes(datetime(1900, 1, 1), datetime(2100, 1, 1)),
                     st.sampled_from([None, 0, 60, -330, 840]), st.booleans())
INT_TIME = st.one_of(st.integers(-(10**12), 10**12), st.integers(-(2**63), 2**63 - 1))
QUARTER_TIME = st.integers(-(4 * 10**12), 4 * 10**12).map(lambda k: k / 4)  # exact in binary: no parser rounding


def time_value(kind: str) -> st.SearchStrategy:
    """(raw value, canonical unix seconds) for a timestamp column of ``kind``."""
    if kind == "text":  # CSV / TSV / string Parquet column
        return st.one_of(INT_TIME.map(lambda t: (str(t), t)), QUARTER_TIME.map(lambda t: (repr(t), math.floor(t))),
                         ISO_TIME)
    if kind == "json":
        return st.one_of(INT_TIME.map(lambda t: (t, t)), QUARTER_TIME.map(lambda t: (t, math.floor(t))),
                         INT_TIME.map(lambda t: (str(t), t)), ISO_TIME)
    if kind == "int64":
        return INT_TIME.map(lambda t: (t, t))
    return QUARTER_TIME.map(lambda t: (t, math.floor(t)))  # float64


@st.composite
def valid_rows(draw, time_kind: str, id_text: st.SearchStrategy = ID_TEXT) -> list[Row]:
    users = draw(st.lists(id_text.map(lambda s: "u" + s), min_size=1, max_size=4))
    items = draw(st.lists(id_text.map(lambda s: "i" + s), min_size=1, max_size=6))
    if draw(st.integers(0, 9)) == 0:
        items.append("i" + HUGE)  # a 1 MB id
    rows = draw(st.lists(st.builds(lambda u, i, t: Row(u, i, *t), st.sampled_from(users), st.sampled_from(items),
                                   time_value(time_kind)),
                         min_size=1, max_size=12, unique_by=lambda r: r.key))
    return rows


# Broken row kinds -> the reason the loader must report.
TEXT_KINDS = {"too_few_fields": "wrong_field_count", "too_many_fields": "wrong_field_count",
              "empty_user": "empty_user_id", "empty_item": "empty_item_id", "bad_time": "unparsable_timestamp",
              "pad_item": "reserved_item_id", "duplicate": "duplicate_event", "blank": "blank_line"}
# CSV only (TSV is read unquoted): a quote opened and never closed costs its own line, not the lines after it.
CSV_KINDS = {**TEXT_KINDS, "stray_quote": "unbalanced_quote"}
JSON_KINDS = {"invalid_json": "unparsable_line", "nested_user": "invalid_user_id", "nested_item": "invalid_item_id",
               "not_an_object": "unparsable_line", "empty_user": "empty_user_id",
              "empty_item": "empty_item_id", "bad_time": "unparsable_timestamp", "pad_item": "reserved_item_id",
              "duplicate": "duplicate_event", "blank": "blank_line"}
PARQUET_KINDS = {"empty_user": "empty_user_id", "empty_item": "empty_item_id", "bad_time": "unparsable_timestamp",
                 "pad_item": "reserved_item_id", "duplicate": "duplicate_event"}


@st.composite
def injections(draw, kinds: dict, n_valid: int, max_size: int = 6) -> list[tuple[int, str]]:
    """(insert after how many valid rows (>= 1, so a duplicate has an original before it), kind), in file order."""
    chosen = draw(st.lists(st.tuples(st.integers(1, n_valid), st.sampled_from(sorted(kinds))), max_size=max_size))
    return sorted(chosen, key=lambda x: x[0])


def interleave(valid: list, injected: list[tuple[int, str]]):
    """Yield ('valid', row) / ('broken', kind, previous valid row) in file order."""
    position = 0
    pending = list(injected)
    for row in valid:
        yield ("valid", row)
        position += 1
        while pending and pending[0][0] == position:
            yield ("broken", pending.pop(0)[1], row)


def expected_sequences(valid: list[Row], max_behaviors) -> dict[str, tuple[list[str], list[int]]]:
    by_user: dict[str, list[tuple[int, int, str]]] = {}
    for order, row in enumerate(valid):
        user, item, ts = row.key
        by_user.setdefault(user, []).append((ts, order, item))
    out = {}
    for user, events in by_user.items():
        events = truncate(sorted(events), max_behaviors)
        out[user] = ([item for _, _, item in events], [ts for ts, _, _ in events])
    return out


def check_against_oracle(data, valid: list[Row], expected_skips: Counter, rows_read: int, max_behaviors):
    summary = data.summary
    assert summary.skipped == dict(expected_skips), (summary.skipped, expected_skips)
    assert summary.total_skipped == sum(expected_skips.values())
    assert summary.rows_used == len(valid)
    assert summary.rows_read == rows_read
    expected = expected_sequences(valid, max_behaviors)
    assert raw_sequences(data) == expected
    assert summary.users == len({row.key[0] for row in valid})
    assert_well_formed(data, max_behaviors, max_users=len({row.key[0] for row in valid}))


def text_row(fields: list, delimiter: str, quoting: int) -> str:
    if delimiter == "\t":  # TSV: unquoted, as logs are written and read
        return "\t".join(str(field) for field in fields)
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, quoting=quoting, lineterminator="").writerow(fields)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_known_broken_rows_csv_tsv(workdir, fmt):
    delimiter = "\t" if fmt == "tsv" else ","

    @INJECT
    @given(data=st.data(), valid=valid_rows("text", TSV_ID_TEXT if fmt == "tsv" else ID_TEXT),
           max_behaviors=MAX_BEHAVIORS, quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]), ending=st.sampled_from(["\n", "\r\n"]),
           bom=st.booleans())
    def check(data, valid, max_behaviors, quoting, ending, bom):
        kinds = CSV_KINDS if fmt == "csv" else TEXT_KINDS
        injected = data.draw(injections(kinds, len(valid)))
        lines = [text_row(["user_id", "item_id", "timestamp"], delimiter, quoting)]
        written: dict[int, str] = {}  # id(valid row) -> its text
        skips, first_error, rows_read = Counter(), None, 0
        for entry in interleave(valid, injected):
            if entry[0] == "valid":
                row = entry[1]
                written[id(row)] = text_row([row.user, row.item, row.time], delimiter, quoting)
                lines.append(written[id(row)])
                rows_read += 1
                continue
            _, kind, previous = entry
            user = previous.user
            text = {
                "too_few_fields": lambda: text_row([user, "ix"], delimiter, quoting),
                "too_many_fields": lambda: text_row([user, "ix", "1", "extra"], delimiter, quoting),
                "empty_user": lambda: text_row([data.draw(st.sampled_from(["", "  "])), "ix", "1"], delimiter, quoting),
                "empty_item": lambda: text_row([user, data.draw(st.sampled_from(["", " \t " if fmt == "csv" else " "])),
                                                "1"], delimiter, quoting),
                "bad_time": lambda: text_row([user, "ix", data.draw(st.sampled_from(BAD_TIMES))], delimiter, quoting),
                "pad_item": lambda: text_row([user, data.draw(st.sampled_from([PAD_TOKEN, f" {PAD_TOKEN} "])), "1"],
                                             delimiter, quoting),
                "duplicate": lambda: written[id(previous)],
                "blank": lambda: data.draw(st.sampled_from(["", "   "])),
                "stray_quote": lambda: text_row([user], delimiter, quoting) + data.draw(st.sampled_from(
                    [',"ix,1', ',ix,"1', ',ix,"1,2'])),
            }[kind]()
            lines.append(text)
            reason = kinds[kind]
            skips[reason] += 1
            rows_read += kind != "blank"
            if first_error is None and reason not in FILTER_REASONS:
                first_error = (len(lines), reason)  # 1-based line number: the header is line 1
        path = fresh_dir(workdir) / f"log.{fmt}"
        path.write_bytes((("\ufeff" if bom else "") + ending.join(lines) + ending).encode("utf-8"))

        loaded = load_event_log(path, max_behaviors=max_behaviors, verbose=False)
        assert loaded.summary.lines_read == len(lines)  # every physical line is accounted for
        check_against_oracle(loaded, valid, skips, rows_read, max_behaviors)
        strict = lambda: load_event_log(path, max_behaviors=max_behaviors, strict=True, verbose=False)  # noqa: E731
        if first_error is None:
            assert raw_sequences(strict()) == raw_sequences(loaded)
        else:
            assert_strict_error(strict, path, *first_error)

    check()


@INJECT
@given(data=st.data(), valid=valid_rows("json"), max_behaviors=MAX_BEHAVIORS, ascii_only=st.booleans(),
       ending=st.sampled_from(["\n", "\r\n"]))
def test_known_broken_rows_jsonl(workdir, data, valid, max_behaviors, ascii_only, ending):
    injected = data.draw(injections(JSON_KINDS, len(valid)))
    dumps = lambda record: json.dumps(record, ensure_ascii=ascii_only)  # noqa: E731 (raw U+2028 / U+0085 when False)
    lines, written = [], {}
    skips, first_error, rows_read = Counter(), None, 0
    for entry in interleave(valid, injected):
        if entry[0] == "valid":
            row = entry[1]
            written[id(row)] = dumps({"user_id": row.user, "item_id": row.item, "timestamp": row.time, "x": "\u2028"})
            lines.append(written[id(row)])
            rows_read += 1
            continue
        _, kind, previous = entry
        user = previous.user
        text = {
            "invalid_json": lambda: data.draw(st.sampled_from(["{oops", '{"user_id": "u", ', "not json", "{'a': 1}"])),
            "not_an_object": lambda: data.draw(st.sampled_from(["[1, 2]", "42", '"text"', "null", "true"])),
            "nested_user": lambda: dumps({"user_id": data.draw(st.sampled_from([[user], {"id": user}, []])),
                                          "item_id": "ix", "timestamp": 1}),
            "nested_item": lambda: dumps({"user_id": user, "item_id": data.draw(st.sampled_from([["ix"], {"sku": 1}, []])),
                                          "timestamp": 1}),
            "empty_user": lambda: data.draw(st.sampled_from([
                dumps({"item_id": "ix", "timestamp": 1}), dumps({"user_id": None, "item_id": "ix", "timestamp": 1}),
                dumps({"user_id": " ", "item_id": "ix", "timestamp": 1})])),
            "empty_item": lambda: data.draw(st.sampled_from([
                dumps({"user_id": user, "timestamp": 1}), dumps({"user_id": user, "item_id": None, "timestamp": 1}),
                dumps({"user_id": user, "item_id": "", "timestamp": 1})])),
            "bad_time": lambda: data.draw(st.sampled_from(
                [dumps({"user_id": user, "item_id": "ix", "timestamp": value})
                 for value in ["soon", None, True, [1], {"t": 1}, 10**30, -(2**63) - 1, "nan", "1e400"]]
                + ['{"user_id": %s, "item_id": "ix", "timestamp": %s}' % (json.dumps(user), literal)
                   for literal in ("1e400", "NaN", "-Infinity", str(10**400))])),
            "pad_item": lambda: dumps({"user_id": user, "item_id": PAD_TOKEN, "timestamp": 1}),
            "duplicate": lambda: written[id(previous)],
            "blank": lambda: data.draw(st.sampled_from(["", "  ", "\t"])),
        }[kind]()
        lines.append(text)
        reason = JSON_KINDS[kind]
        skips[reason] += 1
        rows_read += kind != "blank"
        if first_error is None and reason not in FILTER_REASONS:
            first_error = (len(lines), reason)
    path = fresh_dir(workdir) / "log.jsonl"
    path.write_bytes((ending.join(lines) + ending).encode("utf-8"))

    loaded = load_event_log(path, max_behaviors=max_behaviors, verbose=False)
    assert loaded.summary.lines_read == len(lines)  # every physical line is accounted for
    check_against_oracle(loaded, valid, skips, rows_read, max_behaviors)
    strict = lambda: load_event_log(path, max_behaviors=max_behaviors, strict=True, verbose=False)  # noqa: E731
    if first_error is None:
        assert raw_sequences(strict()) == raw_sequences(loaded)
    else:
        assert_strict_error(strict, path, *first_error)


@pytest.mark.parametrize("time_type", ["int64", "float64", "string"])
def test_known_broken_rows_parquet(workdir, time_type):
    arrow_type = {"int64": pa.int64(), "float64": pa.float64(), "string": pa.string()}[time_type]
    bad_times = {"int64": [None], "float64": [None, math.nan, math.inf, -math.inf, 1e30, -1e19],
                 "string": [None] + BAD_TIMES}[time_type]

    @INJECT
    @given(data=st.data(), valid=valid_rows({"string": "text"}.get(time_type, time_type)), max_behaviors=MAX_BEHAVIORS)
    def check(data, valid, max_behaviors):
        injected = data.draw(injections(PARQUET_KINDS, len(valid)))
        records = []
        skips, first_error = Counter(), None
        for entry in interleave(valid, injected):
            if entry[0] == "valid":
                row = entry[1]
                records.append((row.user, row.item, row.time))
                continue
            _, kind, previous = entry
            user, one = previous.user, {"int64": 1, "float64": 1.0, "string": "1"}[time_type]
            records.append({
                "empty_user": lambda: (data.draw(st.sampled_from([None, "", " "])), "ix", one),
                "empty_item": lambda: (user, data.draw(st.sampled_from([None, "", " "])), one),
                "bad_time": lambda: (user, "ix", data.draw(st.sampled_from(bad_times))),
                "pad_item": lambda: (user, PAD_TOKEN, one),
                "duplicate": lambda: (previous.user, previous.item, previous.time),
            }[kind]())
            skips[PARQUET_KINDS[kind]] += 1
            if first_error is None:
                first_error = PARQUET_KINDS[kind], f"row {len(records)}"
        users, items, times = zip(*records)
        path = fresh_dir(workdir) / "log.parquet"
        pq.write_table(pa.table({"user_id": pa.array(users, pa.string()), "item_id": pa.array(items, pa.string()),
                                 "timestamp": pa.array(times, arrow_type)}), path)

        loaded = load_event_log(path, max_behaviors=max_behaviors, verbose=False)
        check_against_oracle(loaded, valid, skips, len(records), max_behaviors)
        strict = lambda: load_event_log(path, max_behaviors=max_behaviors, strict=True, verbose=False)  # noqa: E731
        if first_error is None:
            assert raw_sequences(strict()) == raw_sequences(loaded)
        else:
            assert_strict_error(strict, path, None, first_error[0], where_text=first_error[1])

    check()


# ------------------------------------------------------------------------------------ MIND, known broken
MIND_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\t\r\n"), max_size=8)
MIND_NEWS_KINDS = {"wrong_field_count": "news_wrong_field_count", "empty_id": "news_empty_id",
                   "duplicate_id": "news_duplicate_id", "pad_id": "news_reserved_id", "blank": "blank_line"}
MIND_BEHAVIOR_KINDS = {"too_few_fields": "wrong_field_count", "too_many_fields": "wrong_field_count",
                       "empty_user": "empty_user_id", "bad_time": "unparsable_timestamp", "blank": "blank_line"}
MIND_BAD_TIMES = ["13/45/2019 9:05:58 AM", "11/11/2019 13:05:58 PM", "11/11/2019 0:05:58 AM", "yesterday",
                  "2019-11-11 09:05:58", "11/11/2019 9:05 AM", "", "2/30/2019 1:00:00 PM"]


def mind_time(moment: datetime) -> str:
    hour = moment.hour % 12 or 12
    return f"{moment.month}/{moment.day}/{moment.year} {hour}:{moment.minute:02d}:{moment.second:02d} " + (
        "AM" if moment.hour < 12 else "PM")


@dataclass
class Impression:
    user: str
    moment: datetime
    history: list[str]


@INJECT
@given(data=st.data(), max_behaviors=MAX_BEHAVIORS, ending=st.sampled_from(["\n", "\r\n"]), bom=st.booleans())
def test_known_broken_lines_mind(workdir, data, max_behaviors, ending, bom):
    draw = data.draw
    n_news = draw(st.integers(1, 6))
    news_ids = [f"N{k}" for k in draw(st.lists(st.integers(0, 10**6), min_size=n_news, max_size=n_news, unique=True))]
    titles = [draw(weighted((9, MIND_TEXT), (1, st.just(HUGE)))) for _ in news_ids]
    users = draw(st.lists(MIND_TEXT.map(lambda s: "U" + s), min_size=1, max_size=4))
    impressions = draw(st.lists(
        st.builds(Impression, st.sampled_from(users), st.datetimes(datetime(1970, 1, 1), datetime(2100, 1, 1)).map(
            lambda t: t.replace(microsecond=0)), st.lists(st.sampled_from(news_ids), min_size=1, max_size=8)),
        min_size=1, max_size=8))
    skips: Counter = Counter()

    # news.tsv
    news_lines, news_error = [], None
    news_injected = draw(injections(MIND_NEWS_KINDS, len(news_ids), max_size=4))
    for entry in interleave(list(zip(news_ids, titles)), news_injected):
        if entry[0] == "valid":
            news_id, title = entry[1]
            news_lines.append("\t".join([news_id, "news", "sub", title, "abstract", "https://x", "[]", "[]"]))
            continue
        _, kind, (previous_id, _) = entry
        news_lines.append({
            "wrong_field_count": lambda: "\t".join(["Nx", "news", "sub", "title"] + ["[]"] * draw(st.sampled_from([0, 5]))),
            "empty_id": lambda: "\t".join([draw(st.sampled_from(["", "  "])), "n", "s", "t", "a", "u", "[]", "[]"]),
            "duplicate_id": lambda: "\t".join([previous_id, "n", "s", "other title", "a", "u", "[]", "[]"]),
            "pad_id": lambda: "\t".join([PAD_TOKEN, "n", "s", "t", "a", "u", "[]", "[]"]),
            "blank": lambda: draw(st.sampled_from(["", "  "])),
        }[kind]())
        skips[MIND_NEWS_KINDS[kind]] += 1
        if news_error is None and MIND_NEWS_KINDS[kind] not in FILTER_REASONS:
            news_error = (len(news_lines), MIND_NEWS_KINDS[kind])

    # behaviors.tsv
    lines, error, rows_read = [], None, 0
    line_of: dict[int, int] = {}
    behaviors_injected = draw(injections(MIND_BEHAVIOR_KINDS, len(impressions), max_size=5))
    for entry in interleave(impressions, behaviors_injected):
        if entry[0] == "valid":
            imp = entry[1]
            lines.append("\t".join([str(len(lines) + 1), imp.user, mind_time(imp.moment), " ".join(imp.history),
                                    f"{imp.history[0]}-1 {imp.history[-1]}-0"]))
            line_of[id(imp)] = len(lines)
            rows_read += 1
            continue
        _, kind, previous = entry
        good_time = mind_time(previous.moment)
        lines.append({
            "too_few_fields": lambda: "\t".join(["9", previous.user, good_time, news_ids[0]]),
            "too_many_fields": lambda: "\t".join(["9", previous.user, good_time, news_ids[0], "N-1", "extra"]),
            "empty_user": lambda: "\t".join(["9", draw(st.sampled_from(["", " "])), good_time, news_ids[0], "N-1"]),
            "bad_time": lambda: "\t".join(["9", previous.user, draw(st.sampled_from(MIND_BAD_TIMES)), news_ids[0], "N-1"]),
            "blank": lambda: draw(st.sampled_from(["", "   "])),
        }[kind]())
        reason = MIND_BEHAVIOR_KINDS[kind]
        skips[reason] += 1
        rows_read += kind != "blank"
        if error is None and reason not in FILTER_REASONS:
            error = (len(lines), reason)

    directory = fresh_dir(workdir)
    prefix = "\ufeff" if bom else ""
    (directory / "news.tsv").write_bytes((prefix + ending.join(news_lines) + ending).encode("utf-8"))
    (directory / "behaviors.tsv").write_bytes((prefix + ending.join(lines) + ending).encode("utf-8"))

    loaded = load_mind(directory, max_behaviors=max_behaviors, verbose=False)
    summary = loaded.summary
    assert summary.skipped == dict(skips)
    assert (summary.rows_read, summary.rows_used) == (rows_read, len(impressions))
    assert loaded.vocabulary.raw_ids[1:] == news_ids
    assert [len(t) for t in loaded.vocabulary.texts[1:]] == [len(t.strip()) for t in titles]
    # oracle: each user's latest impression (by time, then line), positions as timestamps
    latest: dict[str, Impression] = {}
    for imp in impressions:
        key = imp.user.strip()
        if key not in latest or (imp.moment, line_of[id(imp)]) >= (latest[key].moment, line_of[id(latest[key])]):
            latest[key] = imp
    expected = {user: (truncate(imp.history, max_behaviors), truncate(list(range(len(imp.history))), max_behaviors))
                for user, imp in latest.items()}
    assert raw_sequences(loaded) == expected
    assert_well_formed(loaded, max_behaviors, max_users=len(latest))

    strict = lambda: load_mind(directory, max_behaviors=max_behaviors, strict=True, verbose=False)  # noqa: E731
    if news_error is not None:
        assert_strict_error(strict, directory / "news.tsv", *news_error)
    elif error is not None:
        assert_strict_error(strict, directory / "behaviors.tsv", *error)
    else:
        assert raw_sequences(strict()) == expected


# ------------------------------------------------------------------------------- MovieLens, known broken
MOVIE_KINDS = {"wrong_field_count": "movies_wrong_field_count", "empty_id": "movies_empty_item_id",
               "duplicate_id": "movies_duplicate_movie", "blank": "movies_blank_line"}
RATING_KINDS = {**TEXT_KINDS, "bad_rating": "invalid_rating"}


@INJECT
@given(data=st.data(), max_behaviors=MAX_BEHAVIORS)
def test_known_broken_rows_movielens(data, max_behaviors, workdir):
    draw = data.draw
    movie_ids = [str(k) for k in draw(st.lists(st.integers(1, 10**6), min_size=1, max_size=6, unique=True))]
    titles = [draw(weighted((8, ID_TEXT), (1, st.just('Heat, "Again" (1995)')), (1, st.just(HUGE)))) for _ in movie_ids]
    users = [str(k) for k in draw(st.lists(st.integers(1, 99), min_size=1, max_size=4, unique=True))]
    rated = movie_ids + ["424242"]  # a movie missing from movies.csv is fine (no text, a note)
    ratings = draw(st.lists(
        st.builds(lambda u, i, r, t: (Row(u, i, str(t), t), r), st.sampled_from(users), st.sampled_from(rated),
                  st.sampled_from([0.5, 1.0, 3.5, 4.0, 5.0]), st.integers(-(10**10), 10**10)),
        min_size=1, max_size=12, unique_by=lambda x: x[0].key))
    skips: Counter = Counter()

    movie_lines, movies_error = ["movieId,title,genres"], None
    for entry in interleave(list(zip(movie_ids, titles)), draw(injections(MOVIE_KINDS, len(movie_ids), max_size=4))):
        if entry[0] == "valid":
            movie_id, title = entry[1]
            movie_lines.append(text_row([movie_id, title, draw(st.sampled_from(["Action|Crime", "(no genres listed)"]))],
                                        ",", csv.QUOTE_MINIMAL))
            continue
        _, kind, (previous_id, _) = entry
        movie_lines.append({
            "wrong_field_count": lambda: draw(st.sampled_from(["7,Only a title", "7,t,g,extra"])),
            "empty_id": lambda: " ,No id,Drama",
            "duplicate_id": lambda: f"{previous_id},Again,Drama",
            "blank": lambda: "",
        }[kind]())
        skips[MOVIE_KINDS[kind]] += 1
        if movies_error is None and kind != "blank":
            movies_error = (len(movie_lines), MOVIE_KINDS[kind][len("movies_"):])

    lines, error, rows_read, written = ["userId,movieId,rating,timestamp"], None, 0, {}
    for entry in interleave(ratings, draw(injections(RATING_KINDS, len(ratings)))):
        if entry[0] == "valid":
            row, rating = entry[1]
            written[id(row)] = f"{row.user},{row.item},{rating},{row.time}"
            lines.append(written[id(row)])
            rows_read += 1
            continue
        _, kind, (previous, _) = entry
        user = previous.user
        lines.append({
            "too_few_fields": lambda: f"{user},1,4.0",
            "too_many_fields": lambda: f"{user},1,4.0,5,extra",
            "empty_user": lambda: ",1,4.0,5",
            "empty_item": lambda: f"{user}, ,4.0,5",
            "bad_time": lambda: text_row([user, "1", "4.0", draw(st.sampled_from(BAD_TIMES))], ",", csv.QUOTE_MINIMAL),
            "bad_rating": lambda: f"{user},1,{draw(st.sampled_from(['five', 'nan', '', 'inf', '-inf', '1e400']))},5",
            "pad_item": lambda: f"{user},{PAD_TOKEN},4.0,5",
            "duplicate": lambda: f"{previous.user},{previous.item},1.5,{previous.time}",  # same event, other rating
            "blank": lambda: "",
        }[kind]())
        reason = RATING_KINDS[kind]
        skips[reason] += 1
        rows_read += kind != "blank"
        if error is None and reason not in FILTER_REASONS:
            error = (len(lines), reason)

    directory = fresh_dir(workdir)
    (directory / "movies.csv").write_text("\n".join(movie_lines) + "\n", encoding="utf-8")
    (directory / "ratings.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    loaded = load_movielens(directory, max_behaviors=max_behaviors, verbose=False)
    valid = [row for row, _ in ratings]
    check_against_oracle(loaded, valid, skips, rows_read, max_behaviors)
    rating_of = {row.key: rating for row, rating in ratings}
    expected_ratings = {}
    for user, (items, times) in expected_sequences(valid, max_behaviors).items():
        expected_ratings[user] = [rating_of[(user, item, ts)] for item, ts in zip(items, times)]
    assert dict(zip(loaded.users["user_id"], loaded.users["ratings"])) == expected_ratings
    texts = dict(zip(loaded.vocabulary.raw_ids, loaded.vocabulary.texts))
    for movie_id, title in zip(movie_ids, titles):
        if movie_id in texts:
            assert texts[movie_id].startswith(title.strip())

    strict = lambda: load_movielens(directory, max_behaviors=max_behaviors, strict=True, verbose=False)  # noqa: E731
    if movies_error is not None:
        assert_strict_error(strict, directory / "movies.csv", *movies_error)
    elif error is not None:
        assert_strict_error(strict, directory / "ratings.csv", *error)
    else:
        assert raw_sequences(strict()) == raw_sequences(loaded)


# ---------------------------------------------------------------------------------- Beauty, known broken
BEAUTY_USER = st.text(alphabet=st.characters(exclude_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1, max_size=5)
BAD_TOKENS = ["x8", "1.5", "-3", "+4", "0x1f", "1e3", "١٢", "²", "N1"]
BEAUTY_KINDS = ("user_only", "duplicate_user", "blank", "one_bad_token", "all_bad_tokens")


@INJECT
@given(data=st.data(), max_behaviors=MAX_BEHAVIORS, ending=st.sampled_from(["\n", "\r\n"]))
def test_known_broken_lines_amazon_beauty(workdir, data, max_behaviors, ending):
    draw = data.draw
    users = draw(st.lists(BEAUTY_USER.map(lambda s: "u" + s), min_size=1, max_size=6, unique=True))
    sequences = [draw(st.lists(st.integers(0, 10**12).map(str), min_size=1, max_size=8)) for _ in users]
    injected = draw(injections({k: k for k in BEAUTY_KINDS}, len(users)))
    lines, skips, error, rows_read, rows_used = [], Counter(), None, 0, 0
    expected: dict[str, list[str]] = {}
    sep = lambda: draw(st.sampled_from([" ", "\t", "  "]))  # noqa: E731

    def note(reason: str, count: int = 1):
        nonlocal error
        skips[reason] += count
        if error is None and reason not in FILTER_REASONS:
            error = (len(lines), reason)

    for fresh, entry in enumerate(interleave(list(zip(users, sequences)), injected)):
        if entry[0] == "valid":
            user, items = entry[1]
            lines.append(sep().join([user] + items))
            rows_read += 1
            rows_used += 1
            expected[user] = items
            continue
        _, kind, (user, items) = entry
        if kind == "user_only":
            lines.append(f"z{fresh}")  # a new user with no item: empty_history, not used
            rows_read += 1
            note("empty_history")
        elif kind == "duplicate_user":
            lines.append(sep().join([user, "1", "2"]))
            rows_read += 1
            note("duplicate_user")
        elif kind == "blank":
            lines.append(draw(st.sampled_from(["", "  ", "\t"])))
            note("blank_line")
        else:  # a new user whose line has bad tokens
            tokens = [str(draw(st.integers(0, 99))) for _ in range(draw(st.integers(1, 3)))]
            n_bad = 1 if kind == "one_bad_token" else len(tokens) + 1
            bad = [draw(st.sampled_from(BAD_TOKENS)) for _ in range(n_bad)]
            bad_position = draw(st.integers(0, len(tokens)))
            good = tokens if kind == "one_bad_token" else []
            line_tokens = good[:bad_position] + bad + good[bad_position:]
            lines.append(sep().join([f"y{fresh}"] + line_tokens))
            rows_read += 1
            note("invalid_item_id", n_bad)
            if good:
                rows_used += 1
                expected[f"y{fresh}"] = good
            else:
                note("empty_history")
    path = fresh_dir(workdir) / "Beauty.txt"
    path.write_bytes((ending.join(lines) + ending).encode("utf-8"))

    loaded = load_amazon_beauty(path, max_behaviors=max_behaviors, verbose=False)
    summary = loaded.summary
    assert summary.skipped == dict(skips)
    assert (summary.rows_read, summary.rows_used, summary.users) == (rows_read, rows_used, len(expected))
    assert raw_sequences(loaded) == {
        user: (truncate(items, max_behaviors), truncate(list(range(len(items))), max_behaviors))
        for user, items in expected.items()
    }
    assert_well_formed(loaded, max_behaviors, max_users=len(expected))
    strict = lambda: load_amazon_beauty(path, max_behaviors=max_behaviors, strict=True, verbose=False)  # noqa: E731
    if error is None:
        assert raw_sequences(strict()) == raw_sequences(loaded)
    else:
        assert_strict_error(strict, path, *error)


# ------------------------------------------------------------------------ regressions found by the fuzzing
def test_regressions_found_by_fuzzing(tmp_path):
    """Each of these crashed or silently mis-read before the fixes in the loaders (userbert_hf.data)."""
    header = "user_id,item_id,timestamp\n"
    # Timestamps beyond int64 wrapped around to -2**63 (a RuntimeWarning); a JSON 10**400 raised OverflowError.
    path = tmp_path / "big.csv"
    path.write_text(header + "u,a,1\nu,b,1e30\nu,c,99999999999999999999\nu,d,-5\n")
    data = load_event_log(path, verbose=False)
    assert data.summary.skipped == {"unparsable_timestamp": 2} and raw_sequences(data)["u"] == (["d", "a"], [-5, 1])
    path = tmp_path / "big.jsonl"
    path.write_text('{"user_id": "u", "item_id": "a", "timestamp": 1}\n'
                    '{"user_id": "u", "item_id": "b", "timestamp": %d}\n' % 10**400)
    assert load_event_log(path, verbose=False).summary.skipped == {"unparsable_timestamp": 1}
    # Integers above 2**53 (nanoseconds) were rounded through float64, so their order could be lost.
    path = tmp_path / "ns.csv"
    path.write_text(header + "u,a,1700000000000000001\nu,b,1700000000000000000\n")
    assert raw_sequences(load_event_log(path, verbose=False))["u"] == (
        ["b", "a"], [1700000000000000000, 1700000000000000001])
    # A JSON bool timestamp was read as 1 (while _parse_time rejects bools).
    path = tmp_path / "bool.jsonl"
    path.write_text('{"user_id": "u", "item_id": "a", "timestamp": 1}\n{"user_id": "u", "item_id": "b", "timestamp": true}\n')
    assert load_event_log(path, verbose=False).summary.skipped == {"unparsable_timestamp": 1}
    # JSON Lines were split with str.splitlines, which also breaks at U+2028 / U+0085 inside JSON strings.
    path = tmp_path / "sep.jsonl"
    path.write_text(json.dumps({"user_id": "u", "item_id": "a\u2028b", "timestamp": 1}, ensure_ascii=False) + "\n"
                    + json.dumps({"user_id": "u", "item_id": "c\x85d", "timestamp": 2}, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    data = load_event_log(path, verbose=False)
    assert data.summary.skipped == {} and raw_sequences(data)["u"][0] == ["a\u2028b", "c\x85d"]
    # A JSON Lines record `null` was counted as a blank line (not an error even with strict=True).
    path = tmp_path / "null.jsonl"
    path.write_text('{"user_id": "u", "item_id": "a", "timestamp": 1}\nnull\n')
    assert load_event_log(path, verbose=False).summary.skipped == {"unparsable_line": 1}
    with pytest.raises(DataFormatError, match=r"null\.jsonl:2: expected a JSON object"):
        load_event_log(path, strict=True, verbose=False)
    # A MovieLens rating beyond float32 became inf in the ratings column (with a RuntimeWarning).
    movielens = tmp_path / "ml"
    movielens.mkdir()
    (movielens / "movies.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Comedy\n")
    (movielens / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,1\n1,1,3.5e38,2\n")
    data = load_movielens(movielens, verbose=False)
    assert data.summary.skipped == {"invalid_rating": 1} and data.users[0]["ratings"] == [4.0]
    # A field over csv's 128 KiB default limit failed the whole file.
    path = tmp_path / "long.csv"
    limit = csv.field_size_limit()
    path.write_text("user_id,item_id,timestamp,title\nu,a,1,x\nu,b,2," + HUGE + "\n")
    data = load_event_log(path, text_column="title", verbose=False)
    assert data.summary.skipped == {} and data.vocabulary.texts[2] == HUGE
    assert csv.field_size_limit() == limit  # the global limit is restored
    # The padding token as a behaviour id raised a bare ValueError naming no file (or, with a frozen vocabulary,
    # became padding id 0 inside a sequence).
    path = tmp_path / "pad.csv"
    path.write_text(header + f"u,{PAD_TOKEN},1\nu,b,2\n")
    data = load_event_log(path, verbose=False)
    assert data.summary.skipped == {"reserved_item_id": 1} and raw_sequences(data)["u"][0] == ["b"]
    with pytest.raises(DataFormatError, match=r"pad\.csv:2: column 'item_id': '\[PAD\]' is reserved"):
        load_event_log(path, strict=True, verbose=False)
    mind = tmp_path / "mind"
    mind.mkdir()
    (mind / "news.tsv").write_text(f"{PAD_TOKEN}\tn\ts\tt\ta\tu\t[]\t[]\nN1\tn\ts\tt\ta\tu\t[]\t[]\n")
    (mind / "behaviors.tsv").write_text(f"1\tU1\t11/11/2019 9:05:58 AM\t{PAD_TOKEN} N1\tN1-1\n")
    data = load_mind(mind, verbose=False)
    assert data.summary.skipped == {"news_reserved_id": 1, "unknown_news_id": 1}
    assert raw_sequences(data) == {"U1": (["N1"], [0])}


def test_parquet_binary_id_columns_are_decoded(tmp_path):
    # Found by the fuzzer: a binary item_id column (b"" and bytes ids) crashed with a bare TypeError.
    import pyarrow as pa
    import pyarrow.parquet as pq

    from userbert_hf.data import load_event_log

    path = tmp_path / "binary.parquet"
    table = pa.table({
        "user_id": ["u1", "u1", "u2"],
        "item_id": pa.array([b"i1", b"", b"i2"], type=pa.binary()),
        "timestamp": [1, 2, 3],
    })
    pq.write_table(table, path)
    data = load_event_log(path, verbose=False)
    assert data.summary.skipped == {"empty_item_id": 1}
    assert sorted(data.vocabulary.raw_ids[1:]) == ["i1", "i2"]
