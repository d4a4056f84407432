"""Tests for behaviour loading: counts on real data, time order, truncation, vocabulary, and every bad-input case."""

import calendar
import csv
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from userbert_hf.data import (
    BehaviorData,
    DataFormatError,
    LoadSummary,
    bundled_movielens_path,
    load_amazon_beauty,
    load_behavior_data,
    load_default_dataset,
    load_event_log,
    load_mind,
    load_mind_impressions,
    load_movielens,
    load_saved_behavior_data,
    save_behavior_data,
)
from userbert_hf.vocabulary import PAD_ID, PAD_TOKEN, BehaviorVocabulary

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
MIND_FIXTURE = FIXTURES / "mind"
BEAUTY_PATH = (REPO_ROOT / ".." / "shared" / "data" / "amazon-beauty" / "Beauty.txt").resolve()


# ----------------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def movielens_full():
    return load_default_dataset(max_behaviors=None, verbose=False)


@pytest.fixture(scope="module")
def ratings_frame():
    frame = pd.read_csv(bundled_movielens_path() / "ratings.csv")
    frame["file_order"] = np.arange(len(frame))
    # Stable time order within a user: ties keep file order.
    return frame.sort_values(["userId", "timestamp", "file_order"]).reset_index(drop=True)


def raw_sequence(data: BehaviorData, row: dict) -> list[str]:
    return [data.vocabulary.raw_id(i) for i in row["behavior_ids"]]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def by_user(data: BehaviorData) -> dict[str, list[str]]:
    return {row["user_id"]: raw_sequence(data, row) for row in data.users}


# ------------------------------------------------------------------------------------- bundled MovieLens
def test_bundled_movielens_known_counts(movielens_full):
    data = movielens_full
    summary = data.summary
    assert data.source == "movielens"
    assert (summary.rows_read, summary.rows_used, summary.users, summary.behaviors) == (100_836, 100_836, 610, 9_724)
    assert summary.skipped == {} and summary.truncated_users == 0 and summary.events == 100_836
    assert len(data.users) == 610 and len(data.vocabulary) == 9_725  # + padding
    assert sum(len(ids) for ids in data.users["behavior_ids"]) == 100_836
    assert data.users.column_names == ["user_id", "behavior_ids", "timestamps", "ratings"]
    features = data.users.features
    assert features["behavior_ids"].feature.dtype == "int32"
    assert features["timestamps"].feature.dtype == "int64"
    assert features["ratings"].feature.dtype == "float32"
    ids = np.concatenate([np.asarray(x) for x in data.users["behavior_ids"]])
    assert ids.min() == 1 and ids.max() == 9_724  # contiguous, 0 reserved for padding


def test_movielens_sequences_match_pandas_in_time_order(movielens_full, ratings_frame):
    data = movielens_full
    expected = {str(u): g for u, g in ratings_frame.groupby("userId", sort=False)}
    assert data.users["user_id"] == [str(u) for u in sorted(ratings_frame.userId.unique())]
    for row in data.users:
        group = expected[row["user_id"]]
        assert np.all(np.diff(row["timestamps"]) >= 0)
        assert raw_sequence(data, row) == group.movieId.astype(str).tolist()
        assert row["timestamps"] == group.timestamp.tolist()
        np.testing.assert_allclose(row["ratings"], group.rating.to_numpy(), rtol=0)


def test_max_behaviors_keeps_most_recent(ratings_frame):
    data = load_movielens(max_behaviors=20, verbose=False)
    counts = ratings_frame.groupby("userId").size()
    assert data.summary.truncated_users == int((counts > 20).sum())
    assert data.summary.events == int(np.minimum(counts, 20).sum())
    assert data.summary.rows_used == 100_836  # truncation is not a skip
    expected = {str(u): g.tail(20) for u, g in ratings_frame.groupby("userId")}
    for row in data.users:
        tail = expected[row["user_id"]]
        assert raw_sequence(data, row) == tail.movieId.astype(str).tolist()
        assert row["timestamps"] == tail.timestamp.tolist()


def test_max_behaviors_must_be_positive():
    with pytest.raises(ValueError, match="max_behaviors"):
        load_movielens(max_behaviors=0, verbose=False)


