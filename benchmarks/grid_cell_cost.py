"""Compute of one grid cell with and without early stopping, side by side on the same cell.

    python benchmarks/grid_cell_cost.py [--fraction 0.1] [--seed 1] [--eval_sample_users 2000] [--patience 3]
    python benchmarks/grid_cell_cost.py --fraction 1.0 --output benchmarks/results/grid_cell_cost_all_labels.md

The cell is a fine-tuning cell of ``experiments/beauty_next_item.yaml`` (Amazon Beauty next-item, SASRec from
scratch, hidden 64, 10% (or ``--fraction``) of the users' labels, split seed 0), run twice by the real ``userbert finetune`` job, each
in its own subprocess (one thread):

* "fixed": the grid's settings: 40 epochs, validation (full ranking of every validation user) every 175 steps,
  the best checkpoint loaded at the end;
  (at 100% of the labels the grid's ``fraction_args``: 20 epochs, validation every 1,750 steps);
* "early stopped": the same upper bound and evaluation interval (at 100%: every 700 steps, 2 epochs), but ``--early_stopping_patience``
  evaluations without improvement stop it, and the evaluations between checkpoints rank a fixed sample of
  ``--eval_sample_users`` validation users; the final test still ranks every test user.

Reports, per side: wall and CPU seconds of the whole cell (data loading, training, evaluations, test), optimizer
steps, the best validation NDCG@10 and the test figures. Writes ``benchmarks/results/grid_cell_cost.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _sides import NEW_SRC, command_line, write_markdown  # noqa: E402

BEAUTY = os.environ.get("USERBERT_BEAUTY", "/work/shared/data/amazon-beauty/Beauty.txt")


def cell_argv(args, output_dir: str) -> list[str]:
    """The grid's fine-tuning cell (beauty_next_item.yaml: model_args, task_args, finetuning_args)."""
    return [
        "--task", "next_item", "--data", BEAUTY, "--split_seed", "0", "--model_name_or_path", "sasrec",
        "--hidden_size", "64", "--num_attention_heads", "2", "--dropout", "0.3", "--max_behaviors", "50",
        "--learning_rate", "0.001", "--per_device_train_batch_size", "64", "--num_train_epochs", str(args.epochs),
        "--eval_strategy", "steps", "--train_fraction", str(args.fraction),
        "--seed", str(args.seed), "--report_to", "none", "--disable_tqdm", "true", "--output_dir", output_dir,
    ]


SIDES = {
    "fixed": lambda args: ["--eval_steps", str(args.eval_steps), "--save_strategy", "steps", "--save_steps",
                           str(args.eval_steps), "--save_total_limit", "1", "--load_best_model_at_end", "true",
                           "--metric_for_best_model", "ndcg@10"],
    "early stopped": lambda args: ["--eval_steps", str(args.early_eval_steps), "--early_stopping_patience",
                                   str(args.patience), "--eval_sample_users", str(args.eval_sample_users)],
}


def run_side(name: str, args, workdir: str) -> dict:
    out = os.path.join(workdir, name.replace(" ", "_"))
    argv = [sys.executable, "-m", "userbert_hf.cli", "finetune", *cell_argv(args, out), *SIDES[name](args)]
    env = {**os.environ, "PYTHONPATH": args.src, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    results = json.loads(open(os.path.join(out, "training_results.json")).read())
    validation = [e["eval_ndcg@10"] for e in results["validation"] if "eval_ndcg@10" in e]
    return {
        "side": name, "wall_s": round(wall, 1),
        "cpu_s": round((after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 1),
        "steps": results["settings"].get("steps_trained"), "evaluations": len(validation),
        "best_validation_ndcg@10": round(max(validation), 4) if validation else None,
        **{k: round(results["test"][f"test_{k}"], 4) for k in ("ndcg@10", "hr@10", "mrr")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None,
                        help="upper bound of both sides (default: the grid's, 40 at 10%% of the labels, 20 at 100%%)")
    parser.add_argument("--eval_steps", type=int, default=None,
                        help="the fixed side's validation interval (default: the grid's, 175 steps; 1,750 at 100%%)")
    parser.add_argument("--early_eval_steps", type=int, default=None,
                        help="the early-stopped side's interval (default: --eval_steps; 700 steps = 2 epochs at 100%%)")
    parser.add_argument("--eval_sample_users", type=int, default=2000)
    parser.add_argument("--src", default=NEW_SRC, help="src folder to run (default: this checkout's)")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                         "grid_cell_cost.md"))
    args = parser.parse_args()
    all_labels = args.fraction >= 1.0  # the grid's fraction_args for 1.0: 20 epochs, validation every 1,750 steps
    args.epochs = args.epochs or (20 if all_labels else 40)
    args.eval_steps = args.eval_steps or (1750 if all_labels else 175)
    args.early_eval_steps = args.early_eval_steps or (700 if all_labels else args.eval_steps)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in SIDES:
            rows.append(run_side(name, args, workdir))
            print(json.dumps(rows[-1]), flush=True)
    fixed, early = rows
    lines = [
        f"Cell: Beauty next-item, SASRec from scratch, {args.fraction:.0%} of the labels, seed {args.seed} "
        f"(experiments/beauty_next_item.yaml's fine-tuning settings: at most {args.epochs} epochs, validation every "
        f"{args.eval_steps} steps; early stopped: every {args.early_eval_steps} steps on {args.eval_sample_users} "
        f"users, patience {args.patience}), one thread.", "",
        "| side | wall s | CPU s | steps | validations | best validation NDCG@10 | test NDCG@10 | test HR@10 | test MRR |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['side']} | {r['wall_s']} | {r['cpu_s']} | {r['steps']} | {r['evaluations']} | "
                     f"{r['best_validation_ndcg@10']} | {r['ndcg@10']} | {r['hr@10']} | {r['mrr']} |")
    lines += ["", f"**CPU ratio (early stopped / fixed): {early['cpu_s'] / fixed['cpu_s']:.2f}**; wall ratio "
              f"{early['wall_s'] / fixed['wall_s']:.2f}."]
    write_markdown(args.output, "Grid cell compute: fixed budget vs early stopping", command_line(), "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
