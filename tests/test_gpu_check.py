"""benchmarks/gpu_check.sh in its CPU mode with tiny sizes: it reports every figure it promises, and bf16 gives
the loss of fp32 on the same weights and batch (the accelerator run prints the same lines at full size)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


def test_gpu_check_runs_on_cpu_and_reports_every_figure(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(SCRIPT), "--tiny", "--device", "cpu", "--json", str(out)], env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    rows = {(r["size"], r["dtype"]): r for r in results["steps"]}
    assert set(rows) == {(size, dtype) for size in ("default", "paper") for dtype in ("fp32", "bf16")}
    assert rows["paper", "fp32"]["hidden"] == 4 * rows["default", "fp32"]["hidden"]  # 256 vs 64, scaled down
    for size in ("default", "paper"):
        fp32, bf16 = rows[size, "fp32"]["first_loss"], rows[size, "bf16"]["first_loss"]
        assert math.isfinite(fp32) and abs(bf16 - fp32) <= 0.05 * abs(fp32)
    for row in rows.values():
        assert row["step_s"] > 0
    assert results["full_ranking"]["users"] == 64 and results["full_ranking"]["items"] == 499
    assert results["peak_memory_mib"] > 0
    for line in ("pretraining step  default", "pretraining step  paper", "full ranking:", "peak memory:"):
        assert line in done.stdout
