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

Time to quality (``--time_to_quality 0.0318``, the published SASRec NDCG@10 on Beauty): trains SASRec three ways,
each side in its own subprocess, one after the other, and records after every epoch the training seconds
(evaluation time excluded) and the validation NDCG@10 (leave-one-out, full ranking over all items, the user's
history excluded as each library does it), until the target is reached or ``--time_cap_s`` training seconds pass:

- ``ours``: ``userbert finetune --task next_item --model_name_or_path sasrec`` (hidden 64, 2 layers, 2 heads,
  at most 50 items, batch 256, lr 1e-3, constant learning rate, ``--eval_strategy epoch``), timed by a
  ``TrainerCallback`` (epoch end -> evaluation end is evaluation time, subtracted);
- ``recbole_ce``: RecBole 1.2.1 SASRec, ``loss_type: CE`` (full softmax, as ours);
- ``recbole_bpr``: RecBole SASRec, ``loss_type: BPR`` with one uniform negative per target (the original SASRec).

RecBole's sides are a manual loop over its own dataset, dataloader, model, optimizer (``Trainer`` built from the
config) and ``Trainer.evaluate`` (full sort, history masked), so the cap can end an epoch early: the last point
of a capped side is then a partial epoch. Writes ``benchmarks/results/time_to_quality.{json,md,png}``::

    OMP_NUM_THREADS=1 python benchmarks/peer_recbole.py --time_to_quality 0.0318 --time_cap_s 900 [--sides ours]
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


# ---------------------------------------------------------------------------------------------- time to quality
TTQ_SIDES = {
    "ours": "userbert_hf SASRec (CE)",
    "recbole_ce": "RecBole 1.2.1 SASRec (CE)",
    "recbole_bpr": "RecBole 1.2.1 SASRec (BPR, 1 negative)",
}
TTQ_RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "time_to_quality")


def _log(message: str) -> None:
    print(f"[ttq] {message}", file=sys.stderr, flush=True)


