"""Extending the package from outside it (docs/extending.md): a negative sampler, a pre-training objective and a
fine-tuning task defined and registered in this test module run through the real ``userbert pretrain`` /
``userbert finetune`` jobs, and the trainer logs whatever loss components the model output carries."""

from __future__ import annotations

import dataclasses
import importlib
import json
from types import SimpleNamespace

import pytest
import torch

from job_helpers import tiny_pretrain_args
from userbert_hf import UserBertConfig
from userbert_hf.finetuning import job as finetuning_job
from userbert_hf.pretraining import job as pretraining_job
from userbert_hf.experiments.spec import ExperimentSpec
from userbert_hf.modeling_userbert import UserBertForPreTrainingOutput
from userbert_hf.pretraining import OBJECTIVES, SAMPLERS, UserBertTrainer
from userbert_hf.pretraining.batch import PretrainingBatch
from userbert_hf.pretraining.objectives import PretrainingObjective, register_objective
from userbert_hf.pretraining.samplers import RandomNegativeSampler, register_sampler
from userbert_hf.finetuning import TASK_REGISTRY, get_task, register_task


class CountingNegativeSampler(RandomNegativeSampler):
    """Random negatives that count the masked behaviours they served."""

    name = "toy_counting"
    served = 0

    def behavior_negatives(self, user_model, target_ids, target_users, step):
        type(self).served += len(target_ids)
        return super().behavior_negatives(user_model, target_ids, target_users, step)


class LastBehaviorObjective(PretrainingObjective):
    """MBP only, on the last behaviour of every user with at least two (a next-behaviour task)."""

    name = "toy_last_behavior"
    tasks = ("mbp",)

    def prepare(self, batch, step):
        ids = batch["sequence_ids"].cpu()  # (B, L)
        lengths = batch["attention_mask"].cpu().sum(1)  # (B,)
        masked = torch.zeros_like(ids, dtype=torch.bool)
        rows = (lengths >= 2).nonzero(as_tuple=True)[0]
        masked[rows, lengths[rows] - 1] = True
        out = PretrainingBatch(user_index=batch["user_index"].cpu(), sequence_ids=ids, attention_mask=ids != 0,
                               masked_positions=masked, masked_ids=ids[masked])
        self._count(out)
        return out

    def model_inputs(self, batch, user_model, step, config):
        inputs = {"attention_mask": batch.attention_mask, "masked_positions": batch.masked_positions}
        candidates = {"mbp_candidate_index": self._mbp_candidates(batch, user_model, step)}  # (M, 1 + K)
        return self._with_table(inputs, batch.sequence_ids, candidates), {"mbp": len(batch.masked_ids)}


@pytest.fixture
def registered():
    """Register the toy sampler and objective for one test, then remove them."""
    register_sampler(CountingNegativeSampler)
    register_objective(LastBehaviorObjective)
    CountingNegativeSampler.served = 0
    yield
    del SAMPLERS[CountingNegativeSampler.name], OBJECTIVES[LastBehaviorObjective.name]


def test_unregistered_names_are_refused_naming_the_option(tmp_path, capsys):
    for option, value in (("--objective", LastBehaviorObjective.name), ("--negative_sampling", "toy_counting")):
        with pytest.raises(SystemExit) as exit_info:
            pretraining_job.main([option, value, "--output_dir", str(tmp_path / "out")])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {option}" in err and f"invalid choice: {value!r}" in err, err
    with pytest.raises(Exception, match="pretraining_objective=.toy_last_behavior. is not one of"):
        UserBertConfig(pretraining_objective=LastBehaviorObjective.name)


def test_a_registered_sampler_and_objective_pretrain_through_the_cli(registered, tmp_path):
    out = tmp_path / "out"
    metrics = pretraining_job.main(tiny_pretrain_args(
        out, "--objective", LastBehaviorObjective.name, "--negative_sampling", CountingNegativeSampler.name,
        "--bsm_loss_weight", "0", "--uniformity_loss_weight", "0",
    ))
    assert CountingNegativeSampler.served > 0  # the job drew its negatives from the registered sampler
    assert metrics["mbp_loss"] > 0 and 0 <= metrics["mbp_accuracy"] <= 1
    assert not any(key.startswith(("bsm_", "nbp_", "cp_", "uniformity_")) for key in metrics)  # its tasks only
    assert json.loads((out / "config.json").read_text())["pretraining_objective"] == LastBehaviorObjective.name
    results = json.loads((out / "training_results.json").read_text())
    assert results["settings"]["objective"] == LastBehaviorObjective.name
    assert results["settings"]["negative_sampling"] == CountingNegativeSampler.name
    assert (out / "negative_sampler.json").exists() or any(out.glob("checkpoint-*/negative_sampler.json"))
    # The experiment specs read the same registry.
    spec = ExperimentSpec(name="toy", task="ctr", methods={"toy": {"objective": LastBehaviorObjective.name}})
    assert spec.methods["toy"]["objective"] == LastBehaviorObjective.name


