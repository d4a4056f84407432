"""MovieLens ``ratings.csv`` + ``movies.csv`` (the bundled ``ml-latest-small`` by default)."""

from __future__ import annotations

import os
from dataclasses import replace
from importlib import resources
from pathlib import Path

import numpy as np

from ..vocabulary import BehaviorVocabulary
from .behavior_data import DEFAULT_MAX_BEHAVIORS, BehaviorData, Events, build_behavior_data, events_from_table
from .readers import check_file, read_delimited
from .summary import MAX_EXAMPLES_PER_REASON, Issues, LoadSummary, new_issues

def bundled_movielens_path() -> Path:
    """The directory of the bundled MovieLens ``ml-latest-small`` (ratings.csv, movies.csv, README)."""
    return Path(str(resources.files("userbert_hf") / "data" / "ml-latest-small"))


def load_movielens(
    directory: str | os.PathLike | None = None,
    *,
    min_rating: float | None = None,
    max_behaviors: int | None = DEFAULT_MAX_BEHAVIORS,
    vocabulary: BehaviorVocabulary | None = None,
    strict: bool = False,
    verbose: bool = True,
) -> BehaviorData:
    """Load MovieLens ``ratings.csv`` + ``movies.csv`` (default: the bundled ``ml-latest-small``).

    Each rating is a behaviour with the movie's text ``"{title} {genres}"`` (genres space-separated,
    ``"(no genres listed)"`` dropped). The users dataset has an extra column ``ratings`` (``List(float32)``)
    aligned with ``behavior_ids`` (a CTR label is ``rating >= 4``). ``min_rating`` drops lower ratings (counted
    as ``below_min_rating``).

    Example:
        >>> data = load_movielens(verbose=False, max_behaviors=None)
        >>> data.summary.rows_used, data.summary.users, data.summary.behaviors
        (100836, 610, 9724)
    """
    directory = bundled_movielens_path() if directory is None else Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"MovieLens directory not found: {directory}")
    ratings_path = check_file(directory / "ratings.csv", "MovieLens ratings.csv")
    movies_path = check_file(directory / "movies.csv", "MovieLens movies.csv")
    issues = new_issues("movielens", ratings_path, strict, max_behaviors)

    # movies.csv: movieId -> text (its rows are not counted in rows_read, which is about ratings).
    movies_issues = Issues(LoadSummary(source="movielens", path=str(movies_path)), strict)
    movies = read_delimited(movies_path, ",", movies_issues)
    movies.require("movieId", "title", "genres")
    texts: dict[str, str] = {}
    for where, movie_id, title, genres in zip(
        movies.locations, movies.column("movieId"), movies.column("title"), movies.column("genres")
    ):
        movie_id = movie_id.strip()
        if not movie_id:
            movies_issues.skip("empty_item_id", movies_path, where, "column 'movieId' is empty", column="movieId")
            continue
        if movie_id in texts:
            movies_issues.skip("duplicate_movie", movies_path, where, f"movieId {movie_id!r} appears again")
            continue
        genre_words = "" if genres.strip() == "(no genres listed)" else genres.replace("|", " ").strip()
        texts[movie_id] = " ".join(part for part in (title.strip(), genre_words) if part)
    movies_issues.checkpoint()
    for reason, count in movies_issues.summary.skipped.items():
        issues.summary.add_skip(f"movies_{reason}", None, count)
        issues.summary.examples[f"movies_{reason}"] = movies_issues.summary.examples.get(reason, [])

    ratings = read_delimited(ratings_path, ",", issues)
    ratings.require("userId", "movieId", "rating", "timestamp")
    events = events_from_table(
        ratings, issues, user_column="userId", item_column="movieId", time_column="timestamp",
        time_format=None, float_columns={"rating": "ratings"},
    )
    events.numeric_times = True
    if min_rating is not None:
        events = _filter_min_rating(events, issues, float(min_rating))
    missing = {item for item in events.items if item not in texts}
    if missing:
        issues.summary.notes.append(
            f"{len(missing)} rated movies are not in movies.csv and have no text, e.g. {sorted(missing)[:3]}"
        )
    return build_behavior_data(
        events, issues, source="movielens", vocabulary=vocabulary, item_text=texts.get,
        max_behaviors=max_behaviors, deduplicate=True, verbose=verbose,
    )


def _filter_min_rating(events: Events, issues: Issues, min_rating: float) -> Events:
    low = np.asarray(events.floats["ratings"]) < min_rating
    low_index = np.flatnonzero(low)
    for j in low_index[:MAX_EXAMPLES_PER_REASON]:
        issues.skip("below_min_rating", events.path, events.locations[j],
                    f"rating {events.floats['ratings'][j]:g} < min_rating {min_rating:g}")
    issues.count("below_min_rating", max(0, len(low_index) - MAX_EXAMPLES_PER_REASON))
    keep = ~low
    return replace(
        events,
        users=np.asarray(events.users, dtype=object)[keep],
        items=np.asarray(events.items, dtype=object)[keep],
        times=np.asarray(events.times)[keep],
        locations=np.asarray(events.locations, dtype=object)[keep],
        floats={name: np.asarray(values)[keep] for name, values in events.floats.items()},
    )


def load_default_dataset(**kwargs) -> BehaviorData:
    """The bundled MovieLens ``ml-latest-small`` (keyword arguments go to :func:`load_movielens`)."""
    kwargs.pop("directory", None)
    return load_movielens(bundled_movielens_path(), **kwargs)


