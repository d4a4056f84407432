"""Start-up: CPU time of `userbert --help`, `userbert pretrain --help` and `import userbert_hf`, against
`python -c "import torch"` measured in the same run.

    python benchmarks/startup.py [--repeats 5] [--baseline_src /tmp/userbert-baseline/src]

Each command runs in a fresh process ``--repeats`` times, the commands alternating (the machine is shared and its
speed drifts); the CPU time of a run is the child's user + system time (steadier than wall time on a busy
machine). Prints, and writes to ``benchmarks/results/startup.md``, the median CPU and wall seconds of each command
and its ratio to ``import torch``. With ``--baseline_src`` (an older checkout's ``src``, e.g.
``git worktree add /tmp/userbert-baseline 98f9837``) the package commands are measured under that code too.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = "python -c 'import torch'"
COMMANDS = {
    REFERENCE: ["-c", "import torch"],
    "userbert --help": ["-m", "userbert_hf.cli", "--help"],
    "userbert pretrain --help": ["-m", "userbert_hf.cli", "pretrain", "--help"],
    "userbert finetune --help": ["-m", "userbert_hf.cli", "finetune", "--help"],
    "import userbert_hf": ["-c", "import userbert_hf"],
    "from userbert_hf import UserBertModel (torch + transformers)": ["-c", "from userbert_hf import UserBertModel"],
}


def measure(argv: list[str], src: str) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``python argv`` with ``src`` first on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{argv} failed:\n{done.stderr.decode()[-2000:]}")
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), wall


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline_src", default=None, help="an older checkout's src folder to compare with")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "startup.md"))
    args = parser.parse_args(argv)
    sides = {"new": os.path.join(ROOT, "src")}
    if args.baseline_src:
        sides["baseline"] = args.baseline_src
    runs = [(name, side) for name in COMMANDS for side in sides if name != REFERENCE or side == "new"]
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {run: [] for run in runs}
    for repeat in range(args.repeats):
        for name, side in runs:
            samples[(name, side)].append(measure(COMMANDS[name], sides[side]))
        print(f"[startup] repeat {repeat + 1}/{args.repeats} done", file=sys.stderr)
    medians = {run: (statistics.median(c for c, _ in s), statistics.median(w for _, w in s)) for run, s in samples.items()}
    torch_cpu = medians[(REFERENCE, "new")][0]
    lines = [
        "# Start-up: CPU time of the command line and the package import",
        "",
        f"`python benchmarks/startup.py --repeats {args.repeats}"
        + (" --baseline_src ..." if args.baseline_src else "") + "`; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared), Python "
        f"{platform.python_version()}; medians of {args.repeats} alternating runs, each a fresh process.",
        "",
        "| command | code | CPU s | wall s | CPU / `import torch` |",
        "|---|---|---|---|---|",
    ]
    for name, side in runs:
        cpu, wall = medians[(name, side)]
        lines.append(f"| `{name}` | {side} | {cpu:.2f} | {wall:.2f} | {cpu / torch_cpu:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as handle:
        handle.write(text)
    return text


if __name__ == "__main__":
    main()
