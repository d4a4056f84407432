"""The documentation's Python snippets, run as written: each is found by a line it contains (in README.md or
docs/*.md) and executed in a folder that holds what it names (``outputs/userbert-pretrained``, ...); the test
then checks what the snippet produced."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from userbert_hf import UserBertConfig, UserBertModel
from userbert_hf.processing_userbert import save_processor
from userbert_hf.tokenization_userbert import build_word_tokenizer
from userbert_hf.vocabulary import BehaviorVocabulary

ROOT = Path(__file__).resolve().parents[1]
RAW_IDS = [str(i) for i in (1, 2, 3, 7, 10, 32, 47, 50, 260, 296, 318, 356, 593)]
# Titles of 1 to 7 words: the processor pads each batch's table to its longest title.
TITLES = [" ".join(f"w{i}x{j}" for j in range(1 + n % 7)) for n, i in enumerate(RAW_IDS)]
TINY = dict(hidden_size=16, num_attention_heads=2, word_embedding_size=12, attention_query_size=8, max_words=8,
            max_behaviors=6, dropout=0.0)


def snippet(containing: str) -> str:
    """The one ```python block of README.md or docs/*.md that contains ``containing``."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S):
            if containing in block:
                found.append(block)
    assert len(found) == 1, f"{len(found)} python snippets contain {containing!r}"
    return found[0]


def run_snippet(code: str, cwd: Path, monkeypatch, **names) -> dict:
    """Execute ``code`` in ``cwd`` (relative paths resolve there); its variables come back."""
    monkeypatch.chdir(cwd)
    namespace = dict(names)
    exec(compile(code, "<snippet>", "exec"), namespace)
    return namespace


def save_user_model(folder: Path, preset: str, seed: int = 0) -> UserBertModel:
    """A tiny randomly initialised user model with its processor, as ``userbert pretrain`` writes it."""
    text = preset in ("nrms", "naml", "lstur")
    vocabulary = BehaviorVocabulary(RAW_IDS, TITLES if text else None)
    tokenizer = build_word_tokenizer(vocabulary.texts, max_words=TINY["max_words"]) if text else None
    config = UserBertConfig.from_preset(preset, behavior_vocab_size=len(vocabulary),
                                        word_vocab_size=len(tokenizer) if tokenizer else 2, **TINY)
    torch.manual_seed(seed)
    model = UserBertModel(config).eval()
    model.save_pretrained(folder)
    save_processor(folder, config, vocabulary, tokenizer)
    return model


# ---------------------------------------------------------------------------------------------------------------
# torch.export
# ---------------------------------------------------------------------------------------------------------------
OTHER_BATCHES = [  # shapes the export example never saw: one user, longer titles, more users, one behaviour
    [["296"]],
    [["1", "2", "3", "50"], ["318", "356"], ["593", "7", "10", "32", "47"]],
    [["260"], ["2"], ["3"], ["7"], ["10"]],
]


@pytest.mark.parametrize("preset", ["nrms", "sasrec"])
def test_export_snippet_runs_on_the_processors_batches_of_other_shapes(tmp_path, monkeypatch, preset):
    model = save_user_model(tmp_path / "outputs" / "userbert-pretrained", preset)
    ns = run_snippet(snippet("from torch.export import"), tmp_path, monkeypatch)
    exported, processor = ns["program"].module(), ns["processor"]
    shapes = set()
    for users in OTHER_BATCHES:
        inputs = processor(users)
        shapes.add(tuple(inputs[next(iter(inputs))].shape))
        with torch.no_grad():
            torch.testing.assert_close(exported(**inputs).user_embedding, model(**inputs).user_embedding,
                                       atol=1e-5, rtol=1e-5)
    assert len(shapes) == len(OTHER_BATCHES)  # the table (and for text, its word dimension) changed every time
    if preset == "nrms":
        widths = {processor(users)["behavior_token_ids"].shape[1] for users in OTHER_BATCHES}
        assert len(widths) > 1, widths
    assert ns["embeddings"].shape == (2, TINY["hidden_size"])


# ---------------------------------------------------------------------------------------------------------------
# a fine-tuned head through its auto class
# ---------------------------------------------------------------------------------------------------------------
def test_ctr_head_snippet_scores_candidates_as_the_local_head(tmp_path, monkeypatch):
    from userbert_hf import UserBertForCTRPrediction

    folder = tmp_path / "outputs" / "userbert-ctr"
    save_user_model(folder, "sasrec")  # the processor; the head's weights replace the user model's below
    config = UserBertConfig.from_pretrained(folder)
    torch.manual_seed(1)
    head = UserBertForCTRPrediction(config).eval()
    with torch.no_grad():
        head.ctr_bias.fill_(0.25)
    head.save_pretrained(folder)
    ns = run_snippet(snippet("AutoModelForSequenceClassification.from_pretrained(\"outputs/userbert-ctr\""),
                     tmp_path, monkeypatch)
    assert type(ns["model"]).__name__ == "UserBertForCTRPrediction"
    vocab = ns["processor"].vocabulary
    ids = lambda raw: torch.tensor([[vocab[r] for r in row] for row in raw])  # noqa: E731
    with torch.no_grad():
        expected = head(behavior_ids=ids([["1", "50", "296"], ["2", "3", "7"]]), attention_mask=torch.ones(2, 3),
                        candidate_index=ids([["318", "356"], ["593", "10"]])).logits
    assert ns["logits"].shape == (2, 2) and torch.unique(expected).numel() == 4
    torch.testing.assert_close(ns["logits"], expected, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# the pipeline with batch_size
# ---------------------------------------------------------------------------------------------------------------
def test_pipeline_snippet_batches_users_with_the_same_embeddings(tmp_path, monkeypatch):
    folder = tmp_path / "outputs" / "userbert-pretrained"
    model = save_user_model(folder, "nrms")
    ns = run_snippet(snippet('pipeline("user-feature-extraction"'), tmp_path, monkeypatch)
    assert ns["embed"]._batch_size == 2
    users = [["1", "50", "296"], ["2", "3"], ["296"]]  # the snippet's users, its timestamps applied
    expected = model.encode(users, processor=ns["embed"].processor)
    torch.testing.assert_close(torch.tensor(ns["vectors"]), torch.from_numpy(expected), atol=1e-6, rtol=1e-5)
    one_by_one = ns["pipeline"]("user-feature-extraction", model=str(folder))
    more = [["1", "50"], ["2"], ["3", "7", "10"], ["296", "318"], ["593"]]  # an uneven last batch
    torch.testing.assert_close(torch.tensor(ns["embed"](more, batch_size=3)), torch.tensor(one_by_one(more)),
                               atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# pushing a model with its processor
# ---------------------------------------------------------------------------------------------------------------
PUSH_THEN_LOAD = """
import json, pathlib, sys
import torch
exec(compile(pathlib.Path(sys.argv[1]).read_text(), "<snippet>", "exec"))  # the README's push, as written
from transformers import AutoModel, AutoProcessor
repo = "org/userbert-movielens"
processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
model = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
with torch.no_grad():
    print("RESULT " + json.dumps(model(**processor(json.loads(sys.argv[2]))).user_embedding.tolist()))
"""


def test_push_snippet_pushes_model_and_processor(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from hub_server import FakeHub

    model = save_user_model(tmp_path / "outputs" / "userbert-pretrained", "nrms")
    (tmp_path / "snippet.py").write_text(snippet('processor.push_to_hub("org/userbert-movielens")'))
    users = [["1", "50", "296"], ["2", "3"]]
    with FakeHub() as hub:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
        env.update(hub.client_env(str(tmp_path / "hf_home")), OMP_NUM_THREADS="1")
        done = subprocess.run([sys.executable, "-c", PUSH_THEN_LOAD, str(tmp_path / "snippet.py"), json.dumps(users)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-4000:]
        files = set(hub.files("org/userbert-movielens"))
    assert {"model.safetensors", "config.json", "modeling_userbert.py", "processor_config.json",
            "processing_userbert.py", "behavior_vocab.json", "tokenizer.json"} <= files, files
    pulled = torch.tensor(json.loads(done.stdout.split("RESULT ", 1)[1]))
    from userbert_hf import UserBertProcessor

    with torch.no_grad():
        expected = model(**UserBertProcessor.from_pretrained(tmp_path / "outputs" / "userbert-pretrained")(users))
    torch.testing.assert_close(pulled, expected.user_embedding, atol=1e-6, rtol=1e-5)
