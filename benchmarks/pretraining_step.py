"""Time, profile and count the FLOPs of the default pre-training step, new code against a baseline checkout.

    git worktree add /tmp/userbert-baseline 288f8ca        # the code before the speed-ups
    python benchmarks/pretraining_step.py [--repetitions 3] [--steps 12] [--paper_size] [--profile]
    python benchmarks/pretraining_step.py --quick          # a few steps, new code only (smoke test)

Each side runs the real ``userbert pretrain`` job (``userbert_hf.pretraining.job.main``: bundled MovieLens, NRMS,
hidden 64, batch 32, MBP + BSM with medium-hard negatives) in its own subprocess, with that side's ``src`` first
on ``PYTHONPATH``; repetitions alternate the sides. Step time is the CPU time of the worker (run with
``OMP_NUM_THREADS=1``) between the ends of consecutive optimizer steps (batch building, negative sampling,
forward, backward, optimizer), median over the steps after the first ``--warmup`` ones; the wall time beside it
also counts other processes' load on a shared machine. Also reported:

* losses: both sides run the same steps with dropout 0 and their per-step losses are compared;
* GFLOP per step (``torch.utils.flop_counter.FlopCounterMode`` over forward + backward, sampler encodings
  included) and GFLOP/s against the machine's fp32 matmul peak (a 2048 x 2048 ``torch.mm``, best of several);
* ``--paper_size``: the same at the paper's size (hidden 256, attention query 200, 16 heads);
* ``--profile``: the top operators by self CPU time (``torch.profiler``) of each side.

Writes a markdown summary to ``benchmarks/results/pretraining_step.md`` (``--output``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _sides import DEFAULT_BASELINE_SRC, alternate, command_line, median, run_worker, sides_from_args, write_markdown  # noqa: E402

PAPER_SIZE = ["--hidden_size", "256", "--attention_query_size", "200", "--num_attention_heads", "16"]


# ---------------------------------------------------------------------------------------------- worker side
def _register_cpu_flash_attention_flops():
    """FlopCounterMode counts the CUDA attention kernels but not the CPU flash kernel that
    ``scaled_dot_product_attention`` uses here: count it with the same formulas."""
    import torch
    from torch.utils import flop_counter as fc

    ops = torch.ops.aten
    if ops._scaled_dot_product_flash_attention_for_cpu in fc.flop_registry:
        return

    @fc.register_flop_formula(ops._scaled_dot_product_flash_attention_for_cpu, get_raw=True)
    def _forward(query, key, value, *args, out_val=None, **kwargs):
        return fc.sdpa_flop_count(query.shape, key.shape, value.shape)

    @fc.register_flop_formula(ops._scaled_dot_product_flash_attention_for_cpu_backward, get_raw=True)
    def _backward(grad_out, query, key, value, *args, out_val=None, **kwargs):
        return fc.sdpa_backward_flop_count(grad_out.shape, query.shape, key.shape, value.shape)


def matmul_peak(size: int = 2048, repeats: int = 5) -> float:
    """Best fp32 ``torch.mm`` throughput in GFLOP/s (size x size x size), per CPU second."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):  # CPU seconds (one thread), as the steps are timed
        start = time.process_time()
        torch.mm(a, b)
        best = min(best, time.process_time() - start)
    return 2 * size**3 / best / 1e9


def _time_public_methods(sampler, record: dict) -> None:
    """Add the wall time of the sampler's outermost public method calls to ``record["sampling_now"]``."""
    depth = [0]

    def timed(method):
        def wrapper(*a, **kw):
            depth[0] += 1
            start = time.perf_counter()
            try:
                return method(*a, **kw)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    record["sampling_now"] = record.get("sampling_now", 0.0) + time.perf_counter() - start
        return wrapper

    for name in dir(sampler):
        if name.startswith("_") or name in ("save", "load", "state_dict", "load_state_dict"):
            continue
        value = getattr(type(sampler), name, None)
        if callable(value) and not isinstance(value, (property, type)):
            setattr(sampler, name, timed(getattr(sampler, name)))


