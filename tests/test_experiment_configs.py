"""Every committed grid (experiments/*.yaml) still parses with the current spec and names what its cells run: a
spec change that breaks a grid someone reruns from the docs fails here, not hours into a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from userbert_hf.experiments.spec import NO_PRETRAINING, ExperimentSpec

GRIDS = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml"))


def test_the_committed_grids_are_found():
    assert len(GRIDS) >= 10


@pytest.mark.parametrize("path", GRIDS, ids=lambda p: p.name)
def test_a_committed_grid_parses_and_its_cells_match_its_settings(path):
    spec = ExperimentSpec.from_file(path)
    assert spec.name == path.stem  # the output folder and the report section are named after the file
    cells = spec.cells()
    finetunes = [c for c in cells if c.kind == "finetune"]
    pretrains = [c for c in cells if c.kind == "pretrain"]
    assert finetunes, "a grid fine-tunes something"
    assert {c.method for c in finetunes} == set(spec.methods)
    assert {c.method for c in pretrains} == {spec.pretraining_owner(m) for m in spec.pretrained_methods}
    assert {c.fraction for c in finetunes} == set(spec.label_fractions)
