"""UserBertProcessor: raw behaviour ids -> model inputs, saving/loading, AutoProcessor + AutoModel in a fresh process
where userbert_hf is not importable, and agreement with ``userbert embed`` on the same users."""

from __future__ import annotations

import doctest
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoProcessor

from userbert_hf import UserBertCollator, UserBertConfig, UserBertModel, UserBertProcessor, processing_userbert
from userbert_hf.collation import BehaviorCatalog, collate_histories
from userbert_hf.embedding_export import embed_users
from userbert_hf.processing_userbert import save_processor
from userbert_hf.tokenization_userbert import build_word_tokenizer
from userbert_hf.vocabulary import BehaviorVocabulary

from test_collation import _FencedParser

RAW_IDS = [str(i) for i in range(1, 31)]
TITLES = [f"movie {i} {'drama' if i % 2 else 'comedy'} part {i % 7}" for i in range(1, 31)]
TINY = dict(hidden_size=16, num_attention_heads=2, word_embedding_size=12, attention_query_size=8, max_words=8,
            max_behaviors=4, dropout=0.0)


def test_docstring_examples():
    tests = [t for t in doctest.DocTestFinder(parser=_FencedParser()).find(processing_userbert) if t.examples]
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    assert runner.tries >= 5 and runner.failures == 0


def _vocabulary(texts=True) -> BehaviorVocabulary:
    return BehaviorVocabulary(RAW_IDS, TITLES if texts else None)


def _model_folder(tmp_path, preset="nrms", seed=0):
    """A randomly initialised model with its processor saved next to it (what the jobs write)."""
    vocabulary = _vocabulary(texts=preset == "nrms")
    tokenizer = build_word_tokenizer(vocabulary.texts, max_words=8) if preset == "nrms" else None
    config = UserBertConfig.from_preset(preset, behavior_vocab_size=len(vocabulary),
                                        word_vocab_size=len(tokenizer) if tokenizer else 2, **TINY)
    torch.manual_seed(seed)
    model = UserBertModel(config).eval()
    folder = tmp_path / f"{preset}-model"
    model.save_pretrained(folder)
    save_processor(folder, config, vocabulary, tokenizer)
    return folder, model