def test_movielens_texts(movielens_full):
    vocab = movielens_full.vocabulary
    assert vocab.has_text and vocab.texts[PAD_ID] == ""
    assert vocab.texts[vocab["1"]] == "Toy Story (1995) Adventure Animation Children Comedy Fantasy"
    movies = pd.read_csv(bundled_movielens_path() / "movies.csv")
    no_genre = movies[movies.genres == "(no genres listed)"]
    rated = [m for m in no_genre.movieId.astype(str) if m in vocab]
    assert rated, "ml-latest-small has rated movies without genres"
    title = no_genre.set_index(no_genre.movieId.astype(str)).loc[rated[0], "title"]
    assert vocab.texts[vocab[rated[0]]] == title


def test_movielens_min_rating(ratings_frame):
    data = load_movielens(min_rating=4.0, max_behaviors=None, verbose=False)
    n_high = int((ratings_frame.rating >= 4).sum())
    assert data.summary.rows_used == n_high
    assert data.summary.skipped["below_min_rating"] == 100_836 - n_high
    assert min(min(r) for r in data.users["ratings"]) >= 4.0
    # a filter, not a format error: strict mode does not raise on it
    load_movielens(min_rating=4.0, strict=True, verbose=False)


def test_default_dataset_and_dispatcher_agree():
    a = load_default_dataset(verbose=False)
    b = load_behavior_data("movielens", verbose=False)
    c = load_behavior_data(bundled_movielens_path(), verbose=False)
    assert a.users.to_dict() == b.users.to_dict() == c.users.to_dict()
    assert a.summary.max_behaviors == 100 and max(len(x) for x in a.users["behavior_ids"]) == 100


# ------------------------------------------------------------------------------------------ vocabulary
def test_vocabulary_basics():
    vocab = BehaviorVocabulary()
    assert len(vocab) == 1 and vocab.raw_id(PAD_ID) == PAD_TOKEN and not vocab.has_text
    assert vocab.add("a", "Alpha") == 1
    assert vocab.add("b") == 2
    assert vocab.add("a", "ignored") == 1  # existing id keeps its text
    assert vocab.add("b", "Beta") == 2  # text filled in when it had none
    assert vocab.texts == ["", "Alpha", "Beta"] and vocab.has_text
    assert "a" in vocab and "z" not in vocab and vocab.get("z") is None and vocab.get("z", -1) == -1
    with pytest.raises(KeyError, match="unknown behaviour id 'z'"):
        vocab["z"]
    with pytest.raises(ValueError, match="reserved"):
        vocab.add(PAD_TOKEN)
    with pytest.raises(TypeError):
        vocab.add(7)
    vocab.freeze()
    with pytest.raises(KeyError, match="frozen"):
        vocab.add("c")
    assert vocab.add("a") == 1 and len(vocab) == 3


def test_vocabulary_save_load_round_trip(tmp_path, movielens_full):
    path = movielens_full.vocabulary.save(tmp_path)
    assert path.name == "behavior_vocab.json"
    payload = json.loads(path.read_text())
    assert payload["format"] == "userbert-behavior-vocab" and payload["version"] == 1
    assert payload["ids"][0] == PAD_TOKEN and len(payload["texts"]) == len(payload["ids"])
    loaded = BehaviorVocabulary.load(tmp_path)
    assert loaded == movielens_full.vocabulary and BehaviorVocabulary.load(path) == loaded
    # Reloading the data with the saved (frozen) vocabulary maps every id the same way.
    loaded.freeze()
    again = load_movielens(vocabulary=loaded, max_behaviors=None, verbose=False)
    assert again.users.to_dict() == movielens_full.users.to_dict()
    assert len(loaded) == 9_725 and again.summary.skipped == {}


def test_vocabulary_without_text_saves_null(tmp_path):
    BehaviorVocabulary(["x", "y"]).save(tmp_path)
    assert json.loads((tmp_path / "behavior_vocab.json").read_text())["texts"] is None
    assert BehaviorVocabulary.load(tmp_path).texts == ["", "", ""]


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not a valid JSON"),
        (json.dumps({"format": "other", "version": 1, "ids": ["[PAD]"]}), "'format'"),
        (json.dumps({"format": "userbert-behavior-vocab", "version": 9, "ids": ["[PAD]"]}), "version"),
        (json.dumps({"format": "userbert-behavior-vocab", "version": 1, "ids": ["a"]}), "padding token"),
        (json.dumps({"format": "userbert-behavior-vocab", "version": 1, "ids": ["[PAD]", "a", "b", "a"]}),
         "duplicate behaviour id 'a'"),
        (json.dumps({"format": "userbert-behavior-vocab", "version": 1, "ids": ["[PAD]", "a"], "texts": [""]}),
         "'texts'"),
        (json.dumps({"format": "userbert-behavior-vocab", "version": 1, "ids": ["[PAD]", 3]}), "ids\\[1\\]"),
    ],
)
def test_vocabulary_load_rejects_malformed(tmp_path, content, message):
    path = write(tmp_path / "behavior_vocab.json", content)
    with pytest.raises(ValueError, match=message) as info:
        BehaviorVocabulary.load(path)
    assert str(path) in str(info.value)


