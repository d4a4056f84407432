"""End-to-end Hub round trips against a local fake Hub (``tests/hub_server.py``), without internet.

The real ``huggingface_hub`` / ``transformers`` client code runs in fresh subprocesses whose environment points
``HF_ENDPOINT`` at the fake Hub before anything is imported; the test process only serves the Hub, pre-trains the
tiny model and computes the reference embeddings.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hub_server import FakeHub

pytestmark = pytest.mark.slow

REPO = "org/userbert-test"
TRAINER_REPO = "org/userbert-trainer"
# Fixed users, as raw MovieLens movie ids (oldest first); resolved through whichever vocabulary a process loaded.
RAW_USERS = [
    ["1", "2", "3", "6", "10", "32", "47", "50"],
    ["260", "296", "318", "356", "593"],
    ["2571", "1196"],
]


# ---------------------------------------------------------------------------------------------------------------
# Fixtures: the fake Hub, a tiny pre-trained folder and the reference embeddings of the local model
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hub():
    with FakeHub() as server:
        yield server


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny model pre-trained by the real job (2 steps on the bundled MovieLens), its fixed inputs and the user
    embeddings the local model gives for them."""
    from userbert_hf import UserBertModel
    from userbert_hf.assets import build_catalog, load_user_model_assets
    from userbert_hf.collation import UserBertCollator
    from userbert_hf.pretraining.job import main

    work = tmp_path_factory.mktemp("hub")
    folder = work / "userbert-tiny"
    main([
        "--max_steps", "2", "--behavior_pool_size", "50", "--sequence_pool_size", "10", "--hidden_size", "16",
        "--attention_query_size", "8", "--num_attention_heads", "2", "--logging_steps", "1", "--save_steps", "2",
        "--output_dir", str(folder), "--report_to", "none", "--disable_tqdm", "true",
    ])
    model = UserBertModel.from_pretrained(folder).eval()
    vocabulary, tokenizer = load_user_model_assets(str(folder), model.config)
    batch = UserBertCollator(build_catalog(vocabulary, model.config, tokenizer))(
        [{"behavior_ids": [vocabulary[raw] for raw in user]} for user in RAW_USERS]
    )
    with torch.no_grad():
        embeddings = model(**batch).user_embedding
    (work / "users.json").write_text(json.dumps(RAW_USERS))
    torch.save(dict(batch), work / "batch.pt")
    return {
        "work": work, "folder": folder, "embeddings": embeddings, "vocab_size": len(vocabulary),
        "users": work / "users.json", "batch": work / "batch.pt",
    }


def run_client(hub: FakeHub, script: str, hf_home: Path, *args, extra_env=None, endpoint=None, timeout=120):
    """Run ``script`` in a fresh interpreter configured for the fake Hub; return its stdout's last line as JSON."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(hub.client_env(str(hf_home)))
    env["TOKENIZERS_PARALLELISM"] = "false"
    if endpoint is not None:
        env["HF_ENDPOINT"] = endpoint
    env.update(extra_env or {})
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
        env=env, capture_output=True, text=True, timeout=timeout, cwd=hf_home,
    )
    if result.returncode != 0:
        output = f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        raise AssertionError(f"client process failed ({result.returncode}):\n{output}")
    return json.loads(result.stdout.strip().splitlines()[-1])


PUSH = """
    import json, sys
    from huggingface_hub import HfApi
    from userbert_hf import UserBertForPreTraining

    folder, repo = sys.argv[1], sys.argv[2]
    api = HfApi()
    user = api.whoami()["name"]
    api.create_repo(repo, exist_ok=True)
    # The whole Hub-ready folder written by the pre-training job (model, code, vocabulary, tokenizer, card) ...
    first = api.upload_folder(folder_path=folder, repo_id=repo, ignore_patterns=["checkpoint-*", "training_args.bin"])
    # ... and the model's own push_to_hub (same weights: the LFS object is already on the Hub).
    model = UserBertForPreTraining.from_pretrained(folder)
    second = model.push_to_hub(repo, commit_message="push_to_hub of the pre-trained model")
    print(json.dumps({"user": user, "commits": [first.oid, second.oid], "files": api.list_repo_files(repo)}))
