"""Pre-train a few steps and dump per-rank results (run under torchrun or as one process).

    python -m torch.distributed.run --nproc_per_node 2 tests/scripts/ddp_pretrain.py OUT_DIR BATCH_PER_RANK [DATA [OBJECTIVE]]
    python -m torch.distributed.run --nproc_per_node 2 tests/scripts/ddp_pretrain.py OUT_DIR BATCH_PER_RANK \
        --cases NAME:DATA:OBJECTIVE [NAME:DATA:OBJECTIVE ...] [--gather_unequal OUT_DIR]

DATA ``movielens`` (default) or ``one_splittable``: 32 users of which only the first has behaviours at more than
one time, so in every step one rank holds no user that BSM can split (its collectives must still match).

With ``--cases`` one launch runs several cases one after the other (each from the same seeds, with a fresh model,
trainer and pool record) and writes each case's results to ``OUT_DIR/NAME/rank{r}.json``: the tests pay the
interpreter and torchrun start-up once for all of them. ``--gather_unequal OUT_DIR`` (under torchrun, two ranks)
then runs tests/scripts/gather_unequal.py's check in the same process group, writing to ``OUT_DIR``.
"""

import hashlib
import json
import os
import sys

import torch

from userbert_hf import UserBertConfig, UserBertForPreTraining
from userbert_hf.collation import BehaviorCatalog
from userbert_hf.data import load_default_dataset
from userbert_hf.pretraining.trainer import UserBertTrainer, UserBertTrainingArguments


class RecordingTrainer(UserBertTrainer):
    """Records the negative pools each rank used."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pools = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.sampler is None or self.sampler.sequence_pool is None:
            return loss
        pool = self.sampler.sequence_pool
        digest = hashlib.sha256(pool.ids.numpy().tobytes() + pool.embeddings.numpy().round(5).tobytes()).hexdigest()
        step = self.state.global_step
        self.pools.append({"step": step, "behavior_pool": self.sampler.behavior_pool_ids(step).tolist()[:20],
                           "sequence_pool": digest})
        return loss


def main(out_dir: str, batch: int, data_name: str = "movielens", objective: str = "userbert") -> None:
    rank = int(os.environ.get("RANK", 0))
    data = load_default_dataset(verbose=False, max_behaviors=30)
    users = data.users
    if data_name == "one_splittable":
        users = users.select(range(32))
        users = users.map(lambda row, i: {"timestamps": row["timestamps"] if i == 0 else [7] * len(row["timestamps"])},
                          with_indices=True)
    config = UserBertConfig.from_preset(
        "bert4rec", behavior_vocab_size=len(data.vocabulary), hidden_size=16, intermediate_size=32,
        num_attention_heads=2, max_behaviors=30, dropout=0.0, attention_probs_dropout_prob=0.0,
        pretraining_objective=objective,
    )
    torch.manual_seed(0)
    model = UserBertForPreTraining(config)
    args = UserBertTrainingArguments(
        os.path.join(out_dir, "run"), max_steps=3, per_device_train_batch_size=batch, optim="sgd", learning_rate=0.5,
        weight_decay=0.0, max_grad_norm=0.0, lr_scheduler_type="constant", use_cpu=True,
        ddp_backend="gloo" if "RANK" in os.environ else None,
        logging_steps=1, save_strategy="no", disable_tqdm=True, report_to=[], seed=5, behavior_pool_size=200,
        sequence_pool_size=40, sequence_pool_interval=2, dataloader_num_workers=0,
    )
    trainer = RecordingTrainer(model=model, args=args, train_dataset=users, catalog=BehaviorCatalog(len(data.vocabulary)))
    trainer.train()
    result = {
        "world_size": args.world_size,
        "pools": trainer.pools,
        "losses": [e for e in trainer.state.log_history if "loss" in e],
        "parameters": {n: p.detach().reshape(-1)[:50].tolist() for n, p in trainer.model.named_parameters()},
    }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    if "--cases" in sys.argv:
        out_dir, batch = sys.argv[1], int(sys.argv[2])
        gather_dir = None
        if "--gather_unequal" in sys.argv:
            at = sys.argv.index("--gather_unequal")
            gather_dir = sys.argv[at + 1]
            del sys.argv[at:at + 2]
        for case in sys.argv[sys.argv.index("--cases") + 1:]:
            name, data_name, objective = case.split(":")
            os.makedirs(os.path.join(out_dir, name), exist_ok=True)
            main(os.path.join(out_dir, name), batch, data_name, objective)
            print(f"case {name} done", flush=True)
        if gather_dir is not None:
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            import gather_unequal

            os.makedirs(gather_dir, exist_ok=True)
            gather_unequal.main(gather_dir)
            print("gather_unequal done", flush=True)
    else:
        main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:])
