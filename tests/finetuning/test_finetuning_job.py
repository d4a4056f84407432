"""End-to-end tests of the fine-tuning job (``userbert finetune``): tiny models, a few steps, real data files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModel

from userbert_hf import UserBertConfig, UserBertForCTRPrediction, UserBertForPreTraining
from userbert_hf.assets import save_user_model_assets
from userbert_hf.data import load_behavior_data, load_movielens
from userbert_hf.finetuning.job import main
from userbert_hf.tokenization_userbert import build_word_tokenizer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TINY_MODEL = ["--hidden_size", "16", "--attention_query_size", "8", "--num_attention_heads", "2",
              "--max_behaviors", "20"]
QUICK = ["--max_steps", "4", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "32",
         "--eval_strategy", "no", "--disable_tqdm", "true", "--logging_steps", "1", "--seed", "0"]


def _card_metadata(folder: Path) -> dict:
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def _assert_hub_folder(folder: Path, metrics: tuple[str, ...]) -> dict:
    for name in ("model.safetensors", "config.json", "behavior_vocab.json", "README.md", "training_results.json",
                 "modeling_userbert.py", "configuration_userbert.py"):
        assert (folder / name).is_file(), name
    index = _card_metadata(folder)["model-index"][0]["results"][0]
    card = {m["name"]: m["value"] for m in index["metrics"]}
    for name in metrics:
        assert 0.0 <= card[name] <= 1.0, name
    results = json.loads((folder / "training_results.json").read_text())
    assert set(results) >= {"test", "validation", "settings", "splits"}
    return results


def _check_metrics(metrics: dict, names: tuple[str, ...]) -> None:
    for name in names:
        value = metrics[f"test_{name}"]
        assert math.isfinite(value) and 0.0 <= value <= 1.0, (name, value)


def test_ctr_from_preset(tmp_path):
    out = tmp_path / "ctr"
    metrics = main(["--task", "ctr", "--model_name_or_path", "gru4rec", "--output_dir", str(out),
                    "--train_fraction", "0.25", *TINY_MODEL, *QUICK])
    _check_metrics(metrics, ("auc", "ap"))
    results = _assert_hub_folder(out, ("auc", "ap"))
    assert results["splits"]["train"]["users"] == round(0.25 * 488)  # 25% of the training users
    assert results["splits"]["test"]["users"] == 61 and results["settings"]["from_scratch"]
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["UserBertForCTRPrediction"]
    assert config["auto_map"]["AutoModel"] == "modeling_userbert.UserBertModel"
    # The head reloads with its class, the user model alone through the copied code.
    model = UserBertForCTRPrediction.from_pretrained(out)
    user_model = AutoModel.from_pretrained(out, trust_remote_code=True)
    assert torch.equal(user_model.behavior_encoder.behavior_embeddings.weight,
                       model.userbert.behavior_encoder.behavior_embeddings.weight)


@pytest.fixture(scope="module")
def pretrained_nrms(tmp_path_factory):
    """A tiny NRMS user model with UserBERT pre-training heads, saved with vocabulary and tokenizer, as
    ``userbert pretrain`` writes it (untrained: only the loading path matters here)."""
    folder = tmp_path_factory.mktemp("pretrained")
    data = load_movielens(verbose=False)
    tokenizer = build_word_tokenizer(data.vocabulary.texts, max_words=30)
    config = UserBertConfig.from_preset(
        "nrms", behavior_vocab_size=len(data.vocabulary), word_vocab_size=len(tokenizer), hidden_size=16,
        word_embedding_size=16, attention_query_size=8, num_attention_heads=2, max_behaviors=20,
    )
    torch.manual_seed(0)
    UserBertForPreTraining(config).save_pretrained(folder)
    save_user_model_assets(folder, data.vocabulary, tokenizer)
    return folder


def test_ctr_from_pretrained_folder(tmp_path, pretrained_nrms):
    out = tmp_path / "ctr"
    metrics = main(["--task", "ctr", "--model_name_or_path", str(pretrained_nrms), "--output_dir", str(out),
                    "--train_fraction", "0.1", "--max_behaviors", "20", *QUICK])
    _check_metrics(metrics, ("auc", "ap"))
    results = _assert_hub_folder(out, ("auc", "ap"))
    assert not results["settings"]["from_scratch"]
    assert (out / "tokenizer.json").is_file()
    assert "fine-tuned from" in (out / "README.md").read_text()
    auto_map = json.loads((out / "config.json").read_text())["auto_map"]  # this head's, not the pre-training one's
    assert auto_map == {
        "AutoConfig": "configuration_userbert.UserBertConfig", "AutoModel": "modeling_userbert.UserBertModel",
        "AutoModelForSequenceClassification": "modeling_userbert.UserBertForCTRPrediction",
    }
    # Fine-tuning started from the pre-trained user model: the saved vocabulary is the pre-trained one.
    assert json.loads((out / "behavior_vocab.json").read_text())["ids"] == json.loads(
        (pretrained_nrms / "behavior_vocab.json").read_text())["ids"]


def test_ctr_freeze_user_model_trains_only_the_bias(tmp_path, pretrained_nrms):
    out = tmp_path / "frozen"
    main(["--task", "ctr", "--model_name_or_path", str(pretrained_nrms), "--output_dir", str(out),
          "--freeze_user_model", "true", "--train_fraction", "0.1", "--max_behaviors", "20", "--learning_rate", "0.01",
          *QUICK])
    pretrained = UserBertForPreTraining.from_pretrained(pretrained_nrms).userbert.state_dict()
    tuned = UserBertForCTRPrediction.from_pretrained(out)
    for name, tensor in tuned.userbert.state_dict().items():
        assert torch.equal(tensor, pretrained[name]), name
    assert tuned.ctr_bias.item() != 0.0


def test_news_on_mind_fixture(tmp_path):
    out = tmp_path / "news"
    mind = str(FIXTURES / "mind")
    metrics = main(["--task", "news", "--data", mind, "--test_data", mind, "--model_name_or_path", "nrms",
                    "--output_dir", str(out), *TINY_MODEL, *QUICK])
    _check_metrics(metrics, ("auc", "mrr", "ndcg@5", "ndcg@10"))
    _assert_hub_folder(out, ("auc", "mrr", "ndcg@10"))
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModelForMultipleChoice"] == "modeling_userbert.UserBertForNewsRecommendation"


def test_next_item_on_beauty_fixture(tmp_path):
    out = tmp_path / "next"
    metrics = main(["--task", "next_item", "--data", str(FIXTURES / "beauty_small.txt"), "--model_name_or_path",
                    "gru4rec", "--output_dir", str(out), *TINY_MODEL, *QUICK])
    _check_metrics(metrics, ("hr@5", "ndcg@5", "hr@10", "ndcg@10", "mrr"))
    assert metrics["test_num_users"] == 4  # users with >= 2 behaviours in the fixture
    _assert_hub_folder(out, ("hr@10", "ndcg@10"))
    with pytest.raises(ValueError, match="ID-behaviour"):
        main(["--task", "next_item", "--data", str(FIXTURES / "beauty_small.txt"), "--model_name_or_path", "nrms",
              "--output_dir", str(tmp_path / "text"), *QUICK])


def test_user_classification_from_label_file(tmp_path):
    events = ["user_id,item_id,timestamp"]
    labels = ["user_id,label"]
    for user in range(40):
        group = user % 2
        for t in range(6):
            events.append(f"u{user},i{group * 10 + (user + t) % 10},{t}")
        labels.append(f"u{user},{'even' if group == 0 else 'odd'}")
    (tmp_path / "events.csv").write_text("\n".join(events) + "\n")
    (tmp_path / "labels.csv").write_text("\n".join(labels) + "\n")
    out = tmp_path / "cls"
    metrics = main(["--task", "user_classification", "--data", str(tmp_path / "events.csv"), "--user_labels",
                    str(tmp_path / "labels.csv"), "--model_name_or_path", "gru4rec", "--output_dir", str(out),
                    *TINY_MODEL, *QUICK])
    _check_metrics(metrics, ("accuracy",))
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "even", "1": "odd"}
    assert config["auto_map"]["AutoModelForSequenceClassification"].endswith("UserBertForUserClassification")


def test_export_pretraining_data(tmp_path):
    folder = tmp_path / "pretrain-data"
    assert main(["--task", "next_item", "--data", str(FIXTURES / "beauty_small.txt"),
                 "--export_pretraining_data", str(folder), "--output_dir", str(tmp_path / "unused")]) == {}
    data = load_behavior_data(str(folder))
    full = load_behavior_data(str(FIXTURES / "beauty_small.txt"), verbose=False)
    lengths = {row["user_id"]: len(row["behavior_ids"]) for row in full.users}
    assert {row["user_id"]: len(row["behavior_ids"]) for row in data.users} == {
        u: n - 2 for u, n in lengths.items() if n > 2
    }
