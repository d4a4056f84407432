"""MIND (``userbert_hf.data.mind``): histories, impressions, vocabularies and broken lines."""

import calendar
from pathlib import Path

import pytest

from userbert_hf.data import DataFormatError, load_mind, load_mind_impressions
from userbert_hf.vocabulary import BehaviorVocabulary
from data_helpers import MIND_FIXTURE, by_user, raw_sequence


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
