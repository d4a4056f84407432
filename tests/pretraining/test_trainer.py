"""UserBertTrainer on real data: losses fall, resume is exact, gradient accumulation equals a large batch."""

import dataclasses
import math
import shutil

import pytest
import torch

from userbert_hf import UserBertConfig, UserBertForPreTraining
from userbert_hf.collation import BehaviorCatalog
from userbert_hf.data import load_default_dataset
from userbert_hf.pretraining.trainer import UserBertTrainer, UserBertTrainingArguments, checkpoint_problem, last_complete_checkpoint

MAX_BEHAVIORS = 50


@pytest.fixture(scope="module")
def movielens():
    return load_default_dataset(verbose=False, max_behaviors=MAX_BEHAVIORS)


def make_trainer(movielens, output_dir, objective="userbert", preset="bert4rec", dropout=0.1, model_seed=0,
                 uniformity_loss_weight=1.0, **arguments):
    config = UserBertConfig.from_preset(
        preset, behavior_vocab_size=len(movielens.vocabulary), hidden_size=32, intermediate_size=64,
        num_attention_heads=2, max_behaviors=MAX_BEHAVIORS, pretraining_objective=objective, dropout=dropout,
        attention_probs_dropout_prob=dropout,  # dropout 0: deterministic steps (bert4rec drops attention probs)
        uniformity_loss_weight=uniformity_loss_weight,
    )
    torch.manual_seed(model_seed)
    model = UserBertForPreTraining(config)
    settings = dict(
        max_steps=40, per_device_train_batch_size=32, logging_steps=5, learning_rate=3e-3, use_cpu=True,
        save_strategy="no", disable_tqdm=True, report_to=[], lr_scheduler_type="constant", seed=11,
        behavior_pool_size=1000, sequence_pool_size=100, sequence_pool_interval=1000,
    )
    settings.update(arguments)
    args = UserBertTrainingArguments(str(output_dir), **settings)
    return UserBertTrainer(model=model, args=args, train_dataset=movielens.users, catalog=BehaviorCatalog(len(movielens.vocabulary)))


def logged(trainer, key):
    return [entry[key] for entry in trainer.state.log_history if key in entry]


def test_both_losses_fall_on_movielens(movielens, tmp_path):
    # One sequence pool for the whole run (interval > steps), so the task difficulty stays put while we watch
    # the losses; with the paper's interval the BSM loss jumps up at each refresh (harder negatives).
    trainer = make_trainer(movielens, tmp_path)
    trainer.train()
    mbp, bsm = logged(trainer, "mbp_loss"), logged(trainer, "bsm_loss")
    assert len(mbp) == len(bsm) == 8
    assert sum(bsm[-2:]) / 2 < 0.5 * sum(bsm[:2]) / 2, bsm
    assert sum(mbp[-2:]) / 2 < sum(mbp[:2]) / 2 - 0.02, mbp
    # Accuracies are logged separately and the MBP one rises above chance (1 / (K + 1) = 0.2).
    mbp_accuracy = logged(trainer, "mbp_accuracy")
    assert sum(mbp_accuracy[-4:]) / 4 > max(0.2, sum(mbp_accuracy[:2]) / 2), mbp_accuracy
    assert logged(trainer, "bsm_accuracy")[-1] > logged(trainer, "bsm_accuracy")[0]
    # The logged total is the sum of the two task losses and the uniformity term (all weights 1).
    first = trainer.state.log_history[0]
    # (tolerance: the task logs are row-weighted means over the logging window, the loss a mean of step losses)
    assert first["loss"] == pytest.approx(first["mbp_loss"] + first["bsm_loss"] + first["uniformity_loss"], abs=1e-2)


@pytest.mark.parametrize("objective,task", [("ptum", "nbp_loss"), ("cp", "cp_loss")])
def test_baseline_losses_fall(movielens, tmp_path, objective, task):
    trainer = make_trainer(movielens, tmp_path, objective=objective)
    trainer.train()
    values = logged(trainer, task)
    assert sum(values[-2:]) / 2 < sum(values[:2]) / 2 - 0.02, values
    if objective == "ptum":
        mbp = logged(trainer, "mbp_loss")
        assert sum(mbp[-2:]) / 2 < sum(mbp[:2]) / 2, mbp
        assert not logged(trainer, "bsm_loss")


