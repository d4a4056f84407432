"""What the jobs save and push names only their own code: a foreign `auto_map` never survives (issue 10 item 3),
and `--push_to_hub` from `userbert pretrain` and `userbert finetune` pushes the Hub-ready folder, which loads in
a fresh process where the package cannot be imported (issue 12 item 1)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hub_server import FakeHub
from job_helpers import tiny_pretrain_args
from userbert_hf import (
    UserBertConfig,
    UserBertForCTRPrediction,
    UserBertForPreTraining,
    UserBertForUserClassification,
    UserBertModel,
)

EVIL = {
    "AutoConfig": "org/evil-repo--configuration_evil.EvilConfig",
    "AutoModel": "org/evil-repo--modeling_evil.EvilModel",
    "AutoModelForPreTraining": "modeling_evil.EvilModel",
    "AutoTokenizer": ["org/evil-repo--tokenization_evil.EvilTokenizer", None],
}
OURS = {"AutoConfig": "configuration_userbert.UserBertConfig", "AutoModel": "modeling_userbert.UserBertModel"}
RAW_USERS = [["1", "2", "3", "6", "10", "32", "47", "50"], ["260", "296", "318", "356", "593"], ["2571", "1196"]]


def _own_code_only(config_path: Path) -> dict:
    auto_map = json.loads(config_path.read_text())["auto_map"]
    for key, ref in auto_map.items():
        refs = ref if isinstance(ref, list) else [ref]
        assert all(r is None or ("--" not in r and r.split(".")[0] in {
            "configuration_userbert", "modeling_userbert", "processing_userbert"}) for r in refs), (key, ref)
        for r in refs:
            if r is not None:
                assert (config_path.parent / f"{r.split('.')[0]}.py").is_file(), r
    return auto_map


@pytest.mark.parametrize("cls", [UserBertModel, UserBertForPreTraining, UserBertForCTRPrediction,
                                 UserBertForUserClassification])
def test_save_pretrained_drops_a_foreign_auto_map(tmp_path, cls):
    config = UserBertConfig.from_preset("gru4rec", behavior_vocab_size=12, hidden_size=8, max_behaviors=6)
    config.auto_map = dict(EVIL)
    cls(config).save_pretrained(tmp_path / "model")
    auto_map = _own_code_only(tmp_path / "model" / "config.json")
    assert auto_map.items() >= OURS.items()
    config.save_pretrained(tmp_path / "config-only")
    assert "evil" not in (tmp_path / "config-only" / "config.json").read_text()


@pytest.mark.slow
def test_continued_pretraining_from_a_folder_with_a_foreign_auto_map(tmp_path):
    from userbert_hf.pretraining import job as pretraining_job

    base = tmp_path / "base"
    pretraining_job.main(tiny_pretrain_args(base, "--max_steps", "1"))
    config_path = base / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "auto_map": EVIL}))
    out = tmp_path / "continued"
    pretraining_job.main(tiny_pretrain_args(out, "--max_steps", "1", "--model_name_or_path", str(base)))
    for path in [out / "config.json", *out.glob("checkpoint-*/config.json")]:
        assert _own_code_only(path).items() >= OURS.items(), path
        assert "evil" not in path.read_text(), path


# ------------------------------------------------------------------------------------------------ pushes
LOAD_WITHOUT_PACKAGE = """
    import sys
    sys.modules["userbert_hf"] = None  # only the Hub's copy of the code can be used here
    import json
    import torch
    from transformers import AutoModel, AutoProcessor

    SCORE

    # One process loads every repo of the list (one interpreter start for all): one JSON line per entry.
    CANDIDATES = [['1196', '2571'], ['32', '47']]
    for entry in json.loads(sys.argv[1]):
        repo, users = entry["repo"], entry["users"]
        processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
        model = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
        with torch.no_grad():
            embedding = model(**processor(users, return_tensors="pt")).user_embedding
        out = {"repo": repo, "class": f"{type(model).__module__}.{type(model).__name__}",
               "embedding": embedding.tolist()}
        if entry.get("head"):  # a fine-tuned CTR repo: its head, through its auto class, scores candidates
            import transformers
            head = getattr(transformers, entry["head"]).from_pretrained(repo, trust_remote_code=True).eval()
            with torch.no_grad():
                logits = score(processor, head, entry["head_users"], CANDIDATES)
            out.update(head_class=f"{type(head).__module__}.{type(head).__name__}", logits=logits.tolist())
        print(json.dumps(out))
"""
SCORE = """
def score(processor, head, users, candidates):
    # candidates (users, C) raw ids: one more row of the batch puts them in the behaviour table
    batch = processor(users + [[c for row in candidates for c in row]])
    index, mask = batch.pop("behavior_index"), batch.pop("attention_mask")
    candidate_index = index[-1, : mask[-1].sum()].view(len(users), -1)  # (users, C) rows of the table
    return head(**batch, behavior_index=index[:-1], attention_mask=mask[:-1], candidate_index=candidate_index).logits
