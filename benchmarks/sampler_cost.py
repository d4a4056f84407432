"""What the negative sampler costs: step time and sampling time per step for sequence-pool refresh intervals
1, 10, 50 and 200 (the paper's Figure 10), and medium-hard against random negatives.

    python benchmarks/sampler_cost.py [--steps 12] [--repetitions 2] [--intervals 1 10 50 200]

Every run is the real ``userbert pretrain`` job (bundled MovieLens, NRMS, hidden 64, batch 32, behaviour pool
1,000, sequence pool 100, K = P = 4) in its own subprocess (see ``pretraining_step.py``). Sampling time is the
wall time spent in the sampler's public methods (pool draws, pool encodings, nearest-neighbour choice), per
step. A run of N steps refreshes the sequence pool at the steps divisible by T, so for T > N it sees only the
first fill; the "amortised" column adds the measured cost of one refresh (sampling time per step at T = 1
minus that at the largest T) divided by T. Medium-hard and random alternate over ``--repetitions`` at the
paper's T = 50. Writes ``benchmarks/results/sampler_cost.md``.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _sides import NEW_SRC, command_line, median, run_worker, write_markdown  # noqa: E402

STEP_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretraining_step.py")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--intervals", type=int, nargs="+", default=[1, 10, 50, 200])
    parser.add_argument("--src", default=NEW_SRC, help="src folder to measure (default: this checkout's; e.g. a worktree of HEAD)")
    parser.add_argument("--quick", action="store_true", help="3 steps, intervals 1 and 50, no file written")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "sampler_cost.md"))
    args, job_args = parser.parse_known_args()
    if args.quick:
        args.steps, args.repetitions, args.intervals, args.output = 3, 1, [1, 50], None

    def worker_args(interval: int, strategy: str) -> list[str]:
        return [
            "--mode", "time", "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--sequence_pool_interval", str(interval), "--negative_sampling", strategy, *job_args,
        ]

    # 1. Refresh intervals (medium-hard).
    by_interval = {}
    for interval in args.intervals:
        result = run_worker(STEP_SCRIPT, args.src, worker_args(interval, "medium_hard"))
        by_interval[interval] = result
        print(f"[bench] T={interval}: step {result['step_s']:.3f} s, sampling {result['sampling_s']:.3f} s", file=sys.stderr, flush=True)
    mean_sampling = {t: sum(r["sampling"][args.warmup :]) / max(len(r["sampling"]) - args.warmup, 1) for t, r in by_interval.items()}
    smallest, largest = min(args.intervals), max(args.intervals)
    refresh = max(mean_sampling[smallest] - mean_sampling[largest], 0.0) if smallest == 1 else 0.0
    rows = [
        "| refresh interval T | step (median) | sampling / step (median) | sampling / step (mean of measured steps) | sampling / step, amortised | sampling share of step |",
        "|---|---|---|---|---|---|",
    ]
    for t, r in by_interval.items():
        amortised = mean_sampling[largest] + refresh / t
        rows.append(
            f"| {t} | {r['step_s']:.3f} s | {r['sampling_s']:.3f} s | {mean_sampling[t]:.3f} s | {amortised:.3f} s | {100 * r['sampling_s'] / r['step_s']:.0f}% |"
        )
    intervals_text = "\n".join(rows) + (
        f"\n\nOne sequence-pool refresh (100 crops encoded, incl. nearest-neighbour search) costs about {refresh:.3f} s "
        f"(sampling per step at T = 1 minus T = {largest})." if refresh else ""
    )

    # 2. Medium-hard vs random at T = 50, alternating.
    runs = {"medium_hard": [], "random": []}
    for rep in range(args.repetitions):
        for name in (("medium_hard", "random") if rep % 2 == 0 else ("random", "medium_hard")):
            runs[name].append(run_worker(STEP_SCRIPT, args.src, worker_args(50, name)))
            print(f"[bench] {name} repetition {rep + 1}: step {runs[name][-1]['step_s']:.3f} s", file=sys.stderr, flush=True)
    step = {name: median(r["step_s"] for r in rs) for name, rs in runs.items()}
    sampling = {name: median(r["sampling_s"] for r in rs) for name, rs in runs.items()}
    ratio = step["medium_hard"] / step["random"]
    # Less sensitive to the machine's drift between runs: the medium-hard step against the same step with the
    # sampling time of random negatives instead of its own (both measured inside the medium-hard runs' steps).
    derived = step["medium_hard"] / (step["medium_hard"] - sampling["medium_hard"] + sampling["random"])
    strategy_text = (
        "| negatives (T = 50) | step (median of repetitions) | sampling / step |\n|---|---|---|\n"
        + "\n".join(f"| {name} | {step[name]:.3f} s | {sampling[name]:.3f} s |" for name in runs)
        + f"\n\nMedium-hard / random step time: {ratio:.2f}x from the step times of separate runs; **{derived:.2f}x** "
        "from the sampling times (medium-hard step / the same step with random's sampling time), which the load "
        "of the machine distorts less (target: at most 1.15x)."
    )
    body = (
        f"Default job (NRMS, hidden 64, batch 32, bundled MovieLens), {args.steps} steps per run, first {args.warmup} "
        f"left out of the medians.\n\n{intervals_text}\n\n{strategy_text}"
    )
    print(write_markdown(args.output, "Negative sampler cost", command_line(), body))


if __name__ == "__main__":
    main()