def test_sequence_pool_refreshes_every_t_steps_during_training(movielens, tmp_path):
    trainer = make_trainer(movielens, tmp_path, max_steps=12, logging_steps=1, sequence_pool_interval=5)
    trainer.train()
    refreshes = logged(trainer, "sequence_pool_refreshes")
    # Refreshed at steps 0, 5 and 10 (the count is logged after each step).
    assert refreshes == [1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3]


def test_resume_reproduces_the_uninterrupted_run(movielens, tmp_path):
    settings = dict(max_steps=8, logging_steps=1, save_strategy="steps", save_steps=4, sequence_pool_interval=3, dropout=0.2)
    full = make_trainer(movielens, tmp_path / "full", **settings)
    full.train()
    assert (tmp_path / "full" / "checkpoint-4" / "negative_sampler.json").exists()
    # A second run that starts from the step-4 checkpoint (as after a crash) with a freshly built model.
    shutil.copytree(tmp_path / "full" / "checkpoint-4", tmp_path / "resumed" / "checkpoint-4")
    resumed = make_trainer(movielens, tmp_path / "resumed", model_seed=123, **settings)
    resumed.train(resume_from_checkpoint=True)
    for key in ("mbp_loss", "bsm_loss", "loss"):
        expected = [e[key] for e in full.state.log_history if e.get("step", 0) > 4 and key in e]
        actual = [e[key] for e in resumed.state.log_history if e.get("step", 0) > 4 and key in e]
        assert len(expected) == 4
        assert actual == pytest.approx(expected, rel=1e-5, abs=1e-5), key


def test_incomplete_or_corrupted_checkpoints_are_named_and_skipped(movielens, tmp_path):
    trainer = make_trainer(movielens, tmp_path, max_steps=4, save_strategy="steps", save_steps=2)
    trainer.train()
    good, bad = tmp_path / "checkpoint-2", tmp_path / "checkpoint-4"
    assert checkpoint_problem(str(good)) is None and checkpoint_problem(str(bad)) is None
    # A crash while writing: the sampler state never made it, then a truncated weights file.
    (bad / "negative_sampler.json").unlink()
    assert "negative_sampler.json is missing" in checkpoint_problem(str(bad))
    assert last_complete_checkpoint(str(tmp_path)) == str(good)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match="model.safetensors is truncated or corrupted"):
        make_trainer(movielens, tmp_path, max_steps=6).train(resume_from_checkpoint=str(bad))
    # resume_from_checkpoint=True falls back to the last complete checkpoint and finishes the run.
    resumed = make_trainer(movielens, tmp_path, max_steps=6, save_strategy="no")
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 6


