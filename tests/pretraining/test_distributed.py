"""Two CPU processes (gloo) under torchrun give the single-process result of the same global batch."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "ddp_pretrain.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Every case of the comparison tests, as NAME: (DATA, OBJECTIVE). One single-process run and one torchrun launch run
# them all, one after the other (tests/scripts/ddp_pretrain.py --cases), so the interpreter and torchrun start-up is
# paid once; each test still reads and checks only its own case's results.
CASES = {
    "default": ("movielens", "userbert"),
    "one_splittable": ("one_splittable", "userbert"),
    "ptum": ("movielens", "ptum"),
    "cp": ("movielens", "cp"),
}
DEADLOCK_S = 300  # a launch that finishes no further step in this time is stuck


def _launch(command, cwd, out_dir: Path, ranks: int, steps) -> str | None:
    """Run ``command``; ``None`` when it finished cleanly, else what went wrong. As with one launch per case, a
    launch that finishes no further step (a folder of ``steps`` under ``out_dir`` with every rank's file) in
    ``DEADLOCK_S`` is a deadlock (a rank waiting in a collective the other never entered): it is killed and
    reported."""
    log = out_dir.with_suffix(".log")
    with open(log, "w") as output:
        process = subprocess.Popen(command, cwd=cwd, stdout=output, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)
        done_before, deadline = -1, 0.0
        while process.poll() is None:
            done = sum(all((out_dir / step / f"rank{r}.json").is_file() for r in range(ranks)) for step in steps)
            if done != done_before:
                done_before, deadline = done, time.monotonic() + DEADLOCK_S
            elif time.monotonic() > deadline:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return (f"deadlock: {command} finished no step in {DEADLOCK_S} s after {done} step(s)\n"
                        f"{log.read_text()[-3000:]}")
            time.sleep(0.2)
    if process.returncode != 0:
        return f"exit status {process.returncode}\n{log.read_text()[-6000:]}"
    return None


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs every case of ``CASES`` with one process (batch 32) and under torchrun with two (16 per rank); the
    torchrun launch then also runs tests/scripts/gather_unequal.py's check (``multi/gather_unequal``)."""
    tmp_path = tmp_path_factory.mktemp("ddp")
    cases = [f"{name}:{data}:{objective}" for name, (data, objective) in CASES.items()]
    single, multi = tmp_path / "single", tmp_path / "multi"
    errors = {
        "single process": _launch([sys.executable, str(SCRIPT), str(single), "32", "--cases", *cases], tmp_path,
                                  single, ranks=1, steps=list(CASES)),
        "torchrun": _launch(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
             str(_free_port()), str(SCRIPT), str(multi), "16", "--cases", *cases,
             "--gather_unequal", str(multi / "gather_unequal")],
            tmp_path, multi, ranks=2, steps=[*CASES, "gather_unequal"],
        ),
    }
    return single, multi, errors


def _single_and_two_ranks(runs, case):
    """The one-process result and the two ranks' results of ``case``; fails naming the case if a run did not
    complete it (a crash or a deadlock in that case or an earlier one)."""
    single, multi, errors = runs
    files = (single / case / "rank0.json", multi / case / "rank0.json", multi / case / "rank1.json")
    missing = [str(path) for path in files if not path.is_file()]
    failures = "\n".join(f"{run}: {error}" for run, error in errors.items() if error)
    assert not missing, f"case {case!r} did not complete: {missing}\n{failures}"
    assert not failures, f"case {case!r} completed, but a run failed:\n{failures}"
    return tuple(json.loads(path.read_text()) for path in files)


def _assert_same_parameters(one, rank0, rank1, keys=("loss",)):
    for key in keys:
        assert [e[key] for e in rank0["losses"]] == pytest.approx([e[key] for e in one["losses"]], abs=1e-4), key
    for name, values in one["parameters"].items():
        np.testing.assert_allclose(rank0["parameters"][name], values, atol=1e-5, err_msg=name)
        assert rank0["parameters"][name] == rank1["parameters"][name]


@pytest.mark.slow
def test_two_process_pretraining_matches_one_process(runs):
    one, rank0, rank1 = _single_and_two_ranks(runs, "default")
    assert (one["world_size"], rank0["world_size"]) == (1, 2)
    # Every rank drew the same behaviour pool and holds the same sequence pool (ids and gathered encodings).
    assert rank0["pools"] == rank1["pools"]
    assert [p["behavior_pool"] for p in rank0["pools"]] == [p["behavior_pool"] for p in one["pools"]]
    # Same global batch of 32 users -> same losses and the same parameters after 3 SGD steps.
    for key in ("loss", "mbp_loss", "bsm_loss"):
        assert [e[key] for e in rank0["losses"]] == pytest.approx([e[key] for e in one["losses"]], abs=1e-4), key
    for name, values in one["parameters"].items():
        np.testing.assert_allclose(rank0["parameters"][name], values, atol=1e-5, err_msg=name)
        assert rank0["parameters"][name] == rank1["parameters"][name]


@pytest.mark.slow
def test_a_rank_without_splittable_users_neither_hangs_nor_diverges(runs):
    # Only one user of 32 can be split into two periods: in every step one rank has none. Every collective (the
    # sequence pool gather, the behaviour pool gather, the count all-reduce) is still entered by both ranks.
    one, rank0, rank1 = _single_and_two_ranks(runs, "one_splittable")
    _assert_same_parameters(one, rank0, rank1, keys=("loss", "mbp_loss"))


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["ptum", "cp"])
def test_baseline_objectives_two_processes_match_one(runs, objective):
    # PTUM's random negatives are drawn per user; CP's views are gathered from both ranks with gradients, so two
    # ranks of 16 see the 62 in-batch negatives one process of 32 sees.
    one, rank0, rank1 = _single_and_two_ranks(runs, objective)
    _assert_same_parameters(one, rank0, rank1)


@pytest.mark.slow
def test_gather_with_gradients_takes_unequal_rows_per_rank(runs):
    # CP views and the uniformity term are gathered across ranks; a rank may hold fewer users (a short last batch).
    # (tests/scripts/gather_unequal.py, run by the torchrun launch of ``runs`` after its pre-training cases)
    _, multi, errors = runs
    files = [multi / "gather_unequal" / f"rank{r}.json" for r in (0, 1)]
    assert all(path.is_file() for path in files), f"the gather check did not complete:\n{errors['torchrun']}"
    assert not errors["torchrun"], errors["torchrun"]
    rank0, rank1 = (json.loads(path.read_text()) for path in files)
    expected = [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [10.0, 10.0]]  # rank 0's 3 rows, then rank 1's one
    assert rank0["gathered"] == expected and rank1["gathered"] == expected
    assert (rank0["offset"], rank1["offset"]) == (0, 3)
    # Row i of the gathered tensor has weight i + 1 in each of the two ranks' losses: gradient 2 (i + 1) per entry.
    assert rank0["grad"] == [[2.0, 2.0], [4.0, 4.0], [6.0, 6.0]]
    assert rank1["grad"] == [[8.0, 8.0]]
