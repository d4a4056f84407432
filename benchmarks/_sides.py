"""Helpers shared by the benchmarks: run a worker under several source trees in alternation, summarise, write
markdown.

A "side" is a name and a ``src`` folder put first on ``PYTHONPATH`` of a worker subprocess, so one run compares
today's code (``new`` = this checkout) with a baseline checkout, e.g. the commit before the speed-ups::

    git worktree add /tmp/userbert-baseline 288f8ca
    python benchmarks/pretraining_step.py --baseline_src /tmp/userbert-baseline/src

Repetitions alternate the sides (new, baseline, new, baseline, ...) because the machines these run on are shared
and their speed drifts; ratios of medians over alternating repetitions are what the benchmarks report.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEW_SRC = os.path.join(ROOT, "src")
DEFAULT_BASELINE_SRC = "/tmp/userbert-baseline/src"


def sides_from_args(baseline_src: str | None, new_src: str | None = None) -> dict[str, str]:
    """``{"new": new_src or <this checkout>/src, "baseline": baseline_src}`` (baseline left out when its folder is
    missing). ``new_src`` lets a run measure a committed snapshot (``git worktree add /tmp/head HEAD``) while the
    working tree is being edited."""
    sides = {"new": new_src or NEW_SRC}
    if baseline_src:
        if not os.path.isdir(os.path.join(baseline_src, "userbert_hf")):
            print(f"[bench] no userbert_hf under {baseline_src}: measuring the new code only", file=sys.stderr)
        else:
            sides["baseline"] = baseline_src
    return sides


def run_worker(script: str, src: str, worker_args: list[str], threads: int | None = None, nice: int = 0) -> dict:
    """Run ``python script --worker ...`` with ``src`` first on PYTHONPATH; the worker prints one JSON line last."""
    env = dict(os.environ)
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["TRANSFORMERS_VERBOSITY"] = "error"
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, script, "--worker", *worker_args]
    if nice:
        command = ["nice", "-n", str(nice), *command]
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed ({' '.join(command)}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def alternate(
    script: str, sides: dict[str, str], worker_args: list[str], repetitions: int,
    side_args: dict[str, list[str]] | None = None, **kwargs,
) -> dict[str, list[dict]]:
    """Run every side ``repetitions`` times, alternating sides within each repetition; ``side_args[name]`` are
    appended to that side's worker arguments."""
    results: dict[str, list[dict]] = {name: [] for name in sides}
    for rep in range(repetitions):
        order = list(sides) if rep % 2 == 0 else list(sides)[::-1]
        for name in order:
            result = run_worker(script, sides[name], worker_args + (side_args or {}).get(name, []), **kwargs)
            print(f"[bench] repetition {rep + 1}/{repetitions} {name}: {short(result)}", file=sys.stderr, flush=True)
            results[name].append(result)
    return results


def short(result: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items() if not isinstance(v, (list, dict)))


def median(values) -> float:
    return float(statistics.median(values))


def machine_line() -> str:
    """Machine, Python and library versions, for the markdown summaries."""
    import torch

    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.processor())
    except OSError:
        model = platform.processor()
    versions = [f"Python {platform.python_version()}", f"torch {torch.__version__}"]
    for name in ("transformers", "datasets"):
        try:
            versions.append(f"{name} {__import__(name).__version__}")
        except ImportError:
            pass
    return (
        f"{model}, {os.cpu_count()} cores (shared with other jobs while measured), torch threads "
        f"{torch.get_num_threads()}; " + ", ".join(versions)
    )


def write_markdown(path: str | None, title: str, command: str, body: str) -> str:
    """Render a benchmark summary (title, command, machine, body) and write it to ``path`` when given."""
    text = f"### {title}\n\n```bash\n{command}\n```\n\nMachine: {machine_line()}.\n\n{body.strip()}\n"
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    return text


def command_line() -> str:
    return "python " + shlex.join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
