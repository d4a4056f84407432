"""Ablation of the pre-training choices: held-out health of the pre-trained user model and MovieLens CTR at 10%
of the labels, for the paper's settings and each change made to stop user embeddings from collapsing.

    python examples/pretraining_ablation.py --output_root outputs/ablation --seeds 1 2 3 --jobs 2

1. The CTR task's pre-training data (histories only; no candidate or held-out item) is exported once.
2. Each variant pre-trains with the main job's defaults (NRMS, hidden 64, batch 32, 200 steps) plus its own
   options; 10% of the users are held out and the job reports held-out figures (``eval_*``).
3. Each pre-trained model, and the same architecture from scratch, is fine-tuned on 10% of the CTR training
   users for every seed; test AUC on the fixed test users.
4. ``docs/pretraining.md``'s table is written from the results (finished runs are reused, so an interrupted
   ablation resumes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

PAPER = ["--matching_similarity", "dot", "--matching_temperature", "1", "--uniformity_loss_weight", "0"]
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "paper": ("paper: dot product, medium-hard negatives", PAPER),
    "cosine": ("cosine / 0.1", ["--uniformity_loss_weight", "0"]),
    "cosine_uniformity": ("cosine / 0.1 + uniformity 1 (default)", []),
    "cosine_uniformity2": ("cosine / 0.1 + uniformity 2", ["--uniformity_loss_weight", "2"]),
    "random_negatives": ("cosine / 0.1 + uniformity 1, random negatives", ["--negative_sampling", "random"]),
    "projection_head": ("cosine / 0.1 + uniformity 1 + projection head", ["--projection_head", "true"]),
    "cropped_positive": ("cosine / 0.1 + uniformity 1, cropped positive B", ["--bsm_positive", "crop"]),
    "paper_random": ("paper with random negatives", PAPER + ["--negative_sampling", "random"]),
}
HEALTH = [
    ("eval_mbp_accuracy", "MBP acc"), ("eval_bsm_accuracy", "BSM acc"), ("eval_embedding_mean_cosine", "mean cos"),
    ("eval_embedding_participation_ratio", "PR"), ("eval_knn_recall_at_20", "kNN R@20"),
]


def _run(command: list[str], log: str) -> None:
    with open(log, "w") as f:
        done = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed; see {log}")


def _results(folder: str) -> dict | None:
    path = os.path.join(folder, "training_results.json")
    return json.load(open(path)) if os.path.exists(path) else None


def pretrain(root: str, data: str, name: str, options: list[str], steps: int) -> dict:
    folder = os.path.join(root, "pretrained", name)
    if _results(folder) is None:
        _run([sys.executable, "-m", "userbert_hf.cli", "pretrain", "--data", data, "--output_dir", folder,
              "--max_steps", str(steps), "--early_stopping_patience", "0", "--save_strategy", "no",
              "--report_to", "none", "--disable_tqdm", "true",
              "--overwrite_output_dir", "true", *options], folder + ".log")
    return _results(folder)["metrics"]


def finetune(root: str, model: str, name: str, seed: int, fraction: float) -> float:
    folder = os.path.join(root, "finetuned", f"{name}-seed{seed}")
    if _results(folder) is None:
        _run([sys.executable, "-m", "userbert_hf.cli", "finetune", "--task", "ctr", "--model_name_or_path", model,
              "--train_fraction", str(fraction), "--seed", str(seed), "--output_dir", folder, "--report_to", "none",
              "--disable_tqdm", "true", "--overwrite_output_dir", "true"], folder + ".log")
    return float(_results(folder)["test"]["test_auc"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_root", default="outputs/ablation")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--train_fraction", type=float, default=0.1)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel")
    parser.add_argument("--report", default="docs/pretraining-ablation.md")
    args = parser.parse_args(argv)
    os.makedirs(os.path.join(args.output_root, "pretrained"), exist_ok=True)
    os.makedirs(os.path.join(args.output_root, "finetuned"), exist_ok=True)
    data = os.path.join(args.output_root, "ctr-pretraining-data")
    if not os.path.exists(os.path.join(data, "behavior_vocab.json")):
        _run([sys.executable, "-m", "userbert_hf.cli", "finetune", "--task", "ctr", "--export_pretraining_data", data],
             data + ".log")

    with ThreadPoolExecutor(args.jobs) as pool:
        health = dict(zip(args.variants, pool.map(
            lambda v: pretrain(args.output_root, data, v, VARIANTS[v][1], args.steps), args.variants)))
        models = {"scratch": "nrms", **{v: os.path.join(args.output_root, "pretrained", v) for v in args.variants}}
        cells = [(name, seed) for name in models for seed in args.seeds]
        aucs = dict(zip(cells, pool.map(
            lambda c: finetune(args.output_root, models[c[0]], c[0], c[1], args.train_fraction), cells)))

    from scipy import stats

    scratch = np.array([aucs[("scratch", s)] for s in args.seeds])
    any_health = next(iter(health.values()))
    lines = [
        "| variant | " + " | ".join(label for _, label in HEALTH) + " | CTR test AUC (10%) | vs scratch | p (paired t) |",
        "|---|" + "---|" * (len(HEALTH) + 3),
        "| same architecture at initialisation | – | – | "
        f"{any_health['eval_init_embedding_mean_cosine']:.3f} | {any_health['eval_init_embedding_participation_ratio']:.2f} | "
        f"{any_health['eval_init_knn_recall_at_20']:.3f} | {scratch.mean():.4f} ± {scratch.std(ddof=1):.4f} (scratch) | | |",
    ]
    for name in args.variants:
        values = np.array([aucs[(name, s)] for s in args.seeds])
        diff = values - scratch
        p = stats.ttest_rel(values, scratch).pvalue if len(values) > 1 else float("nan")
        figures = " | ".join(f"{health[name][key]:.3f}" if "ratio" not in key else f"{health[name][key]:.2f}" for key, _ in HEALTH)
        lines.append(f"| {VARIANTS[name][0]} | {figures} | {values.mean():.4f} ± {values.std(ddof=1):.4f} | "
                     f"{diff.mean():+.4f} | {p:.3f} |")
    lines.append(f"| label-free popularity (probe reference) | | | | | {any_health['eval_popularity_recall_at_20']:.3f} | | | |")
    table = "\n".join(lines)
    with open(os.path.join(args.output_root, "ablation.json"), "w") as f:
        json.dump({"health": health, "auc": {f"{k[0]}-seed{k[1]}": v for k, v in aucs.items()}}, f, indent=1)
    print(table)
    if args.report:
        os.makedirs(os.path.dirname(args.report) or ".", exist_ok=True)
        command = "python examples/pretraining_ablation.py " + " ".join(argv if argv is not None else sys.argv[1:])
        with open(args.report, "w") as f:
            f.write(f"<!-- generated by `{command}` -->\n\n{table}\n")


if __name__ == "__main__":
    main()