"""
LOAD_WITHOUT_PACKAGE = LOAD_WITHOUT_PACKAGE.replace("    SCORE\n", textwrap.indent(textwrap.dedent(SCORE), "    "))
# Two users of RAW_USERS' first five behaviours each score two candidates (raw MovieLens ids).
CANDIDATES = [["1196", "2571"], ["32", "47"]]
HEAD_USERS = [RAW_USERS[0][:5], RAW_USERS[1][:5]]


def _client(hub: FakeHub, hf_home: Path, *command: str, timeout: int = 400) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(hub.client_env(str(hf_home)), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, *command], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=hf_home)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return done.stdout


def _local_embeddings(folder: Path) -> torch.Tensor:
    from userbert_hf.processing_userbert import UserBertProcessor

    processor = UserBertProcessor.from_pretrained(folder)
    model = UserBertModel.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(**processor(RAW_USERS, return_tensors="pt")).user_embedding


def _assert_pushed_folder(hub: FakeHub, repo: str, folder: Path, job: str) -> None:
    files = set(hub.files(repo))
    expected = {"config.json", "model.safetensors", "modeling_userbert.py", "configuration_userbert.py",
                "behavior_vocab.json", "processor_config.json", "processing_userbert.py", "README.md",
                "training_results.json"}
    assert expected <= files, expected - files
    assert not {f for f in files if f.startswith(("checkpoint-", "_")) or f == "training_args.bin"}, files
    for name in ("README.md", "training_results.json", "config.json", "model.safetensors"):
        assert hub.read(repo, name) == (folder / name).read_bytes(), name  # exactly the folder on disk
    card = hub.read(repo, "README.md").decode()  # the job's own card, not the Trainer's generic one
    assert "generated_from_trainer" not in card
    assert "# UserBERT" in card
    assert json.loads(hub.read(repo, "config.json"))["auto_map"]["AutoModel"] == OURS["AutoModel"]
    titles = [c.title for c in hub.repo(repo).commits.values()]
    assert titles[-1] == "End of training", (job, titles)


@pytest.mark.slow
def test_push_to_hub_from_both_jobs_loads_without_the_package(tmp_path):
    with FakeHub() as hub:
        pretrained = tmp_path / "pretrained"
        args = [a for a in tiny_pretrain_args(pretrained) if a != "gru4rec"]  # a text model: tokenizer pushed too
        args[args.index("--preset") + 1:args.index("--preset") + 1] = ["nrms"]
        _client(hub, tmp_path, "-m", "userbert_hf.cli", "pretrain", *args, "--attention_query_size", "8",
                "--num_attention_heads", "2", "--push_to_hub", "true", "--hub_model_id", "org/pretrained")
        _assert_pushed_folder(hub, "org/pretrained", pretrained, "pretrain")
        assert "tokenizer.json" in hub.files("org/pretrained")
        assert any(t.startswith("Training in progress") for t in
                   (c.title for c in hub.repo("org/pretrained").commits.values()))

        finetuned = tmp_path / "finetuned"  # fine-tuned from the Hub id: the push reads the source's LFS metadata
        _client(hub, tmp_path, "-m", "userbert_hf.cli", "finetune", "--task", "ctr", "--model_name_or_path",
                "org/pretrained", "--output_dir", str(finetuned), "--max_steps", "2", "--train_fraction", "0.1",
                "--eval_strategy", "no", "--disable_tqdm", "true", "--report_to", "none", "--push_to_hub", "true",
                "--hub_model_id", "org/finetuned")
        _assert_pushed_folder(hub, "org/finetuned", finetuned, "finetune")

        home = tmp_path / "home-load"
        home.mkdir()
        entries = [{"repo": "org/pretrained", "users": RAW_USERS},
                   {"repo": "org/finetuned", "users": RAW_USERS, "head": "AutoModelForSequenceClassification",
                    "head_users": HEAD_USERS}]
        lines = _client(hub, home, "-c", textwrap.dedent(LOAD_WITHOUT_PACKAGE), json.dumps(entries))
        loaded = [json.loads(line) for line in lines.strip().splitlines()[-len(entries):]]
        assert [out["repo"] for out in loaded] == ["org/pretrained", "org/finetuned"]
        for out, folder in zip(loaded, (pretrained, finetuned)):
            assert out["class"].startswith("transformers_modules.") and out["class"].endswith(".UserBertModel")
            torch.testing.assert_close(torch.tensor(out["embedding"]), _local_embeddings(folder), rtol=1e-5,
                                       atol=1e-6)
        out = loaded[1]
        assert out["head_class"].startswith("transformers_modules.")
        assert out["head_class"].endswith(".UserBertForCTRPrediction")
        torch.testing.assert_close(torch.tensor(out["logits"]), _local_ctr_logits(finetuned), rtol=1e-5, atol=1e-6)
        assert not hub.unhandled, hub.unhandled


def _local_ctr_logits(folder: Path) -> torch.Tensor:
    from userbert_hf.processing_userbert import UserBertProcessor

    processor = UserBertProcessor.from_pretrained(folder)
    head = UserBertForCTRPrediction.from_pretrained(folder).eval()
    namespace = {}
    exec(textwrap.dedent(SCORE), namespace)
    with torch.no_grad():
        return namespace["score"](processor, head, HEAD_USERS, CANDIDATES)
