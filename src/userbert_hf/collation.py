"""Batch collation: padding behaviour sequences and building per-batch tables of distinct behaviours.

A text behaviour (e.g. a news title clicked by 20 users of a batch) is encoded once per batch: collators put
the distinct behaviours of the batch in a table (``behavior_ids`` (U,) or ``behavior_token_ids`` (U, W)) and
pass ``behavior_index`` (B, L) into it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


class BehaviorCatalog:
    """What the model needs to encode any behaviour id: nothing for ID behaviours, the word ids of its text for
    text behaviours.

    Args:
        num_behaviors: size of the behaviour vocabulary including padding id 0.
        token_ids: (num_behaviors, max_words) word ids per behaviour for text behaviours, else ``None``.

    Example:

    ```python
    >>> catalog = BehaviorCatalog(4, torch.tensor([[0, 0], [5, 6], [7, 0], [8, 9]]))
    >>> catalog.table_inputs(torch.tensor([0, 2]))["behavior_token_ids"].tolist()  # all-padding columns dropped
    [[0], [7]]
    ```
    """

    def __init__(self, num_behaviors: int, token_ids: torch.Tensor | np.ndarray | None = None):
        self.num_behaviors = int(num_behaviors)
        if token_ids is not None:
            token_ids = torch.as_tensor(np.asarray(token_ids), dtype=torch.long)
            if token_ids.ndim != 2 or token_ids.shape[0] != self.num_behaviors:
                raise ValueError(
                    f"token_ids must have shape (num_behaviors={self.num_behaviors}, max_words), got {tuple(token_ids.shape)}"
                )
        self.token_ids = token_ids
        self._text_lengths = self._text_groups = None
        if token_ids is not None:
            # Per behaviour: 1 + its last non-padding word column (0 for an empty text), so a table's width is
            # one max over U numbers; and a group id shared by behaviours with identical word ids, so identity
            # checks compare ids instead of (N, M, W) word tensors.
            used = token_ids != 0  # (num_behaviors, max_words)
            columns = torch.arange(1, token_ids.shape[1] + 1)
            self._text_lengths = (used * columns).amax(1) if token_ids.shape[1] else torch.zeros(self.num_behaviors, dtype=torch.long)
            self._text_groups = torch.unique(token_ids, dim=0, return_inverse=True)[1]  # (num_behaviors,)

    @property
    def is_text(self) -> bool:
        return self.token_ids is not None

    @classmethod
    def from_vocabulary(
        cls, vocabulary, tokenizer=None, max_words: int = 30, behavior_type: str = "text"
    ) -> "BehaviorCatalog":
        """Catalog of a ``BehaviorVocabulary``; with a tokenizer, behaviour texts become word ids (or, for
        ``behavior_type="plm"``, the language model's token ids shifted by one, see ``plm_encoder.py``)."""
        if tokenizer is None:
            return cls(len(vocabulary))
        if behavior_type == "plm":
            from .plm_encoder import encode_plm_texts

            return cls(len(vocabulary), encode_plm_texts(tokenizer, list(vocabulary.texts), max_words))
        from .tokenization_userbert import encode_behavior_texts

        return cls(len(vocabulary), encode_behavior_texts(tokenizer, list(vocabulary.texts), max_words))

    def table_inputs(self, unique_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Model inputs for a table of behaviour ids (U,): ``behavior_ids`` or ``behavior_token_ids`` (U, W)."""
        if self.token_ids is None:
            return {"behavior_ids": unique_ids}
        rows = unique_ids.cpu()
        # Drop word columns that are padding for every behaviour of the table: outputs are unchanged (padding
        # words are masked) and short texts are not encoded at full length.
        used = max(int(self._text_lengths[rows].max()), 1) if len(rows) else 1
        tokens = self.token_ids[rows, :used]  # (U, used)
        return {"behavior_token_ids": tokens.to(unique_ids.device)}

    def identical(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Whether behaviours ``a`` and ``b`` (broadcastable id tensors, e.g. (N, 1) and (1, M)) are the same
        behaviour: same id, or for text behaviours the same word ids (duplicate titles under different ids)."""
        same = a == b
        if self.token_ids is not None:
            groups = self._text_groups.to(a.device)
            same = same | (groups[a] == groups[b])
        return same


def build_behavior_table(catalog: BehaviorCatalog, *id_tensors: torch.Tensor):
    """Put the distinct behaviours of several id tensors in one table.

    Returns ``(table_inputs, indices)`` where ``table_inputs`` feeds the model (``behavior_ids`` or
    ``behavior_token_ids``) and ``indices[i]`` has the shape of ``id_tensors[i]`` and indexes the table.
    """
    flat = torch.cat([t.reshape(-1) for t in id_tensors])
    unique_ids, inverse = torch.unique(flat, return_inverse=True)  # (U,), (sum of sizes,)
    parts = inverse.split([t.numel() for t in id_tensors])
    return catalog.table_inputs(unique_ids), [part.view(t.shape) for part, t in zip(parts, id_tensors)]


def pad_sequences(sequences: list, pad_value: int = 0, length: int | None = None, dtype=torch.long) -> torch.Tensor:
    """Left-align and right-pad ragged sequences into a (N, length) tensor."""
    length = length if length is not None else max((len(s) for s in sequences), default=0)
    out = torch.full((len(sequences), max(length, 1)), pad_value, dtype=dtype)
    for i, seq in enumerate(sequences):
        seq = list(seq)[:length]
        if seq:
            out[i, : len(seq)] = torch.as_tensor(seq, dtype=dtype)
    return out


def most_recent(sequence, max_behaviors: int | None) -> list:
    """The last ``max_behaviors`` entries of a sequence kept oldest first (all of them for ``None``)."""
    sequence = list(sequence)
    return sequence[-max_behaviors:] if max_behaviors else sequence


def collate_histories(
    catalog: BehaviorCatalog, histories: list, max_behaviors: int | None = None, *extra_ids: torch.Tensor
) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """The one collation of behaviour histories shared by every collator and by ``UserBertProcessor``.

    Each history (behaviour ids, oldest first) keeps its most recent ``max_behaviors`` behaviours and is
    right-padded with 0; the distinct behaviours of the histories and of ``extra_ids`` (e.g. candidates) go into
    one table, encoded once by the model.

    Args:
        catalog: how to encode any behaviour id (word ids for text behaviours).
        histories: B sequences of behaviour ids (lists, tuples or arrays).
        max_behaviors: truncation length (``None``: keep everything).
        extra_ids: further id tensors of any shape to put in the same table.

    Returns:
        ``(inputs, extra_index)``: ``inputs`` holds the table (``behavior_ids`` (U,) or ``behavior_token_ids``
        (U, W)), ``behavior_index`` (B, L) and ``attention_mask`` (B, L); ``extra_index[i]`` has the shape of
        ``extra_ids[i]`` and indexes the same table.

    Example:

    ```python
    >>> inputs, (candidates,) = collate_histories(BehaviorCatalog(10), [[3, 4, 5], [4]], 2, torch.tensor([7, 3]))
    >>> inputs["behavior_ids"].tolist(), inputs["behavior_index"].tolist(), candidates.tolist()
    ([0, 3, 4, 5, 7], [[2, 3], [2, 0]], [4, 1])
    ```
    """
    ids = pad_sequences([most_recent(h, max_behaviors) for h in histories])  # (B, L)
    table, (index, *extra_index) = build_behavior_table(catalog, ids, *extra_ids)
    return {**table, "behavior_index": index, "attention_mask": (ids != 0).long()}, extra_index


@dataclass
class UserBertCollator:
    """Collates user rows (``behavior_ids`` lists, oldest first) into model inputs for ``UserBertModel``,
    with the batch's distinct behaviours encoded once. A ``label`` (or ``labels``) column becomes ``labels``, so
    the collator also feeds ``UserBertForUserClassification`` under the stock ``transformers.Trainer``.

    Example:

    ```python
    >>> collate = UserBertCollator(BehaviorCatalog(10))
    >>> batch = collate([{"behavior_ids": [3, 4], "label": 1}, {"behavior_ids": [4], "label": 0}])
    >>> batch["behavior_ids"].tolist(), batch["behavior_index"].tolist(), batch["labels"].tolist()
    ([0, 3, 4], [[1, 2], [2, 0]], [1, 0])
    ```
    """

    catalog: BehaviorCatalog
    max_behaviors: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch, _ = collate_histories(self.catalog, [f["behavior_ids"] for f in features], self.max_behaviors)
        label_key = next((k for k in ("label", "labels") if k in features[0]), None)
        if label_key is not None:
            batch["labels"] = torch.as_tensor([f[label_key] for f in features])
        return batch


@dataclass
class UserBertPretrainingCollator:
    """Pads user rows for pre-training. Masking, period splitting and negatives are decided in the trainer
    (step-seeded, so they survive checkpoint resume and match across gradient-accumulation layouts).

    Returns ``sequence_ids`` (B, L) behaviour ids, ``timestamps`` (B, L), ``attention_mask`` (B, L) and
    ``user_index`` (B,) (the row of the user in the pre-training dataset).
    """

    max_behaviors: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        ids = pad_sequences([most_recent(f["behavior_ids"], self.max_behaviors) for f in features])  # (B, L)
        if "timestamps" in features[0]:
            times = pad_sequences([most_recent(f["timestamps"], self.max_behaviors) for f in features], length=ids.shape[1])
        else:  # ordinal time
            times = torch.arange(ids.shape[1]).expand_as(ids).clone()
        return {
            "sequence_ids": ids,
            "timestamps": times,
            "attention_mask": (ids != 0).long(),
            "user_index": torch.as_tensor([int(f["user_index"]) for f in features], dtype=torch.long),
        }


__all__ = [
    "BehaviorCatalog",
    "build_behavior_table",
    "pad_sequences",
    "most_recent",
    "collate_histories",
    "UserBertCollator",
    "UserBertPretrainingCollator",
]
