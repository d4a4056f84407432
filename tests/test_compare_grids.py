"""Comparing two grids cell by cell (userbert_hf.experiments.compare)."""

import json

import pytest

from userbert_hf.experiments.compare import compare_grids, main


def _record(method, split, seed, fraction, auc, pretrain_seed=None):
    return {"kind": "finetune", "method": method, "split_seed": split, "seed": seed, "fraction": fraction,
            "pretrain_seed": pretrain_seed, "metrics": {"auc": auc}}


def test_pairs_twins_and_averages_fine_tuning_seeds_within_each_split():
    # Grid A beats B by 0.01 on split 0 (two seeds: +0.00 and +0.02) and by 0.03 on split 1 (one seed).
    a = [_record("none", 0, 1, 0.1, 0.60), _record("none", 0, 2, 0.1, 0.62), _record("none", 1, 1, 0.1, 0.70),
         _record("none", 2, 1, 0.1, 0.99)]  # split 2 has no twin in B
    b = [_record("none", 0, 1, 0.1, 0.60), _record("none", 0, 2, 0.1, 0.60), _record("none", 1, 1, 0.1, 0.67),
         {"kind": "baseline", "method": "popularity", "split_seed": 0, "metrics": {"auc": 0.5}}]
    (row,) = compare_grids(a, b, "auc")
    assert (row["method"], row["fraction"], row["n"], row["pairs"], row["unpaired"]) == ("none", 0.1, 2, 3, 1)
    assert row["mean_difference"] == pytest.approx((0.01 + 0.03) / 2)
    assert row["mean_a"] == pytest.approx((0.61 + 0.70) / 2) and row["wins"] == 2


def test_command_line_prints_the_table_and_names_a_bad_line(tmp_path, capsys):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("\n".join(json.dumps(_record("userbert", s, 1, 1.0, 0.6 + s / 50, 0)) for s in range(3)))
    b.write_text("\n".join(json.dumps(_record("userbert", s, 1, 1.0, 0.6 + s / 100, 0)) for s in range(3)))
    table = main([str(a), str(b), "--names", "plm", "word"])
    assert "| userbert | 100% | 3 (3) | 0.6200 | 0.6100 | +0.0100 |" in table and "plm - word" in capsys.readouterr().out
    docs = tmp_path / "docs"
    main([str(a), str(b), "--names", "plm", "word", "--section", str(docs / "results" / "plm_vs_word" / "section.md")])
    page = (docs / "results.md").read_text()
    assert page.startswith("# Results") and "## plm_vs_word: plm against word" in page and "+0.0100" in page
    b.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"b.jsonl:1"):
        main([str(a), str(b)])
