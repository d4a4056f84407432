"""benchmarks/peer_recbole.py --time_to_quality: the curve summaries and RecBole / ours ratios on hand-made curves
(no training, no RecBole, no durations asserted)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "peer_recbole.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("peer_recbole_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def curve(*points):
    return [{"epoch": i + 1, "train_s": s, "ndcg@10": v} for i, (s, v) in enumerate(points)]


def test_first_evaluation_at_target_and_interpolation(bench):
    s = bench.time_to_target(curve((100, 0.01), (200, 0.03), (300, 0.04), (400, 0.035)), target=0.0318)
    assert s["reached"] and s["seconds"] == 300 and s["epoch"] == 3
    assert s["interpolated_seconds"] == pytest.approx(200 + 100 * (0.0018 / 0.01))
    assert s["best"] == 0.04 and s["best_at_s"] == 300 and s["last_s"] == 400 and s["evaluations"] == 4


def test_target_at_first_evaluation_interpolates_from_zero(bench):
    s = bench.time_to_target(curve((50, 0.04)), target=0.02)
    assert s["seconds"] == 50 and s["interpolated_seconds"] == pytest.approx(25)


def test_not_reached_reports_best_and_time_trained(bench):
    s = bench.time_to_target(curve((300, 0.02), (600, 0.025), (900, 0.024)), target=0.0318)
    assert not s["reached"] and s["seconds"] is None
    assert (s["best"], s["best_at_s"], s["last_s"]) == (0.025, 600, 900)
    assert "not reached in 900 s, best 0.0250 at 600 s" in bench.summary_cell(s)


def test_ratios_exact_and_bounds(bench):
    ours = bench.time_to_target(curve((100, 0.02), (200, 0.033)), target=0.0318)
    peer_fast = bench.time_to_target(curve((400, 0.032)), target=0.0318)
    peer_slow = bench.time_to_target(curve((500, 0.01), (900, 0.02)), target=0.0318)
    ours_slow = bench.time_to_target(curve((300, 0.02), (600, 0.03)), target=0.0318)
    assert bench.ratio_text(peer_fast, ours) == "2.00x"
    assert bench.ratio_text(peer_slow, ours).startswith("> 4.50x")
    assert bench.ratio_text(peer_fast, ours_slow).startswith("< 0.67x")
    assert bench.ratio_text(peer_slow, ours_slow).startswith("n/a")


def test_table_has_every_side_and_failures(bench):
    results = {
        "ours": {"curve": curve((100, 0.02), (200, 0.033))},
        "recbole_ce": {"curve": curve((400, 0.032))},
        "recbole_bpr": {"error": "worker exited with 1", "curve": []},
    }
    table = bench.ttq_table(results, 0.0318)
    lines = table.splitlines()
    assert len(lines) == 5
    assert "**200 s**" in lines[2] and "2.00x" in lines[3] and "failed: worker exited with 1" in lines[4]
