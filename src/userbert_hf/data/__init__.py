"""Load behaviour logs (MovieLens, MIND, Amazon Beauty, generic event logs) into per-user sequences.

Every loader returns a :class:`BehaviorData`: a ``datasets.Dataset`` with one row per user
(``user_id``, ``behavior_ids`` oldest -> newest, ``timestamps``), the :class:`BehaviorVocabulary` that maps
raw behaviour ids to the contiguous ids used in ``behavior_ids``, and a :class:`LoadSummary` that counts
what was read, used and skipped (with ``file:line`` examples).

Bad input is never dropped silently and never surfaces as a bare pandas/pyarrow traceback:

* structural problems of a whole file (not found, empty, missing required column, not decodable) raise
  ``FileNotFoundError`` or :class:`DataFormatError` naming the file (and the column);
* a bad row (wrong number of fields, unparsable timestamp, empty id, duplicate event, ...) is skipped and
  counted, or with ``strict=True`` raises :class:`DataFormatError` naming ``file:line`` and the column;
* content filters (unknown ids, empty histories, ``min_rating``, users left with no behaviour) are counted
  but never raise, even with ``strict=True``: real MIND files, for instance, always contain history ids that
  are missing from the split's ``news.tsv``.

Modules: ``readers`` (line-accurate CSV/TSV/JSON Lines/Parquet tables), ``values`` (ids and timestamps),
``behavior_data`` (events -> per-user sequences, save / reload), ``event_log``, ``movielens``, ``mind``,
``beauty`` (one loader each), ``dispatch`` (:func:`load_behavior_data`), ``summary`` (:class:`LoadSummary`,
:class:`DataFormatError`). The bundled MovieLens ``ml-latest-small`` files live in ``ml-latest-small/`` here.
"""

from .beauty import load_amazon_beauty
from .behavior_data import (
    DEFAULT_MAX_BEHAVIORS,
    USERS_FEATURES,
    BehaviorData,
    load_saved_behavior_data,
    save_behavior_data,
)
from .dispatch import COLUMN_OPTIONS, EventLogColumnArguments, column_options, load_behavior_data
from .event_log import from_dataset, from_pandas, load_event_log
from .mind import MIND_BEHAVIOR_FIELDS, MIND_NEWS_FIELDS, load_mind, load_mind_impressions
from .movielens import bundled_movielens_path, load_default_dataset, load_movielens
from .summary import FILTER_REASONS, MAX_EXAMPLES_PER_REASON, DataFormatError, LoadSummary

__all__ = [
    "BehaviorData",
    "COLUMN_OPTIONS",
    "DataFormatError",
    "DEFAULT_MAX_BEHAVIORS",
    "FILTER_REASONS",
    "LoadSummary",
    "MAX_EXAMPLES_PER_REASON",
    "MIND_BEHAVIOR_FIELDS",
    "MIND_NEWS_FIELDS",
    "USERS_FEATURES",
    "bundled_movielens_path",
    "EventLogColumnArguments",
    "column_options",
    "from_dataset",
    "from_pandas",
    "load_amazon_beauty",
    "load_behavior_data",
    "load_default_dataset",
    "load_event_log",
    "load_mind",
    "load_mind_impressions",
    "load_movielens",
    "load_saved_behavior_data",
    "save_behavior_data",
]
