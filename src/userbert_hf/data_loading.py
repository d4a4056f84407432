"""Deprecated: the loaders moved to :mod:`userbert_hf.data` (``readers``, ``event_log``, ``movielens``, ``mind``,
``beauty``, ``summary``, ...). This module re-exports them so existing imports keep working."""

import warnings

from .data import *  # noqa: F401,F403
from .data import __all__  # noqa: F401

warnings.warn(
    "userbert_hf.data_loading is deprecated; import from userbert_hf.data instead",
    DeprecationWarning,
    stacklevel=2,
)