def _one_sgd_step(movielens, tmp_path, batch, accumulation, **settings):
    trainer = make_trainer(
        movielens, tmp_path, dropout=0.0, max_steps=1, per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation, optim="sgd", learning_rate=1.0, weight_decay=0.0,
        max_grad_norm=0.0, logging_steps=1, sequence_pool_interval=50, **settings,
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    # With plain SGD at lr 1 the update is minus the gradient.
    return {n: before[n] - p.detach() for n, p in trainer.model.named_parameters()}, trainer


@pytest.mark.parametrize(
    "settings",
    [
        dict(objective="userbert", negative_sampling="medium_hard"),
        dict(objective="userbert", negative_sampling="random"),
        dict(objective="userbert", negative_sampling="hardest"),
        dict(objective="ptum"),
    ],
    ids=["userbert-medium_hard", "userbert-random", "userbert-hardest", "ptum"],
)
def test_gradient_accumulation_equals_one_large_batch(movielens, tmp_path, settings):
    # Every random draw (masks, periods, negatives) is seeded by user, so 2 x 16 users see what 32 users see.
    # In-batch terms are left out here (they see the users of one micro-batch: a different loss, see
    # test_in_batch_terms_under_accumulation_weigh_as_in_one_large_batch).
    settings = dict(settings, uniformity_loss_weight=0.0)
    small, small_trainer = _one_sgd_step(movielens, tmp_path / "ga2", batch=16, accumulation=2, **settings)
    large, large_trainer = _one_sgd_step(movielens, tmp_path / "ga1", batch=32, accumulation=1, **settings)
    assert any(g.abs().sum() > 0 for g in large.values())
    for name in large:
        torch.testing.assert_close(small[name], large[name], rtol=1e-4, atol=1e-6, msg=name)
    # The logged loss is the loss of the whole step, not a sum over micro-batches.
    assert small_trainer.state.log_history[0]["loss"] == pytest.approx(
        large_trainer.state.log_history[0]["loss"], rel=1e-4
    )


def _update_norm_and_cosine(small: dict, large: dict) -> tuple[float, float]:
    a = torch.cat([v.flatten() for v in small.values()])
    b = torch.cat([v.flatten() for v in large.values()])
    return float(a.norm() / b.norm()), float(torch.nn.functional.cosine_similarity(a, b, dim=0))


@pytest.mark.parametrize("term", ["uniformity", "cp"])
def test_in_batch_terms_under_accumulation_weigh_as_in_one_large_batch(movielens, tmp_path, term):
    # The uniformity term and CP's NT-Xent see the users of one micro-batch (a different loss from the large
    # batch's, by design), but each micro-batch's term is weighted by its share of the step's users: 2 x 16 gives an
    # update of the size and direction of 1 x 32's, where the uniformity term used to count once per micro-batch
    # (2x its weight at 2 x 16).
    def update(batch, accumulation, weight, folder):
        settings = dict(objective="cp") if term == "cp" else dict(negative_sampling="random")
        return _one_sgd_step(movielens, tmp_path / folder, batch=batch, accumulation=accumulation,
                             uniformity_loss_weight=weight, **settings)[0]

    if term == "uniformity":  # the uniformity term's own update: with it minus without it
        small = {n: v - w for (n, v), w in zip(update(16, 2, 1.0, "a").items(), update(16, 2, 0.0, "b").values())}
        large = {n: v - w for (n, v), w in zip(update(32, 1, 1.0, "c").items(), update(32, 1, 0.0, "d").values())}
    else:
        small, large = update(16, 2, 0.0, "a"), update(32, 1, 0.0, "c")
    ratio, cosine = _update_norm_and_cosine(small, large)
    assert 0.9 < ratio < 1.1 and cosine > 0.95, (ratio, cosine)  # measured: 0.996 / 0.999 (uniformity; 1.99 before), 0.973 / 0.999 (CP)


def test_bsm_that_can_never_run_is_refused_and_targets_sitting_out_are_counted(movielens, tmp_path):
    # Three users cannot give P = 4 negative sequences of *other* users: refused before training, naming the option.
    with pytest.raises(ValueError, match="--num_sequence_negatives 4"):
        make_trainer(dataclasses.replace(movielens, users=movielens.users.select(range(4))), tmp_path, max_steps=1)
    # 37 users act at one instant (t = 50: no two periods) and 3 at t = 50 then t = 100. A target's period A spans
    # [50, 50], so only the other two splittable users offer sequences outside it: fewer than P = 4. Those targets
    # sit out BSM and are counted in the logs instead of vanishing.
    def times(row, i):
        n = len(row["timestamps"])
        return {"timestamps": [50] * (n - 2) + [100, 100] if i < 3 else [50] * n}

    users = movielens.users.select(range(40)).map(times, with_indices=True)
    trainer = make_trainer(dataclasses.replace(movielens, users=users), tmp_path,
                           max_steps=2, logging_steps=1, per_device_train_batch_size=40)
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert [e["bsm_targets_without_negatives"] for e in logs] == [3, 6]
    assert [e["bsm_excluded_users"] for e in logs] == [37, 74]
    assert all("bsm_loss" not in e for e in logs)
    assert all(math.isfinite(e["mbp_loss"]) for e in logs)


def test_ptum_next_behavior_prediction_has_its_own_weight(movielens, tmp_path):
    """PTUM's next-behaviour task runs on next_behavior_loss_weight, whatever bsm_loss_weight says."""
    trainer = make_trainer(movielens, tmp_path, objective="ptum")
    config, objective = trainer.model.config, trainer.objective
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])

    def model_inputs(bsm_loss_weight, next_behavior_loss_weight):
        config.bsm_loss_weight, config.next_behavior_loss_weight = bsm_loss_weight, next_behavior_loss_weight
        return objective.model_inputs(objective.prepare(batch, 0), trainer.model.userbert, 0, config)[0]

    assert "nbp_candidate_index" in model_inputs(0.0, 1.0)
    assert "nbp_candidate_index" not in model_inputs(1.0, 0.0)