def test_vocabulary_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="behavior_vocab.json"):
        BehaviorVocabulary.load(tmp_path)


def test_frozen_vocabulary_skips_unknown_ids(tmp_path):
    train = load_event_log(write(tmp_path / "train.csv", "user_id,item_id,timestamp\nu1,a,1\nu1,b,2\nu2,c,3\n"),
                           verbose=False)
    vocab = train.vocabulary
    vocab.freeze()
    finetune = write(tmp_path / "finetune.csv",
                     "user_id,item_id,timestamp\nu7,b,5\nu7,new1,6\nu7,a,7\nu8,new2,1\nu9,c,2\n")
    data = load_event_log(finetune, vocabulary=vocab, verbose=False, strict=True)  # strict does not raise on it
    assert len(vocab) == 4 and "new1" not in vocab
    assert by_user(data) == {"u7": ["b", "a"], "u9": ["c"]}
    assert data.users[0]["behavior_ids"] == [vocab["b"], vocab["a"]]
    assert data.summary.skipped == {"unknown_behavior": 2, "user_without_behaviors": 1}
    assert data.summary.examples["unknown_behavior"][0].startswith(f"{finetune}:3: behaviour 'new1'")
    assert "u8" in data.summary.examples["user_without_behaviors"][0]


def test_unfrozen_vocabulary_is_extended(tmp_path):
    vocab = BehaviorVocabulary(["b"], ["Bee"])
    data = load_event_log(write(tmp_path / "log.csv", "user_id,item_id,timestamp\nu1,a,1\nu1,b,2\n"),
                          vocabulary=vocab, verbose=False)
    assert data.vocabulary is vocab and vocab.raw_ids == [PAD_TOKEN, "b", "a"]
    assert data.users[0]["behavior_ids"] == [2, 1]


# ------------------------------------------------------------------------------------ generic event logs
EVENTS = [  # unsorted, a tie at t=20 (file order must win), a duplicate, texts with comma/quotes/missing
    {"user_id": "u2", "item_id": 30, "timestamp": 20, "title": 'Say "hi", then go'},
    {"user_id": "u1", "item_id": 10, "timestamp": 30, "title": "Ten"},
    {"user_id": "u1", "item_id": 11, "timestamp": 10, "title": ""},
    {"user_id": "u2", "item_id": 31, "timestamp": 20, "title": "Thirty-one"},
    {"user_id": "u1", "item_id": 10, "timestamp": 30, "title": "Ten again"},
    {"user_id": "u3", "item_id": 11, "timestamp": 1_700_000_000, "title": "Eleven"},
    {"user_id": "u2", "item_id": 10, "timestamp": 5, "title": "Ten, later text"},
]


def write_events(directory: Path, fmt: str) -> Path:
    path = directory / f"events.{fmt}"
    if fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(EVENTS[0]))
            writer.writeheader()
            writer.writerows(EVENTS)
    elif fmt == "tsv":  # as logs are written: no quoting
        lines = ["\t".join(EVENTS[0])] + ["\t".join(str(v) for v in event.values()) for event in EVENTS]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    elif fmt == "json":
        path.write_text(json.dumps(EVENTS, indent=1))
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(EVENTS), path)
    return path


def test_event_log_formats_give_identical_results(tmp_path):
    results = {fmt: load_event_log(write_events(tmp_path, fmt), text_column="title", verbose=False)
               for fmt in ("csv", "tsv", "jsonl", "json", "parquet")}
    reference = results["csv"]
    assert by_user(reference) == {"u2": ["10", "30", "31"], "u1": ["11", "10"], "u3": ["11"]}
    assert reference.users[0]["timestamps"] == [5, 20, 20]
    assert reference.vocabulary.raw_ids == [PAD_TOKEN, "30", "10", "11", "31"]
    assert reference.vocabulary.texts == ["", 'Say "hi", then go', "Ten", "Eleven", "Thirty-one"]
    assert reference.summary.skipped == {"duplicate_event": 1}
    for fmt, data in results.items():
        assert data.users.to_dict() == reference.users.to_dict(), fmt
        assert data.vocabulary == reference.vocabulary, fmt
        assert (data.summary.rows_read, data.summary.rows_used, data.summary.skipped) == (7, 6, {"duplicate_event": 1})
        assert data.users.features == reference.users.features


