"""A small pre-training run that records each step's losses (used by the SIGKILL crash/resume test).

    python tests/scripts/crash_pretrain.py OUTPUT_DIR LOSS_LOG [--resume]
"""

import json
import sys

import torch
from transformers import TrainerCallback

from userbert_hf import UserBertConfig, UserBertForPreTraining
from userbert_hf.collation import BehaviorCatalog
from userbert_hf.data import load_default_dataset
from userbert_hf.pretraining.trainer import UserBertTrainer, UserBertTrainingArguments


class LossLog(TrainerCallback):
    def __init__(self, path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "mbp_loss" in logs:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": state.global_step, "mbp_loss": logs["mbp_loss"], "bsm_loss": logs["bsm_loss"]}) + "\n")


def main(output_dir, loss_log, resume):
    data = load_default_dataset(verbose=False, max_behaviors=30)
    config = UserBertConfig.from_preset(
        "bert4rec", behavior_vocab_size=len(data.vocabulary), hidden_size=16, intermediate_size=32,
        num_attention_heads=2, max_behaviors=30,
    )
    torch.manual_seed(0)
    args = UserBertTrainingArguments(
        output_dir, max_steps=24, per_device_train_batch_size=16, learning_rate=3e-3, use_cpu=True, logging_steps=1,
        save_strategy="steps", save_steps=2, save_total_limit=3, disable_tqdm=True, report_to=[], seed=3,
        behavior_pool_size=200, sequence_pool_size=30, sequence_pool_interval=3,
    )
    trainer = UserBertTrainer(
        model=UserBertForPreTraining(config), args=args, train_dataset=data.users,
        catalog=BehaviorCatalog(len(data.vocabulary)), callbacks=[LossLog(loss_log)],
    )
    trainer.train(resume_from_checkpoint=True if resume else None)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "--resume" in sys.argv)
