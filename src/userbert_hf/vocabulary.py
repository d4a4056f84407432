"""Behaviour vocabulary: raw behaviour ids (strings) <-> contiguous integer ids.

Index 0 is reserved for padding; real behaviours get ids 1..M-1 in the order they were added.
Each behaviour may carry a text (a news title, a movie title) that the word-level tokenizer encodes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator

PAD_ID = 0
PAD_TOKEN = "[PAD]"
VOCAB_FILE_NAME = "behavior_vocab.json"
VOCAB_FORMAT = "userbert-behavior-vocab"
VOCAB_VERSION = 1


class BehaviorVocabulary:
    """Maps raw behaviour ids (strings such as ``"N55528"`` or ``"1193"``) to contiguous ints.

    Id 0 is the padding behaviour ``"[PAD]"``; real behaviours are 1..``len(vocab) - 1``. An optional
    text is stored per behaviour (``""`` for padding and for behaviours without text).

    At fine-tuning time call :meth:`freeze` so that behaviours never seen in pre-training are not
    added: a frozen vocabulary's :meth:`add` raises ``KeyError`` for unknown ids and :meth:`get`
    returns the default.

    Args:
        raw_ids: optional raw ids to add in order (the pad token must not be among them).
        texts: optional texts aligned with ``raw_ids``.

    Example:
        >>> vocab = BehaviorVocabulary()
        >>> vocab.add("N55528", "The Brands Queen Elizabeth Swears By")
        1
        >>> vocab.add("N19639")
        2
        >>> vocab["N55528"], len(vocab), vocab.raw_id(2)
        (1, 3, 'N19639')
        >>> vocab.texts
        ['', 'The Brands Queen Elizabeth Swears By', '']
        >>> vocab.freeze()
        >>> vocab.get("N00000") is None
        True
    """

    def __init__(self, raw_ids: Iterable[str] | None = None, texts: Iterable[str | None] | None = None):
        self._ids: list[str] = [PAD_TOKEN]
        self._texts: list[str] = [""]
        self._index: dict[str, int] = {PAD_TOKEN: PAD_ID}
        self._frozen = False
        if raw_ids is not None:
            raw_ids = list(raw_ids)
            text_list = [None] * len(raw_ids) if texts is None else list(texts)
            if len(text_list) != len(raw_ids):
                raise ValueError(f"got {len(raw_ids)} raw ids but {len(text_list)} texts")
            for raw_id, text in zip(raw_ids, text_list):
                self.add(raw_id, text)

    # ------------------------------------------------------------------ building
    def add(self, raw_id: str, text: str | None = None) -> int:
        """Return the id of ``raw_id``, adding it (with ``text``) if it is new.

        An existing behaviour without text gets ``text`` if one is given now. On a frozen vocabulary an
        unknown ``raw_id`` raises ``KeyError``.
        """
        raw_id = _check_raw_id(raw_id)
        index = self._index.get(raw_id)
        if index is not None:
            if index == PAD_ID and raw_id == PAD_TOKEN:
                raise ValueError(f"{PAD_TOKEN!r} is reserved for padding and cannot be added as a behaviour")
            if text and not self._texts[index]:
                self._texts[index] = str(text)
            return index
        if self._frozen:
            raise KeyError(f"behaviour {raw_id!r} is not in the frozen vocabulary ({len(self)} entries)")
        index = len(self._ids)
        self._ids.append(raw_id)
        self._texts.append(str(text) if text else "")
        self._index[raw_id] = index
        return index

    def freeze(self) -> None:
        """Stop adding behaviours: ``add`` of an unknown id raises, ``get`` returns the default."""
        self._frozen = True

    @property
    def frozen(self) -> bool:
        return self._frozen

    # ------------------------------------------------------------------ look-ups
    def __getitem__(self, raw_id: str) -> int:
        try:
            return self._index[raw_id]
        except (KeyError, TypeError):
            raise KeyError(
                f"unknown behaviour id {raw_id!r} (the vocabulary has {len(self) - 1} behaviours plus padding)"
            ) from None

    def get(self, raw_id: str, default: int | None = None) -> int | None:
        try:
            return self._index.get(raw_id, default)
        except TypeError:  # unhashable
            return default

    def __contains__(self, raw_id: object) -> bool:
        try:
            return raw_id in self._index
        except TypeError:
            return False

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        """Iterate over raw ids in id order, padding first."""
        return iter(self._ids)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BehaviorVocabulary):
            return NotImplemented
        return self._ids == other._ids and self._texts == other._texts

    def __repr__(self) -> str:
        return (
            f"BehaviorVocabulary(size={len(self)}, has_text={self.has_text}, frozen={self._frozen})"
        )

    def raw_id(self, index: int) -> str:
        """The raw id of integer id ``index``."""
        if not isinstance(index, int) or isinstance(index, bool):
            index = int(index)  # numpy integers
        if not 0 <= index < len(self._ids):
            raise IndexError(f"behaviour index {index} out of range [0, {len(self._ids)})")
        return self._ids[index]

    @property
    def raw_ids(self) -> list[str]:
        """All raw ids in id order (a copy), padding first."""
        return list(self._ids)

    @property
    def texts(self) -> list[str]:
        """Texts aligned with ids (a copy); ``""`` for padding and behaviours without text."""
        return list(self._texts)

    def text(self, index: int) -> str:
        return self._texts[int(index)]

    @property
    def has_text(self) -> bool:
        """True if at least one behaviour has a non-empty text."""
        return any(self._texts)

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        return {
            "format": VOCAB_FORMAT,
            "version": VOCAB_VERSION,
            "ids": list(self._ids),
            "texts": list(self._texts) if self.has_text else None,
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``behavior_vocab.json`` into ``directory`` (created if needed); return its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / VOCAB_FILE_NAME
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, ensure_ascii=False)
        return path

    @classmethod
    def load(cls, directory_or_file: str | os.PathLike) -> "BehaviorVocabulary":
        """Load a vocabulary written by :meth:`save` (a directory holding ``behavior_vocab.json`` or the file).

        Raises ``FileNotFoundError`` if it is missing and ``ValueError`` naming the file when its content is
        malformed (not JSON, wrong format tag or version, ids not strings, duplicate ids, texts misaligned).
        The loaded vocabulary is not frozen.
        """
        path = Path(directory_or_file)
        if path.is_dir():
            path = path / VOCAB_FILE_NAME
        if not path.is_file():
            raise FileNotFoundError(f"behaviour vocabulary file not found: {path}")
        try:
            with open(path, encoding="utf-8") as f:
                payload = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not a valid JSON behaviour vocabulary ({e})") from None
        return cls.from_dict(payload, source=str(path))

    @classmethod
    def from_dict(cls, payload: dict, source: str = "<dict>") -> "BehaviorVocabulary":
        if not isinstance(payload, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(payload).__name__}")
        if payload.get("format") != VOCAB_FORMAT:
            raise ValueError(f"{source}: 'format' is {payload.get('format')!r}, expected {VOCAB_FORMAT!r}")
        if payload.get("version") != VOCAB_VERSION:
            raise ValueError(
                f"{source}: unsupported vocabulary version {payload.get('version')!r} (this code reads {VOCAB_VERSION})"
            )
        ids = payload.get("ids")
        if not isinstance(ids, list) or not ids:
            raise ValueError(f"{source}: 'ids' must be a non-empty list starting with {PAD_TOKEN!r}")
        if ids[0] != PAD_TOKEN:
            raise ValueError(f"{source}: ids[0] must be the padding token {PAD_TOKEN!r}, got {ids[0]!r}")
        texts = payload.get("texts")
        if texts is not None:
            if not isinstance(texts, list) or len(texts) != len(ids):
                raise ValueError(
                    f"{source}: 'texts' must be null or a list as long as 'ids' ({len(ids)}), "
                    f"got {type(texts).__name__} of length {len(texts) if isinstance(texts, list) else '-'}"
                )
            bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
            if bad is not None:
                raise ValueError(f"{source}: texts[{bad}] is {texts[bad]!r}, expected a string")
        vocab = cls()
        seen: dict[str, int] = {PAD_TOKEN: 0}
        for i, raw_id in enumerate(ids[1:], start=1):
            if not isinstance(raw_id, str) or not raw_id:
                raise ValueError(f"{source}: ids[{i}] is {raw_id!r}, expected a non-empty string")
            if raw_id in seen:
                raise ValueError(f"{source}: duplicate behaviour id {raw_id!r} at positions {seen[raw_id]} and {i}")
            seen[raw_id] = i
            vocab.add(raw_id, texts[i] if texts is not None else None)
        return vocab


def _check_raw_id(raw_id: object) -> str:
    if not isinstance(raw_id, str):
        raise TypeError(f"behaviour ids must be strings, got {type(raw_id).__name__} {raw_id!r}")
    if not raw_id:
        raise ValueError("behaviour ids must be non-empty strings")
    return raw_id