def test_event_log_locations_by_format(tmp_path):
    for fmt, where in (("csv", ":6:"), ("jsonl", ":5:"), ("parquet", ": row 5:"), ("json", ": record 5:")):
        data = load_event_log(write_events(tmp_path, fmt), verbose=False)
        assert where in data.summary.examples["duplicate_event"][0], fmt


def test_event_log_custom_columns_and_time_format(tmp_path):
    path = write(tmp_path / "log.tsv", "who\twhat\twhen\nA\tx\t11/11/2019 09:05\nA\ty\t10/11/2019 09:05\n")
    data = load_event_log(path, user_column="who", item_column="what", time_column="when",
                          time_format="%d/%m/%Y %H:%M", verbose=False)
    assert by_user(data) == {"A": ["y", "x"]}  # 10 Nov before 11 Nov
    assert data.users[0]["timestamps"] == [calendar.timegm((2019, 11, 10, 9, 5, 0)),
                                           calendar.timegm((2019, 11, 11, 9, 5, 0))]


def test_iso_timestamps_and_stable_ties(tmp_path):
    path = write(tmp_path / "log.csv",
                 "user_id,item_id,timestamp\n"
                 "u,b,2020-01-01T00:00:00Z\n"
                 "u,c,2020-01-01 00:00:00\n"
                 "u,a,2019-12-31T23:00:00-01:00\n"  # = 2020-01-01T00:00:00Z, a tie: file order wins
                 "u,d,1577836799.9\n")
    data = load_event_log(path, verbose=False)
    assert by_user(data) == {"u": ["d", "b", "c", "a"]}
    assert data.users[0]["timestamps"] == [1577836799, 1577836800, 1577836800, 1577836800]


def test_broken_fixture_counts_every_problem():
    path = FIXTURES / "events_broken.csv"
    data = load_event_log(path, text_column="title", verbose=False)
    s = data.summary
    assert s.rows_read == 10 and s.rows_used == 3
    assert s.skipped == {
        "unparsable_timestamp": 2, "empty_item_id": 1, "empty_user_id": 1, "duplicate_event": 1,
        "wrong_field_count": 2, "user_without_behaviors": 1,
    }
    assert s.examples["unparsable_timestamp"] == [
        f"{path}:3: column 'timestamp': cannot parse 'not-a-time' as a timestamp "
        "(expected unix seconds or an ISO-8601 date/time)",
        f"{path}:11: column 'timestamp': cannot parse 'soon' as a timestamp "
        "(expected unix seconds or an ISO-8601 date/time)",
    ]
    assert s.examples["empty_item_id"][0].startswith(f"{path}:4: column 'item_id'")
    assert s.examples["empty_user_id"][0].startswith(f"{path}:5: column 'user_id'")
    assert s.examples["duplicate_event"][0].startswith(f"{path}:7: duplicate of line 6")
    assert [e.split(": ")[0] for e in s.examples["wrong_field_count"]] == [f"{path}:8", f"{path}:10"]
    assert "expected 4 fields" in s.examples["wrong_field_count"][0]
    assert by_user(data) == {"u1": ["i1"], "u2": ["i3"], "u3": ["i5"]}
    assert data.vocabulary.texts[data.vocabulary["i5"]] == 'A "quoted" title'
    text = str(s)
    assert "unparsable_timestamp: 2" in text and f"{path}:3" in text


def test_strict_mode_raises_at_first_bad_line():
    path = FIXTURES / "events_broken.csv"
    with pytest.raises(DataFormatError) as info:
        load_event_log(path, strict=True, verbose=False)
    error = info.value
    assert isinstance(error, ValueError)
    assert str(error).startswith(f"{path}:3: column 'timestamp'")
    assert (error.path, error.line, error.column, error.reason) == (str(path), 3, "timestamp", "unparsable_timestamp")


