"""Comparing two grids cell by cell (userbert_hf.experiments.compare)."""

import json
import re

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
    with pytest.raises(SystemExit):  # a usage error naming the file and line, not a traceback
        main([str(a), str(b)])
    assert "b.jsonl:1: not a JSON record" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(a), str(tmp_path / "missing.jsonl")])
    assert "missing.jsonl" in capsys.readouterr().err


def test_named_methods_pair_scratch_with_every_pretraining_seed_on_validation():
    # Pre-trained seeds 0 and 1 on splits 0 and 1; scratch (pre-training seed None) once per split. Validation
    # values differ from the test ones, so the split read is visible in the result.
    def run(method, split, pseed, test, val):
        return dict(_record(method, split, 1, 0.1, test, pseed), validation=[{"eval_auc": val - 0.5},
                                                                             {"eval_auc": val, "epoch": 6.0}])
    records = [run("pre", 0, 0, 0.70, 0.62), run("pre", 0, 1, 0.70, 0.64), run("pre", 1, 0, 0.70, 0.66),
               run("pre", 1, 1, 0.70, 0.60), run("none", 0, None, 0.50, 0.60), run("none", 1, None, 0.50, 0.61),
               run("other", 0, 0, 0.90, 0.90)]
    (row,) = compare_grids(records, records, "auc", split="validation", methods=("pre", "none"))
    assert (row["method"], row["n"], row["pairs"], row["unpaired"]) == ("pre vs none", 4, 4, 0)
    # cluster gains: +0.02, +0.04 on split 0; +0.05, -0.01 on split 1 (the last evaluation, not the first)
    assert row["mean_difference"] == pytest.approx((0.02 + 0.04 + 0.05 - 0.01) / 4) and row["wins"] == 3
    (test_row,) = compare_grids(records, records, "auc", methods=("pre", "none"))
    assert test_row["mean_difference"] == pytest.approx(0.20)
    every = compare_grids(records, records, "auc", split="validation", methods=("*", "none"))
    assert [r["method"] for r in every] == ["other vs none", "pre vs none"] and every[0]["n"] == 1


