"""What one duplicate event costs the event-log loader: time and peak memory with and without it.

    python benchmarks/loader_duplicates.py [--events 2000000] [--users 20000] [--items 50000]

Writes two CSV logs of ``--events`` rows (identical except that the second repeats its first row once), loads
each with ``load_event_log`` in a fresh process, and prints the wall time, the CPU time (steadier on a busy
machine) and the peak resident memory (ru_maxrss) of each load and their difference. Set PYTHONPATH to an older checkout's ``src`` to measure that code.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd

_CHILD = """
import json, resource, sys, time
from userbert_hf.data import load_event_log
started, cpu_started = time.perf_counter(), time.process_time()
data = load_event_log(sys.argv[1], verbose=False, max_behaviors=None)
elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": elapsed, "cpu_seconds": cpu, "peak_mib": peak_mib, "skipped": data.summary.skipped}))
"""


def write_log(path: str, events: int, users: int, items: int, duplicate: bool) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "user_id": rng.integers(0, users, events).astype(str),
        "item_id": rng.integers(0, items, events).astype(str),
        "timestamp": np.arange(events, dtype=np.int64) + 1_600_000_000,  # distinct: no accidental duplicates
    })
    if duplicate:
        frame = pd.concat([frame, frame.iloc[:1]], ignore_index=True)
    frame.to_csv(path, index=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=50_000)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for duplicate in (False, True):
            path = os.path.join(tmp, f"log_{duplicate}.csv")
            write_log(path, args.events, args.users, args.items, duplicate)
            started = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", _CHILD, path], capture_output=True, text=True, check=True)
            results[duplicate] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{'one duplicate' if duplicate else 'no duplicate '}: {results[duplicate]['seconds']:.2f} s "
                  f"({results[duplicate]['cpu_seconds']:.2f} s CPU), "
                  f"peak {results[duplicate]['peak_mib']:.0f} MiB, skipped {results[duplicate]['skipped']} "
                  f"(process {time.perf_counter() - started:.1f} s)")
    print(f"cost of one duplicate: {results[True]['seconds'] - results[False]['seconds']:+.2f} s "
          f"({results[True]['cpu_seconds'] - results[False]['cpu_seconds']:+.2f} s CPU), "
          f"{results[True]['peak_mib'] - results[False]['peak_mib']:+.0f} MiB peak")


if __name__ == "__main__":
    main()