@pytest.mark.parametrize(
    "body, reason, line, column",
    [
        ("u1,a,1\nu1,b,1,extra\n", "wrong_field_count", 3, None),
        ("u1,a,1\nu1,b\n", "wrong_field_count", 3, None),
        ("u1,a,1\nu1,a,1\n", "duplicate_event", 3, None),
        ("u1,a,1\n,b,2\n", "empty_user_id", 3, "user_id"),
        ("u1,a,1\nu1, ,2\n", "empty_item_id", 3, "item_id"),
        ("u1,a,1\nu1,b,1e400\n", "unparsable_timestamp", 3, "timestamp"),
        ("u1,a,1\nu1,b,\n", "unparsable_timestamp", 3, "timestamp"),
    ],
)
def test_each_bad_row_is_counted_or_raised(tmp_path, body, reason, line, column):
    path = write(tmp_path / "log.csv", "user_id,item_id,timestamp\n" + body)
    data = load_event_log(path, verbose=False)
    assert data.summary.skipped == {reason: 1}
    assert data.summary.examples[reason][0].startswith(f"{path}:{line}: ")
    assert by_user(data) == {"u1": ["a"]}
    with pytest.raises(DataFormatError, match=f"^{path}:{line}: ") as info:
        load_event_log(path, strict=True, verbose=False)
    assert (info.value.line, info.value.column, info.value.reason) == (line, column, reason)


def test_multiline_quoted_field_keeps_line_numbers(tmp_path):
    path = write(tmp_path / "log.csv",
                 'user_id,item_id,timestamp,title\nu1,a,1,"two\nlines"\nu1,b,oops,x\n')
    data = load_event_log(path, text_column="title", verbose=False)
    assert data.summary.examples["unparsable_timestamp"][0].startswith(f"{path}:4: ")
    assert data.vocabulary.texts[1] == "two\nlines"


def test_blank_lines_are_counted_not_fatal(tmp_path):
    path = write(tmp_path / "log.csv", "user_id,item_id,timestamp\nu1,a,1\n\nu1,b,2\n")
    data = load_event_log(path, strict=True, verbose=False)
    assert data.summary.skipped == {"blank_line": 1} and by_user(data) == {"u1": ["a", "b"]}


def test_bad_json_lines(tmp_path):
    path = write(tmp_path / "log.jsonl",
                 '{"user_id": "u", "item_id": "a", "timestamp": 1}\n{oops\n[1, 2]\n'
                 '{"user_id": "u", "timestamp": 3}\n')
    data = load_event_log(path, verbose=False)
    assert data.summary.skipped == {"unparsable_line": 2, "empty_item_id": 1}
    assert data.summary.examples["unparsable_line"][0].startswith(f"{path}:2: invalid JSON")
    assert data.summary.examples["empty_item_id"][0].startswith(f"{path}:4: ")


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_missing_column_names_file_and_column(tmp_path, fmt):
    frame = pd.DataFrame({"user_id": ["u"], "item_id": ["a"], "time": [1]})
    path = tmp_path / f"log.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif fmt == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    with pytest.raises(DataFormatError) as info:
        load_event_log(path, verbose=False)
    message = str(info.value)
    assert str(path) in message and "'timestamp'" in message and "['user_id', 'item_id', 'time']" in message
    assert info.value.column == "timestamp"
    with pytest.raises(DataFormatError, match="'title'"):
        load_event_log(path, time_column="time", text_column="title", verbose=False)


def test_missing_movielens_column(tmp_path):
    write(tmp_path / "movies.csv", "movieId,title,genres\n1,Toy Story (1995),Comedy\n")
    write(tmp_path / "ratings.csv", "userId,movieId,timestamp\n1,1,964982703\n")
    with pytest.raises(DataFormatError, match=r"ratings\.csv: missing required column 'rating'"):
        load_movielens(tmp_path, verbose=False)


def test_broken_movielens_rows(tmp_path):
    write(tmp_path / "movies.csv", 'movieId,title,genres\n1,"Heat, Again (1995)",Action|Crime\n1,Dup,Drama\n')
    write(tmp_path / "ratings.csv",
          "userId,movieId,rating,timestamp\n1,1,4.0,10\n1,2,five,11\n1,3,3.5,12\n2,1,2.0,x\n")
    data = load_movielens(tmp_path, verbose=False)
    s = data.summary
    assert s.skipped == {"movies_duplicate_movie": 1, "invalid_rating": 1, "unparsable_timestamp": 1,
                         "user_without_behaviors": 1}
    assert s.examples["invalid_rating"][0].startswith(f"{tmp_path / 'ratings.csv'}:3: column 'rating'")
    assert s.examples["movies_duplicate_movie"][0].startswith(f"{tmp_path / 'movies.csv'}:3: ")
    assert any("not in movies.csv" in note for note in s.notes)
    assert data.users[0]["ratings"] == [4.0, 3.5]
    assert data.vocabulary.texts[1:] == ["Heat, Again (1995) Action Crime", ""]
    with pytest.raises(DataFormatError, match=r"movies\.csv:3: "):
        load_movielens(tmp_path, strict=True, verbose=False)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file_is_a_clear_error(tmp_path, content):
    for name in ("log.csv", "log.jsonl", "Beauty.txt"):
        path = write(tmp_path / name, content)
        with pytest.raises(DataFormatError, match="empty") as info:
            load_behavior_data(path, verbose=False)
        assert str(path) in str(info.value)


