"""A tiny real experiment grid end to end: the pre-training export, pre-training, fine-tuning from the pre-trained
model and from scratch, and the baselines on MovieLens CTR (2 user splits x 1 seed, a few steps each), then the
report and the model cards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from userbert_hf.experiments.runner import main
from userbert_hf.experiments.spec import ExperimentSpec

GRID = """
name: tiny_ctr
task: ctr
data: movielens
preset: gru4rec
split_seeds: [0, 1]
seeds: [1]
label_fractions: [0.5]
methods:
  none: {}
  userbert: {objective: userbert}
baselines: [popularity, item_mean, mf]
model_args: {hidden_size: 16, num_attention_heads: 2, attention_query_size: 8}
task_args: {max_behaviors: 20}
pretraining_args: {max_steps: 4, per_device_train_batch_size: 16, logging_steps: 1, use_cpu: true,
                   behavior_pool_size: 100, sequence_pool_size: 20}
finetuning_args: {max_steps: 3, per_device_train_batch_size: 16, eval_strategy: "no", use_cpu: true}
mf_args: {factors: 8, epochs: 2}
"""


@pytest.mark.slow
def test_tiny_grid_end_to_end(tmp_path):
    config = tmp_path / "tiny_ctr.yaml"
    config.write_text(GRID)
    cards = tmp_path / "cards"
    cards.mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "model_cards" / "generate_cards.py", cards)
    argv = [str(config), "--output_dir", str(tmp_path / "out"), "--report", str(tmp_path / "docs" / "results.md"),
            "--model_cards_dir", str(cards), "--confirm"]  # a confirmation: test metrics and cards
    records = main(argv)
    spec = ExperimentSpec.from_file(config)
    assert sorted(r["cell"] for r in records) == sorted(c.cell_id for c in spec.cells())
    by_cell = {r["cell"]: r for r in records}
    for split in (0, 1):
        tuned = by_cell[f"finetune/userbert/split{split}/seed1/frac0.5"]
        scratch = by_cell[f"finetune/none/split{split}/seed1/frac0.5"]
        assert 0 < tuned["metrics"]["auc"] < 1 and 0 < scratch["metrics"]["auc"] < 1
        # Same split, seed and fraction: the same test pairs, scored by different models.
        assert tuned["metrics"]["num_examples"] == scratch["metrics"]["num_examples"]
        assert by_cell[f"pretrain/userbert/split{split}"]["log_history"]  # the curves' source
        mf = by_cell[f"baseline/mf/split{split}"]["metrics"]
        assert mf["train_loss_last"] < mf["train_loss_first"]
    # Pre-training saw only the histories the CTR task allows (the export), and the from-scratch model has the
    # pre-trained model's architecture.
    (confirmation,) = (tmp_path / "out").glob("confirmation-*")
    pretrained = json.loads((confirmation / "pretrained/tiny_ctr-userbert-split0/config.json").read_text())
    assert pretrained["hidden_size"] == 16 and pretrained["max_behaviors"] == 20
    # Rerunning the finished grid runs nothing and rewrites the same report.
    again = main(argv)
    assert len(again) == len(records)
    text = (tmp_path / "docs" / "results.md").read_text()
    assert "## tiny_ctr:" in text and "userbert vs none" in text and "popularity (baseline)" in text
    assert (tmp_path / "docs/results/tiny_ctr/pretraining_curves.png").exists()
    assert sorted(p.name for p in cards.glob("*.md")) == ["tiny_ctr-none-split0-seed1-frac0.5.md",
                                                          "tiny_ctr-userbert-split0-seed1-frac0.5.md",
                                                          "tiny_ctr-userbert-split0.md"]
