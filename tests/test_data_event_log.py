"""One-event-per-row data from anywhere (issue 12, item 2): named columns, text and rating columns, pandas
DataFrames, ``datasets`` tables, ``save_to_disk`` folders, local data folders through ``datasets.load_dataset``,
Hub ids, and the ``--user_column`` ... options of ``userbert pretrain`` / ``finetune`` / ``embed``."""

import json

import datasets
import numpy as np
import pandas as pd
import pytest

from userbert_hf.data import BehaviorData, DataFormatError, load_behavior_data, load_event_log

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
    data = BehaviorData.from_pandas(LOG, **COLUMNS, verbose=False)
    check_log(data, "DataFrame")
    assert data.source == "dataframe" and data.summary.rows_read == 7 and data.summary.rows_used == 3


def test_from_pandas_strict_names_the_first_bad_row():
    with pytest.raises(DataFormatError, match=r"^DataFrame: row 4: column 'user' is empty") as info:
        BehaviorData.from_pandas(LOG, **COLUMNS, strict=True, verbose=False)
    assert (info.value.column, info.value.reason) == ("user", "empty_user_id")


def test_from_pandas_missing_values_and_datetimes():
    frame = pd.DataFrame({"user_id": ["u1", pd.NA, "u1"], "item_id": ["a", "b", np.nan],
                          "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02", None])})
    data = BehaviorData.from_pandas(frame, verbose=False)
    assert data.users[0]["timestamps"] == [1704067200]
    assert data.summary.skipped == {"empty_user_id": 1, "empty_item_id": 1}


def test_from_pandas_missing_column_names_the_option():
    with pytest.raises(DataFormatError, match=r"missing required column 'user_id'.*user_column="):
        BehaviorData.from_pandas(LOG, verbose=False)


def test_from_dataset_equals_from_pandas_and_honours_selection():
    frame = LOG.astype({"item": str, "timestamp": str})  # Arrow needs one type per column
    frame.loc[4, "item"] = ""
    dataset = datasets.Dataset.from_pandas(frame)
    data = BehaviorData.from_dataset(dataset, **COLUMNS, verbose=False)
    assert raw_histories(data) == {"u1": ["a", "b"], "u2": ["a"]}
    assert data.summary.skipped == {**{k: v for k, v in EXPECTED_SKIPS.items() if k != "invalid_item_id"},
                                    "empty_item_id": 1}
    reordered = BehaviorData.from_dataset(dataset.select([2, 0, 1]), **COLUMNS, verbose=False)
    assert [row["user_id"] for row in reordered.users] == ["u2", "u1"]
    with pytest.raises(ValueError, match=r"DatasetDict with splits \['test', 'train'\]"):
        BehaviorData.from_dataset(datasets.DatasetDict({"train": dataset, "test": dataset}), **COLUMNS)


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


def test_column_options_are_refused_for_fixed_formats():
    with pytest.raises(ValueError, match="user_column='user': column options apply to one-event-per-row data"):
        load_behavior_data("movielens", user_column="user", verbose=False)
    assert load_behavior_data("movielens", user_column=None, verbose=False).source == "movielens"


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
    from userbert_hf.finetuning_job import main as finetune_main
    from userbert_hf.pretraining_job import main as pretrain_main

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