def test_command_line_methods_and_split(tmp_path, capsys):
    path = tmp_path / "grid.jsonl"
    rows = [dict(_record("userbert", s, 1, 0.1, 0.6, 0), validation=[{"eval_auc": 0.6 + s / 100}]) for s in range(2)]
    rows += [dict(_record("none", s, 1, 0.1, 0.6), validation=[{"eval_auc": 0.6}]) for s in range(2)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    table = main([str(path), str(path), "--names", "pre", "scratch", "--methods", "userbert", "none",
                  "--split", "validation"])
    assert "| userbert vs none | 10% | 2 (2) | 0.6050 | 0.6000 | +0.0050 |" in table
    with pytest.raises(SystemExit):  # no such method: a usage error naming the methods
        main([str(path), str(path), "--methods", "cp", "none"])
    assert "for methods ['cp', 'none']" in capsys.readouterr().err


def test_join_a_merges_rows_run_as_separate_grids_and_refuses_a_conflicting_twin(tmp_path, capsys):
    # The claims grid holds scratch and "default"; a second grid adds "cp" and reproduces scratch exactly.
    claims, extra = tmp_path / "claims.jsonl", tmp_path / "extra.jsonl"
    timed = dict(_record("none", 0, 1, 0.1, 0.50), validation=[{"eval_auc": 0.5, "eval_runtime": 2.0}])
    claims.write_text("\n".join(json.dumps(r) for r in [
        timed, _record("none", 1, 1, 0.1, 0.60),
        _record("default", 0, 1, 0.1, 0.53, 0), _record("default", 1, 1, 0.1, 0.61, 0)]))
    rerun = dict(timed, validation=[{"eval_auc": 0.5, "eval_runtime": 2.7}])  # the same cell, run again: slower
    extra.write_text("\n".join(json.dumps(r) for r in [
        rerun, _record("cp", 0, 1, 0.1, 0.48, 0), _record("cp", 1, 1, 0.1, 0.56, 0)]))
    docs = tmp_path / "docs"
    table = main([str(claims), str(claims), "--join_a", str(extra), "--methods", "*", "none", "--metric", "auc",
                  "--section", str(docs / "results" / "joined" / "section.md")])
    assert "| cp vs none | 10% | 2 (2) | 0.5200 | 0.5500 | -0.0300 |" in table
    assert "| default vs none | 10% | 2 (2) | 0.5700 | 0.5500 | +0.0200 |" in table
    page = (docs / "results.md").read_text()
    assert f"every method in grid A ({claims} + {extra}) against none" in page
    # the same cell recorded later with its kept model's validation (another evaluation): the test numbers decide
    kept = dict(timed, validation=[{"eval_auc": 0.52}], validation_of_kept_model=True)
    extra.write_text(json.dumps(kept))
    main([str(claims), str(claims), "--join_a", str(extra), "--methods", "*", "none"])
    extra.write_text(json.dumps(dict(kept, metrics={"auc": 0.51})))
    with pytest.raises(SystemExit):
        main([str(claims), str(claims), "--join_a", str(extra), "--methods", "*", "none"])
    capsys.readouterr()
    relabelled = dict(timed, validation=[{"eval_auc": 0.52}])  # two records of one kind must agree on validation
    extra.write_text(json.dumps(relabelled))
    with pytest.raises(SystemExit):
        main([str(claims), str(claims), "--join_a", str(extra), "--methods", "*", "none"])
    capsys.readouterr()
    extra.write_text(json.dumps(_record("none", 0, 1, 0.1, 0.51)))  # scratch that does not reproduce
    with pytest.raises(SystemExit):
        main([str(claims), str(claims), "--join_a", str(extra), "--methods", "*", "none"])
    assert re.search(r"extra.jsonl and .*claims.jsonl both hold fine-tuning cell", capsys.readouterr().err)


def test_join_b_pools_a_replication_on_new_splits(tmp_path, capsys):
    # Two grids with the same rows on different splits: together they give one comparison over both splits.
    first, second = tmp_path / "split0.jsonl", tmp_path / "split1.jsonl"
    first.write_text("\n".join(json.dumps(r) for r in [_record("none", 0, 1, 1.0, 0.50),
                                                        _record("default", 0, 1, 1.0, 0.47, 0)]))
    second.write_text("\n".join(json.dumps(r) for r in [_record("none", 1, 1, 1.0, 0.60),
                                                         _record("default", 1, 1, 1.0, 0.61, 0)]))
    alone = main([str(first), str(first), "--join_a", str(second), "--methods", "default", "none"])
    assert "| default vs none | 100% | 1 (1) |" in alone  # B lacks split 1's scratch run: one cluster
    pooled = main([str(first), str(first), "--join_a", str(second), "--join_b", str(second),
                   "--methods", "default", "none"])
    assert "| default vs none | 100% | 2 (2) | 0.5400 | 0.5500 | -0.0100 |" in pooled
    with pytest.raises(SystemExit):  # nothing to compare: the usage error names every joined file
        main([str(first), str(first), "--join_a", str(second), "--methods", "cp", "none"])
    assert f"{first} + {second} and {first}" in capsys.readouterr().err


def test_scratch_seeds_give_every_pretraining_seed_a_scratch_cell_of_its_own(tmp_path, capsys):
    # Pre-training seeds 8 and 9 (fine-tuning seed 1) on splits 0 and 1; scratch with fine-tuning seeds 1, 2, 3.
    records = [_record("pre", 0, 1, 0.1, 0.70, 8), _record("pre", 0, 1, 0.1, 0.72, 9),
               _record("pre", 1, 1, 0.1, 0.80, 8), _record("pre", 1, 1, 0.1, 0.81, 9),
               _record("none", 0, 1, 0.1, 0.60), _record("none", 0, 2, 0.1, 0.66), _record("none", 0, 3, 0.1, 0.99),
               _record("none", 1, 1, 0.1, 0.75), _record("none", 1, 2, 0.1, 0.79)]
    (shared,) = compare_grids(records, records, "auc", methods=("pre", "none"))
    # one scratch cell (seed 1) per split: gains +0.10, +0.12 on split 0; +0.05, +0.06 on split 1
    assert shared["mean_difference"] == pytest.approx((0.10 + 0.12 + 0.05 + 0.06) / 4)
    (own,) = compare_grids(records, records, "auc", methods=("pre", "none"), scratch_seeds=[1, 2])
    # seed 8 pairs with scratch seed 1, seed 9 with scratch seed 2: +0.10, +0.06 on split 0; +0.05, +0.02 on split 1
    assert (own["n"], own["pairs"], own["unpaired"]) == (4, 4, 0)
    assert own["mean_difference"] == pytest.approx((0.10 + 0.06 + 0.05 + 0.02) / 4)
    assert own["mean_b"] == pytest.approx((0.60 + 0.66 + 0.75 + 0.79) / 4)
    (reversed_,) = compare_grids(records, records, "auc", methods=("pre", "none"), scratch_seeds=[2, 3])
    assert reversed_["mean_difference"] == pytest.approx((0.72 - 0.66 + 0.70 - 0.99 + 0.80 - 0.79) / 3)
    assert (reversed_["n"], reversed_["unpaired"]) == (3, 1)  # split 1 has no scratch seed 3
    with pytest.raises(ValueError, match="2 pre-training seeds"):
        compare_grids(records, records, "auc", methods=("pre", "none"), scratch_seeds=[1])
    path = tmp_path / "grid.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    docs = tmp_path / "docs"
    table = main([str(path), str(path), "--methods", "pre", "none", "--scratch_seeds", "1", "2",
                  "--section", str(docs / "results" / "own_scratch" / "section.md")])
    assert "| pre vs none | 10% | 4 (4) |" in table
    assert "scratch runs of fine-tuning seed 1, 2 in that order" in (docs / "results.md").read_text()
    with pytest.raises(SystemExit):  # without --methods: a usage error, not a traceback
        main([str(path), str(path), "--scratch_seeds", "1", "2"])
    assert "--scratch_seeds needs --methods" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(path), str(path), "--methods", "pre", "none", "--scratch_seeds", "1"])
    assert "scratch_seeds names only 1" in capsys.readouterr().err


