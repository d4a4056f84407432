"""``load_behavior_data`` (``userbert_hf.data.dispatch``), saving / reloading, and the LoadSummary."""

import logging

import pytest

from userbert_hf.data import (
    DataFormatError,
    LoadSummary,
    load_behavior_data,
    load_event_log,
    load_mind,
    load_saved_behavior_data,
    save_behavior_data,
)
from data_helpers import FIXTURES, MIND_FIXTURE, write, write_events


# ------------------------------------------------------------------------------ dispatcher, persistence
def test_dispatcher(tmp_path):
    assert load_behavior_data(MIND_FIXTURE, verbose=False).source == "mind"
    assert load_behavior_data(FIXTURES / "beauty_small.txt", verbose=False).source == "amazon-beauty"
    assert load_behavior_data(write_events(tmp_path, "jsonl"), verbose=False).source == "event-log"
    with pytest.raises(DataFormatError, match="unsupported file type '.xlsx'"):
        load_behavior_data(write(tmp_path / "log.xlsx", "x"))
    # A folder of data files is read by datasets.load_dataset; one without any is refused.
    assert load_behavior_data(tmp_path, verbose=False).source == "dataset"
    (tmp_path / "notes").mkdir()
    write(tmp_path / "notes" / "README.md", "no data here\n")
    with pytest.raises(DataFormatError, match="neither MovieLens"):
        load_behavior_data(tmp_path / "notes")
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