"""

LOAD = """
    import json, sys
    import torch
    import userbert_hf
    from huggingface_hub import ModelCard
    from transformers import AutoConfig, AutoModel
    from userbert_hf import UserBertModel
    from userbert_hf.assets import build_catalog, load_user_model_assets
    from userbert_hf.collation import UserBertCollator

    repo, users, batch_file = sys.argv[1], json.load(open(sys.argv[2])), sys.argv[3]
    config = AutoConfig.from_pretrained(repo)
    vocabulary, tokenizer = load_user_model_assets(repo, config)
    batch = UserBertCollator(build_catalog(vocabulary, config, tokenizer))(
        [{"behavior_ids": [vocabulary[raw] for raw in user]} for user in users]
    )
    expected = torch.load(batch_file)
    out = {"vocab_size": len(vocabulary),
           "same_batch": sorted(batch) == sorted(expected) and all(torch.equal(batch[k], expected[k]) for k in batch)}
    for name, cls in (("auto", AutoModel), ("userbert", UserBertModel)):
        model = cls.from_pretrained(repo).eval()
        out[name + "_class"] = f"{type(model).__module__}.{type(model).__name__}"
        with torch.no_grad():
            out[name] = model(**batch).user_embedding.tolist()
    for extra in sys.argv[4:]:
        if extra == "card":  # the README as ModelCard.load downloads it
            card = ModelCard.load(repo)
            out["card_results"] = [(r.metric_name, r.metric_value) for r in card.data.eval_results or []]
        elif extra.startswith("missing="):  # a repo this cache never saw
            try:
                AutoModel.from_pretrained(extra.removeprefix("missing="))
            except OSError as error:
                out["missing_error"] = [type(error).__name__, str(error)]
    print(json.dumps(out))
"""

REMOTE_CODE = """
    import sys
    sys.modules["userbert_hf"] = None  # the package is not importable here: only the Hub's copy of the code is
    try:
        import userbert_hf
    except ImportError:
        pass
    else:
        raise SystemExit("userbert_hf should not be importable")
    import json
    import torch
    from transformers import AutoConfig, AutoModel

    repo, batch = sys.argv[1], torch.load(sys.argv[2])
    config = AutoConfig.from_pretrained(repo, trust_remote_code=True)
    model = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
    with torch.no_grad():
        embedding = model(**batch).user_embedding
    print(json.dumps({"class": f"{type(model).__module__}.{type(model).__name__}",
                      "config_class": type(config).__module__, "embedding": embedding.tolist()}))
"""

def assert_embeddings_equal(actual, expected: torch.Tensor):
    torch.testing.assert_close(torch.tensor(actual), expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Tests (in order: push, download, remote code, offline, trainer, card)
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pushed(hub, pretrained, tmp_path_factory):
    """The pre-trained folder pushed to ``REPO`` by ``upload_folder`` and the model's ``push_to_hub``."""
    return run_client(hub, PUSH, tmp_path_factory.mktemp("hf_push"), pretrained["folder"], REPO)


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    """The HF_HOME of the process that downloads ``REPO`` (the offline checks reuse its cache)."""
    return tmp_path_factory.mktemp("hf_home")