# ---------------------------------------------------------------------------------------------------------------
# raw ids -> inputs
# ---------------------------------------------------------------------------------------------------------------
def test_unknown_ids_are_dropped_and_counted_and_the_most_recent_kept():
    processor = UserBertProcessor(_vocabulary(texts=False), max_behaviors=3)
    inputs = processor([["1", "x", "2", "3", "4", "y"], [5, "zz"], ["nope"]])
    ids = inputs["behavior_ids"][inputs["behavior_index"]] * inputs["attention_mask"]  # (B, L) vocabulary ids
    assert ids.tolist() == [[2, 3, 4], [5, 0, 0], [0, 0, 0]]  # "1" was the oldest of 4 known: cut
    assert inputs.unknown_behaviors == [2, 1, 1]
    assert inputs["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]


def test_timestamps_order_behaviours_stably_before_truncation():
    processor = UserBertProcessor(_vocabulary(texts=False), max_behaviors=3)
    inputs = processor([["1", "2", "3", "4"]], timestamps=[[30, 10, 30, 20]])
    ids = inputs["behavior_ids"][inputs["behavior_index"]]
    assert ids.tolist() == [[4, 1, 3]]  # times 10, 20, 30, 30 (ties keep input order); "2" (oldest) cut
    with pytest.raises(ValueError, match="user 1: a user has 2 behaviours but 1 timestamps"):
        processor([["1"], ["2", "3"]], timestamps=[[1], [5]])


def test_one_flat_history_is_one_user_and_numpy_output():
    processor = UserBertProcessor(_vocabulary(texts=False))
    flat, nested = processor(["3", "7"], return_tensors="np"), processor([["3", "7"]], return_tensors="np")
    assert isinstance(flat["behavior_index"], np.ndarray)
    for key in nested:
        np.testing.assert_array_equal(flat[key], nested[key])
    with pytest.raises(TypeError):
        processor("3 7")


@pytest.mark.parametrize("texts", [False, True])
def test_processor_equals_the_collators_on_vocabulary_ids(texts):
    """One collation: the processor, UserBertCollator and collate_histories give the same tensors."""
    vocabulary = _vocabulary(texts)
    tokenizer = build_word_tokenizer(vocabulary.texts, max_words=8) if texts else None
    processor = UserBertProcessor(vocabulary, tokenizer, max_behaviors=4, max_words=8)
    raw = [["5", "9", "2", "11", "30", "4"], ["9"], ["12", "5"]]
    ids = [[vocabulary[r] for r in user] for user in raw]
    catalog = BehaviorCatalog.from_vocabulary(vocabulary, tokenizer, 8)
    from_processor = processor(raw)
    from_collator = UserBertCollator(catalog, 4)([{"behavior_ids": seq} for seq in ids])
    from_function, _ = collate_histories(catalog, ids, 4)
    assert set(from_processor.keys()) == set(from_collator.keys()) == set(from_function.keys())
    for key in from_collator:
        torch.testing.assert_close(from_processor[key], from_collator[key], atol=0, rtol=0)
        torch.testing.assert_close(from_function[key], from_collator[key], atol=0, rtol=0)
    assert ("behavior_token_ids" in from_processor) == texts


# ---------------------------------------------------------------------------------------------------------------
# saving and loading
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["nrms", "gru4rec"])
def test_save_and_load_round_trip_with_auto_processor(tmp_path, preset):
    folder, model = _model_folder(tmp_path, preset)
    files = set(os.listdir(folder))
    assert {"processor_config.json", "behavior_vocab.json", "processing_userbert.py", "collation.py",
            "vocabulary.py"} <= files
    assert ("tokenizer.json" in files) == (preset == "nrms")
    saved = json.loads((folder / "processor_config.json").read_text())
    assert saved["auto_map"] == {"AutoProcessor": "processing_userbert.UserBertProcessor"}
    assert saved["max_behaviors"] == 4 and saved["behavior_type"] == model.config.behavior_type
    loaded = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    assert type(loaded) is UserBertProcessor
    assert loaded.vocabulary == _vocabulary(preset == "nrms") and loaded.vocabulary.frozen
    users = [["3", "1", "30", "8", "unknown"], ["2"]]
    original = save_processor(tmp_path / "again", model.config, _vocabulary(preset == "nrms"), loaded.tokenizer)
    for key, value in original(users).items():
        torch.testing.assert_close(loaded(users)[key], value, atol=0, rtol=0)


def test_model_folder_without_processor_config_still_loads(tmp_path):
    """Folders written before the processor existed (config.json + behavior_vocab.json) load too."""
    folder, model = _model_folder(tmp_path, "gru4rec")
    os.remove(folder / "processor_config.json")
    processor = UserBertProcessor.from_pretrained(folder)
    assert processor.max_behaviors == model.config.max_behaviors and processor.behavior_type == "id"


def test_from_config_rejects_a_foreign_vocabulary():
    config = UserBertConfig.from_preset("gru4rec", behavior_vocab_size=5, **TINY)
    with pytest.raises(ValueError, match="does not belong to this model"):
        UserBertProcessor.from_config(config, _vocabulary(texts=False))


# ---------------------------------------------------------------------------------------------------------------
# a fresh process where userbert_hf cannot be imported
# ---------------------------------------------------------------------------------------------------------------
REMOTE_SCRIPT = r"""
import importlib.util, json, sys
sys.path = [p for p in sys.path if 'src' not in p and 'userbert' not in p]
sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f).lower() and 'userbert' not in repr(f).lower()]
sys.modules['userbert_hf'] = None
assert importlib.util.find_spec('userbert_hf') is None, 'userbert_hf still resolvable'
import torch
from transformers import AutoModel, AutoProcessor

args = json.loads(sys.argv[1])
result = {}
for name, folder in args['folders'].items():
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    inputs = processor(args['users'], timestamps=args['timestamps'])
    with torch.no_grad():
        result[name] = {
            'processor_class': type(processor).__module__ + '.' + type(processor).__name__,
            'embedding': model(**inputs).user_embedding.tolist(),
            'encode': model.encode(args['users'], timestamps=args['timestamps'], batch_size=2).tolist(),
            'unknown': inputs.unknown_behaviors,
        }
result['package_modules'] = sorted(m for m, v in sys.modules.items() if m.startswith('userbert_hf') and v is not None)
print('RESULT ' + json.dumps(result))
"""


