"""Word-level tokenizer for behaviour texts (news titles, movie titles).

UserBERT encodes each behaviour's text as a sequence of at most ``max_words`` word ids. The tokenizer is a
plain ``tokenizers`` word-level model wrapped in a ``transformers.PreTrainedTokenizerFast`` so it is saved
with ``save_pretrained`` next to the model and reloaded with ``AutoTokenizer.from_pretrained``.

Word ids: 0 = ``[PAD]``, 1 = ``[UNK]``, then words by decreasing training frequency. Text is NFD-normalised,
lower-cased and stripped of accents, then split on whitespace and punctuation (each punctuation character is
its own word, as in BERT's pre-tokenizer). No ``[CLS]``/``[SEP]`` tokens are added.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from tokenizers.trainers import WordLevelTrainer
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
PAD_WORD_ID = 0
UNK_WORD_ID = 1

_UNLIMITED_VOCAB = 2**31 - 1  # WordLevelTrainer's own default would cap the vocabulary at 30,000 words


def build_word_tokenizer(
    texts: Iterable[str],
    min_frequency: int = 1,
    vocab_size: int | None = None,
    max_words: int = 30,
) -> PreTrainedTokenizerFast:
    """Train a word-level tokenizer on behaviour texts.

    Args:
        texts: the behaviour texts (e.g. ``BehaviorVocabulary.texts``); empty strings are ignored.
        min_frequency: words seen fewer times become ``[UNK]`` (id 1).
        vocab_size: maximum vocabulary size including ``[PAD]`` and ``[UNK]``; ``None`` keeps every word that
            reaches ``min_frequency``.
        max_words: words kept per text (``model_max_length``; longer texts are truncated when encoding).

    Returns:
        A ``PreTrainedTokenizerFast`` with ``pad_token="[PAD]"`` (id 0), ``unk_token="[UNK]"`` (id 1) and right
        padding.

    Example:
        >>> tok = build_word_tokenizer(["Toy Story (1995)", "Toy soldiers"], max_words=4)
        >>> tok.convert_ids_to_tokens(tok("TOY story!", add_special_tokens=False)["input_ids"])
        ['toy', 'story', '[UNK]']
        >>> encode_behavior_texts(tok, ["Toy Story (1995)", ""], max_words=4).tolist()[1]
        [0, 0, 0, 0]
    """
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be >= 1, got {min_frequency}")
    if vocab_size is not None and vocab_size < 2:
        raise ValueError(f"vocab_size must leave room for [PAD] and [UNK] (>= 2), got {vocab_size}")
    if max_words < 1:
        raise ValueError(f"max_words must be >= 1, got {max_words}")

    backend = Tokenizer(WordLevel(unk_token=UNK_TOKEN))
    backend.normalizer = normalizers.Sequence(
        [normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()]
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = WordLevelTrainer(
        vocab_size=_UNLIMITED_VOCAB if vocab_size is None else vocab_size,
        min_frequency=min_frequency,
        special_tokens=[PAD_TOKEN, UNK_TOKEN],
        show_progress=False,
    )
    backend.train_from_iterator((t for t in texts if t), trainer=trainer)

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=max_words,
        padding_side="right",
        truncation_side="right",
    )
    check_tokenizer_matches(tokenizer, len(tokenizer))
    return tokenizer


def own_word_tokenizer(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """The same word-level tokenizer (its ``tokenizers`` backend: vocabulary, normaliser, pre-tokenizer) with only
    the settings :func:`build_word_tokenizer` writes: what is saved next to a model, so that no key of a loaded
    ``tokenizer_config.json`` (``auto_map``, a ``tokenizer_class`` naming code, a chat template, ...) is copied into
    a folder this package writes."""
    # A copy (the caller's tokenizer is unchanged) keeping its padding: a folder read without tokenizer_config.json
    # (a Hub download of tokenizer.json alone) recovers the [PAD] token from it.
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=int(min(tokenizer.model_max_length, 1_000_000)),
        padding_side="right",
        truncation_side="right",
    )


def encode_behavior_texts(tokenizer: PreTrainedTokenizerFast, texts: list[str], max_words: int) -> np.ndarray:
    """Encode texts to a ``(len(texts), max_words)`` int32 array of word ids, right-padded with 0.

    Texts longer than ``max_words`` words keep their first ``max_words`` words; an empty text is all zeros.
    No special tokens are added.

    Example:
        >>> tok = build_word_tokenizer(["a b c d e"])
        >>> encode_behavior_texts(tok, ["a b c d e", "c", ""], max_words=3).tolist()
        [[2, 3, 4], [4, 0, 0], [0, 0, 0]]
    """
    if max_words < 1:
        raise ValueError(f"max_words must be >= 1, got {max_words}")
    if tokenizer.pad_token_id != PAD_WORD_ID:
        check_tokenizer_matches(tokenizer, len(tokenizer))  # raises with a clear message
    texts = ["" if t is None else str(t) for t in texts]
    if not texts:
        return np.zeros((0, max_words), dtype=np.int32)
    encoded = tokenizer(
        texts,
        add_special_tokens=False,
        truncation=True,
        max_length=max_words,
        padding="max_length",
        padding_side="right",
        return_attention_mask=False,
        return_tensors="np",
    )
    ids = np.asarray(encoded["input_ids"])
    return ids.astype(np.int32, copy=False).reshape(len(texts), max_words)


def check_tokenizer_matches(tokenizer: PreTrainedTokenizerFast, word_vocab_size: int) -> None:
    """Raise ``ValueError`` if ``tokenizer`` cannot feed a model whose word embedding has ``word_vocab_size`` rows.

    Checks that the tokenizer's vocabulary (including added tokens) fits and that its padding id is 0.
    """
    size = len(tokenizer)
    if size > word_vocab_size:
        raise ValueError(
            f"the tokenizer has {size} words but the model's word vocabulary size is {word_vocab_size}: "
            f"set config.word_vocab_size >= {size} (or build the tokenizer with vocab_size={word_vocab_size})"
        )
    if tokenizer.pad_token_id != PAD_WORD_ID:
        raise ValueError(
            f"the tokenizer's pad token {tokenizer.pad_token!r} has id {tokenizer.pad_token_id}, expected "
            f"{PAD_WORD_ID}: behaviour texts are padded with word id 0"
        )