def test_push_then_load_gives_same_embeddings(hub, pretrained, pushed, hf_home):
    assert pushed["user"] == "test-user"
    for name in ("config.json", "model.safetensors", "modeling_userbert.py", "configuration_userbert.py",
                 "behavior_vocab.json", "tokenizer.json", "README.md", "training_results.json"):
        assert name in pushed["files"], name
    assert not any(f.startswith("checkpoint-") for f in pushed["files"])
    repo = hub.repo(REPO)
    assert repo.branches["main"] == pushed["commits"][1] and len(pushed["commits"][0]) == 40
    # initial .gitattributes commit, upload_folder, and push_to_hub when it changes a file (config.json is written from
    # an allow-list, so the model's own push of the same folder may change nothing)
    assert len(repo.commits) in (2, 3)
    config = json.loads(hub.read(REPO, "config.json"))
    assert config["auto_map"]["AutoModel"] == "modeling_userbert.UserBertModel"
    # model.safetensors travelled through the LFS batch API, once for two commits (same weights).
    weights = (pretrained["folder"] / "model.safetensors").read_bytes()
    sha256 = hashlib.sha256(weights).hexdigest()
    assert repo.resolve("main").files["model.safetensors"].lfs_sha256 == sha256
    assert sum(path == f"/lfs-upload/{sha256}" for _, _, path in hub.requests) == 1
    assert hub.read(REPO, "model.safetensors") == weights

    loaded = run_client(hub, LOAD, hf_home, REPO, pretrained["users"], pretrained["batch"], "card")
    assert loaded["vocab_size"] == pretrained["vocab_size"]
    assert loaded["same_batch"], "the Hub's vocabulary and tokenizer must give the local model inputs"
    assert loaded["auto_class"] == loaded["userbert_class"] == "userbert_hf.modeling_userbert.UserBertModel"
    assert_embeddings_equal(loaded["auto"], pretrained["embeddings"])
    assert_embeddings_equal(loaded["userbert"], pretrained["embeddings"])
    # The card downloaded by ModelCard.load carries the job's metrics in its model-index.
    metrics = json.loads((pretrained["folder"] / "training_results.json").read_text())["metrics"]
    assert loaded["card_results"]
    assert all(value == pytest.approx(metrics[name], abs=1e-6) for name, value in loaded["card_results"])
    downloaded = list((hf_home / "hub" / "models--org--userbert-test" / "snapshots").glob("*/behavior_vocab.json"))
    assert len(downloaded) == 1 and downloaded[0].parent.name == repo.branches["main"]
    assert not hub.unhandled, hub.unhandled


def test_trust_remote_code_without_the_package(hub, pretrained, pushed, tmp_path_factory):
    out = run_client(hub, REMOTE_CODE, tmp_path_factory.mktemp("hf_remote"), REPO, pretrained["batch"])
    assert out["class"].startswith("transformers_modules.") and out["class"].endswith(".UserBertModel")
    assert out["config_class"].startswith("transformers_modules.")
    assert_embeddings_equal(out["embedding"], pretrained["embeddings"])


def test_offline_and_unreachable_hub_use_the_cache(hub, pretrained, pushed, hf_home):
    if not list(hf_home.glob("hub/models--org--userbert-test/snapshots/*/model.safetensors")):
        run_client(hub, LOAD, hf_home, REPO, pretrained["users"], pretrained["batch"])  # fill the cache first
    home = hf_home
    served_before = len(hub.requests)
    out = run_client(
        hub, LOAD, home, REPO, pretrained["users"], pretrained["batch"], "missing=org/never-downloaded",
        extra_env={"HF_HUB_OFFLINE": "1"},
    )
    assert len(hub.requests) == served_before, "an offline process must not contact the Hub"
    assert out["same_batch"] and out["vocab_size"] == pretrained["vocab_size"]
    assert_embeddings_equal(out["auto"], pretrained["embeddings"])
    assert_embeddings_equal(out["userbert"], pretrained["embeddings"])
    # A repo never downloaded gives a clear error offline (transformers' message names the cache and offline mode).
    kind, message = out["missing_error"]
    assert kind == "OSError" and "couldn't find them in the cached files" in message and "offline" in message, message

    # With the Hub unreachable (a closed port) the same cache is used, with no error.
    stopped = FakeHub()
    stopped_url = stopped.url
    stopped.stop()
    out = run_client(hub, LOAD, home, REPO, pretrained["users"], pretrained["batch"], endpoint=stopped_url)
    assert out["same_batch"]
    assert_embeddings_equal(out["auto"], pretrained["embeddings"])


