"""One-event-per-row data (``userbert_hf.data.event_log``): every file format, bad rows counted or refused, and,
from anywhere (issue 12, item 2): named columns, text and rating columns, pandas
DataFrames, ``datasets`` tables, ``save_to_disk`` folders, local data folders through ``datasets.load_dataset``,
Hub ids, and the ``--user_column`` ... options of ``userbert pretrain`` / ``finetune`` / ``embed``."""

import calendar
import json

import datasets
import numpy as np
import pandas as pd
import pytest

from userbert_hf.data import BehaviorData, DataFormatError, from_dataset, from_pandas, load_behavior_data, load_event_log
from userbert_hf.vocabulary import PAD_TOKEN
from data_helpers import FIXTURES, by_user, write, write_events

# A log as users have them: columns user,item,timestamp,title (+ stars), unsorted, one bad row of each kind.
LOG = pd.DataFrame({
    "user": ["u1", "u1", "u2", None, "u2", "u1", "u3"],
    "item": ["b", "a", "a", "c", ["x", "y"], "a", "c"],
    "timestamp": [20, 10, 5, 7, 9, 10, "soon"],
    "title": ["Bee", "Ay", "Ay again", "Sea", "Ex", "Ay", "Sea"],
    "stars": [4.0, 3.5, 5.0, 1.0, 2.0, 3.5, 4.5],
})
COLUMNS = dict(user_column="user", item_column="item", time_column="timestamp", text_column="title",
               rating_column="stars")
EXPECTED_SKIPS = {"empty_user_id": 1, "invalid_item_id": 1, "duplicate_event": 1, "unparsable_timestamp": 1,
                  "user_without_behaviors": 1}


def raw_histories(data: BehaviorData) -> dict[str, list[str]]:
    return {row["user_id"]: [data.vocabulary.raw_id(i) for i in row["behavior_ids"]] for row in data.users}


def check_log(data: BehaviorData, where: str) -> None:
    assert raw_histories(data) == {"u1": ["a", "b"], "u2": ["a"]}
    assert data.users[0]["timestamps"] == [10, 20] and data.users[0]["ratings"] == [3.5, 4.0]
    texts = dict(zip(data.vocabulary.raw_ids, data.vocabulary.texts))
    assert (texts["a"], texts["b"]) == ("Ay", "Bee")  # the first non-empty text of an item wins
    assert data.summary.skipped == EXPECTED_SKIPS
    assert data.summary.examples["empty_user_id"] == [f"{where}: row 4: column 'user' is empty"]
    assert data.summary.examples["invalid_item_id"] == [f"{where}: row 5: column 'item': a list value ['x', 'y'] "
                                                        "is not an id"]


def test_from_pandas_counts_every_bad_row():
    data = from_pandas(LOG, **COLUMNS, verbose=False)
    check_log(data, "DataFrame")
    assert data.source == "dataframe" and data.summary.rows_read == 7 and data.summary.rows_used == 3


def test_from_pandas_strict_names_the_first_bad_row():
    with pytest.raises(DataFormatError, match=r"^DataFrame: row 4: column 'user' is empty") as info:
        from_pandas(LOG, **COLUMNS, strict=True, verbose=False)
    assert (info.value.column, info.value.reason) == ("user", "empty_user_id")


def test_from_pandas_missing_values_and_datetimes():
    frame = pd.DataFrame({"user_id": ["u1", pd.NA, "u1"], "item_id": ["a", "b", np.nan],
                          "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02", None])})
    data = from_pandas(frame, verbose=False)
    assert data.users[0]["timestamps"] == [1704067200]
    assert data.summary.skipped == {"empty_user_id": 1, "empty_item_id": 1}


def test_from_pandas_missing_column_names_the_option():
    with pytest.raises(DataFormatError, match=r"missing required column 'user_id'.*user_column="):
        from_pandas(LOG, verbose=False)


