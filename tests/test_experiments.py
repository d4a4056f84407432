"""Tests for userbert_hf.experiments: statistics against hand-computed values, baselines on hand-made data, the
grid spec, resuming an interrupted grid (with fake jobs), and the report."""

from __future__ import annotations

import doctest
import json
import math

import datasets
import numpy as np
import pytest
from scipy import stats

from userbert_hf.experiments import baselines, report, runner, spec, statistics
from userbert_hf.experiments.baselines import (
    ItemMeanBaseline,
    MatrixFactorization,
    PopularityBaseline,
    evaluate_baseline,
)
from userbert_hf.experiments.runner import ExperimentRunner, ResultsStore
from userbert_hf.experiments.spec import ExperimentSpec
from userbert_hf.experiments.statistics import mean_confidence_interval, paired_comparison


@pytest.mark.parametrize("module", [statistics, baselines, spec])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


# ----------------------------------------------------------------------------------------------
# statistics
# ----------------------------------------------------------------------------------------------
def test_paired_comparison_matches_hand_computation():
    a, b = [0.62, 0.60, 0.64, 0.58], [0.60, 0.59, 0.61, 0.60]
    # d = [0.02, 0.01, 0.03, -0.02]: mean 0.01, sd sqrt(14e-4 / 3), se = sd / 2, t = 0.01 / se, df 3.
    sd = math.sqrt(14e-4 / 3)
    t_stat = 0.01 / (sd / 2)
    half = 3.182446305284263 * sd / 2  # t_{0.975, 3}
    c = paired_comparison(a, b)
    assert c.n == 4 and c.wins == 3
    assert c.mean_difference == pytest.approx(0.01)
    assert (c.ci_low, c.ci_high) == pytest.approx((0.01 - half, 0.01 + half))
    assert c.t_pvalue == pytest.approx(2 * stats.t.sf(t_stat, 3))
    assert c.t_pvalue == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert (c.mean_a, c.mean_b) == pytest.approx((0.61, 0.60))


def test_wilcoxon_exact_p_values_by_hand():
    # All 9 differences positive: W- = 0, two-sided exact p = 2 / 2^9.
    assert paired_comparison(np.arange(9) + 1.0, np.zeros(9)).wilcoxon_pvalue == pytest.approx(2 / 512)
    # d = [1, 2, 3, -4, 5]: W- = 4; subsets of {1..5} with sum <= 4: {}, 1, 2, 3, 4, 12, 13 -> p = 2 * 7 / 32.
    c = paired_comparison([1.0, 2.0, 3.0, -4.0, 5.0], [0.0] * 5)
    assert c.wilcoxon_pvalue == pytest.approx(14 / 32)
    assert c.wilcoxon_pvalue == pytest.approx(stats.wilcoxon([1.0, 2.0, 3.0, -4.0, 5.0]).pvalue)