TRAIN_AND_PUSH = """
    import json, sys
    import datasets
    from userbert_hf import UserBertConfig, UserBertForPreTraining
    from userbert_hf.collation import BehaviorCatalog
    from userbert_hf.pretraining.trainer import UserBertTrainer, UserBertTrainingArguments

    output_dir, repo = sys.argv[1], sys.argv[2]
    users = datasets.Dataset.from_dict({
        "behavior_ids": [[1 + (u * 7 + i) % 29 for i in range(12)] for u in range(16)],
        "timestamps": [list(range(12)) for _ in range(16)],
    })
    config = UserBertConfig.from_preset("gru4rec", behavior_vocab_size=30, hidden_size=8, max_behaviors=12)
    args = UserBertTrainingArguments(
        output_dir, max_steps=2, per_device_train_batch_size=8, save_steps=1, logging_steps=1, report_to="none",
        behavior_pool_size=10, sequence_pool_size=4, use_cpu=True, disable_tqdm=True,
        push_to_hub=True, hub_model_id=repo, hub_strategy="every_save", hub_always_push=True,
    )
    trainer = UserBertTrainer(model=UserBertForPreTraining(config), args=args, train_dataset=users,
                              catalog=BehaviorCatalog(30))
    trainer.train()
    final = trainer.push_to_hub(commit_message="End of training")
    print(json.dumps({"hub_model_id": trainer.hub_model_id, "final": final.oid}))
"""


def test_trainer_pushes_checkpoints_and_final_model(hub, tmp_path_factory):
    home = tmp_path_factory.mktemp("hf_trainer")
    out = run_client(hub, TRAIN_AND_PUSH, home, home / "out", TRAINER_REPO)
    assert out["hub_model_id"] == TRAINER_REPO
    repo = hub.repo(TRAINER_REPO)
    titles = [c.title for c in repo.commits.values()]
    assert any(t.startswith("Training in progress, step") for t in titles), titles
    assert titles[-1] == "End of training" and repo.branches["main"] == out["final"]
    files = hub.files(TRAINER_REPO)
    for name in ("config.json", "model.safetensors", "modeling_userbert.py", "configuration_userbert.py", "README.md"):
        assert name in files, name
    assert not any(f.startswith("checkpoint-") for f in files)
    config = json.loads(hub.read(TRAINER_REPO, "config.json"))
    assert config["model_type"] == "userbert" and "AutoModel" in config["auto_map"]
    assert not hub.unhandled, hub.unhandled


def test_pushed_model_card_has_model_index_and_cites_the_paper(hub, pretrained, pushed):
    from huggingface_hub import ModelCard

    # The push sent the README through the Hub's metadata check (model-index schema) before committing it.
    assert any(route == "/api/validate-yaml" for _, route, _ in hub.requests)
    card = ModelCard(hub.read(REPO, "README.md").decode())
    results = card.data.eval_results
    assert results, "the card must carry a model-index with results"
    expected = json.loads((pretrained["folder"] / "training_results.json").read_text())["metrics"]
    for result in results:
        assert result.metric_value == pytest.approx(expected[result.metric_name], abs=1e-6)
        assert result.dataset_split == "held_out" and result.metric_type in ("loss", "accuracy", "recall@20")
    assert "eval_mbp_loss" in {r.metric_name for r in results}
    assert all(r.metric_name.startswith("eval_") for r in results)  # training losses stay out of model-index
    assert "Wu" in card.text and "Contrastive User Model Pre-training" in card.text
    assert "2202.07605" in card.text  # the unrelated Rakuten UserBERT is named apart
    assert card.data.library_name == "transformers"


