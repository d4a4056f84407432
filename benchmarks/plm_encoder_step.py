"""Pre-training step time and peak memory: the word self-attention encoder (NRMS) against a language-model
behaviour encoder (all-MiniLM-L6-v2, frozen with cached vectors, or its top layers tuned).

    OMP_NUM_THREADS=1 nice python benchmarks/plm_encoder_step.py --plm DIR [--steps 10] [--tuned_layers 2]
    OMP_NUM_THREADS=1 nice python benchmarks/plm_encoder_step.py --plm DIR --tuned_layers 2 --lower_cache_only \
        --batch_size 8 --output benchmarks/results/plm_lower_cache_step.md

Each variant runs the real ``userbert pretrain`` job (bundled MovieLens, titles + genres, NRMS context encoder,
hidden 64, batch 32, random negatives) in its own subprocess. Reported per variant: the job's wall time, the
training loop's time per step (``train_runtime_seconds`` / steps, the first step included), and the process's
peak resident memory. The frozen PLM runs twice with one cache folder: the first run encodes every title once
(its extra wall time is the cache build), the second reads the cached vectors. With ``--tuned_layers N`` the top N
layers learn, once with the frozen lower layers' token states cached (``plm_state_cache.py``; the job's wall time
includes building them) and once without (``USERBERT_PLM_STATE_CACHE_GB=0``: the whole encoder runs every step);
``--lower_cache_only`` runs just these two, side by side, and reports their step-time ratio.

``DIR``: a sentence-transformers folder, e.g. ``python -c "import all_minilm_l6_v2 as m; m.extract_model('/tmp/plm')"``.
Writes a markdown table to ``benchmarks/results/plm_encoder_step.md`` (``--output``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

WORKER = r"""
import json, resource, sys, time
from userbert_hf.pretraining.job import main
started = time.time()
metrics = main(sys.argv[1:])
print("RESULT " + json.dumps({"wall_seconds": time.time() - started, "train_seconds": metrics["train_runtime_seconds"],
                              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(job_args: list[str], env_extra: dict | None = None) -> dict:
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env = {**os.environ, "PYTHONPATH": src, "TOKENIZERS_PARALLELISM": "false", **(env_extra or {})}
    proc = subprocess.run([sys.executable, "-c", WORKER, *job_args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith("RESULT ")][-1][7:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plm", required=True, help="sentence-transformers folder of the language model")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--max_behaviors", type=int, default=50)
    parser.add_argument("--tuned_layers", type=int, default=0, help="also run with the top N layers tuned (0: skip)")
    parser.add_argument("--lower_cache_only", action="store_true",
                        help="run only the two --tuned_layers variants: lower-layer states cached and not")
    parser.add_argument("--batch_size", type=int, default=None, help="per_device_train_batch_size (job default)")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results", "plm_encoder_step.md"))
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="plm-bench-")
    common = ["--preset", "nrms", "--hidden_size", "64", "--max_behaviors", str(args.max_behaviors), "--max_steps",
              str(args.steps), "--eval_fraction", "0", "--save_strategy", "no", "--report_to", "none",
              "--disable_tqdm", "true", "--logging_steps", str(args.steps), "--seed", "0"]
    if args.batch_size:
        common += ["--per_device_train_batch_size", str(args.batch_size)]
    plm = ["--behavior_type", "plm", "--plm_name_or_path", args.plm, "--plm_cache_dir", os.path.join(work, "cache")]
    variants = [] if args.lower_cache_only else [
        ("word self-attention (NRMS)", common, None),
        ("MiniLM frozen, first run (cache built)", common + plm, None),
        ("MiniLM frozen, second run (cache read)", common + plm, None),
    ]
    if args.tuned_layers:
        tuned = common + plm + ["--plm_trainable_layers", str(args.tuned_layers)]
        variants += [(f"MiniLM, top {args.tuned_layers} layers tuned, no lower-layer cache", tuned,
                      {"USERBERT_PLM_STATE_CACHE_GB": "0"}),
                     (f"MiniLM, top {args.tuned_layers} layers tuned, lower-layer states cached", tuned, None)]
    rows, per_step = [], {}
    for i, (name, job_args, env_extra) in enumerate(variants):
        result = run(job_args + ["--output_dir", os.path.join(work, f"run{i}")], env_extra)
        print(name, result, flush=True)
        per_step[name] = result["train_seconds"] / args.steps
        rows.append(f"| {name} | {result['wall_seconds']:.1f} | {per_step[name]:.3f} | {result['peak_rss_mib']:.0f} |")
    table = "\n".join(["| variant | job wall s | s / step | peak RSS MiB |", "|---|---:|---:|---:|", *rows])
    if args.tuned_layers:
        without, with_cache = list(per_step.values())[-2:]
        table += f"\n\nStep time without / with the lower-layer cache: {without / with_cache:.2f}x\n"
    text = (f"# PLM behaviour encoder: pre-training step time and memory\n\n`{' '.join(sys.argv)}` "
            f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {time.strftime('%Y-%m-%d')})\n\n{table}\n")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
