"""``userbert pretrain --recipe paper | ptum_paper | cp_paper``: every published setting, recorded; overrides."""

from __future__ import annotations

import dataclasses
import json

import pytest

from userbert_hf.pretraining import job as pretraining_job
from userbert_hf.pretraining.recipes import RECIPES, recipe_settings
from userbert_hf.pretraining.trainer import UserBertTrainingArguments

# The paper's pre-training settings, read off its text (Sections 3.2, 3.3, 4.1 and Table 4), not off the code.
PAPER = {
    "objective": "userbert",  # MBP + BSM
    "matching_similarity": "dot", "matching_temperature": 1.0,  # "We used dot product to implement the matchers"
    "uniformity_loss_weight": 0.0, "projection_head": False,  # neither exists in the paper
    "negative_sampling": "medium_hard", "behavior_pool_size": 1000, "sequence_pool_size": 100,
    "sequence_pool_interval": 50, "num_behavior_negatives": 4, "num_sequence_negatives": 4,
    "mbp_query": "masked", "mask_ratio": 0.1, "dropout": 0.2,
    "per_device_train_batch_size": 32, "optim": "adamw_torch", "weight_decay": 0.0,  # Adam = AdamW without decay
    "adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-7,  # Keras 2.2.4 Adam defaults
    "lr_scheduler_type": "constant", "warmup_steps": 0, "max_grad_norm": 0.0,
}
SMALL = ["--preset", "gru4rec", "--hidden_size", "16", "--max_behaviors", "30", "--eval_fraction", "0",
         "--logging_steps", "1", "--save_steps", "2", "--report_to", "none", "--disable_tqdm", "true",
         "--use_cpu", "true"]


def _parse(tmp_path, *argv):
    return pretraining_job.parse_args([*argv, "--output_dir", str(tmp_path / "out")])


def test_paper_recipe_run_records_the_papers_settings(tmp_path):
    out = tmp_path / "paper"
    pretraining_job.main([*SMALL, "--recipe", "paper", "--max_steps", "2", "--output_dir", str(out)])
    settings = json.loads((out / "training_results.json").read_text())["settings"]
    config = json.loads((out / "config.json").read_text())
    assert settings["recipe"] == "paper" and config["recipe"] == "paper"
    assert {k: settings[k] for k in PAPER} == PAPER
    assert settings["recipe_overrides"] == {}
    # the published budget is trained in full: no stopping on held-out users, whatever the job's default
    assert settings["early_stopping_patience"] == 0 and settings["steps_trained"] == settings["max_steps"]
    # 2 steps: the scaled rate 1e-5 x 15,625 / 2 is capped at 1e-3
    assert settings["learning_rate"] == 1e-3
    for key in ("matching_similarity", "matching_temperature", "uniformity_loss_weight", "mbp_query", "dropout"):
        assert config[key] == PAPER[key], key
    card = (out / "README.md").read_text()
    assert "recipe" in card and "medium_hard" in card


def test_paper_learning_rate_keeps_the_published_budget(tmp_path):
    # lr x steps = 1e-5 x (500,000 users / 32 per batch) = 0.15625
    for steps, expected in ((1000, 1.5625e-4), (7000, 0.15625 / 7000), (200, 7.8125e-4)):
        _, _, training = _parse(tmp_path, "--recipe", "paper", "--max_steps", str(steps))
        assert training.learning_rate == pytest.approx(expected, rel=1e-12)
    _, _, training = _parse(tmp_path, "--recipe", "ptum_paper", "--max_steps", "200")
    assert training.learning_rate == 1e-3  # 1e-4 x 31,250 / 200 = 0.0156, capped
    _, _, training = _parse(tmp_path, "--recipe", "cp_paper", "--max_steps", "200")
    assert training.learning_rate == 1e-3  # CL4SRec's own rate: published on data of our size


def test_explicit_options_override_the_recipe_and_are_recorded(tmp_path):
    _, model_args, training = _parse(tmp_path, "--recipe", "paper", "--matching_temperature", "0.1",
                                     "--learning_rate", "3e-4", "--max_steps", "100")
    settings = recipe_settings(model_args, training)
    assert settings["recipe_overrides"] == {"matching_temperature": 0.1, "learning_rate": 3e-4}
    assert settings["matching_similarity"] == "dot" and settings["negative_sampling"] == "medium_hard"
    # an explicit value equal to the recipe's is no override
    _, model_args, training = _parse(tmp_path, "--recipe", "paper", "--negative_sampling", "medium_hard")
    assert recipe_settings(model_args, training)["recipe_overrides"] == {}


