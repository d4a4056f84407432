"""The README's recipe: fine-tune a UserBERT head with the stock ``transformers.Trainer`` on a ``datasets.Dataset``
(UserBertCollator as the data collator, ``remove_unused_columns=False``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from userbert_hf import UserBertCollator, UserBertConfig, UserBertForUserClassification, UserBertProcessor
from userbert_hf.vocabulary import BehaviorVocabulary


def _users(n: int, seed: int):
    """Users of two kinds: label 1 watched mostly items 21-40, label 0 mostly items 1-20 (raw ids)."""
    rng = np.random.default_rng(seed)
    histories, labels = [], []
    for i in range(n):
        label = i % 2
        low, high = (21, 41) if label else (1, 21)
        own = rng.integers(low, high, size=rng.integers(3, 9)).tolist()
        noise = rng.integers(1, 41, size=2).tolist()
        histories.append([str(x) for x in own + noise])
        labels.append(label)
    return histories, labels


def test_stock_trainer_fine_tunes_a_head_on_a_datasets_dataset(tmp_path):
    processor = UserBertProcessor(BehaviorVocabulary([str(i) for i in range(1, 41)]), max_behaviors=16)
    config = UserBertConfig.from_preset("gru4rec", behavior_vocab_size=41, hidden_size=16, max_behaviors=16,
                                        num_labels=2, dropout=0.0)
    torch.manual_seed(0)
    model = UserBertForUserClassification(config)

    # The README's recipe, as written there.
    histories, labels = _users(96, seed=0)
    train = Dataset.from_dict({"user_id": [f"u{i}" for i in range(96)], "history": histories, "label": labels})
    train = train.map(lambda row: {"behavior_ids": processor.convert_behaviors_to_ids(row["history"])[0]})
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=16, num_train_epochs=6, learning_rate=1e-2,
        logging_steps=6, remove_unused_columns=False, report_to="none", use_cpu=True, save_strategy="no",
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train,
                      data_collator=UserBertCollator(processor.catalog, processor.max_behaviors))
    trainer.train()

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) >= 5 and losses[-1] < 0.5 * losses[0], losses
    test_histories, test_labels = _users(40, seed=1)
    model.eval()
    with torch.no_grad():
        predictions = model(**processor(test_histories)).logits.argmax(-1)
    assert (predictions == torch.tensor(test_labels)).float().mean() >= 0.9


def test_report_to_tensorboard_writes_the_training_losses(tmp_path):
    """``--report_to tensorboard`` (the ``tensorboard`` extra): the Trainer's logged losses land in event files
    under ``output_dir/runs``."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    processor = UserBertProcessor(BehaviorVocabulary([str(i) for i in range(1, 41)]), max_behaviors=16)
    model = UserBertForUserClassification(UserBertConfig.from_preset(
        "gru4rec", behavior_vocab_size=41, hidden_size=8, max_behaviors=16, num_labels=2))
    histories, labels = _users(32, seed=0)
    train = Dataset.from_dict({"behavior_ids": [processor.convert_behaviors_to_ids(h)[0] for h in histories],
                               "label": labels})
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, max_steps=4, logging_steps=1,
                             report_to=["tensorboard"], use_cpu=True, save_strategy="no", disable_tqdm=True,
                             remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=train,
                      data_collator=UserBertCollator(processor.catalog, processor.max_behaviors))
    trainer.train()
    (run,) = list((tmp_path / "runs").iterdir())
    events = EventAccumulator(str(run))
    events.Reload()
    logged = [e.value for e in events.Scalars("train/loss")]
    expected = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(logged) == 4 and np.allclose(logged, expected, rtol=1e-5)