def run_without_package(tmp_path, args: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_MODULES_CACHE")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    work = tmp_path / "cwd"
    work.mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, "-c", REMOTE_SCRIPT, json.dumps(args)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith("RESULT ")][-1][7:])


USERS = [["30", "3", "1", "unknown", "8"], ["2", "5"], ["17", "22", "9", "4", "11", "6", "13"]]
TIMES = [[50, 10, 20, 30, 40], [1, 1], [7, 6, 5, 4, 3, 2, 1]]


@pytest.mark.slow
def test_auto_processor_and_auto_model_without_the_package_equal_userbert_embed(tmp_path):
    """A fresh process without userbert_hf: AutoProcessor + AutoModel on raw ids (and model.encode) give the
    embeddings ``userbert embed`` gives for the same users read from an event log, for text and ID models."""
    folders = {p: _model_folder(tmp_path, p, seed=i)[0] for i, p in enumerate(["nrms", "gru4rec"])}
    result = run_without_package(tmp_path, {"folders": {k: str(v) for k, v in folders.items()},
                                            "users": USERS, "timestamps": TIMES})
    assert result["package_modules"] == []
    log = tmp_path / "events.csv"
    rows = [f"u{i},{item},{t}" for i, (user, times) in enumerate(zip(USERS, TIMES)) for item, t in zip(user, times)]
    log.write_text("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    for name, folder in folders.items():
        got = result[name]
        assert got["processor_class"].startswith("transformers_modules.")
        assert got["unknown"] == [1, 0, 0]
        embedded = embed_users(str(folder), str(log), batch_size=2)
        assert embedded["user_id"] == ["u0", "u1", "u2"]
        expected = torch.tensor(embedded["embedding"])
        torch.testing.assert_close(torch.tensor(got["embedding"]), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.tensor(got["encode"]), expected, atol=1e-5, rtol=0)
        assert expected.abs().sum(-1).min() > 0


@pytest.mark.slow
def test_pretraining_job_folder_loads_with_auto_processor_without_the_package(tmp_path):
    """The folder ``userbert pretrain`` writes carries the processor: a fresh process without the package embeds
    raw-id histories equal to ``userbert embed`` on the same users."""
    from userbert_hf.pretraining.job import main

    folder = tmp_path / "pretrained"
    main(["--max_steps", "1", "--preset", "gru4rec", "--behavior_pool_size", "20", "--sequence_pool_size", "4",
          "--hidden_size", "8", "--max_behaviors", "8", "--per_device_train_batch_size", "8", "--logging_steps", "1",
          "--output_dir", str(folder), "--report_to", "none", "--disable_tqdm", "true", "--save_strategy", "no"])
    users = [["1", "50", "296", "1196"], ["2571", "260", "not-a-movie"]]
    times = [[1, 2, 3, 4], [1, 2, 3]]
    result = run_without_package(tmp_path, {"folders": {"job": str(folder)}, "users": users, "timestamps": times})
    log = tmp_path / "events.csv"
    rows = [f"u{i},{item},{t}" for i, (user, ts) in enumerate(zip(users, times)) for item, t in zip(user, ts)]
    log.write_text("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    expected = torch.tensor(embed_users(str(folder), str(log))["embedding"])
    assert result["job"]["unknown"] == [0, 1]
    torch.testing.assert_close(torch.tensor(result["job"]["embedding"]), expected, atol=1e-5, rtol=0)


def test_top_level_exports_are_lazy_for_the_trainer():
    """``from userbert_hf import UserBertTrainer, UserBertProcessor, ...`` works, and importing the package for
    inference does not import the Trainer."""
    code = ("import sys, userbert_hf; before = 'transformers.trainer' in sys.modules\n"
            "from userbert_hf import (UserBertTrainer, UserBertTrainingArguments, MediumHardNegativeSampler,\n"
            "    RandomNegativeSampler, HardestNegativeSampler, BehaviorCatalog, UserBertProcessor, UserBertCollator)\n"
            "print(before, UserBertTrainer.__module__, UserBertProcessor.__module__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False", "userbert_hf.pretraining.trainer", "userbert_hf.processing_userbert"]
