"""A checkpoint is complete before an older one is removed, and every truncated file is caught and named
(issue 10, items 7 and 10)."""

from __future__ import annotations

import shutil

import datasets
import pytest
import torch
import transformers.trainer

from userbert_hf import UserBertConfig, UserBertForPreTraining
from userbert_hf.collation import BehaviorCatalog
from userbert_hf.pretraining.checkpoints import checkpoint_problem, last_complete_checkpoint
from userbert_hf.pretraining.trainer import UserBertTrainer, UserBertTrainingArguments


class Killed(BaseException):
    """Stands for SIGKILL at a chosen point: nothing after it runs."""


def _tiny_trainer(output_dir, **overrides) -> UserBertTrainer:
    users = datasets.Dataset.from_dict({
        "behavior_ids": [[1 + (u * 7 + i) % 29 for i in range(12)] for u in range(16)],
        "timestamps": [list(range(12)) for _ in range(16)],
    })
    config = UserBertConfig.from_preset("gru4rec", behavior_vocab_size=30, hidden_size=8, max_behaviors=12)
    settings = dict(max_steps=2, per_device_train_batch_size=8, save_steps=1, logging_steps=1, report_to="none",
                    behavior_pool_size=10, sequence_pool_size=4, use_cpu=True, disable_tqdm=True)
    args = UserBertTrainingArguments(str(output_dir), **{**settings, **overrides})
    torch.manual_seed(0)
    return UserBertTrainer(model=UserBertForPreTraining(config), args=args, train_dataset=users,
                           catalog=BehaviorCatalog(30))


@pytest.fixture(scope="module")
def killed_after_rotation(tmp_path_factory):
    """A run with save_total_limit 1 killed right after the rotation at step 2 removed checkpoint-1."""
    output_dir = tmp_path_factory.mktemp("rotation") / "run"
    real_rotate = transformers.trainer.rotate_checkpoints

    def rotate_then_die(*args, **kwargs):
        real_rotate(*args, **kwargs)
        if (output_dir / "checkpoint-2").exists():
            raise Killed()

    trainer = _tiny_trainer(output_dir, save_total_limit=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transformers.trainer, "rotate_checkpoints", rotate_then_die)
        with pytest.raises(Killed):
            trainer.train()
    return output_dir


def test_kill_right_after_rotation_leaves_a_complete_checkpoint(killed_after_rotation):
    assert sorted(p.name for p in killed_after_rotation.glob("checkpoint-*")) == ["checkpoint-2"]
    newest = killed_after_rotation / "checkpoint-2"
    assert checkpoint_problem(str(newest)) is None
    assert (newest / "negative_sampler.safetensors").exists()
    assert last_complete_checkpoint(str(killed_after_rotation)) == str(newest)


def test_run_killed_after_rotation_resumes(killed_after_rotation, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(killed_after_rotation, run)
    trainer = _tiny_trainer(run, save_total_limit=1, max_steps=3)
    trainer.train(resume_from_checkpoint="last")
    assert trainer.state.global_step == 3
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-3"]


@pytest.mark.parametrize("name", [
    "rng_state.pth", "optimizer.pt", "scheduler.pt", "model.safetensors", "trainer_state.json",
    "negative_sampler.safetensors", "negative_sampler.json",
])
def test_a_truncated_checkpoint_file_is_named(killed_after_rotation, tmp_path, name):
    checkpoint = tmp_path / "checkpoint-2"
    shutil.copytree(killed_after_rotation / "checkpoint-2", checkpoint)
    path = checkpoint / name
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    problem = checkpoint_problem(str(checkpoint))
    assert problem is not None and problem.startswith(f"{path} is truncated or corrupted"), problem
    path.unlink()
    assert checkpoint_problem(str(checkpoint)).startswith(f"{path} is missing")


def test_embed_names_a_truncated_model_file(tmp_path):
    from userbert_hf import UserBertModel
    from userbert_hf.data import load_default_dataset
    from userbert_hf.embedding_export import embed_users
    from userbert_hf.processing_userbert import save_processor

    data = load_default_dataset(verbose=False, max_behaviors=10)
    config = UserBertConfig.from_preset("gru4rec", behavior_vocab_size=len(data.vocabulary), hidden_size=8)
    folder = tmp_path / "model"
    UserBertModel(config).save_pretrained(folder)
    save_processor(folder, config, data.vocabulary)
    assert embed_users(str(folder), data).num_rows == len(data.users)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    with pytest.raises(OSError, match=f"{weights} is truncated or corrupted"):
        embed_users(str(folder), data)