def test_paired_comparison_edge_cases():
    same = paired_comparison([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert same.mean_difference == 0 and same.t_pvalue == 1.0 and same.wilcoxon_pvalue == 1.0
    one = paired_comparison([0.7], [0.5])
    assert one.n == 1 and math.isnan(one.ci_low) and math.isnan(one.t_pvalue)
    dropped = paired_comparison([0.7, float("nan"), 0.6], [0.5, 0.5, 0.4])
    assert dropped.n == 2 and dropped.mean_difference == pytest.approx(0.2)
    with pytest.raises(ValueError, match="same length"):
        paired_comparison([1.0], [1.0, 2.0])
    mean, low, high = mean_confidence_interval([2.0, 4.0])  # sd sqrt(2), se 1, t_{0.975,1} = 12.706
    assert (mean, low, high) == pytest.approx((3.0, 3.0 - 12.7062047, 3.0 + 12.7062047))


# ----------------------------------------------------------------------------------------------
# baselines
# ----------------------------------------------------------------------------------------------
def _ctr_splits():
    """Users A, B train; C test with candidates 2 (clicked), 3 (clicked), 4, 1 (not clicked)."""
    rows = {
        "train": {"user_id": ["A", "A", "B"], "history": [[1, 2], [1, 2], [2, 3]], "candidate": [4, 3, 4],
                  "label": [1.0, 0.0, 0.0]},
        "validation": {"user_id": [], "history": [], "candidate": [], "label": []},
        "test": {"user_id": ["C"] * 4, "history": [[1]] * 4, "candidate": [2, 3, 4, 1], "label": [1.0, 1.0, 0.0, 0.0]},
    }
    features = datasets.Features({"user_id": datasets.Value("string"), "history": datasets.List(datasets.Value("int32")),
                                  "candidate": datasets.Value("int32"), "label": datasets.Value("float32")})
    return datasets.DatasetDict({k: datasets.Dataset.from_dict(v, features=features) for k, v in rows.items()})


def test_popularity_counts_users_and_ranks_ctr_candidates():
    model = PopularityBaseline().fit([[1, 2], [2, 3, 3], [1]], num_items=5)
    assert model.scores.tolist() == [0.0, 2.0, 2.0, 1.0, 0.0]  # each user counts once
    # Histories A [1, 2], B [2, 3], C [1]: scores 2 -> 2, 3 -> 1, 4 -> 0, 1 -> 2. Positive/negative pairs:
    # (2 vs 4) win, (2 vs 1) tie, (3 vs 4) win, (3 vs 1) loss -> AUC (1 + 0.5 + 1 + 0) / 4.
    metrics = evaluate_baseline("popularity", _ctr_splits(), num_items=5)
    assert metrics["auc"] == pytest.approx(0.625)
    assert "logloss" not in metrics  # counts are not probabilities


def test_item_mean_uses_only_the_training_labels():
    model = ItemMeanBaseline(prior_weight=0.0).fit([4, 3, 4], [1.0, 0.0, 0.0], num_items=5)
    assert model.scores[4] == 0.5 and model.scores[3] == 0.0
    # Unseen items get the global training mean 1/3 (prior weight 1: (0 + 1/3) / (0 + 1)).
    metrics = evaluate_baseline("item_mean", _ctr_splits(), num_items=5)
    # Test scores: 2 -> 1/3, 3 -> (0 + 1/3)/2 = 1/6, 4 -> (1 + 1/3)/3 = 4/9, 1 -> 1/3: positives {1/3, 1/6},
    # negatives {4/9, 1/3}: pairs loss, tie, loss, loss -> AUC 0.5 / 4.
    assert metrics["auc"] == pytest.approx(0.125)
    assert "logloss" in metrics


def test_matrix_factorization_loss_falls_and_learns_co_occurrence():
    histories = [[1, 2], [1, 2], [1, 2, 3], [4, 5], [4, 5], [4, 5, 6]] * 5
    mf = MatrixFactorization(factors=8, epochs=40, learning_rate=0.05, seed=0).fit(histories, num_items=7)
    assert mf.losses[-1] < 0.5 * mf.losses[0]
    assert mf.losses[0] == pytest.approx(math.log(2), abs=0.05)  # random init: margins near 0
    # User 0 (items 1, 2) scores item 3 (co-occurring with 1, 2) above item 6 (co-occurring with 4, 5).
    assert mf.score([0], [3])[0] > mf.score([0], [6])[0]
    again = MatrixFactorization(factors=8, epochs=40, learning_rate=0.05, seed=0).fit(histories, num_items=7)
    assert again.losses == mf.losses  # seeded


def test_popularity_full_ranking_next_item_excludes_history():
    features = datasets.Features({"user_id": datasets.Value("string"), "history": datasets.List(datasets.Value("int32")),
                                  "target": datasets.Value("int32"), "exclude": datasets.List(datasets.Value("int32"))})
    rows = {"user_id": ["a", "b", "c"], "history": [[1, 2], [1, 2, 3], [1]], "target": [3, 4, 2],
            "exclude": [[1, 2], [1, 2, 3], [1]]}
    split = datasets.Dataset.from_dict(rows, features=features)
    # Training rows are shorter prefixes of the same users: popularity must count each user's longest history.
    prefixes = datasets.Dataset.from_dict({"user_id": ["a", "b", "b"], "history": [[1], [1], [1, 2]],
                                           "target": [2, 2, 3], "exclude": [[], [], []]}, features=features)
    splits = datasets.DatasetDict({"train": prefixes, "validation": split, "test": split})
    assert baselines._user_histories(splits) == ({"a": 0, "b": 1, "c": 2}, [[1, 2], [1, 2, 3], [1]])
    # Popularity: 1 -> 3, 2 -> 2, 3 -> 1, 4 -> 0. a: 1, 2 excluded, target 3 ranks first; b: 1-3 excluded,
    # target 4 first; c: 1 excluded, target 2 first.
    metrics = evaluate_baseline("popularity", splits, num_items=5)
    assert metrics["hr@5"] == 1.0 and metrics["mrr"] == 1.0
    with pytest.raises(ValueError, match="item_mean"):
        evaluate_baseline("item_mean", splits, num_items=5)


# ----------------------------------------------------------------------------------------------
# the grid spec
# ----------------------------------------------------------------------------------------------
def test_spec_from_yaml_and_errors(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("task: ctr\nsplit_seeds: [0, 1, 2]\nseeds: [1, 2, 3]\nlabel_fractions: [0.1, 0.25, 1.0]\n")
    grid = ExperimentSpec.from_file(path)
    assert grid.name == "grid" and list(grid.methods) == ["none", "userbert", "ptum", "cp"]
    kinds = [c.kind for c in grid.cells()]
    # 1 export, 3 methods x 3 splits pre-trainings, 4 methods x 3 x 3 x 3 fine-tunings, 2 label-free baselines
    # x 3 splits, item mean x 3 x 3 x 3.
    assert kinds.count("export") == 1 and kinds.count("pretrain") == 9 and kinds.count("finetune") == 108
    assert kinds.count("baseline") == 6 + 27
    assert len({c.cell_id for c in grid.cells()}) == len(grid.cells())
    path.write_text("task: ctr\nlabel_fraction: [0.1]\n")
    with pytest.raises(ValueError, match=r"grid.yaml: unknown keys \['label_fraction'\]"):
        ExperimentSpec.from_file(path)
    path.write_text("task: ctr\nlabel_fractions: [0.0, 1.0]\n")
    with pytest.raises(ValueError, match="grid.yaml.*label_fractions must be in"):
        ExperimentSpec.from_file(path)
    with pytest.raises(ValueError, match="fraction_args"):
        ExperimentSpec(name="x", task="ctr", label_fractions=[1.0], fraction_args={0.1: {}})
    with pytest.raises(ValueError, match="objective"):
        ExperimentSpec(name="x", task="ctr", methods={"bert": {"objective": "mlm"}})
    # fraction_seeds: fewer seeds at a costly fraction, only among the grid's seeds and fractions.
    cheap = ExperimentSpec(name="x", task="next_item", split_seeds=[0], seeds=[1, 2, 3], label_fractions=[0.1, 1.0],
                           methods={"none": {}}, baselines=[], fraction_seeds={1.0: [2]})
    assert [(c.seed, c.fraction) for c in cheap.cells()] == [(1, 0.1), (2, 0.1), (3, 0.1), (2, 1.0)]
    for bad in ({1.0: [4]}, {0.25: [1]}, {1.0: []}):
        with pytest.raises(ValueError, match="fraction_seeds"):
            ExperimentSpec(name="x", task="ctr", seeds=[1, 2, 3], label_fractions=[0.1, 1.0], fraction_seeds=bad)
    with pytest.raises(ValueError, match="item_mean"):
        ExperimentSpec(name="x", task="next_item", baselines=["item_mean"])
    # fraction_split_seeds: fewer user splits at a costly fraction, only among the grid's splits and fractions.
    fewer = ExperimentSpec(name="x", task="ctr", split_seeds=[0, 1, 2], seeds=[1], label_fractions=[0.1, 1.0],
                           methods={"none": {}}, baselines=["item_mean"], fraction_split_seeds={1.0: [0]})
    assert [(c.kind, c.split_seed, c.fraction) for c in fewer.cells()] == [
        ("finetune", 0, 0.1), ("finetune", 1, 0.1), ("finetune", 2, 0.1), ("finetune", 0, 1.0),
        ("baseline", 0, 0.1), ("baseline", 0, 1.0), ("baseline", 1, 0.1), ("baseline", 2, 0.1)]
    for bad in ({1.0: [3]}, {0.25: [0]}, {1.0: []}):
        with pytest.raises(ValueError, match="fraction_split_seeds"):
            ExperimentSpec(name="x", task="ctr", split_seeds=[0, 1, 2], label_fractions=[0.1, 1.0],
                           fraction_split_seeds=bad)


def test_jobs_get_the_same_architecture_and_the_pretraining_export():
    grid = ExperimentSpec(name="g", task="ctr", split_seeds=[3], seeds=[7], label_fractions=[0.1],
                          methods={"none": {}, "cp": {"objective": "cp", "learning_rate": 5e-4}}, baselines=[],
                          model_args={"hidden_size": 32}, task_args={"max_behaviors": 20},
                          pretraining_args={"max_steps": 5}, finetuning_args={"num_train_epochs": 2},
                          fraction_args={0.1: {"num_train_epochs": 8}})
    run = ExperimentRunner(grid, "out", pretrain_fn=lambda argv: {}, finetune_fn=lambda argv: {})
    pre = run.pretrain_argv("cp", 3)
    assert _value(pre, "--data") == "out/pretraining_data" and _value(pre, "--objective") == "cp"
    assert _value(pre, "--hidden_size") == "32" and _value(pre, "--max_behaviors") == "20"
    assert _value(pre, "--learning_rate") == "0.0005" and _value(pre, "--seed") == "3"
    cells = {c.method: c for c in grid.cells() if c.kind == "finetune"}
    scratch, tuned = run.finetune_argv(cells["none"]), run.finetune_argv(cells["cp"])
    assert _value(scratch, "--model_name_or_path") == "nrms" and _value(scratch, "--hidden_size") == "32"
    assert _value(tuned, "--model_name_or_path") == "out/pretrained/g-cp-split3"
    # a grid's pre-trained row is fine-tuned as it is unless its finetuning_args soften it (the job's default
    # softening of a same-data warm start does not change what a row means); scratch has nothing to soften
    assert _value(tuned, "--soften_same_data_start") == "false" and "--soften_same_data_start" not in scratch
    for argv in (scratch, tuned):
        assert _value(argv, "--split_seed") == "3" and _value(argv, "--seed") == "7"
        assert _value(argv, "--train_fraction") == "0.1" and _value(argv, "--max_behaviors") == "20"
        assert _value(argv, "--num_train_epochs") == "8" and argv.count("--num_train_epochs") == 1
    assert _value(run.export_argv(), "--export_pretraining_data") == "out/pretraining_data"


def _value(argv: list[str], option: str) -> str:
    return argv[argv.index(option) + 1]


# ----------------------------------------------------------------------------------------------
# resuming, with fake jobs
# ----------------------------------------------------------------------------------------------
class FakeJobs:
    """Stand-ins for the jobs: record calls, return metrics that depend on the argv, fail on request."""

    def __init__(self, fail_at: int | None = None):
        self.calls, self.fail_at, self.evaluated = [], fail_at, []

    def pretrain(self, argv):
        self.calls.append(("pretrain", _value(argv, "--output_dir")))
        return {"mbp_loss": 1.5}

    def finetune(self, argv):
        if "--export_pretraining_data" in argv:
            self.calls.append(("export", ""))
            return {}
        self.calls.append(("finetune", _value(argv, "--output_dir")))
        if self.fail_at is not None and len([c for c in self.calls if c[0] == "finetune"]) == self.fail_at:
            raise KeyboardInterrupt  # the machine went away mid-grid
        seed, split = int(_value(argv, "--seed")), int(_value(argv, "--split_seed"))
        pretrained = not _value(argv, "--model_name_or_path").startswith("nrms")
        fraction = float(_value(argv, "--train_fraction"))
        # as the job: a development run (--evaluate_test false) returns validation metrics only
        prefix = "eval_" if "--evaluate_test" in argv and _value(argv, "--evaluate_test") == "false" else "test_"
        self.evaluated.append(prefix)
        return {prefix + "auc": 0.6 + 0.01 * seed + 0.002 * split + (0.03 * (1 - fraction) if pretrained else 0.0),
                prefix + "ap": 0.5, prefix + "logloss": 0.68}


def _grid(**overrides):
    settings = dict(name="fake", task="ctr", split_seeds=[0, 1], seeds=[1, 2], label_fractions=[0.1, 1.0],
                    methods={"none": {}, "userbert": {"objective": "userbert"}}, baselines=[])
    return ExperimentSpec(**{**settings, **overrides})


def test_interrupted_grid_resumes_without_redoing_finished_cells(tmp_path):
    grid = _grid()
    first = FakeJobs(fail_at=5)
    run = ExperimentRunner(grid, tmp_path, pretrain_fn=first.pretrain, finetune_fn=first.finetune)
    with pytest.raises(KeyboardInterrupt):
        run.run()
    finished = [json.loads(line)["cell"] for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    # export + 2 pre-trainings + 4 fine-tunings finished; the 5th fine-tuning was interrupted.
    assert finished[:3] == ["export", "pretrain/userbert/split0", "pretrain/userbert/split1"] and len(finished) == 7
    second = FakeJobs()
    resumed = ExperimentRunner(grid, tmp_path, pretrain_fn=second.pretrain, finetune_fn=second.finetune)
    records = resumed.run()
    assert [c[0] for c in second.calls] == ["finetune"] * (16 - 4)  # nothing finished is run again
    redone = {c[1] for c in second.calls}
    assert not redone & {str(run.run_dir(c)) for c in grid.cells() if c.cell_id in finished and c.kind == "finetune"}
    assert sorted(r["cell"] for r in records) == sorted(c.cell_id for c in grid.cells())
    third = FakeJobs()
    ExperimentRunner(grid, tmp_path, pretrain_fn=third.pretrain, finetune_fn=third.finetune).run()
    assert third.calls == []  # a finished grid runs nothing


def test_a_result_line_cut_by_a_kill_is_rerun(tmp_path):
    store = ResultsStore(tmp_path / "results.jsonl")
    store.add({"cell": "export"})
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"cell": "pretrain/userbert/split0", "metr')  # killed while writing
    assert ResultsStore(tmp_path / "results.jsonl").done("export")
    assert not ResultsStore(tmp_path / "results.jsonl").done("pretrain/userbert/split0")


def test_shared_pretraining_runs_once_per_method(tmp_path):
    grid = _grid(pretrain_per_split=False)
    jobs = FakeJobs()
    run = ExperimentRunner(grid, tmp_path, pretrain_fn=jobs.pretrain, finetune_fn=jobs.finetune)
    run.run()
    assert [c for c in jobs.calls if c[0] == "pretrain"] == [("pretrain", str(tmp_path / "pretrained/fake-userbert"))]
    tuned = [c for c in grid.cells() if c.kind == "finetune" and c.method == "userbert"]
    assert {_value(run.finetune_argv(c), "--model_name_or_path") for c in tuned} == {
        str(tmp_path / "pretrained/fake-userbert")}
    assert _value(run.pretrain_argv("userbert", None), "--seed") == "0"
    # Fraction by fraction: every 10% pair comes before any 100% run.
    fractions = [c.fraction for c in grid.cells() if c.kind == "finetune"]
    assert fractions == sorted(fractions)


def test_a_method_can_fine_tune_another_methods_models_with_its_own_options(tmp_path):
    grid = _grid(pretrain_seeds=[0, 1], label_fractions=[1.0], methods={
        "none": {}, "userbert": {"objective": "userbert", "finetuning_args": {"learning_rate": 0.01}},
        "softened": {"pretrained_model_of": "userbert", "finetuning_args": {"shrink_perturb": 0.5}}})
    assert [c.cell_id for c in grid.cells() if c.kind == "pretrain"] == ["pretrain/userbert/pseed0",
                                                                         "pretrain/userbert/pseed1"]
    jobs = FakeJobs()
    run = ExperimentRunner(grid, tmp_path, pretrain_fn=jobs.pretrain, finetune_fn=jobs.finetune)
    run.run()
    assert len([c for c in jobs.calls if c[0] == "pretrain"]) == 2  # no pre-training for "softened"
    pre = run.pretrain_argv("userbert", None, 0)
    assert "--finetuning_args" not in pre and "--learning_rate" not in pre  # a fine-tuning option, not pre-training's
    for cell in grid.cells():
        if cell.kind != "finetune" or cell.method == "none":
            continue
        argv = run.finetune_argv(cell)
        assert _value(argv, "--model_name_or_path") == str(tmp_path / f"pretrained/fake-userbert-pseed{cell.pretrain_seed}")
        assert run.dependencies(cell) == [f"pretrain/userbert/pseed{cell.pretrain_seed}"]
        assert ("--shrink_perturb" in argv) == (cell.method == "softened")
        assert ("--learning_rate" in argv) == (cell.method == "userbert")
    scratch = next(c for c in grid.cells() if c.kind == "finetune" and c.method == "none")
    assert "--shrink_perturb" not in run.finetune_argv(scratch)
    for methods, message in [
        ({"none": {}, "a": {"pretrained_model_of": "none"}}, "another pre-trained method"),
        ({"none": {}, "a": {"pretrained_model_of": "a"}}, "another pre-trained method"),
        ({"u": {"objective": "userbert"}, "a": {"pretrained_model_of": "u", "max_steps": 5}}, "takes only"),
        ({"u": {"objective": "userbert"}, "a": {"pretrained_model_of": "u"}, "b": {"pretrained_model_of": "a"}},
         "pre-trains nothing itself"),
        ({"u": {"objective": "userbert", "finetuning_args": 3}}, "must be a mapping"),
    ]:
        with pytest.raises(ValueError, match=message):
            _grid(methods=methods)


def test_a_scratch_variant_trains_from_its_preset_with_its_options_and_is_compared_with_none(tmp_path):
    grid = _grid(pretrain_seeds=[0, 1], label_fractions=[1.0], methods={
        "none": {}, "small_init": {"objective": "none", "finetuning_args": {"initializer_gain": 0.5}},
        "userbert": {"objective": "userbert"}})
    assert grid.pretrained_methods == ["userbert"] and grid.scratch_variants == ["small_init"]
    variant = [c for c in grid.cells() if c.kind == "finetune" and c.method == "small_init"]
    assert len(variant) == 4 and {c.pretrain_seed for c in variant} == {None}  # 2 splits x 2 seeds, no pseed
    jobs = FakeJobs()
    run = ExperimentRunner(grid, tmp_path, pretrain_fn=jobs.pretrain, finetune_fn=jobs.finetune, confirm=True)
    records = run.run()
    assert [c[1] for c in jobs.calls if c[0] == "pretrain"] == [str(tmp_path / f"pretrained/fake-userbert-pseed{p}")
                                                               for p in (0, 1)]
    for cell in variant:
        argv = run.finetune_argv(cell)
        assert _value(argv, "--model_name_or_path") == grid.preset and _value(argv, "--initializer_gain") == "0.5"
        assert run.dependencies(cell) == []
    none = next(c for c in grid.cells() if c.kind == "finetune" and c.method == "none")
    assert "--initializer_gain" not in run.finetune_argv(none)
    section = report.experiment_section(grid, records, tmp_path, command="userbert experiment x.yaml")
    assert "| small_init vs none | 100% |" in section and "| userbert vs none | 100% |" in section
    for methods, message in [
        ({"none": {}, "a": {"objective": "none", "max_steps": 5}}, "trains from scratch: it takes only"),
        ({"none": {}, "a": {"objective": "none"}, "b": {"pretrained_model_of": "a"}}, "another pre-trained method"),
    ]:
        with pytest.raises(ValueError, match=message):
            _grid(methods=methods)


def test_stop_after_runs_that_many_cells(tmp_path):
    jobs = FakeJobs()
    run = ExperimentRunner(_grid(), tmp_path, pretrain_fn=jobs.pretrain, finetune_fn=jobs.finetune)
    run.run(stop_after=2)
    assert [c[0] for c in jobs.calls] == ["export", "pretrain"]


def test_shards_split_the_pretraining_and_fine_tunings_and_together_finish_the_grid(tmp_path):
    import threading

    grid = _grid()  # pretrain_per_split: two pre-training runs, 16 fine-tunings
    early = FakeJobs()
    with pytest.raises(ValueError, match="shard 1/2 needs export finished first"):
        ExperimentRunner(grid, tmp_path, pretrain_fn=early.pretrain, finetune_fn=early.finetune).run(shard=(1, 2))
    assert early.calls == []  # nothing started before the export existed
    zero, one = FakeJobs(), FakeJobs()
    runners = [ExperimentRunner(grid, tmp_path, pretrain_fn=jobs.pretrain, finetune_fn=jobs.finetune)
               for jobs in (zero, one)]
    errors = []

    def run(runner, k):
        try:
            runner.run(shard=(k, 2), wait_seconds=60, poll_seconds=0.01)
        except Exception as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(runner, k)) for k, runner in enumerate(runners)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert [c[0] for c in zero.calls[:2]] == ["export", "pretrain"]  # shard 0 exports, then its pre-training
    assert [c[0] for c in one.calls[:1]] == ["pretrain"]  # the other pre-training runs beside it
    tuned_zero = {c[1] for c in zero.calls if c[0] == "finetune"}
    tuned_one = {c[1] for c in one.calls if c[0] == "finetune"}
    assert len(tuned_zero) == len(tuned_one) == 8 and not tuned_zero & tuned_one  # disjoint halves of 16
    records = ResultsStore(tmp_path / "results.jsonl").records
    assert sorted(r["cell"] for r in records) == sorted(c.cell_id for c in grid.cells())  # the whole grid, once
    # Every fine-tuning of a pre-trained model started after that model was finished (by whichever shard).
    order = [r["cell"] for r in records]
    for r in records:
        if r["kind"] == "finetune" and r["method"] != "none":
            assert order.index(f"pretrain/userbert/split{r['split_seed']}") < order.index(r["cell"])
    with pytest.raises(ValueError, match="0 <= K < N"):
        ExperimentRunner(grid, tmp_path).run(shard=(2, 2))


def test_shard_option_errors_are_usage_errors(tmp_path, capsys):
    from userbert_hf.experiments.runner import main

    config = tmp_path / "grid.yaml"
    config.write_text("name: g\ntask: ctr\nmethods: {none: {}, userbert: {objective: userbert}}\n")
    base = [str(config), "--output_dir", str(tmp_path / "out"), "--report", str(tmp_path / "r.md")]
    with pytest.raises(SystemExit):
        main([*base, "--shard", "1/2", "--shard_wait", "0"])  # the export is not finished: nothing runs
    assert "shard 1/2 needs export finished first" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--shard", "2"])
    assert "expected K/N" in capsys.readouterr().err
    assert not (tmp_path / "out" / "results.jsonl").exists()


# ----------------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------------
def test_report_tables_and_plots_from_results(tmp_path):
    grid = _grid()
    jobs = FakeJobs()
    records = ExperimentRunner(grid, tmp_path / "out", pretrain_fn=jobs.pretrain, finetune_fn=jobs.finetune,
                               confirm=True).run()
    assert set(jobs.evaluated) == {"test_"}
    page = report.write_report(grid, records, tmp_path / "docs" / "results.md", command="userbert experiment x.yaml")
    text = page.read_text()
    # At 10% labels every pre-trained run is 0.027 above its scratch pair (4 pairs in 2 splits, each split with
    # its own pre-trained model: 2 clusters): a constant difference.
    values = report.metric_values(records, "auc")
    c = report.paired(values, "userbert", "none", 0.1)
    assert (c.n, c.pairs) == (2, 4) and c.mean_difference == pytest.approx(0.027) and c.wins == 2
    assert "| userbert vs none | 10% | 2 (1 x 2) | 4 |" in text and "+0.0270" in text
    assert "**better than**" not in text  # 4 pairs: Wilcoxon p = 0.125 > 0.05
    assert "- 10% labels, userbert vs none (test auc): no significant difference (mean difference +0.0270" in text
    # Means: scratch AUC at 100% = 0.6 + 0.01 * seed + 0.002 * split over seeds {1, 2} x splits {0, 1}.
    assert "| none | 0.6160" in text
    assert "userbert experiment x.yaml" in text and "CPU cores" in text
    assert "Code (git commit of the runs): " in text and "not recorded" not in text
    assert (tmp_path / "docs" / "results" / "fake" / "gain.png").stat().st_size > 1000
    # A second experiment adds its section to the same page.
    other = _grid(name="other")
    report.write_report(other, records, tmp_path / "docs" / "results.md", command="userbert experiment y.yaml")
    text = (tmp_path / "docs" / "results.md").read_text()
    assert "## fake:" in text and "## other:" in text


def test_verdict_needs_both_tests_below_alpha():
    nine = paired_comparison(np.arange(9) * 0.001 + 0.01, np.zeros(9)).to_dict()  # every pair better
    row = {"a": "userbert", "b": "none", "fraction": 0.1, **nine}
    assert "userbert is **better than** none" in report.verdict(row, "auc")
    assert "userbert is **worse than** none" in report.verdict(row, "logloss")  # lower log loss is better
    row["wilcoxon_pvalue"] = 0.06
    assert "no significant difference" in report.verdict(row, "auc")
