"""Tests for the word-level behaviour-text tokenizer."""

import numpy as np
import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from userbert_hf.tokenization_userbert import (
    PAD_WORD_ID,
    UNK_WORD_ID,
    build_word_tokenizer,
    check_tokenizer_matches,
    encode_behavior_texts,
)

TITLES = [
    "The Brands Queen Elizabeth, Prince Charles, and Prince Philip Swear By",
    "50 Worst Habits For Belly Fat",
    "It's Been Weeks Since Our Last Café Visit",
    "The Cost of Trump's Aid Freeze in the Trenches of Ukraine's War",
    "Toy Story (1995) Adventure Animation Children Comedy Fantasy",
    "",
]


def words(tokenizer, text):
    return tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False)["input_ids"])


@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer(TITLES, max_words=8)


def test_special_ids_and_settings(tokenizer):
    assert tokenizer.pad_token == "[PAD]" and tokenizer.pad_token_id == PAD_WORD_ID == 0
    assert tokenizer.unk_token == "[UNK]" and tokenizer.unk_token_id == UNK_WORD_ID == 1
    assert tokenizer.convert_ids_to_tokens([0, 1]) == ["[PAD]", "[UNK]"]
    assert tokenizer.model_max_length == 8 and tokenizer.padding_side == "right"


def test_lowercase_accents_and_punctuation(tokenizer):
    assert words(tokenizer, "THE Brands, CAFÉ (1995)") == ["the", "brands", ",", "cafe", "(", "1995", ")"]
    assert words(tokenizer, "Toy Story (1995)") == ["toy", "story", "(", "1995", ")"]
    assert words(tokenizer, "Trump's") == ["trump", "'", "s"]
    assert words(tokenizer, "zebra") == ["[UNK]"]
    assert all(w == w.lower() for w in tokenizer.get_vocab() if w not in ("[PAD]", "[UNK]"))


def test_min_frequency_makes_rare_words_unknown():
    tok = build_word_tokenizer(["red apple", "red pear", "green apple"], min_frequency=2)
    assert set(tok.get_vocab()) == {"[PAD]", "[UNK]", "red", "apple"}
    ids = encode_behavior_texts(tok, ["red pear", "green apple"], max_words=3)
    assert ids[0, 1] == UNK_WORD_ID and ids[1, 0] == UNK_WORD_ID
    assert ids[0, 0] == tok.convert_tokens_to_ids("red") and ids[1, 1] == tok.convert_tokens_to_ids("apple")


def test_vocab_size_keeps_most_frequent():
    tok = build_word_tokenizer(["a a a b b c"], vocab_size=4)
    assert len(tok) == 4 and set(tok.get_vocab()) == {"[PAD]", "[UNK]", "a", "b"}
    unlimited = build_word_tokenizer([" ".join(f"w{i}" for i in range(40_000))])
    assert len(unlimited) == 40_002  # no hidden default cap


def test_encode_shapes_truncation_and_padding(tokenizer):
    ids = encode_behavior_texts(tokenizer, TITLES, max_words=8)
    assert ids.shape == (len(TITLES), 8) and ids.dtype == np.int32
    first = [tokenizer.convert_tokens_to_ids(w) for w in words(tokenizer, TITLES[0])]
    assert len(first) > 8 and ids[0].tolist() == first[:8]  # first 8 words kept
    fifty = words(tokenizer, TITLES[1])
    assert len(fifty) == 6 and ids[1, 6:].tolist() == [0, 0]  # right-padded with 0
    assert ids[5].tolist() == [0] * 8  # empty text
    assert (ids[:5, 0] > 1).all()
    assert encode_behavior_texts(tokenizer, [], max_words=8).shape == (0, 8)
    short = encode_behavior_texts(tokenizer, TITLES, max_words=3)
    assert short.shape == (6, 3) and (short == ids[:, :3]).all()
    longer = encode_behavior_texts(tokenizer, TITLES, max_words=30)  # beyond model_max_length is fine
    assert longer.shape == (6, 30) and (longer[:, :8] == ids).all()


def test_encode_ignores_tokenizer_padding_side(tokenizer):
    tokenizer.padding_side = "left"
    try:
        ids = encode_behavior_texts(tokenizer, ["toy story"], max_words=4)
    finally:
        tokenizer.padding_side = "right"
    assert ids[0, 2:].tolist() == [0, 0] and ids[0, 0] > 1


@pytest.mark.parametrize("loader", [AutoTokenizer.from_pretrained, PreTrainedTokenizerFast.from_pretrained])
def test_save_load_round_trip(tmp_path, tokenizer, loader):
    tokenizer.save_pretrained(tmp_path)
    loaded = loader(str(tmp_path))
    texts = TITLES + ["Unseen WORDS, Café-visit!", "a " * 50]
    assert (encode_behavior_texts(loaded, texts, 8) == encode_behavior_texts(tokenizer, texts, 8)).all()
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert (loaded.pad_token_id, loaded.unk_token_id, loaded.model_max_length) == (0, 1, 8)
    assert loaded.padding_side == "right"


def test_check_tokenizer_matches(tokenizer):
    check_tokenizer_matches(tokenizer, len(tokenizer))
    check_tokenizer_matches(tokenizer, len(tokenizer) + 10)
    with pytest.raises(ValueError, match=f"tokenizer has {len(tokenizer)} words.*word vocabulary size is 5"):
        check_tokenizer_matches(tokenizer, 5)


def test_check_tokenizer_rejects_nonzero_pad(tmp_path, tokenizer):
    tokenizer.save_pretrained(tmp_path)
    other = PreTrainedTokenizerFast.from_pretrained(str(tmp_path), pad_token="[UNK]")
    with pytest.raises(ValueError, match="pad token.*id 1, expected 0"):
        check_tokenizer_matches(other, 10_000)
    with pytest.raises(ValueError, match="expected 0"):
        encode_behavior_texts(other, ["x"], 4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="min_frequency"):
        build_word_tokenizer(["a"], min_frequency=0)
    with pytest.raises(ValueError, match="vocab_size"):
        build_word_tokenizer(["a"], vocab_size=1)
    with pytest.raises(ValueError, match="max_words"):
        build_word_tokenizer(["a"], max_words=0)


def test_on_movielens_texts():
    from userbert_hf.data import load_default_dataset

    vocab = load_default_dataset(verbose=False).vocabulary
    tok = build_word_tokenizer(vocab.texts, min_frequency=2, max_words=30)
    ids = encode_behavior_texts(tok, vocab.texts, max_words=30)
    assert ids.shape == (len(vocab), 30) and (ids[0] == 0).all()
    assert words(tok, vocab.texts[vocab["1"]])[:2] == ["toy", "story"]
    assert 1_000 < len(tok) < 20_000
    assert (ids[1:, 0] > 0).all()  # every movie has a text
