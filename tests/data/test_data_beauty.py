"""Amazon Beauty (``userbert_hf.data.beauty``): the fixture and the real file."""

import numpy as np
import pytest

from userbert_hf.data import DataFormatError, load_amazon_beauty, load_behavior_data
from data_helpers import BEAUTY_PATH, FIXTURES, by_user, raw_sequence


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
