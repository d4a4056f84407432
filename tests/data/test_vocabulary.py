"""BehaviorVocabulary: ids, texts, save / load, frozen vocabularies at loading time."""

import json

import pytest

from userbert_hf.data import load_event_log, load_movielens
from userbert_hf.vocabulary import PAD_ID, PAD_TOKEN, BehaviorVocabulary
from data_helpers import by_user, movielens_full, write  # noqa: F401 (fixtures)


# ------------------------------------------------------------------------------------------ vocabulary
def test_vocabulary_basics():
    vocab = BehaviorVocabulary()
    assert len(vocab) == 1 and vocab.raw_id(PAD_ID) == PAD_TOKEN and not vocab.has_text
    assert vocab.add("a", "Alpha") == 1
    assert vocab.add("b") == 2
    assert vocab.add("a", "ignored") == 1  # existing id keeps its text
    assert vocab.add("b", "Beta") == 2  # text filled in when it had none
    assert vocab.texts == ["", "Alpha", "Beta"] and vocab.has_text
    assert "a" in vocab and "z" not in vocab and vocab.get("z") is None and vocab.get("z", -1) == -1
    with pytest.raises(KeyError, match="unknown behaviour id 'z'"):
        vocab["z"]
    with pytest.raises(ValueError, match="reserved"):
        vocab.add(PAD_TOKEN)
    with pytest.raises(TypeError):
        vocab.add(7)
    vocab.freeze()
    with pytest.raises(KeyError, match="frozen"):
        vocab.add("c")
    assert vocab.add("a") == 1 and len(vocab) == 3


def test_vocabulary_save_load_round_trip(tmp_path, movielens_full):
    path = movielens_full.vocabulary.save(tmp_path)
    assert path.name == "behavior_vocab.json"
    payload = json.loads(path.read_text())
    assert payload["format"] == "userbert-behavior-vocab" and payload["version"] == 1
    assert payload["ids"][0] == PAD_TOKEN and len(payload["texts"]) == len(payload["ids"])
    loaded = BehaviorVocabulary.load(tmp_path)
    assert loaded == movielens_full.vocabulary and BehaviorVocabulary.load(path) == loaded
    # Reloading the data with the saved (frozen) vocabulary maps every id the same way.
    loaded.freeze()
    again = load_movielens(vocabulary=loaded, max_behaviors=None, verbose=False)
    assert again.users.to_dict() == movielens_full.users.to_dict()
    assert len(loaded) == 9_725 and again.summary.skipped == {}


def test_vocabulary_without_text_saves_null(tmp_path):
    BehaviorVocabulary(["x", "y"]).save(tmp_path)
    assert json.loads((tmp_path / "behavior_vocab.json").read_text())["texts"] is None
    assert BehaviorVocabulary.load(tmp_path).texts == ["", "", ""]


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not a valid JSON"),
        (json.dumps({"format": "other", "version": 1, "ids": ["[PAD]"]}), "'format'"),
        (json.dumps({"format": "userbert-behavior-vocab", "version": 9, "ids": ["[PAD]"]}), "version"),
        (json.dumps({"format": "userbert-behavior-vocab", "version": 1, "ids": ["a"]}), "padding token"),
        (json.dumps({"format": "userbert-behavior-vocab", "version": 1, "ids": ["[PAD]", "a", "b", "a"]}),
         "duplicate behaviour id 'a'"),
        (json.dumps({"format": "userbert-behavior-vocab", "version": 1, "ids": ["[PAD]", "a"], "texts": [""]}),
         "'texts'"),
        (json.dumps({"format": "userbert-behavior-vocab", "version": 1, "ids": ["[PAD]", 3]}), "ids\\[1\\]"),
    ],
)
def test_vocabulary_load_rejects_malformed(tmp_path, content, message):
    path = write(tmp_path / "behavior_vocab.json", content)
    with pytest.raises(ValueError, match=message) as info:
        BehaviorVocabulary.load(path)
    assert str(path) in str(info.value)


def test_vocabulary_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="behavior_vocab.json"):
        BehaviorVocabulary.load(tmp_path)


def test_frozen_vocabulary_skips_unknown_ids(tmp_path):
    train = load_event_log(write(tmp_path / "train.csv", "user_id,item_id,timestamp\nu1,a,1\nu1,b,2\nu2,c,3\n"),
                           verbose=False)
    vocab = train.vocabulary
    vocab.freeze()
    finetune = write(tmp_path / "finetune.csv",
                     "user_id,item_id,timestamp\nu7,b,5\nu7,new1,6\nu7,a,7\nu8,new2,1\nu9,c,2\n")
    data = load_event_log(finetune, vocabulary=vocab, verbose=False, strict=True)  # strict does not raise on it
    assert len(vocab) == 4 and "new1" not in vocab
    assert by_user(data) == {"u7": ["b", "a"], "u9": ["c"]}
    assert data.users[0]["behavior_ids"] == [vocab["b"], vocab["a"]]
    assert data.summary.skipped == {"unknown_behavior": 2, "user_without_behaviors": 1}
    assert data.summary.examples["unknown_behavior"][0].startswith(f"{finetune}:3: behaviour 'new1'")
    assert "u8" in data.summary.examples["user_without_behaviors"][0]


def test_unfrozen_vocabulary_is_extended(tmp_path):
    vocab = BehaviorVocabulary(["b"], ["Bee"])
    data = load_event_log(write(tmp_path / "log.csv", "user_id,item_id,timestamp\nu1,a,1\nu1,b,2\n"),
                          vocabulary=vocab, verbose=False)
    assert data.vocabulary is vocab and vocab.raw_ids == [PAD_TOKEN, "b", "a"]
    assert data.users[0]["behavior_ids"] == [2, 1]
