"""Early stopping in the jobs (``--early_stopping_patience``): a run whose validation / held-out metric stalls
stops after N evaluations without improvement, and the saved model is the best evaluated checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import pytest
from safetensors.torch import load_file
import transformers.trainer_callback as trainer_callback

from userbert_hf.finetuning import job as finetuning_job
from userbert_hf.pretraining import job as pretraining_job
from userbert_hf.early_stopping import configure_early_stopping
from userbert_hf.experiments.runner import ExperimentRunner
from userbert_hf.experiments.spec import ExperimentSpec
from job_helpers import TINY_PRETRAIN

# A learning rate this small moves the weights (Adam: ~lr per step) without changing the metrics: they stall.
STALLING = ["--learning_rate", "1e-7", "--early_stopping_patience", "2", "--save_total_limit", "20"]


def _weights(path: Path) -> dict:
    return load_file(str(path / "model.safetensors"))


def _same(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(a[k].equal(b[k]) for k in a)


def _check_stopped_at_best(out: Path, evals: list[tuple[int, float]], eval_steps: int, max_steps: int) -> int:
    """The run stopped 2 evaluations after its best one, before max_steps, and saved the best checkpoint's weights
    (not the last one's). Returns the best step."""
    steps = [s for s, _ in evals]
    values = [v for _, v in evals]
    best_step = steps[values.index(max(values))]  # the first evaluation with the best value
    assert steps == list(range(eval_steps, steps[-1] + 1, eval_steps))
    assert steps[-1] == best_step + 2 * eval_steps < max_steps  # patience 2
    saved = _weights(out)
    assert _same(saved, _weights(out / f"checkpoint-{best_step}"))
    assert not _same(saved, _weights(out / f"checkpoint-{steps[-1]}"))  # the weights did move
    return best_step


def test_finetuning_stops_when_validation_stalls_and_keeps_the_best(tmp_path):
    out = tmp_path / "ctr"
    warned = mock.patch.object(trainer_callback.logger, "warning", wraps=trainer_callback.logger.warning)
    with warned as warning:
        finetuning_job.main([
            "--task", "ctr", "--model_name_or_path", "gru4rec", "--output_dir", str(out), "--train_fraction", "0.25",
            "--hidden_size", "16", "--max_behaviors", "20", "--max_steps", "40", "--per_device_train_batch_size", "4",
            "--eval_strategy", "steps", "--eval_steps", "2", "--eval_sample_users", "20", "--disable_tqdm", "true",
            "--report_to", "none", "--seed", "0", *STALLING,
        ])
    # the test evaluation after training is no stopping check: no "early stopping is disabled" false alarm
    assert not [c for c in warning.call_args_list if "early stopping" in str(c)]
    results = json.loads((out / "training_results.json").read_text())
    evals = [(e["step"], e["eval_auc"]) for e in results["validation"]]
    best_step = _check_stopped_at_best(out, evals, eval_steps=2, max_steps=40)
    assert results["settings"]["steps_trained"] == best_step + 4
    # the recorded validation figure is the kept (best, tested) model's, not the last in-training evaluation's
    kept = results["kept_model_validation"]
    assert kept["eval_auc"] == pytest.approx(max(v for _, v in evals), abs=1e-12)
    assert kept["eval_num_examples"] == results["validation"][0]["eval_num_examples"]  # the same sampled users
    # Evaluations ran on the same 20 validation users (fewer pairs than the split's), the test on all 61.
    counts = {e["eval_num_examples"] for e in results["validation"]}
    assert len(counts) == 1 and counts.pop() < results["splits"]["validation"]["pairs"]
    assert results["test"]["test_num_examples"] == results["splits"]["test"]["pairs"]


def test_recorded_validation_is_the_kept_checkpoints_not_the_last_evaluations(tmp_path):
    # "Best" = the highest validation loss, so the first checkpoint is kept while training lowers the loss: the last
    # in-training evaluation is then of another model than the one kept and tested, with other numbers.
    out = tmp_path / "ctr"
    finetuning_job.main([
        "--task", "ctr", "--model_name_or_path", "gru4rec", "--output_dir", str(out), "--train_fraction", "0.25",
        "--hidden_size", "16", "--max_behaviors", "20", "--max_steps", "40", "--per_device_train_batch_size", "4",
        "--eval_strategy", "steps", "--eval_steps", "2", "--eval_sample_users", "20", "--disable_tqdm", "true",
        "--report_to", "none", "--seed", "0", "--learning_rate", "1e-3", "--early_stopping_patience", "2",
        "--metric_for_best_model", "loss", "--greater_is_better", "true", "--save_total_limit", "20",
    ])
    results = json.loads((out / "training_results.json").read_text())
    evals = results["validation"]
    best = max(evals, key=lambda e: e["eval_loss"])
    assert best["step"] < evals[-1]["step"] and best["eval_auc"] != evals[-1]["eval_auc"]
    kept = results["kept_model_validation"]
    assert kept["eval_auc"] == pytest.approx(best["eval_auc"], abs=1e-12)
    assert kept["eval_auc"] != pytest.approx(evals[-1]["eval_auc"], abs=1e-9)
    assert kept["eval_num_examples"] == best["eval_num_examples"]  # the same sampled validation users


def test_pretraining_stops_on_held_out_users_and_keeps_the_best(tmp_path):
    out = tmp_path / "pre"
    args = [a for a in TINY_PRETRAIN]
    for option, value in (("--max_steps", "40"), ("--eval_fraction", "0.2"), ("--save_total_limit", "20")):
        args[args.index(option) + 1] = value
    metrics = pretraining_job.main([*args, "--output_dir", str(out), "--eval_strategy", "steps", "--eval_steps", "2",
                                    "--eval_max_users", "60", *STALLING[:4]])
    results = json.loads((out / "training_results.json").read_text())
    history = json.loads((out / f"checkpoint-{results['settings']['steps_trained']}" / "trainer_state.json").read_text())
    evals = [(e["step"], e["eval_knn_recall_at_20"]) for e in history["log_history"] if "eval_knn_recall_at_20" in e]
    best_step = _check_stopped_at_best(out, evals, eval_steps=2, max_steps=40)
    assert results["settings"]["best_step"] == best_step
    assert metrics["eval_knn_recall_at_20"] == max(v for _, v in evals)  # final figures are the saved model's


def test_early_stopping_needs_evaluations_and_a_valid_patience(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        finetuning_job.main(["--task", "ctr", "--model_name_or_path", "gru4rec", "--output_dir", str(tmp_path / "x"),
                             "--early_stopping_patience", "2", "--eval_strategy", "no"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        pretraining_job.main(["--output_dir", str(tmp_path / "y"), "--early_stopping_patience", "-1"])
    assert exit_info.value.code == 2
    # Patience 0, or nothing evaluated: the arguments are left as they are and no callback is added.
    args = pretraining_job.PretrainingArguments(output_dir=str(tmp_path / "z"), eval_strategy="no", report_to="none")
    assert configure_early_stopping(args, 3, "knn_recall_at_20") == [] and not args.load_best_model_at_end
    args = pretraining_job.PretrainingArguments(output_dir=str(tmp_path / "z"), report_to="none")
    assert configure_early_stopping(args, 0, "knn_recall_at_20") == [] and not args.load_best_model_at_end
    callbacks = configure_early_stopping(args, 3, "knn_recall_at_20")
    assert callbacks[0].early_stopping_patience == 3
    assert (args.metric_for_best_model, args.greater_is_better, args.save_steps) == ("knn_recall_at_20", True, 50)


def test_experiment_grids_keep_their_pretraining_budget_unless_they_ask(tmp_path):
    spec = dict(name="g", task="ctr", data="movielens", preset="gru4rec", split_seeds=[0], seeds=[1],
                label_fractions=[1.0], methods={"none": {}, "userbert": {}}, pretraining_args={"max_steps": 30})
    runner = ExperimentRunner(ExperimentSpec(**spec), tmp_path / "g")
    argv = runner.pretrain_argv("userbert", None)
    assert argv[argv.index("--early_stopping_patience") + 1] == "0"
    spec.update(pretraining_args={"max_steps": 30, "early_stopping_patience": 3},
                finetuning_args={"early_stopping_patience": 2, "eval_strategy": "epoch", "eval_sample_users": 50})
    runner = ExperimentRunner(ExperimentSpec(**spec), tmp_path / "h")
    argv = runner.pretrain_argv("userbert", None)
    assert argv[argv.index("--early_stopping_patience") + 1] == "3"
    finetune = runner.finetune_argv(runner.spec.cells()[-1])
    parsed = finetuning_job.parse_args(finetune)[-1]
    assert (parsed.early_stopping_patience, parsed.eval_sample_users) == (2, 50)