def test_a_registered_task_finetunes_through_the_cli(tmp_path):
    """A task registered here (CTR's parts, its own name, card metrics and Hub task name) is a --task choice, and
    the job takes its splits, head, metrics and card from it."""
    toy = register_task(dataclasses.replace(get_task("ctr"), name="toy_ctr", card_metrics=("auc",),
                                            hub_task_name="Toy click prediction"))
    out = tmp_path / "out"
    try:
        assert ExperimentSpec(name="toy", task="toy_ctr", baselines=[]).task == "toy_ctr"
        with pytest.raises(ValueError, match="already registered"):
            register_task(dataclasses.replace(toy, head=None))
        metrics = finetuning_job.main([
            "--task", "toy_ctr", "--model_name_or_path", "gru4rec", "--output_dir", str(out), "--train_fraction",
            "0.25", "--hidden_size", "16", "--attention_query_size", "8", "--num_attention_heads", "2",
            "--max_behaviors", "20", "--max_steps", "2", "--per_device_train_batch_size", "4",
            "--per_device_eval_batch_size", "32", "--eval_strategy", "no", "--disable_tqdm", "true", "--seed", "0",
        ])
    finally:
        del TASK_REGISTRY["toy_ctr"]
    assert 0 <= metrics["test_auc"] <= 1
    assert json.loads((out / "training_results.json").read_text())["settings"]["task"] == "toy_ctr"
    card = (out / "README.md").read_text()
    assert "Toy click prediction" in card and "type: auc" in card and "type: ap" not in card
    with pytest.raises(SystemExit):
        finetuning_job.parse_args(["--task", "toy_ctr", "--output_dir", str(out)])


def test_the_trainer_logs_every_component_the_output_carries():
    """A component the trainer has never heard of is logged, as a mean weighted by its rows."""
    trainer = SimpleNamespace(_task_sums={}, _task_counts={})
    for value, rows in ((1.0, 3), (3.0, 1)):
        out = UserBertForPreTrainingOutput(loss=torch.tensor(9.0), mbp_loss=torch.tensor(value),
                                           loss_rows={"mbp": rows, "toy": 2})
        out["toy_loss"] = torch.tensor(value * 10)  # an extra component, e.g. from a subclass's output
        UserBertTrainer.track_loss_components(trainer, out)
    assert trainer._task_sums == {"mbp_loss": 6.0, "toy_loss": 80.0}
    assert trainer._task_counts == {"mbp_loss": 4, "toy_loss": 4}  # logged means: 1.5 and 20


def test_every_task_keeps_its_parts_in_the_one_module_that_registers_it():
    """docs/extending.md's count for a new task: its split builder, collator and metrics factory live in one module
    of ``finetuning/`` (not in the registry or the shared modules), and ``finetuning/__init__.py`` imports that
    module, so adding a task is that module and one import line."""
    import ast
    from pathlib import Path

    import userbert_hf.finetuning as finetuning

    shared = {"userbert_hf.finetuning.registry", "userbert_hf.finetuning.splits", "userbert_hf.finetuning.metrics"}
    imported = {f"userbert_hf.finetuning.{alias.name}"
                for node in ast.walk(ast.parse(Path(finetuning.__file__).read_text()))
                if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None
                for alias in node.names}
    modules = {}
    for name, task in TASK_REGISTRY.items():
        homes = {part.__module__ for part in (task.build_splits, task.collator, task.compute_metrics)}
        assert len(homes) == 1, f"task {name!r} is spread over {sorted(homes)}"
        (home,) = homes
        assert home.startswith("userbert_hf.finetuning.") and home not in shared, (name, home)
        modules.setdefault(home, []).append(name)
    assert modules == {
        "userbert_hf.finetuning.news": ["news"],
        "userbert_hf.finetuning.ctr": ["ctr", "implicit_ctr"],
        "userbert_hf.finetuning.next_item": ["next_item"],
        "userbert_hf.finetuning.user_classification": ["user_classification"],
    }
    assert set(modules) <= imported  # importing the package registers every task module
    for home, names in modules.items():  # each module calls register_task for its own tasks
        source = Path(importlib.import_module(home).__file__).read_text()
        assert source.count("register_task(Task(") == len(names), home
