"""A pre-training run killed with SIGKILL resumes from its last complete checkpoint and then produces the
losses of a run that was never interrupted, step for step."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "crash_pretrain.py"


def _losses(path: Path) -> dict[int, tuple[float, float]]:
    out = {}
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        out[entry["step"]] = (entry["mbp_loss"], entry["bsm_loss"])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kill_seed", [0])
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, kill_seed):
    # The uninterrupted reference run goes on beside the run that is killed (the two do not share anything but the
    # script); one thread each, so that the two processes do not fight over the cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference_log = tmp_path / "reference.jsonl"
    with open(tmp_path / "reference.out", "w") as reference_output:
        reference_process = subprocess.Popen([sys.executable, str(SCRIPT), str(tmp_path / "reference"),
                                              str(reference_log)], stdout=reference_output,
                                             stderr=subprocess.STDOUT, env=env)
        try:
            run_dir, crash_log = tmp_path / "crashed", tmp_path / "crashed.jsonl"
            process = subprocess.Popen([sys.executable, str(SCRIPT), str(run_dir), str(crash_log)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            # Kill right after a randomly chosen checkpoint starts to appear (possibly while it is being written).
            rng = random.Random(kill_seed)
            target = run_dir / f"checkpoint-{rng.choice([4, 8, 12, 16])}"
            deadline = time.time() + 240
            while not target.exists() and process.poll() is None and time.time() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.2))
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            reference_returncode = reference_process.wait(timeout=300)
        finally:
            if reference_process.poll() is None:
                reference_process.kill()
                reference_process.wait()
    assert reference_returncode == 0, (tmp_path / "reference.out").read_text()[-3000:]
    reference = _losses(reference_log)
    assert sorted(reference) == list(range(1, 25))
    if process.returncode == 0:
        pytest.skip("the run finished before it could be killed")

    resumed_log = tmp_path / "resumed.jsonl"
    done = subprocess.run([sys.executable, str(SCRIPT), str(run_dir), str(resumed_log), "--resume"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = _losses(resumed_log)
    assert resumed, "the resumed run logged nothing"
    assert max(resumed) == 24 and min(resumed) > 2
    for step, losses in resumed.items():
        assert losses == pytest.approx(reference[step], abs=1e-4), step