def worker(args, job_args: list[str]) -> dict:
    if args.mode == "peak":
        return {"peak_gflops": matmul_peak()}
    import torch
    from transformers import TrainerCallback

    try:
        import userbert_hf.pretraining.job as job
    except ModuleNotFoundError:  # a baseline checkout from before the pretraining/ package (e.g. 288f8ca)
        import userbert_hf.pretraining_job as job

    torch.manual_seed(0)
    record: dict = {"step_end": [], "losses": [], "flops": [], "sampling": []}
    profiler = {}

    class Recorder(TrainerCallback):
        def on_train_begin(self, a, state, control, **kw):
            record["start"] = time.perf_counter()
            record["cpu_start"] = time.process_time()

        def on_step_end(self, a, state, control, **kw):
            record["step_end"].append(time.perf_counter())
            record.setdefault("cpu_step_end", []).append(time.process_time())
            record["sampling"].append(record.pop("sampling_now", 0.0))
            if args.mode == "profile" and state.global_step == args.warmup:
                profiler["p"] = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                profiler["p"].start()

    base = job.UserBertTrainer

    class BenchTrainer(base):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.add_callback(Recorder())
            if getattr(self, "sampler", None) is not None:
                _time_public_methods(self.sampler, record)

        def training_step(self, *a, **kw):
            if args.mode != "flops" or self.state.global_step < args.warmup:
                return super().training_step(*a, **kw)
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as counter:
                loss = super().training_step(*a, **kw)
            record["flops"].append(counter.get_total_flops())
            return loss

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
            record["losses"].append(
                {name: float(getattr(outputs, name)) for name in ("loss", "mbp_loss", "bsm_loss") if getattr(outputs, name, None) is not None}
            )
            return (loss, outputs) if return_outputs else loss

    job.UserBertTrainer = BenchTrainer
    if args.mode == "flops":
        _register_cpu_flash_attention_flops()
    with tempfile.TemporaryDirectory() as out:
        job.main([
            "--output_dir", out, "--max_steps", str(args.steps), "--save_strategy", "no", "--report_to", "none",
            "--disable_tqdm", "True", "--seed", "42", *job_args,
        ])
    ends = [record["start"], *record["step_end"]]
    steps = [b - a for a, b in zip(ends, ends[1:])]
    cpu_ends = [record["cpu_start"], *record.get("cpu_step_end", [])]
    cpu_steps = [b - a for a, b in zip(cpu_ends, cpu_ends[1:])]
    result = {
        "step_s": median(steps[args.warmup :]), "steps": steps, "losses": record["losses"],
        "cpu_step_s": median(cpu_steps[args.warmup :]) if cpu_steps[args.warmup :] else float("nan"),
        "sampling_s": median(record["sampling"][args.warmup :]) if record["sampling"] else 0.0, "sampling": record["sampling"],
    }
    if record["flops"]:
        result["gflop_per_step"] = sum(record["flops"]) / len(record["flops"]) / 1e9
    if "p" in profiler:
        profiler["p"].stop()
        averages = profiler["p"].key_averages()
        total = sum(e.self_cpu_time_total for e in averages)
        top = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
        measured = len(steps) - args.warmup
        result["profile"] = [
            {"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1e3 / measured, "share": e.self_cpu_time_total / total, "calls_per_step": e.count / measured}
            for e in top
        ]
    return result


# ---------------------------------------------------------------------------------------------- driver side
def loss_comparison(sides, script, job_args, steps, side_args) -> tuple[str, float]:
    """Run each side for ``steps`` steps with dropout 0 and compare their per-step losses."""
    args = ["--mode", "losses", "--steps", str(steps), "--warmup", "0", *job_args, "--dropout", "0"]
    runs = {name: run_worker(script, src, args + side_args.get(name, []))["losses"] for name, src in sides.items()}
    if len(runs) < 2:
        return "", 0.0
    new, old = runs["new"], runs["baseline"]
    worst = 0.0
    rows = ["| step | loss new | loss baseline | MBP new / baseline | BSM new / baseline |", "|---|---|---|---|---|"]
    for i, (a, b) in enumerate(zip(new, old)):
        worst = max(worst, max(abs(a[k] - b[k]) for k in a if k in b))
        rows.append(
            f"| {i} | {a['loss']:.6f} | {b['loss']:.6f} | {a.get('mbp_loss', float('nan')):.6f} / {b.get('mbp_loss', float('nan')):.6f} "
            f"| {a.get('bsm_loss', float('nan')):.6f} / {b.get('bsm_loss', float('nan')):.6f} |"
        )
    if len(new) != len(old):
        rows.append(f"\n(new ran {len(new)} forward passes, baseline {len(old)})")
    return "\n".join(rows), worst


def timing_table(script, sides, job_args, args, label, side_args, repetitions) -> tuple[str, dict]:
    worker_args = ["--mode", "time", "--steps", str(args.steps), "--warmup", str(args.warmup), *job_args]
    runs = alternate(script, sides, worker_args, repetitions, side_args)
    flops = {
        name: run_worker(script, src, ["--mode", "flops", "--steps", str(args.warmup + 2), "--warmup", str(args.warmup), *job_args, *side_args.get(name, [])])["gflop_per_step"]
        for name, src in sides.items()
    }
    peaks = [run_worker(script, sides["new"], ["--mode", "peak"])["peak_gflops"] for _ in range(2)]
    peak = max(peaks)
    summary = {}
    # CPU seconds of the (single-threaded) worker per step are robust to other processes on a shared machine; the
    # wall time is not. GFLOP/s and the share of the peak use the CPU time.
    rows = ["| side | step CPU s (median of repetitions) | repetitions (CPU s) | step wall s | GFLOP / step | GFLOP/s | share of fp32 matmul peak |", "|---|---|---|---|---|---|---|"]
    for name, results in runs.items():
        step = median(r["cpu_step_s"] for r in results)
        wall = median(r["step_s"] for r in results)
        summary[name] = {"step_s": step, "wall_s": wall, "gflop": flops[name], "gflops": flops[name] / step}
        reps = ", ".join(f"{r['cpu_step_s']:.3f}" for r in results)
        rows.append(f"| {name} | {step:.3f} s | {reps} | {wall:.3f} s | {flops[name]:.2f} | {flops[name] / step:.1f} | {100 * flops[name] / step / peak:.0f}% |")
    text = f"**{label}**\n\n" + "\n".join(rows) + f"\n\nfp32 matmul peak: {peak:.0f} GFLOP/s (2048^3 `torch.mm`, best of 5, measured twice in this run)."
    if "baseline" in summary:
        ratio = summary["baseline"]["step_s"] / summary["new"]["step_s"]
        paired = [b["cpu_step_s"] / n["cpu_step_s"] for n, b in zip(runs["new"], runs["baseline"])]  # same repetition
        text += (
            f"\n\n**Speed-up: {ratio:.2f}x** (baseline step / new step, CPU seconds); per repetition (the two sides "
            f"run back to back): {', '.join(f'{r:.2f}x' for r in paired)}, median {median(paired):.2f}x; wall-time "
            f"ratio {summary['baseline']['wall_s'] / summary['new']['wall_s']:.2f}x."
        )
        summary["ratio"] = ratio
    summary["peak"] = peak
    return text, summary


def profile_table(script, sides, job_args, args, side_args) -> str:
    parts = []
    for name, src in sides.items():
        result = run_worker(script, src, ["--mode", "profile", "--steps", str(args.warmup + 3), "--warmup", str(args.warmup), *job_args, *side_args.get(name, [])])
        rows = ["| operator | self ms / step | share | calls / step |", "|---|---|---|---|"]
        rows += [f"| `{e['op']}` | {e['self_ms_per_step']:.1f} | {100 * e['share']:.1f}% | {e['calls_per_step']:.0f} |" for e in result["profile"]]
        parts.append(f"Top operators by self CPU time, {name} (3 profiled steps):\n\n" + "\n".join(rows))
    return "\n\n".join(parts)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline_src", default=DEFAULT_BASELINE_SRC, help="src folder of the baseline checkout ('' for none)")
    parser.add_argument("--new_src", default=None, help="src folder of the new side (default: this checkout's src)")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out (the first one fills the sequence pool)")
    parser.add_argument("--loss_steps", type=int, default=6)
    parser.add_argument("--new_args", default="", help="job options for the new side only (e.g. options the baseline lacks)")
    parser.add_argument("--compare_args", default="", help="new-side job options for the loss comparison (e.g. the baseline's maths)")
    parser.add_argument("--paper_size", action="store_true", help="also time hidden 256 / query 200 / 16 heads")
    parser.add_argument("--paper_repetitions", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--quick", action="store_true", help="4 steps, new code only, no files written")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "pretraining_step.md"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="time", help=argparse.SUPPRESS)
    args, job_args = parser.parse_known_args()
    if args.worker:
        print(json.dumps(worker(args, job_args)))
        return
    script = os.path.abspath(__file__)
    if args.quick:
        args.baseline_src, args.repetitions, args.steps, args.warmup, args.loss_steps, args.output = "", 1, 4, 1, 2, None
    sides = sides_from_args(args.baseline_src, args.new_src)
    sections = []
    side_args = {"new": shlex.split(args.new_args)}
    compare_args = {"new": shlex.split(args.new_args) + shlex.split(args.compare_args)}
    if args.new_args:
        sections.append(f"Options for the new side only: `{args.new_args}`.")
    text, default = timing_table(script, sides, job_args, args, "Default job: NRMS, hidden 64, batch 32, bundled MovieLens", side_args, args.repetitions)
    sections.append(text)
    table, worst = loss_comparison(sides, script, job_args, args.loss_steps, compare_args)
    if table:
        extra = f" (new side with `{args.compare_args}`)" if args.compare_args else ""
        sections.append(f"Losses of the first {args.loss_steps} steps with dropout 0{extra}; largest difference {worst:.2e}:\n\n{table}")
    if args.paper_size:
        text, _ = timing_table(
            script, sides, job_args + PAPER_SIZE, args, "Paper size: NRMS, hidden 256, query 200, 16 heads, batch 32",
            side_args, args.paper_repetitions,
        )
        sections.append(text)
    if args.profile:
        sections.append(profile_table(script, sides, job_args, args, side_args))
    markdown = write_markdown(args.output, "Pre-training step", command_line(), "\n\n".join(sections))
    print(markdown)


if __name__ == "__main__":
    main()