def test_scratch_seeds_with_several_fine_tuning_seeds_give_each_cluster_scratch_runs_of_its_own():
    # Pre-training seeds 8 and 9, fine-tuning seeds 1 and 2, on split 0; scratch with fine-tuning seeds 1-5.
    pre = {(8, 1): 0.70, (8, 2): 0.74, (9, 1): 0.72, (9, 2): 0.80}
    scratch = {1: 0.60, 2: 0.64, 3: 0.70, 4: 0.66, 5: 0.10}
    records = ([_record("pre", 0, f, 1.0, v, p) for (p, f), v in pre.items()]
               + [_record("none", 0, s, 1.0, v) for s, v in scratch.items()])
    (row,) = compare_grids(records, records, "auc", methods=("pre", "none"), scratch_seeds=[1, 2, 3, 4])
    # (8, 1) -> scratch 1, (8, 2) -> 2, (9, 1) -> 3, (9, 2) -> 4: seed 8's cluster gains (0.10 + 0.10) / 2,
    # seed 9's (0.02 + 0.14) / 2; no scratch run is in two clusters
    assert (row["n"], row["pairs"], row["unpaired"]) == (2, 4, 0)
    assert row["mean_difference"] == pytest.approx((0.10 + 0.08) / 2)
    assert row["mean_b"] == pytest.approx((0.62 + 0.68) / 2)
    (shuffled,) = compare_grids(records, records, "auc", methods=("pre", "none"), scratch_seeds=[5, 4, 3, 2])
    assert shuffled["mean_difference"] == pytest.approx(((0.70 - 0.10 + 0.74 - 0.66) / 2
                                                         + (0.72 - 0.70 + 0.80 - 0.64) / 2) / 2)
    with pytest.raises(ValueError, match=r"2 pre-training seeds \[8, 9\] x 2 fine-tuning seeds \[1, 2\]"):
        compare_grids(records, records, "auc", methods=("pre", "none"), scratch_seeds=[1, 2, 3])


def test_fractions_keeps_only_the_named_label_fractions(tmp_path, capsys):
    records = [_record("pre", 0, 1, f, 0.70 + f / 10, 8) for f in (0.1, 1.0)] + [
        _record("none", 0, 1, f, 0.60) for f in (0.1, 1.0)]
    path = tmp_path / "grid.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    both = main([str(path), str(path), "--methods", "pre", "none"])
    assert "| pre vs none | 10% |" in both and "| pre vs none | 100% |" in both
    only = main([str(path), str(path), "--methods", "pre", "none", "--fractions", "1.0"])
    assert "| pre vs none | 100% | 1 (1) | 0.8000 | 0.6000 | +0.2000 |" in only and "| 10% |" not in only
    with pytest.raises(SystemExit):  # no row left: a usage error naming the fractions
        main([str(path), str(path), "--methods", "pre", "none", "--fractions", "0.25"])
    assert "at label fractions [0.25]" in capsys.readouterr().err
