#!/usr/bin/env bash
# One accelerator check in under 5 minutes: pre-training step times (default and paper size, fp32 and bf16),
# full-ranking evaluation throughput and peak memory (see benchmarks/gpu_check.py).
#
#   bash benchmarks/gpu_check.sh            # on a GPU machine (CUDA), or on CPU at smaller sizes
#   bash benchmarks/gpu_check.sh --tiny     # seconds on CPU: what the test suite runs
#
# Extra arguments go to gpu_check.py (--device cpu, --json FILE). PYTHON picks the interpreter; the run is cut
# after GPU_CHECK_TIMEOUT seconds (300).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONPATH="${here}/../src${PYTHONPATH:+:${PYTHONPATH}}"
exec timeout "${GPU_CHECK_TIMEOUT:-300}" "${PYTHON:-python}" "${here}/gpu_check.py" "$@"