def test_header_only_file_has_no_data(tmp_path):
    path = write(tmp_path / "log.csv", "user_id,item_id,timestamp\n")
    with pytest.raises(DataFormatError, match="no usable behaviours"):
        load_event_log(path, verbose=False)


def test_file_not_found_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.csv"
    for call in (lambda: load_event_log(missing), lambda: load_amazon_beauty(tmp_path / "Beauty.txt"),
                 lambda: load_movielens(tmp_path / "ml"), lambda: load_mind(tmp_path / "mind"),
                 lambda: load_behavior_data(missing)):
        with pytest.raises(FileNotFoundError) as info:
            call()
        assert str(tmp_path) in str(info.value)
    with pytest.raises(FileNotFoundError, match="news.tsv"):
        load_mind(tmp_path)


def test_not_utf8_and_not_parquet(tmp_path):
    path = tmp_path / "log.csv"
    path.write_bytes(b"user_id,item_id,timestamp\nu,\xff\xfe,1\n")
    with pytest.raises(DataFormatError, match="not valid UTF-8"):
        load_event_log(path, verbose=False)
    fake = write(tmp_path / "log.parquet", "user_id,item_id\n")
    with pytest.raises(DataFormatError, match="cannot read as Parquet"):
        load_event_log(fake, verbose=False)


# ------------------------------------------------------------------------------------------------ MIND
def test_mind_fixture_histories():
    data = load_mind(MIND_FIXTURE, verbose=False)
    vocab, s = data.vocabulary, data.summary
    assert len(vocab) == 13 and vocab.raw_ids[1:4] == ["N55528", "N19639", "N61837"]  # all news, file order
    assert vocab.texts[vocab["N55528"]] == "The Brands Queen Elizabeth, Prince Charles, and Prince Philip Swear By"
    assert vocab.texts[vocab["N33619"]].startswith('"It\'s been a nightmare"')
    assert by_user(data) == {
        "U13740": ["N55528", "N19639", "N61837", "N23144"],  # the later (longer) impression's history
        "U73700": ["N19639", "N38324"],  # line 4 is later than line 7; N99999 is unknown
        "U34670": ["N51706", "N39317"],
        "U19739": ["N61837", "N53526", "N38324", "N2073", "N33619", "N23144", "N86255", "N93187", "N39317",
                   "N51706"],
        "U5010": ["N51706", "N39317", "N51706"],
    }
    assert data.users[0]["timestamps"] == [0, 1, 2, 3]
    assert (s.rows_read, s.rows_used, s.users, s.behaviors) == (10, 10, 5, 12)
    assert s.skipped == {"unknown_news_id": 2, "empty_history": 2}
    behaviors = MIND_FIXTURE / "behaviors.tsv"
    assert s.examples["unknown_news_id"] == [f"{behaviors}:4: history id 'N99999' is not in news.tsv",
                                             f"{behaviors}:6: history id 'N88888' is not in news.tsv"]
    assert s.examples["empty_history"][0] == f"{behaviors}:10: user 'U91836' has an empty history"
    load_mind(MIND_FIXTURE, strict=True, verbose=False)  # unknown ids / empty histories are normal in MIND


def test_mind_truncation_and_text_fields():
    data = load_mind(MIND_FIXTURE, max_behaviors=3, text_fields=("title", "abstract"), verbose=False)
    row = data.users[3]
    assert row["user_id"] == "U19739" and raw_sequence(data, row) == ["N93187", "N39317", "N51706"]
    assert row["timestamps"] == [7, 8, 9] and data.summary.truncated_users == 2
    assert data.vocabulary.texts[data.vocabulary["N93187"]] == "The Brands Queen Elizabeth Hates A list nobody asked for."
    assert data.vocabulary.texts[data.vocabulary["N38324"]].endswith("Dermatologist")  # empty abstract
    with pytest.raises(ValueError, match="text_fields"):
        load_mind(MIND_FIXTURE, text_fields=("url",), verbose=False)