def test_from_dataset_equals_from_pandas_and_honours_selection():
    frame = LOG.astype({"item": str, "timestamp": str})  # Arrow needs one type per column
    frame.loc[4, "item"] = ""
    dataset = datasets.Dataset.from_pandas(frame)
    data = from_dataset(dataset, **COLUMNS, verbose=False)
    assert raw_histories(data) == {"u1": ["a", "b"], "u2": ["a"]}
    assert data.summary.skipped == {**{k: v for k, v in EXPECTED_SKIPS.items() if k != "invalid_item_id"},
                                    "empty_item_id": 1}
    reordered = from_dataset(dataset.select([2, 0, 1]), **COLUMNS, verbose=False)
    assert [row["user_id"] for row in reordered.users] == ["u2", "u1"]
    with pytest.raises(ValueError, match=r"DatasetDict with splits \['test', 'train'\]"):
        from_dataset(datasets.DatasetDict({"train": dataset, "test": dataset}), **COLUMNS)


def test_event_log_file_with_named_columns_equals_the_dataframe(tmp_path):
    path = tmp_path / "log.csv"
    frame = LOG.copy()
    frame.loc[4, "item"] = "[x, y]"  # a CSV cell is a string: kept as an id
    frame.to_csv(path, index=False)
    data = load_event_log(path, **COLUMNS, verbose=False)
    assert raw_histories(data) == {"u1": ["a", "b"], "u2": ["a", "[x, y]"]}
    assert data.users[0]["ratings"] == [3.5, 4.0]
    path.write_text("user,item,timestamp,stars\nu1,a,1,4\nu1,b,2,lots\n")
    data = load_event_log(path, user_column="user", item_column="item", rating_column="stars", verbose=False)
    assert data.summary.skipped == {"invalid_stars": 1} and data.users[0]["ratings"] == [4.0]


def test_datasets_folders_and_local_data_directories(tmp_path):
    frame = LOG.astype({"item": str, "timestamp": str})
    frame.loc[4, "item"] = ""
    dataset = datasets.Dataset.from_pandas(frame)
    dataset.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": dataset, "test": dataset.select([0])}).save_to_disk(str(tmp_path / "saved_dict"))
    (tmp_path / "raw" / "data").mkdir(parents=True)
    frame.to_csv(tmp_path / "raw" / "data" / "train.csv", index=False)  # a data folder for datasets.load_dataset
    for folder in ("saved", "saved_dict", "raw"):
        data = load_behavior_data(tmp_path / folder, **COLUMNS, verbose=False)
        assert raw_histories(data) == {"u1": ["a", "b"], "u2": ["a"]}, folder
        assert data.summary.examples["empty_user_id"] == [f"{tmp_path / folder}: row 4: column 'user' is empty"]
    test_split = load_behavior_data(tmp_path / "saved_dict", split="test", **COLUMNS, verbose=False)
    assert raw_histories(test_split) == {"u1": ["b"]}
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="neither MovieLens"):
        load_behavior_data(tmp_path / "empty", verbose=False)


def test_hub_dataset_id_that_cannot_be_reached_is_a_clear_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match="'nobody/no-such-log' is not a local path, and loading it as a Hub"):
        load_behavior_data("nobody/no-such-log", verbose=False)
    with pytest.raises(FileNotFoundError, match="behaviour data not found: nobody/events.csv"):
        load_behavior_data("nobody/events.csv", verbose=False)


