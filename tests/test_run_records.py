"""What a run records about itself (``training_results.json``, the model card) is what ran: the recipe and sampler
of the run, CP's own matcher, the data by name and content hash (never a local absolute path), and card metadata
that ``huggingface_hub`` parses and the Hub knows."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.errors import StrictDataclassError

from userbert_hf import UserBertConfig
from userbert_hf.model_card import (
    build_model_card,
    portable,
    portable_path,
    recipe_description,
    validate_card_metadata,
)
from userbert_hf.pretraining.job import main as pretrain

TINY = ["--preset", "gru4rec", "--hidden_size", "16", "--max_behaviors", "12", "--max_steps", "2",
        "--behavior_pool_size", "40", "--sequence_pool_size", "10", "--per_device_train_batch_size", "16",
        "--logging_steps", "1", "--save_steps", "10", "--eval_fraction", "0", "--report_to", "none",
        "--disable_tqdm", "true", "--use_cpu", "true"]


@pytest.fixture
def beauty_outside_cwd(tmp_path, monkeypatch):
    """A Beauty-format file (40 users) at an absolute path outside the working directory, which is ``work/``."""
    data = tmp_path / "private" / "datasets" / "Beauty.txt"
    data.parent.mkdir(parents=True)
    data.write_text("".join(f"{u} " + " ".join(str(1 + (u * 7 + i) % 30) for i in range(9)) + "\n"
                            for u in range(1, 41)))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return data


def _no_local_path(text: str, tmp_path: Path) -> None:
    assert str(tmp_path) not in text and "/private/datasets" not in text
    assert not re.search(r"(?<![\w.:/~-])(/[^\s/'\"`,;:()]+){2,}", text), re.search(r"(/[^\s/'\"`,;:()]+){2,}", text)


def test_default_pretraining_folder_names_what_ran_and_no_local_path(beauty_outside_cwd, tmp_path):
    pretrain([*TINY, "--data", str(beauty_outside_cwd), "--output_dir", str(tmp_path / "work" / "out")])
    out = tmp_path / "work" / "out"
    card_text, results_text = (out / "README.md").read_text(), (out / "training_results.json").read_text()
    for text in (card_text, results_text):
        _no_local_path(text, tmp_path)
    settings = json.loads(results_text)["settings"]
    assert settings["data"] == "Beauty.txt"  # outside the working directory: the file name only
    assert settings["data_sha256"] == hashlib.sha256(beauty_outside_cwd.read_bytes()).hexdigest()[:16]
    assert settings["negative_sampling"] == "random" and settings["mbp_query"] == "previous"  # gru4rec: auto
    assert settings["recipe"] is None and settings["gradient_accumulation_steps"] == 1
    # The card states the recipe that ran: this job's random sampler, never the paper's.
    assert "uniformly random negatives" in card_text and "medium-hard" not in card_text
    assert "This project's recipe" in card_text and "paper's recipe" not in card_text
    assert "mbp_query previous" in card_text and "| `mbp_query` | previous |" in card_text
    data = validate_card_metadata(card_text)
    assert data.pipeline_tag == "feature-extraction" and data.language is None  # behaviour ids have no language
    assert "from_pretrained('out'" in card_text  # the output folder, relative to the working directory


def test_default_data_is_named_not_located(tmp_path, monkeypatch):
    # The bundled MovieLens lies inside the installed package: its path is the user's layout, not the data's name.
    monkeypatch.chdir(tmp_path)
    pretrain([*TINY, "--output_dir", "out"])
    card_text, results_text = (tmp_path / "out" / "README.md").read_text(), (tmp_path / "out" / "training_results.json").read_text()
    for text in (card_text, results_text):
        _no_local_path(text, tmp_path)
        assert "site-packages" not in text and "src/userbert_hf" not in text
    results = json.loads(results_text)
    assert results["settings"]["data"] == "movielens" and results["data_summary"]["path"] == "ratings.csv"
    assert "movielens data from ratings.csv" in card_text and "uniformly random negatives" in card_text


def test_card_names_the_paper_sampler_and_cp_matcher_when_they_ran(beauty_outside_cwd, tmp_path):
    data = "../private/datasets/Beauty.txt"  # relative, but outside the working directory
    pretrain([*TINY, "--data", data, "--negative_sampling", "medium_hard", "--output_dir", "paper_sampler"])
    card = (tmp_path / "work" / "paper_sampler" / "README.md").read_text()
    assert "medium-hard negatives (the paper's sampler)" in card and "uniformly random" not in card
    assert "paper_sampler" in card and "../private" not in card
    pretrain([*TINY, "--data", data, "--objective", "cp", "--cp_matching_similarity", "dot",
              "--cp_matching_temperature", "0.2", "--output_dir", "cp"])
    settings = json.loads((tmp_path / "work" / "cp" / "training_results.json").read_text())["settings"]
    assert (settings["cp_matching_similarity"], settings["cp_matching_temperature"]) == ("dot", 0.2)
    assert settings["negative_sampling"] == "in_batch" and "behavior_pool_size" not in settings
    assert json.loads((tmp_path / "work" / "cp" / "config.json").read_text())["cp_matching_temperature"] == 0.2
    card = (tmp_path / "work" / "cp" / "README.md").read_text()
    assert "matcher dot similarity / 0.2" in card and "| `cp_matching_temperature` | 0.2 |" in card
    validate_card_metadata(card)


def test_a_pretraining_initial_scale_is_recorded_and_named_on_the_card(tmp_path):
    pretrain([*TINY, "--initializer_gain", "0.25", "--output_dir", str(tmp_path / "small")])
    settings = json.loads((tmp_path / "small" / "training_results.json").read_text())["settings"]
    assert settings["initializer_gain"] == 0.25
    assert json.loads((tmp_path / "small" / "config.json").read_text())["initializer_gain"] == 0.25
    assert "initialised at 0.25 x the default scale" in (tmp_path / "small" / "README.md").read_text()
    assert "initialised at" not in recipe_description({**settings, "initializer_gain": 1.0})


def test_cp_refuses_the_previous_mbp_query(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        pretrain([*TINY, "--objective", "cp", "--mbp_query", "previous", "--output_dir", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    assert "--mbp_query previous does not go with --objective cp" in capsys.readouterr().err
    with pytest.raises((ValueError, StrictDataclassError), match="mbp_query"):
        UserBertConfig.from_preset("gru4rec", pretraining_objective="cp", mbp_query="previous")


def test_recipe_is_the_papers_only_when_recorded_so():
    settings = {"objective": "userbert", "negative_sampling": "medium_hard", "matching_similarity": "dot",
                "matching_temperature": 1.0, "mbp_query": "masked", "max_steps": -1, "num_train_epochs": 3,
                "batch_size": 32, "gradient_accumulation_steps": 2, "learning_rate": 1e-5, "mask_ratio": 0.1}
    ours = recipe_description(settings)
    assert ours.startswith("This project's recipe") and "paper's recipe" not in ours
    assert "3 epochs of 32 users (x 2 accumulated micro-batches), learning rate 1e-05" in ours
    assert "10% of behaviours masked" in ours and "matcher dot similarity / 1.0" in ours
    assert recipe_description({**settings, "recipe": "paper"}).startswith("The paper's recipe")
    assert "paper's recipe" not in recipe_description({**settings, "recipe": "cp_paper"})


def test_recipe_says_how_far_an_early_stopped_run_trained():
    # The default job: max_steps is an upper bound; the card states the steps trained and the step kept.
    settings = {"objective": "userbert", "negative_sampling": "random", "max_steps": 1000, "batch_size": 32,
                "learning_rate": 1e-3, "early_stopping_patience": 3, "steps_trained": 200, "best_step": 50}
    stopped = recipe_description(settings)
    assert stopped.endswith("at most 1,000 optimizer steps of 32 users, learning rate 0.001; early stopping on "
                            "held-out users (patience 3): 200 steps trained, the best step 50 kept.")
    fixed = recipe_description({**settings, "early_stopping_patience": 0})  # a fixed budget: no "at most"
    assert fixed.endswith("; 1,000 optimizer steps of 32 users, learning rate 0.001.") and "at most" not in fixed
    finetuned = recipe_description({"task": "next_item", "model_name_or_path": "m", "train_fraction": 0.1,
                                    "num_train_epochs": 40.0, "max_steps": -1, "batch_size": 64,
                                    "early_stopping_patience": 3, "steps_trained": 1440})
    assert finetuned.endswith("at most 40.0 epochs of 64 rows; early stopping on validation (patience 3): "
                              "1,440 steps trained.")
    assert "shrunk" not in finetuned and "re-initialised" not in finetuned
    softened = recipe_description({"task": "next_item", "model_name_or_path": "m", "num_train_epochs": 10.0,
                                   "max_steps": -1, "batch_size": 64, "shrink_perturb": 0.5,
                                   "reset_behavior_embeddings": True})
    assert ("; the behaviour table re-initialised before training; the start shrunk and perturbed (0.5 x "
            "pre-trained + 0.5 x a fresh initialisation);") in softened


def test_old_card_metadata_is_rejected():
    """The metadata cards used to carry: a pipeline_tag that is no Hub task, language on ID behaviours, log keys as
    metric types."""
    config = UserBertConfig.from_preset("gru4rec", hidden_size=8)
    good = str(build_model_card(title="t", summary="s", config=config, dataset_name="events.csv",
                                data_description="d", settings={"data": "/home/me/events.csv"},
                                metrics={"eval_mbp_loss": 1.3}, task_type="feature-extraction",
                                task_name="User model pre-training", model_id="/home/me/out"))
    assert "/home/me" not in good and "`events.csv`" in good and "from_pretrained('out'" in good
    validate_card_metadata(good)
    for old, new, problem in (
        ("pipeline_tag: feature-extraction", "pipeline_tag: ctr-prediction", "pipeline_tag"),
        ("library_name: transformers", "language: en\nlibrary_name: transformers", "language"),
        ("type: loss", "type: eval_mbp_loss", "metric type"),
        ("  year      = {2022}", "  note = {/home/me/runs/x}", "absolute paths"),
    ):
        assert old in good
        with pytest.raises(ValueError, match=problem):
            validate_card_metadata(good.replace(old, new, 1))
    parsed = ModelCard(good).data.eval_results[0]
    assert (parsed.metric_type, parsed.metric_name, parsed.dataset_split) == ("loss", "eval_mbp_loss", "held_out")


def test_portable_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "log.csv").write_text("x")
    assert portable_path(str(tmp_path / "data" / "log.csv")) == "data/log.csv"  # inside: relative
    assert portable_path("/elsewhere/ml-latest-small/ratings.csv") == "ratings.csv"
    assert portable_path("movielens") == "movielens" and portable_path("org/user-logs") == "org/user-logs"
    assert portable({"examples": ["/srv/x/ratings.csv:3: bad", "see https://files.grouplens.org/a/b"]}) == {
        "examples": ["ratings.csv:3: bad", "see https://files.grouplens.org/a/b"]}


def test_finetuning_card_metadata_is_hub_valid_and_has_no_local_path(beauty_outside_cwd, tmp_path):
    from userbert_hf.finetuning.job import main as finetune

    finetune(["--task", "next_item", "--data", str(beauty_outside_cwd), "--model_name_or_path", "gru4rec",
              "--hidden_size", "16", "--max_behaviors", "12", "--max_steps", "2", "--per_device_train_batch_size", "8",
              "--eval_strategy", "no", "--disable_tqdm", "true", "--report_to", "none", "--use_cpu", "true",
              "--output_dir", str(tmp_path / "work" / "next_item")])
    out = tmp_path / "work" / "next_item"
    card_text, results_text = (out / "README.md").read_text(), (out / "training_results.json").read_text()
    for text in (card_text, results_text):
        _no_local_path(text, tmp_path)
    data = validate_card_metadata(card_text)
    assert data.pipeline_tag is None and data.language is None  # no Hub task fits; behaviour ids
    types = {r.metric_name: r.metric_type for r in data.eval_results}
    assert types["ndcg@10"] == "ndcg@10" and types["hr@10"] == "hit_rate@10" and types["mrr"] == "mrr"
    assert {r.dataset_split for r in data.eval_results} == {"test"} and data.eval_results[0].task_type == "other"
    settings = json.loads(results_text)["settings"]
    assert settings["data"] == "Beauty.txt" and len(settings["data_sha256"]) == 16
    assert "This project's recipe: fine-tuned for `next_item` trained from scratch (preset `gru4rec`)" in card_text