def ttq_ours_worker(target: float, cap_s: float, data: str) -> dict:
    """Our ``next_item`` job with SASRec; one point per epoch: training seconds (evaluations excluded), NDCG@10."""
    import torch
    import transformers
    from transformers import TrainerCallback

    import userbert_hf.finetuning.job as job

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    curve: list[dict] = []
    clock = {"training": False}

    class Recorder(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            clock.update(training=True, begin=time.perf_counter(), evaluating=0.0)

        def on_epoch_end(self, args, state, control, **kw):
            clock["epoch_end"] = time.perf_counter()

        def on_evaluate(self, args, state, control, metrics=None, **kw):
            if not clock["training"]:  # the job's own evaluation after training
                return
            now = time.perf_counter()
            eval_s = now - clock["epoch_end"]
            train_s = clock["epoch_end"] - clock["begin"] - clock["evaluating"]
            clock["evaluating"] += eval_s
            point = {"epoch": len(curve) + 1, "steps": state.global_step, "train_s": round(train_s, 2),
                     "ndcg@10": metrics["eval_ndcg@10"], "hr@10": metrics.get("eval_hr@10"),
                     "eval_s": round(eval_s, 2), "wall_s": round(now - clock["begin"], 2)}
            curve.append(point)
            _log(f"ours {point}")
            if point["ndcg@10"] >= target or train_s >= cap_s:
                control.should_training_stop = True

        def on_train_end(self, args, state, control, **kw):
            clock["training"] = False

    original_init = transformers.Trainer.__init__

    def init(self, *a, **kw):
        original_init(self, *a, **kw)
        self.add_callback(Recorder())

    transformers.Trainer.__init__ = init
    with tempfile.TemporaryDirectory() as out:
        job.main([
            "--task", "next_item", "--data", data, "--model_name_or_path", "sasrec", "--hidden_size", "64",
            "--num_attention_heads", "2", "--max_behaviors", "50", "--per_device_train_batch_size", "256",
            "--per_device_eval_batch_size", "256", "--learning_rate", "1e-3", "--lr_scheduler_type", "constant",
            "--num_train_epochs", "10000", "--eval_strategy", "epoch", "--save_strategy", "no",
            "--evaluate_test", "False", "--report_to", "none", "--disable_tqdm", "True", "--logging_strategy", "no",
            "--output_dir", out, "--overwrite_output_dir", "True", "--dataloader_num_workers", "0", "--seed", "42",
        ])
    return {"side": "ours", "curve": curve}


def ttq_recbole_worker(loss: str, target: float, cap_s: float, data_folder: str) -> dict:
    """RecBole SASRec: its data, model and optimizer in a manual epoch loop (the cap may cut the last epoch short),
    ``Trainer.evaluate`` on the validation split after each epoch."""
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    settings = {
        "data_path": data_folder, "dataset": "beauty", "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp", "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": 50, "train_batch_size": 256, "eval_batch_size": 256, "loss_type": loss.upper(),
        "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1} if loss == "bpr" else None,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
        "metrics": ["Hit", "NDCG"], "topk": [10], "valid_metric": "NDCG@10", "eval_step": 1, "stopping_step": 10**6,
        "hidden_size": 64, "inner_size": 256, "n_layers": 2, "n_heads": 2, "learning_rate": 1e-3,
        "device": "cpu", "use_gpu": False, "show_progress": False, "seed": 42, "saved": False,
        "checkpoint_dir": tempfile.mkdtemp(), "log_wandb": False, "state": "ERROR",
    }
    config = Config(model="SASRec", config_dict=settings)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, _ = data_preparation(config, dataset)
    model = get_model(config["model"])(config, train_data.dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    optimizer = trainer.optimizer
    curve: list[dict] = []
    train_s = 0.0
    begin = time.perf_counter()
    while True:
        model.train()
        start = time.perf_counter()
        batches = 0
        for interaction in train_data:
            interaction = interaction.to(config["device"])
            optimizer.zero_grad()
            model.calculate_loss(interaction).backward()
            optimizer.step()
            batches += 1
            if train_s + time.perf_counter() - start >= cap_s:
                break
        train_s += time.perf_counter() - start
        partial = batches < len(train_data)
        evaluated = time.perf_counter()
        metrics = trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
        now = time.perf_counter()
        point = {"epoch": len(curve) + 1, "steps": batches,
                 "train_s": round(train_s, 2), "ndcg@10": float(metrics["ndcg@10"]), "hr@10": float(metrics["hit@10"]),
                 "eval_s": round(now - evaluated, 2), "wall_s": round(now - begin, 2)}
        if partial:
            point["epoch"] = round(len(curve) + batches / len(train_data), 3)
            point["partial_epoch"] = True
        curve.append(point)
        _log(f"recbole_{loss} {point}")
        if point["ndcg@10"] >= target or train_s >= cap_s:
            break
    return {"side": f"recbole_{loss}", "curve": curve, "training_rows": len(train_data.dataset),
            "batches_per_epoch": len(train_data)}


def time_to_target(curve: list[dict], target: float) -> dict:
    """Summary of one side's curve (points ``{"train_s", "ndcg@10"}`` in training order): the training seconds of
    the first evaluation at or above ``target`` (``seconds``), the same linearly interpolated between that point
    and the one before it (from (0 s, 0) for the first; ``interpolated_seconds``), and the best value with its
    time. ``seconds`` is None when the target was not reached."""
    summary = {"reached": False, "seconds": None, "interpolated_seconds": None, "epoch": None,
               "best": None, "best_at_s": None, "last_s": curve[-1]["train_s"] if curve else 0.0,
               "evaluations": len(curve)}
    previous = {"train_s": 0.0, "ndcg@10": 0.0}
    for point in curve:
        if summary["best"] is None or point["ndcg@10"] > summary["best"]:
            summary["best"], summary["best_at_s"] = point["ndcg@10"], point["train_s"]
        if not summary["reached"] and point["ndcg@10"] >= target:
            rise = point["ndcg@10"] - previous["ndcg@10"]
            fraction = (target - previous["ndcg@10"]) / rise if rise > 0 else 1.0
            summary.update(reached=True, seconds=point["train_s"], epoch=point.get("epoch"),
                           interpolated_seconds=previous["train_s"] + fraction * (point["train_s"] - previous["train_s"]))
        previous = point
    return summary


def ratio_text(peer: dict, ours: dict) -> str:
    """RecBole / ours seconds to the target: exact when both reached it, a bound when one did, else n/a."""
    if peer["reached"] and ours["reached"]:
        return f"{peer['seconds'] / ours['seconds']:.2f}x" if ours["seconds"] > 0 else "n/a"
    if ours["reached"] and ours["seconds"] > 0:  # the peer's time to target is more than all it trained
        return f"> {peer['last_s'] / ours['seconds']:.2f}x (not reached)"
    if peer["reached"] and ours["last_s"] > 0:
        return f"< {peer['seconds'] / ours['last_s']:.2f}x (ours not reached)"
    return "n/a (neither reached)"


def summary_cell(summary: dict) -> str:
    if summary.get("error"):
        return f"failed: {summary['error']}"
    if summary["reached"]:
        return (f"**{summary['seconds']:.0f} s** (epoch {summary['epoch']}; interpolated "
                f"{summary['interpolated_seconds']:.0f} s)")
    best = f"best {summary['best']:.4f} at {summary['best_at_s']:.0f} s" if summary["best"] is not None else "no evaluation"
    return f"not reached in {summary['last_s']:.0f} s, {best}"


def ttq_table(results: dict[str, dict], target: float) -> str:
    """Markdown table of the sides' summaries and the RecBole / ours ratios (``results[side]`` holds ``curve``
    or ``error``)."""
    summaries = {side: ({"error": r["error"]} if r.get("error") else time_to_target(r["curve"], target))
                 for side, r in results.items()}
    rows = ["| side | training seconds to NDCG@10 >= %g | evaluations | best NDCG@10 (at s) | RecBole / ours |" % target,
            "|---|---|---|---|---|"]
    for side, s in summaries.items():
        ratio = ""
        if side != "ours" and "ours" in summaries and not s.get("error") and not summaries["ours"].get("error"):
            ratio = ratio_text(s, summaries["ours"])
        best = f"{s['best']:.4f} ({s['best_at_s']:.0f} s)" if s.get("best") is not None else "-"
        rows.append(f"| {TTQ_SIDES.get(side, side)} | {summary_cell(s)} | {s.get('evaluations', 0)} | {best} | {ratio} |")
    return "\n".join(rows)


def ttq_plot(results: dict[str, dict], target: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for side, r in results.items():
        curve = r.get("curve") or []
        if curve:
            ax.plot([0] + [p["train_s"] for p in curve], [0] + [p["ndcg@10"] for p in curve], marker="o",
                    label=TTQ_SIDES.get(side, side))
    ax.axhline(target, color="grey", linestyle="--", label=f"target {target:g} (published SASRec)")
    ax.set_xlabel("training seconds (evaluation excluded)")
    ax.set_ylabel("validation NDCG@10 (full ranking)")
    ax.set_title("Amazon Beauty, SASRec: time to quality")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def ttq_run_side(python: str, side: str, target: float, cap_s: float, data: str) -> dict:
    """One side in its own subprocess (its progress on stderr); the worker prints one JSON line last."""
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false")
    env.setdefault("OMP_NUM_THREADS", "1")
    if side == "ours":
        src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    command = [python, os.path.abspath(__file__), "--worker", side, "--time_to_quality", str(target),
               "--time_cap_s", str(cap_s), "--data", data]
    started = time.time()
    proc = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        return {"side": side, "error": f"worker exited with {proc.returncode} (see its stderr above)", "curve": []}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["side_wall_s"] = round(time.time() - started, 1)
    return result


def time_to_quality(args) -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _sides import command_line, write_markdown

    output = args.ttq_output
    os.makedirs(os.path.dirname(output), exist_ok=True)
    atomic = None
    results: dict[str, dict] = {}
    record = {"target_ndcg@10": args.time_to_quality, "time_cap_s": args.time_cap_s, "data": os.path.basename(args.data),
              "threads": os.environ.get("OMP_NUM_THREADS"), "sides": results}
    for side in args.sides:
        if side == "ours":
            python, data = sys.executable, args.data
        else:
            atomic = atomic or write_atomic_files(args.data, tempfile.mkdtemp(prefix="recbole-beauty-"))
            python, data = args.recbole_python, atomic
        _log(f"side {side} starts ({TTQ_SIDES[side]})")
        results[side] = ttq_run_side(python, side, args.time_to_quality, args.time_cap_s, data)
        results[side]["summary"] = (None if results[side].get("error")
                                    else time_to_target(results[side]["curve"], args.time_to_quality))
        with open(output + ".json", "w") as f:  # after every side: a failed later side keeps the earlier curves
            json.dump(record, f, indent=1)
    ttq_plot(results, args.time_to_quality, output + ".png")
    body = (
        f"Amazon Beauty (S3-Rec `Beauty.txt`), SASRec: hidden 64, 2 layers, 2 heads, at most 50 items, batch 256, "
        f"Adam lr 1e-3 (constant), one thread (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}), CPU; each side "
        f"in its own process, one after the other. Target: validation NDCG@10 >= {args.time_to_quality:g} (the "
        "published SASRec test NDCG@10 on Beauty, S3-Rec repository's all-rank table), leave-one-out validation "
        "(each user's second-last item), full ranking over all items, the user's history excluded. Seconds are "
        f"training seconds with evaluations excluded, at the first epoch-end evaluation reaching the target; cap "
        f"{args.time_cap_s:g} training seconds per side (ours stops at the first epoch end past it; RecBole's last "
        "epoch may be cut at the cap and evaluated there). Each library keeps its own defaults otherwise (dropout, "
        "initialisation, data pipeline). Curves: `time_to_quality.json`; plot: `time_to_quality.png`.\n\n"
        + ttq_table(results, args.time_to_quality)
    )
    print(write_markdown(output + ".md", "Time to quality against RecBole: SASRec on Amazon Beauty", command_line(), body))


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
    parser.add_argument("--time_to_quality", type=float, default=None, metavar="NDCG",
                        help="Time-to-quality mode: train SASRec per side until validation NDCG@10 reaches this "
                             "(e.g. 0.0318) or --time_cap_s training seconds pass.")
    parser.add_argument("--time_cap_s", type=float, default=3600.0, help="Time-to-quality cap per side (training s).")
    parser.add_argument("--sides", nargs="+", choices=list(TTQ_SIDES), default=list(TTQ_SIDES),
                        help="Time-to-quality sides, run in this order (`ours` alone needs no RecBole).")
    parser.add_argument("--ttq_output", default=TTQ_RESULTS, help="Time-to-quality files: this path + .json/.md/.png")
    parser.add_argument("--worker", choices=["ours", "recbole", *TTQ_SIDES], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.time_to_quality is not None:
        if args.worker == "ours":
            print(json.dumps(ttq_ours_worker(args.time_to_quality, args.time_cap_s, args.data)))
        elif args.worker in ("recbole_ce", "recbole_bpr"):
            loss = args.worker.split("_")[1]
            print(json.dumps(ttq_recbole_worker(loss, args.time_to_quality, args.time_cap_s, args.data)))
        else:
            time_to_quality(args)
        return
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