@pytest.mark.timeout(240)
def test_hub_dataset_id_as_data_of_the_cli(tmp_path):
    """``userbert pretrain --data org/events`` against the local fake Hub: datasets.load_dataset fetches the
    dataset repo's CSV and the named columns are read (a fresh process: the Hub endpoint is read at import)."""
    import os
    import subprocess
    import sys

    from hub_server import FakeHub

    rows = "".join(f"user{u},m{(u * 7 + k) % 15},{1000 + k}\n" for u in range(12) for k in range(6))
    payload = ("user,item,timestamp\n" + rows).encode()
    script = f"""
import io, json, sys
from huggingface_hub import HfApi
api = HfApi()
api.create_repo("org/events", repo_type="dataset")
api.upload_file(path_or_fileobj=io.BytesIO({payload!r}),
                path_in_repo="data/train.csv", repo_id="org/events", repo_type="dataset")
from userbert_hf.pretraining.job import main
metrics = main(["--data", "org/events", "--user_column", "user", "--item_column", "item", "--preset", "gru4rec",
                "--max_steps", "1", "--behavior_pool_size", "10", "--sequence_pool_size", "4",
                "--output_dir", sys.argv[1], "--hidden_size", "16", "--use_cpu", "--disable_tqdm", "true",
                "--report_to", "none"])
print("METRICS", json.dumps(metrics))
"""
    with FakeHub() as hub:
        env = {**os.environ, **hub.client_env(str(tmp_path / "hf_home")), "OMP_NUM_THREADS": "1"}
        result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "out")], env=env, capture_output=True,
                                text=True, timeout=200)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "training_results.json").read_text())
    assert results["data_summary"]["path"] == "org/events"
    assert (results["data_summary"]["users"], results["data_summary"]["rows_used"]) == (12, 72)


def test_column_options_are_refused_for_fixed_formats():
    with pytest.raises(ValueError, match="user_column='user': column options apply to one-event-per-row data"):
        load_behavior_data("movielens", user_column="user", verbose=False)
    assert load_behavior_data("movielens", user_column=None, verbose=False).source == "movielens"


# ------------------------------------------------------------------------------------ files of every format
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


# ------------------------------------------------------------------------------------------------ CLI
def write_cli_log(path, users: int = 24, events: int = 12) -> None:
    rng = np.random.default_rng(0)
    rows = [{"user": f"user{u}", "item": f"m{int(rng.integers(0, 40))}", "timestamp": 1_700_000_000 + 60 * k,
             "title": None, "stars": float(rng.integers(1, 6))} for u in range(users) for k in range(events)]
    for row in rows:
        row["title"] = f"Movie {row['item'][1:]} ({'drama' if int(row['item'][1:]) % 2 else 'comedy'})"
    pd.DataFrame(rows).to_csv(path, index=False)


TINY = ["--hidden_size", "16", "--attention_query_size", "8", "--num_attention_heads", "2", "--use_cpu",
        "--disable_tqdm", "true", "--logging_steps", "1", "--report_to", "none"]
NAMED = ["--user_column", "user", "--item_column", "item", "--time_column", "timestamp"]


def test_cli_pretrain_embed_finetune_on_a_log_with_named_columns(tmp_path):
    from userbert_hf.embedding_export import main as embed_main
    from userbert_hf.finetuning.job import main as finetune_main
    from userbert_hf.pretraining.job import main as pretrain_main

    log = tmp_path / "events.csv"
    write_cli_log(log)
    common = ["--data", str(log), *NAMED, "--max_steps", "2", "--behavior_pool_size", "20",
              "--sequence_pool_size", "8"]
    with pytest.raises(ValueError, match="--text_column"):  # the default preset (nrms) reads texts
        pretrain_main([*common, "--output_dir", str(tmp_path / "no_text"), *TINY])
    out = tmp_path / "pretrained"
    metrics = pretrain_main([*common, "--text_column", "title", "--output_dir", str(out), *TINY])
    assert metrics["mbp_loss"] > 0
    vocab = json.loads((out / "behavior_vocab.json").read_text())
    assert "Movie" in json.dumps(vocab) and (out / "tokenizer.json").exists()  # the titles were read and tokenized
    assert json.loads((out / "config.json").read_text())["behavior_type"] == "text"

    embeddings = embed_main(["--model_name_or_path", str(out), "--data", str(log), *NAMED, "--text_column", "title",
                             "--output", str(tmp_path / "emb.parquet"), "--device", "cpu"])
    assert sorted(embeddings["user_id"]) == sorted(f"user{u}" for u in range(24))

    finetune_main(["--task", "ctr", "--data", str(log), *NAMED, "--rating_column", "stars", "--model_name_or_path",
                   str(out), "--max_steps", "2", "--output_dir", str(tmp_path / "ctr"), "--use_cpu",
                   "--disable_tqdm", "true", "--report_to", "none", "--eval_strategy", "no"])
    assert (tmp_path / "ctr" / "config.json").exists()