def test_mind_impressions():
    vocab = load_mind(MIND_FIXTURE, verbose=False).vocabulary
    impressions, summary = load_mind_impressions(MIND_FIXTURE, vocab, verbose=False, return_summary=True)
    assert impressions.num_rows == 10
    assert impressions.features["labels"].feature.dtype == "int8"
    assert impressions.features["time"].dtype == "int64"
    first = impressions[0]
    assert first["impression_id"] == "1" and first["user_id"] == "U13740"
    assert first["time"] == 1573463158  # 11/11/2019 9:05:58 AM read as UTC
    assert first["history"] == [vocab["N55528"], vocab["N19639"], vocab["N61837"]]
    assert first["candidates"] == [vocab["N53526"], vocab["N38324"]] and first["labels"] == [1, 0]
    assert impressions[1]["history"] == []
    assert impressions[4]["labels"] == [-1, -1, -1]  # test-split style line
    assert impressions[7]["labels"] == [0, 1]  # N77777 is unknown and dropped
    assert impressions[7]["candidates"] == [vocab["N55528"], vocab["N19639"]]
    assert impressions[2]["time"] == calendar.timegm((2019, 11, 13, 10, 0, 0))
    assert impressions[8]["time"] == calendar.timegm((2019, 11, 15, 0, 0, 1))  # 12:00:01 AM
    assert summary.skipped == {"unknown_news_id": 3}


def test_mind_impressions_extend_or_respect_vocabulary():
    small = BehaviorVocabulary(["N55528", "N19639"])
    small.freeze()
    impressions, summary = load_mind_impressions(MIND_FIXTURE, small, verbose=False, return_summary=True)
    assert len(small) == 3
    assert impressions.num_rows == 4  # only impressions with a known candidate
    assert impressions["impression_id"] == ["4", "5", "6", "8"]
    assert impressions[1]["candidates"] == [1] and impressions[1]["labels"] == [-1]
    assert summary.skipped["empty_impressions"] == 6 and summary.skipped["unknown_behavior"] > 0
    open_vocab = BehaviorVocabulary(["N55528"])
    load_mind_impressions(MIND_FIXTURE, open_vocab, verbose=False)
    assert len(open_vocab) == 13 and open_vocab.texts[2] == "50 Worst Habits For Belly Fat"


def copy_mind(tmp_path: Path, behaviors_extra: str = "", news_extra: str = "") -> Path:
    target = tmp_path / "mind"
    target.mkdir()
    (target / "news.tsv").write_text((MIND_FIXTURE / "news.tsv").read_text() + news_extra)
    (target / "behaviors.tsv").write_text((MIND_FIXTURE / "behaviors.tsv").read_text() + behaviors_extra)
    return target


def test_mind_broken_lines(tmp_path):
    directory = copy_mind(
        tmp_path,
        behaviors_extra="11\tU1\t13/45/2019 9:05:58 AM\tN55528\tN19639-1\n"
                        "12\tU2\t11/11/2019 9:05:58 AM\tN55528\n"
                        "13\t\t11/11/2019 9:05:58 AM\tN55528\tN19639-1\n"
                        "14\tU3\t11/11/2019 9:05:58 AM\tN55528\tN19639-x\n",
        news_extra="N1\tnews\tonly four fields\n",
    )
    behaviors = directory / "behaviors.tsv"
    data = load_mind(directory, verbose=False)
    s = data.summary
    assert s.skipped["unparsable_timestamp"] == 1 and s.examples["unparsable_timestamp"][0].startswith(
        f"{behaviors}:11: field 'time': cannot parse '13/45/2019 9:05:58 AM'")
    assert s.skipped["wrong_field_count"] == 1 and s.examples["wrong_field_count"][0].startswith(f"{behaviors}:12: ")
    assert s.skipped["empty_user_id"] == 1 and s.examples["empty_user_id"][0].startswith(f"{behaviors}:13: ")
    assert s.skipped["news_wrong_field_count"] == 1
    assert s.examples["news_wrong_field_count"][0].startswith(f"{directory / 'news.tsv'}:13: ")
    assert "U3" in by_user(data)  # its impressions field is not needed for histories
    impressions, summary = load_mind_impressions(directory, data.vocabulary, verbose=False, return_summary=True)
    assert summary.examples["unparsable_impressions"][0].startswith(f"{behaviors}:14: field 'impressions'")
    with pytest.raises(DataFormatError, match=f"^{directory / 'news.tsv'}:13: "):
        load_mind(directory, strict=True, verbose=False)