def test_fake_hub_answers_as_the_hub_does(hub, tmp_path, monkeypatch):
    """In-process checks of uploads, resolve headers and the error mapping (HfApi, hf_hub_download and
    get_hf_file_metadata take the endpoint as an argument)."""
    from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # LFS files through the LFS batch API

    api = HfApi(endpoint=hub.url, token="dummy-token")
    repo_id = api.create_repo("org/errors").repo_id
    assert repo_id == "org/errors" and api.create_repo("org/errors", exist_ok=True).repo_id == repo_id
    bad_card = b"---\nmodel-index:\n- name: m\n  results:\n  - task: {}\n    metrics: []\n---\n# card\n"
    with pytest.raises(ValueError, match="Invalid metadata in README.md"):
        api.upload_file(path_or_fileobj=bad_card, path_in_repo="README.md", repo_id=repo_id)
    api.upload_file(path_or_fileobj=b"{}", path_in_repo="sub/dir/a.json", repo_id=repo_id)
    top = sorted(entry.path for entry in api.list_repo_tree(repo_id))
    assert top == [".gitattributes", "sub"]
    nested = [entry.path for entry in api.list_repo_tree(repo_id, path_in_repo="sub", recursive=True)]
    assert nested == ["sub/dir", "sub/dir/a.json"]
    download = dict(endpoint=hub.url, token="dummy-token", cache_dir=tmp_path)
    assert Path(hf_hub_download(repo_id, "sub/dir/a.json", **download)).read_bytes() == b"{}"
    weights = bytes(range(256)) * 40
    commit = api.upload_file(path_or_fileobj=weights, path_in_repo="w.safetensors", repo_id=repo_id)
    meta = get_hf_file_metadata(hf_hub_url(repo_id, "w.safetensors", endpoint=hub.url), token="dummy-token")
    assert (meta.commit_hash, meta.etag, meta.size) == (commit.oid, hashlib.sha256(weights).hexdigest(), len(weights))
    assert Path(hf_hub_download(repo_id, "w.safetensors", **download)).read_bytes() == weights
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "missing.json", **download)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/absent", "config.json", **download)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, "sub/dir/a.json", revision="0" * 40, **download)
    with pytest.raises(RepositoryNotFoundError):
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="org/absent")


def test_fake_hub_describes_lfs_files_as_the_hub_does(hub, monkeypatch):
    """Tree and paths-info entries give an LFS file's ``oid`` (sha256), ``size`` and ``pointerSize``, the repo info's
    siblings its ``sha256``: what ``list_repo_tree``, ``get_paths_info`` and ``model_info(files_metadata=True)``
    read (a push from a model loaded by Hub id reads them)."""
    from huggingface_hub import HfApi, constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    api = HfApi(endpoint=hub.url, token="dummy-token")
    repo_id = api.create_repo("org/lfs-metadata").repo_id
    weights = bytes(range(256)) * 40
    api.upload_file(path_or_fileobj=weights, path_in_repo="w.safetensors", repo_id=repo_id)
    api.upload_file(path_or_fileobj=b"{}", path_in_repo="sub/config.json", repo_id=repo_id)
    sha256, pointer = hashlib.sha256(weights).hexdigest(), hub.repo(repo_id).resolve("main").files["w.safetensors"]
    described = []
    (tree_file,) = [e for e in api.list_repo_tree(repo_id) if e.path == "w.safetensors"]
    described.append(tree_file.lfs)
    infos = {e.path: e for e in api.get_paths_info(repo_id, ["w.safetensors", "sub", "sub/config.json", "absent"])}
    assert set(infos) == {"w.safetensors", "sub", "sub/config.json"}
    assert infos["sub/config.json"].lfs is None and infos["sub/config.json"].size == 2
    described.append(infos["w.safetensors"].lfs)
    (sibling,) = [s for s in api.model_info(repo_id, files_metadata=True).siblings if s.rfilename == "w.safetensors"]
    described.append(sibling.lfs)
    for lfs in described:
        assert (lfs.sha256, lfs.size, lfs.pointer_size) == (sha256, len(weights), pointer.pointer_size)
    assert not hub.unhandled, hub.unhandled
