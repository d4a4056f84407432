"""Time per training epoch on Amazon Beauty: our ID user models (GRU4Rec, BERT4Rec presets) against RecBole's.

    python3 -m venv /tmp/recbole-venv      # RecBole in its own environment (../shared/notes/peers.md)
    /tmp/recbole-venv/bin/pip install torch==2.13.0 recbole==1.2.1 "numpy<2" "pandas<2.3" "setuptools>=77,<81"
    python benchmarks/peer_recbole.py [--steps 30] [--repetitions 2] [--models gru4rec bert4rec]

Same data (the S3-Rec ``Beauty.txt``: 22,363 users, 12,101 items), same sizes (hidden 64; BERT4Rec: 2 layers,
4 heads, feed-forward 256), batch 256, sequences of at most 50 items, full-softmax cross-entropy over all items,
Adam, on the same CPU. Both train on every prefix of every training sequence (RecBole's sequential data
augmentation; our ``--train_every_prefix``, the default), leaving the last two items of each user out.

Runs are short on purpose: each side trains ``--steps`` optimizer steps (after 3 warm-up steps) in its own
subprocess, sides alternating over ``--repetitions``; time per epoch = median step time x that side's steps per
epoch. Ours is the real ``userbert finetune --task next_item`` job (stopped after the timed steps, before
evaluation); RecBole's is its own dataset, dataloader and model (``calculate_loss`` + backward + Adam step, what
its ``Trainer._train_epoch`` does per batch). BERT4Rec objectives differ by design: RecBole's BERT4Rec trains its
Cloze (masked item) task on each prefix, ours the next item from the user embedding; both are full softmax over
the items. Writes ``benchmarks/results/peer_recbole.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

BEAUTY = os.environ.get("USERBERT_BEAUTY", "/work/shared/data/amazon-beauty/Beauty.txt")
WARMUP = 3


# ---------------------------------------------------------------------------------------------- our side
def ours_worker(model: str, steps: int, data: str) -> dict:
    from transformers import TrainerCallback

    import userbert_hf.finetuning.job as job

    record = {"ends": []}

    class Stop(Exception):
        pass

    class Recorder(TrainerCallback):
        def on_train_begin(self, args, state, control, train_dataloader=None, **kw):
            record["batches_per_epoch"] = len(train_dataloader) if train_dataloader is not None else None
            record["ends"].append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            record["ends"].append(time.perf_counter())
            if state.global_step >= steps + WARMUP:
                raise Stop

    import transformers

    original_init = transformers.Trainer.__init__

    def init(self, *a, **kw):
        original_init(self, *a, **kw)
        self.add_callback(Recorder())
        record["rows"] = len(self.train_dataset)

    transformers.Trainer.__init__ = init
    with tempfile.TemporaryDirectory() as out:
        try:
            job.main([
                "--task", "next_item", "--data", data, "--model_name_or_path", model, "--hidden_size", "64",
                "--num_attention_heads", "4", "--max_behaviors", "50", "--per_device_train_batch_size", "256",
                "--learning_rate", "1e-3", "--num_train_epochs", "1", "--eval_strategy", "no", "--save_strategy", "no",
                "--report_to", "none", "--disable_tqdm", "True", "--logging_steps", "1000", "--output_dir", out,
                "--dataloader_num_workers", "0",
            ])
        except Stop:
            pass
    steps_s = [b - a for a, b in zip(record["ends"], record["ends"][1:])][WARMUP:]
    batches = record["batches_per_epoch"] or -(-record["rows"] // 256)
    return {"step_s": statistics.median(steps_s), "rows": record["rows"], "batches_per_epoch": batches}


# ---------------------------------------------------------------------------------------------- RecBole's side
def write_atomic_files(data: str, folder: str) -> str:
    """Beauty.txt -> RecBole atomic ``beauty.inter`` (positions as timestamps, the time order RecBole sorts by)."""
    os.makedirs(os.path.join(folder, "beauty"), exist_ok=True)
    path = os.path.join(folder, "beauty", "beauty.inter")
    with open(data) as src, open(path, "w") as dst:
        dst.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for line in src:
            user, *items = line.split()
            for position, item in enumerate(items):
                dst.write(f"{user}\t{item}\t{position}\n")
    return folder


def recbole_worker(model: str, steps: int, data_folder: str) -> dict:
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, init_seed

    settings = {
        "data_path": data_folder, "dataset": "beauty", "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp", "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": 50, "train_batch_size": 256, "eval_batch_size": 256, "loss_type": "CE",
        "train_neg_sample_args": None, "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
        "hidden_size": 64, "embedding_size": 64, "inner_size": 256, "n_layers": 2, "n_heads": 4, "num_layers": 1,
        "learning_rate": 1e-3, "device": "cpu", "use_gpu": False, "show_progress": False, "seed": 42,
        "checkpoint_dir": tempfile.mkdtemp(), "log_wandb": False, "state": "ERROR",
    }
    name = {"gru4rec": "GRU4Rec", "bert4rec": "BERT4Rec"}[model]
    config = Config(model=name, config_dict=settings)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, _, _ = data_preparation(config, dataset)
    net = get_model(config["model"])(config, train_data.dataset).to(config["device"])
    optimizer = torch.optim.Adam(net.parameters(), lr=config["learning_rate"])
    net.train()
    ends = [time.perf_counter()]
    for i, interaction in enumerate(train_data):
        interaction = interaction.to(config["device"])
        optimizer.zero_grad()
        loss = net.calculate_loss(interaction)
        loss.backward()
        optimizer.step()
        ends.append(time.perf_counter())
        if i + 1 >= steps + WARMUP:
            break
    steps_s = [b - a for a, b in zip(ends, ends[1:])][WARMUP:]
    return {"step_s": statistics.median(steps_s), "rows": len(train_data.dataset), "batches_per_epoch": len(train_data)}


# ---------------------------------------------------------------------------------------------- driver
def run(python: str, side: str, model: str, steps: int, data: str) -> dict:
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false")
    command = [python, os.path.abspath(__file__), "--worker", side, "--models", model, "--steps", str(steps), "--data", data]
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["gru4rec", "bert4rec"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--data", default=BEAUTY)
    parser.add_argument("--recbole_python", default="/tmp/recbole-venv/bin/python")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "peer_recbole.md"))
    parser.add_argument("--worker", choices=["ours", "recbole"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "ours":
        print(json.dumps(ours_worker(args.models[0], args.steps, args.data)))
        return
    if args.worker == "recbole":
        print(json.dumps(recbole_worker(args.models[0], args.steps, args.data)))
        return

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _sides import command_line, write_markdown

    atomic = write_atomic_files(args.data, tempfile.mkdtemp(prefix="recbole-beauty-"))
    sides = {"userbert_hf": (sys.executable, args.data), "RecBole 1.2.1": (args.recbole_python, atomic)}
    rows = ["| model | library | step (median of repetitions) | training rows | steps / epoch | time / epoch | ratio (RecBole / ours) |", "|---|---|---|---|---|---|---|"]
    for model in args.models:
        results = {name: [] for name in sides}
        for rep in range(args.repetitions):
            for name in (list(sides) if rep % 2 == 0 else list(sides)[::-1]):
                python, data = sides[name]
                results[name].append(run(python, "ours" if name == "userbert_hf" else "recbole", model, args.steps, data))
                print(f"[bench] {model} {name} repetition {rep + 1}: {results[name][-1]}", file=sys.stderr, flush=True)
        epoch = {}
        for name, rs in results.items():
            step = statistics.median(r["step_s"] for r in rs)
            epoch[name] = step * rs[0]["batches_per_epoch"]
            rows.append(
                f"| {model} | {name} | {step:.3f} s | {rs[0]['rows']:,} | {rs[0]['batches_per_epoch']:,} | {epoch[name]:.0f} s | "
                + (f"**{epoch['RecBole 1.2.1'] / epoch['userbert_hf']:.2f}x** |" if name == "RecBole 1.2.1" else " |")
            )
    body = (
        f"Amazon Beauty, hidden 64, batch 256, at most 50 items per sequence, CPU; {args.steps} timed steps per run "
        f"after {WARMUP} warm-up steps, {args.repetitions} alternating repetitions; time per epoch extrapolated from "
        "the median step time (no full epoch was run).\n\n" + "\n".join(rows)
    )
    print(write_markdown(args.output, "Against a peer: RecBole on Amazon Beauty", command_line(), body))


if __name__ == "__main__":
    main()