# ------------------------------------------------------------------------------------- Amazon Beauty
def test_beauty_fixture_skips_with_line_numbers():
    path = FIXTURES / "beauty_small.txt"
    data = load_amazon_beauty(path, verbose=False)
    s = data.summary
    assert by_user(data) == {"1": ["1", "2", "3", "4", "5"], "2": ["6", "7", "4"], "4": ["9", "10", "11"],
                             "5": ["12", "13"]}
    assert data.users[1]["timestamps"] == [0, 1, 2]
    assert s.skipped == {"invalid_item_id": 2, "empty_history": 1, "blank_line": 1, "duplicate_user": 1}
    assert s.examples["invalid_item_id"] == [f"{path}:2: token 4 ('x8') is not an integer item id",
                                             f"{path}:6: token 3 ('1.5') is not an integer item id"]
    assert s.examples["empty_history"] == [f"{path}:3: user '3' has no items"]
    assert s.examples["duplicate_user"][0].startswith(f"{path}:7: user '2' already has a sequence on line 2")
    assert (s.rows_read, s.rows_used, s.users) == (6, 4, 4)
    assert not data.vocabulary.has_text
    with pytest.raises(DataFormatError, match=f"^{path}:2: token 4"):
        load_amazon_beauty(path, strict=True, verbose=False)


def test_real_beauty_file():
    if not BEAUTY_PATH.is_file():
        pytest.skip(f"{BEAUTY_PATH} not available")
    data = load_behavior_data(BEAUTY_PATH, max_behaviors=None, verbose=False)
    s = data.summary
    assert data.source == "amazon-beauty"
    assert (s.users, s.behaviors, s.events, s.skipped) == (22_363, 12_101, 198_502, {})
    # items are numbered by first appearance in the file, so vocabulary ids equal the raw item ids
    assert all(data.vocabulary.raw_id(i) == str(i) for i in range(1, len(data.vocabulary)))
    with open(BEAUTY_PATH) as f:
        first = f.readline().split()
    assert data.users[0]["user_id"] == first[0] and raw_sequence(data, data.users[0]) == first[1:]
    truncated = load_amazon_beauty(BEAUTY_PATH, max_behaviors=50, verbose=False)
    lengths = np.array([len(x) for x in data.users["behavior_ids"]])
    assert truncated.summary.truncated_users == int((lengths > 50).sum())
    longest = int(lengths.argmax())
    assert truncated.users[longest]["behavior_ids"] == data.users[longest]["behavior_ids"][-50:]


# ------------------------------------------------------------------------------ dispatcher, persistence
def test_dispatcher(tmp_path):
    assert load_behavior_data(MIND_FIXTURE, verbose=False).source == "mind"
    assert load_behavior_data(FIXTURES / "beauty_small.txt", verbose=False).source == "amazon-beauty"
    assert load_behavior_data(write_events(tmp_path, "jsonl"), verbose=False).source == "event-log"
    with pytest.raises(DataFormatError, match="unsupported file type '.xlsx'"):
        load_behavior_data(write(tmp_path / "log.xlsx", "x"))
    with pytest.raises(DataFormatError, match="neither MovieLens"):
        load_behavior_data(tmp_path)
    with pytest.raises(DataFormatError, match="Amazon Beauty format"):
        load_behavior_data(write(tmp_path / "notes.txt", "hello world\n"))


def test_save_and_reload(tmp_path):
    data = load_mind(MIND_FIXTURE, verbose=False)
    save_behavior_data(data, tmp_path / "saved")
    again = load_saved_behavior_data(tmp_path / "saved")
    assert again.users.to_dict() == data.users.to_dict() and again.users.features == data.users.features
    assert again.vocabulary == data.vocabulary and again.source == "mind"
    assert again.summary == data.summary
    assert load_behavior_data(tmp_path / "saved").users.to_dict() == data.users.to_dict()
    with pytest.raises(FileNotFoundError, match="load_summary.json"):
        (tmp_path / "saved" / "load_summary.json").unlink()
        load_saved_behavior_data(tmp_path / "saved")


def test_summary_is_logged_and_printed(tmp_path, caplog, capsys):
    path = FIXTURES / "events_broken.csv"
    with caplog.at_level(logging.INFO, logger="userbert_hf.data"):
        load_event_log(path, verbose=False)
    assert "unparsable_timestamp: 2" in caplog.text and capsys.readouterr().out == ""
    load_event_log(path)
    out = capsys.readouterr().out
    assert "rows read:   10" in out and f"e.g. {path}:3:" in out


def test_summary_round_trips_as_dict():
    summary = LoadSummary(source="x", path="p", rows_read=2)
    summary.add_skip("r", "p:2: bad")
    assert LoadSummary.from_dict(summary.to_dict()) == summary
