"""Fine-tuning options: the user model's own learning rate and its frozen first steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import TrainingArguments

from userbert_hf import UserBertConfig, UserBertForCTRPrediction, UserBertForPreTraining
from userbert_hf.assets import save_user_model_assets
from userbert_hf.data import load_movielens
from userbert_hf.finetuning.job import FinetuningArguments, main
from userbert_hf.finetuning.optim import FinetuningTrainer, user_model_parameter_names
from userbert_hf.tokenization_userbert import build_word_tokenizer

QUICK = ["--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "32", "--eval_strategy", "no",
         "--disable_tqdm", "true", "--logging_steps", "1", "--seed", "0", "--train_fraction", "0.1",
         "--max_behaviors", "20", "--report_to", "none"]


def tiny_head() -> UserBertForCTRPrediction:
    config = UserBertConfig.from_preset("gru4rec", behavior_vocab_size=50, hidden_size=8, max_behaviors=10)
    torch.manual_seed(0)
    return UserBertForCTRPrediction(config)


def trainer_for(tmp_path, **options) -> FinetuningTrainer:
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-3, weight_decay=0.01, report_to="none",
                             lr_scheduler_type="linear")
    return FinetuningTrainer(model=tiny_head(), args=args, **options)


def test_param_groups_carry_the_two_rates(tmp_path):
    trainer = trainer_for(tmp_path, user_model_learning_rate=1e-4)
    model = trainer.model
    optimizer = trainer.create_optimizer()
    user_names = user_model_parameter_names(model)
    by_id = {id(p): n for n, p in model.named_parameters()}
    seen = set()
    for index, group in enumerate(optimizer.param_groups):
        names = {by_id[id(p)] for p in group["params"]}
        seen |= names
        in_user = names <= user_names
        assert in_user or not names & user_names  # a group is all user model or all head
        assert group["lr"] == (1e-4 if in_user else 1e-3)
        assert (index in trainer.user_groups) == in_user
    assert seen == {n for n, p in model.named_parameters() if p.requires_grad}  # every parameter, once
    assert "ctr_bias" in seen - user_names
    # Without the options the stock optimiser is used: one rate.
    plain = trainer_for(tmp_path).create_optimizer()
    assert {group["lr"] for group in plain.param_groups} == {1e-3}


def test_frozen_steps_give_the_user_model_rate_zero_then_the_schedule(tmp_path):
    trainer = trainer_for(tmp_path, user_model_learning_rate=1e-4, freeze_user_model_steps=3)
    trainer.create_optimizer()
    scheduler = trainer.create_scheduler(10)
    rates = []
    for _ in range(6):
        rates.append([group["lr"] for group in trainer.optimizer.param_groups])
        trainer.optimizer.step()
        scheduler.step()
    user = trainer.user_groups[0]
    head = next(i for i in range(len(rates[0])) if i not in trainer.user_groups)
    assert [r[user] for r in rates[:3]] == [0.0, 0.0, 0.0]
    assert rates[3][user] == pytest.approx(1e-4 * 7 / 10) and rates[4][user] == pytest.approx(1e-4 * 6 / 10)
    assert [r[head] for r in rates] == pytest.approx([1e-3 * (10 - s) / 10 for s in range(6)])  # untouched


def test_options_are_validated(tmp_path):
    with pytest.raises(ValueError, match="--freeze_user_model_steps"):
        FinetuningArguments(output_dir=str(tmp_path), freeze_user_model_steps=-1)
    with pytest.raises(ValueError, match="--user_model_learning_rate"):
        FinetuningArguments(output_dir=str(tmp_path), user_model_learning_rate=-1e-3)


@pytest.fixture(scope="module")
def pretrained_nrms(tmp_path_factory):
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


def test_user_model_unchanged_during_the_frozen_steps(tmp_path, pretrained_nrms):
    pretrained = UserBertForPreTraining.from_pretrained(pretrained_nrms).userbert.state_dict()
    out = tmp_path / "frozen"
    main(["--task", "ctr", "--model_name_or_path", str(pretrained_nrms), "--output_dir", str(out),
          "--max_steps", "3", "--freeze_user_model_steps", "3", "--learning_rate", "0.01", "--weight_decay", "0.1",
          *QUICK])
    tuned = UserBertForCTRPrediction.from_pretrained(out)
    settings = json.loads(Path(out / "training_results.json").read_text())["settings"]
    assert settings["freeze_user_model_steps"] == 3 and settings["user_model_learning_rate"] is None
    # Every user model tensor is the pre-trained one (weight decay included); the head learnt. (That the user
    # model moves once its steps are over is the schedule test above.)
    for name, tensor in tuned.userbert.state_dict().items():
        assert torch.equal(tensor, pretrained[name]), name
    assert tuned.ctr_bias.item() != 0.0