def test_without_a_recipe_nothing_changes(tmp_path):
    _, model_args, training = _parse(tmp_path)
    settings = recipe_settings(model_args, training)
    assert settings["recipe"] is None and settings["recipe_overrides"] == {}
    assert (settings["matching_similarity"], settings["negative_sampling"], settings["learning_rate"]) == (
        "cosine", "random", 1e-3)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--recipe", "paper", "--objective", "ptum"], "--objective"),
        (["--recipe", "cp_paper", "--objective", "userbert"], "--objective"),
        (["--recipe", "paper", "--model_name_or_path", "somewhere"], "--model_name_or_path"),
        (["--recipe", "paper", "--max_steps", "-1"], "--max_steps"),
        (["--recipe", "nonsense"], "--recipe"),
    ],
)
def test_contradictions_are_usage_errors(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        _parse(tmp_path, *argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_ptum_and_cp_recipes_are_their_published_selves(tmp_path):
    _, model_args, training = _parse(tmp_path, "--recipe", "ptum_paper")
    ptum = recipe_settings(model_args, training)
    assert (ptum["objective"], ptum["matching_similarity"], ptum["matching_temperature"], ptum["uniformity_loss_weight"],
            ptum["negative_sampling"], ptum["num_behavior_negatives"], ptum["per_device_train_batch_size"]) == (
        "ptum", "dot", 1.0, 0.0, "random", 4, 32)
    config = pretraining_job.build_config(model_args, pretraining_job.PretrainingDataArguments(), None, None)
    assert config.ptum_next_k == 2 and config.recipe == "ptum_paper"  # the next K = 2 behaviours
    from userbert_hf.pretraining.masking import num_masked

    assert {num_masked(n, training.mask_ratio) for n in range(2, 101)} == {1}  # one masked behaviour per user

    _, model_args, training = _parse(tmp_path, "--recipe", "cp_paper")
    config = pretraining_job.build_config(model_args, pretraining_job.PretrainingDataArguments(), None, None)
    assert (config.pretraining_objective, config.cp_matching_similarity, config.cp_matching_temperature,
            config.uniformity_loss_weight, config.projection_head) == ("cp", "dot", 1.0, 0.0, False)
    assert training.per_device_train_batch_size == 256


def test_training_arguments_defaults_documented_as_the_papers_are_the_papers():
    defaults = {f.name: f.default for f in dataclasses.fields(UserBertTrainingArguments)}
    doc = UserBertTrainingArguments.__doc__
    for name in ("negative_sampling", "behavior_pool_size", "sequence_pool_size", "sequence_pool_interval",
                 "num_behavior_negatives", "num_sequence_negatives", "mask_ratio", "bsm_positive"):
        assert f"``{name}``" in doc
        assert defaults[name] == RECIPES["paper"].options[name] == PAPER.get(name, "period"), name
    # the inherited ones the docstring says are not the paper's really differ from it
    for name in ("learning_rate", "per_device_train_batch_size", "lr_scheduler_type", "max_grad_norm"):
        assert f"``{name}``" in doc
        assert str(getattr(defaults[name], "value", defaults[name])) != str(PAPER.get(name, 1e-5)), name


def test_config_recipe_field_is_validated_and_saved(tmp_path):
    from userbert_hf import UserBertConfig

    with pytest.raises(Exception, match="recipe"):
        UserBertConfig(recipe="mine")
    with pytest.raises(Exception, match="cp_matching_similarity"):
        UserBertConfig(cp_matching_similarity="euclid")
    UserBertConfig(recipe="cp_paper", cp_matching_similarity="dot").save_pretrained(tmp_path)
    loaded = UserBertConfig.from_pretrained(tmp_path)
    assert (loaded.recipe, loaded.cp_matching_similarity, UserBertConfig().recipe) == ("cp_paper", "dot", None)


def test_a_json_settings_file_takes_the_recipe_too(tmp_path):
    settings = tmp_path / "args.json"
    settings.write_text(json.dumps({"recipe": "paper", "output_dir": str(tmp_path / "o"), "max_steps": 1000,
                                    "matching_temperature": 0.5}))
    _, model_args, training = pretraining_job.parse_args([str(settings)])
    recorded = recipe_settings(model_args, training)
    assert recorded["negative_sampling"] == "medium_hard" and recorded["learning_rate"] == pytest.approx(1.5625e-4)
    assert recorded["recipe_overrides"] == {"matching_temperature": 0.5}
