"""MovieLens (``userbert_hf.data.movielens``): counts on the real bundled data, time order, truncation, texts,
min_rating, broken columns and rows."""

import numpy as np
import pandas as pd
import pytest

from userbert_hf.data import (
    DataFormatError,
    bundled_movielens_path,
    load_behavior_data,
    load_default_dataset,
    load_movielens,
)
from userbert_hf.vocabulary import PAD_ID
from data_helpers import movielens_full, ratings_frame, raw_sequence, write  # noqa: F401 (fixtures)


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
