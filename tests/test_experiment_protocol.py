"""The experiment protocol: development runs see validation only, ``--confirm`` computes test once per frozen
grid (hash recorded, repeated looks reported); pre-training seeds and the clustered test by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from test_experiments import FakeJobs, _grid, _value
from userbert_hf.experiments import report
from userbert_hf.experiments.runner import ExperimentRunner, grid_hash, main
from userbert_hf.experiments.spec import ExperimentSpec
from userbert_hf.experiments.statistics import clustered_comparison


class SeededFakeJobs(FakeJobs):
    """FakeJobs whose pre-trained models differ by pre-training seed: +0.001 x seed on every metric."""

    def finetune(self, argv):
        metrics = super().finetune(argv)
        source = _value(argv, "--model_name_or_path") if "--model_name_or_path" in argv else ""
        bonus = 0.001 * int(source.rsplit("-pseed", 1)[1]) if "-pseed" in source else 0.0
        return {k: v + bonus if k.endswith("auc") else v for k, v in metrics.items()}


def test_clustered_comparison_by_hand():
    pairs = [(0, 0, 0.62, 0.60), (0, 0, 0.64, 0.61), (1, 0, 0.61, 0.60), (1, 0, 0.60, 0.61),
             (0, 1, 0.70, 0.66), (1, 1, 0.69, 0.66)]
    c = clustered_comparison(pairs)
    # cluster means of a - b: (0,0) 0.025, (1,0) 0.0, (0,1) 0.04, (1,1) 0.03
    d = np.array([0.025, 0.0, 0.04, 0.03])
    assert (c.n, c.pairs, c.pretrain_seeds, c.splits) == (4, 6, 2, 2)
    assert c.mean_difference == pytest.approx(0.02375)
    sd = np.sqrt(((d - 0.02375) ** 2).sum() / 3)  # 0.017017
    assert sd == pytest.approx(0.0170171, abs=1e-6)
    t = 0.02375 / (sd / 2)
    assert c.t_pvalue == pytest.approx(2 * stats.t.sf(t, 3))
    assert c.t_pvalue == pytest.approx(0.0683, abs=1e-4)
    assert c.wilcoxon_pvalue == pytest.approx(0.25)  # 3 positive cluster differences and one zero
    # spread over pre-training seeds: split 0 sd(0.025, 0) = 0.0177, split 1 sd(0.04, 0.03) = 0.0071; mean 0.0124
    assert c.pretrain_seed_sd == pytest.approx((0.025 / np.sqrt(2) + 0.01 / np.sqrt(2)) / 2)
    # spread over fine-tuning seeds: clusters with two pairs: sd(0.02, 0.03) = 0.0071, sd(0.01, -0.01) = 0.0141
    assert c.finetune_seed_sd == pytest.approx((0.01 / np.sqrt(2) + 0.02 / np.sqrt(2)) / 2)
    # the unclustered test over the 6 pairs would count each pre-trained model's pairs as independent
    naive = stats.ttest_rel([p[2] for p in pairs], [p[3] for p in pairs]).pvalue
    assert naive < c.t_pvalue


def test_pretrain_seeds_cells_argv_and_old_specs():
    grid = _grid(pretrain_seeds=[0, 1, 2])
    cells = grid.cells()
    assert [c.cell_id for c in cells if c.kind == "pretrain"] == [
        "pretrain/userbert/pseed0", "pretrain/userbert/pseed1", "pretrain/userbert/pseed2"]
    tuned = [c for c in cells if c.kind == "finetune"]
    # 2 fractions x 2 splits x 2 seeds: scratch once, userbert once per pre-training seed
    assert sum(c.method == "none" for c in tuned) == 8 and sum(c.method == "userbert" for c in tuned) == 24
    assert all(c.pretrain_seed is None for c in tuned if c.method == "none")
    run = ExperimentRunner(grid, "out", pretrain_fn=lambda a: {}, finetune_fn=lambda a: {})
    assert _value(run.pretrain_argv("userbert", None, 2), "--seed") == "2"
    cell = next(c for c in tuned if c.method == "userbert" and c.pretrain_seed == 1 and c.split_seed == 1)
    assert _value(run.finetune_argv(cell), "--model_name_or_path") == "out/pretrained/fake-userbert-pseed1"
    assert _value(run.finetune_argv(cell), "--split_seed") == "1"
    assert len({run.run_dir(c) for c in tuned}) == len(tuned)
    # an old spec (no pretrain_seeds) keeps its cells, ids and seeding: results files of earlier grids resume
    old = _grid()
    assert [c.cell_id for c in old.cells()][:4] == [
        "export", "pretrain/userbert/split0", "pretrain/userbert/split1", "finetune/none/split0/seed1/frac0.1"]
    assert _value(ExperimentRunner(old, "out").pretrain_argv("userbert", 1), "--seed") == "1"
    with pytest.raises(ValueError, match="pretrain_per_split"):
        _grid(pretrain_seeds=[0, 1], pretrain_per_split=True)
    with pytest.raises(ValueError, match="distinct"):
        _grid(pretrain_seeds=[0, 0])


def test_report_clusters_by_pretraining_seed_and_shows_both_spreads(tmp_path):
    grid = _grid(pretrain_seeds=[0, 1, 2])
    jobs = SeededFakeJobs()
    records = ExperimentRunner(grid, tmp_path / "out", pretrain_fn=jobs.pretrain, finetune_fn=jobs.finetune,
                               confirm=True).run()
    c = report.paired(report.metric_values(records, "auc"), "userbert", "none", 0.1)
    # gain 0.027 + 0.001 x pre-training seed, the same for both fine-tuning seeds and both splits
    assert (c.n, c.pairs, c.pretrain_seeds, c.splits) == (6, 12, 3, 2)
    assert c.mean_difference == pytest.approx(0.028)
    assert c.pretrain_seed_sd == pytest.approx(0.001) and c.finetune_seed_sd == pytest.approx(0.0, abs=1e-12)
    text = report.write_report(grid, records, tmp_path / "r.md", command="x", protocol=None).read_text()
    assert "| userbert vs none | 10% | 6 (3 x 2) | 12 |" in text and "| 0.0010 | 0.0000 |" in text


def test_development_runs_never_evaluate_test(tmp_path):
    grid = _grid(baselines=["popularity"])
    jobs = FakeJobs()
    run = ExperimentRunner(grid, tmp_path, pretrain_fn=jobs.pretrain, finetune_fn=jobs.finetune)
    assert all(_value(run.finetune_argv(c), "--evaluate_test") == "false" for c in grid.cells() if c.kind == "finetune")
    split_used = []
    run._run_baseline = lambda cell: split_used.append(run.evaluated_on) or {"metrics": {"auc": 0.5}}
    records = run.run()
    assert set(jobs.evaluated) == {"eval_"} and set(split_used) == {"validation"}
    assert {r["evaluated_on"] for r in records if r["kind"] in ("finetune", "baseline")} == {"validation"}
    protocol = {"mode": "development", "hash": "abc", "code": "123", "confirmations": []}
    text = report.write_report(grid, records, tmp_path / "dev.md", command="x", protocol=protocol).read_text()
    assert "Protocol: development run of grid `abc`" in text and "validation **auc**" in text
    assert "test auc" not in text.lower() and "(validation auc)" in text
    confirmed = ExperimentRunner(grid, tmp_path / "c", confirm=True, pretrain_fn=jobs.pretrain,
                                 finetune_fn=jobs.finetune)
    assert all("--evaluate_test" not in confirmed.finetune_argv(c) for c in grid.cells() if c.kind == "finetune")


def test_confirm_records_the_hash_and_a_second_look(tmp_path, monkeypatch):
    from userbert_hf.finetuning import job as finetuning_job
    from userbert_hf.pretraining import job as pretraining_job

    jobs = FakeJobs()
    monkeypatch.setattr(pretraining_job, "main", jobs.pretrain)
    monkeypatch.setattr(finetuning_job, "main", jobs.finetune)
    config = tmp_path / "g.yaml"
    config.write_text("name: g\ntask: ctr\nsplit_seeds: [0]\nseeds: [1]\nlabel_fractions: [0.1]\n"
                      "methods: {none: {}, userbert: {objective: userbert}}\nbaselines: []\n")
    out, page = tmp_path / "out", tmp_path / "results.md"
    base = [str(config), "--output_dir", str(out), "--model_cards_dir", str(tmp_path / "cards")]
    main(base)  # development: validation only, report next to the results
    assert set(jobs.evaluated) == {"eval_"} and not (out / "confirmations.jsonl").exists()
    assert "Protocol: development run" in (out / "development.md").read_text()
    main([*base, "--confirm", "--report", str(page)])
    entries = [json.loads(line) for line in (out / "confirmations.jsonl").read_text().splitlines()]
    frozen = entries[0]["hash"]
    assert (out / f"confirmation-{frozen}" / "results.jsonl").exists() and jobs.evaluated[-1] == "test_"
    from userbert_hf.experiments.runner import code_version

    assert frozen == grid_hash(config.read_text(), code_version())
    assert f"confirmation of the frozen grid `{frozen}`" in page.read_text()
    assert "No test number of this grid was seen before it was frozen" in page.read_text()
    main([*base, "--confirm", "--report", str(page)])  # a second look at the same frozen grid
    text = page.read_text()
    assert "Test numbers of this grid WERE seen before: 2 confirmations of this hash" in text
    config.write_text(config.read_text() + "description: changed\n")  # another grid: another hash
    main([*base, "--confirm", "--report", str(page)])
    hashes = [json.loads(line)["hash"] for line in (out / "confirmations.jsonl").read_text().splitlines()]
    assert hashes[:2] == [frozen, frozen] and hashes[2] != frozen
    assert "first confirmation of this hash" in page.read_text()


def test_a_confirmation_stopped_before_its_first_test_number_is_not_a_look(tmp_path, monkeypatch):
    from userbert_hf.finetuning import job as finetuning_job
    from userbert_hf.pretraining import job as pretraining_job

    jobs = FakeJobs()

    def pretrain_then_stop(argv):
        raise KeyboardInterrupt  # stopped during the pre-training: no test number was computed

    monkeypatch.setattr(pretraining_job, "main", pretrain_then_stop)
    monkeypatch.setattr(finetuning_job, "main", jobs.finetune)
    config = tmp_path / "g.yaml"
    config.write_text("name: g\ntask: ctr\nsplit_seeds: [0]\nseeds: [1]\nlabel_fractions: [0.1]\n"
                      "methods: {none: {}, userbert: {objective: userbert}}\nbaselines: []\n")
    out, page = tmp_path / "out", tmp_path / "results.md"
    base = [str(config), "--output_dir", str(out), "--model_cards_dir", str(tmp_path / "cards"), "--confirm",
            "--report", str(page)]
    with pytest.raises(KeyboardInterrupt):
        main(base)
    monkeypatch.setattr(pretraining_job, "main", jobs.pretrain)
    main(base)  # the same frozen grid, started again
    entries = [json.loads(line) for line in (out / "confirmations.jsonl").read_text().splitlines()]
    assert [e["test_cells_done"] for e in entries] == [0, 0]
    assert "2 confirmations of this hash were started" in page.read_text()
    assert "each earlier one stopped before its first test number" in page.read_text()
    main(base)  # a third start after every test number was computed: that one is a second look
    assert [json.loads(line)["test_cells_done"] for line in (out / "confirmations.jsonl").read_text().splitlines()
            ][-1] == 2
    assert "Test numbers of this grid WERE seen before: 3 confirmations" in page.read_text()


def test_reports_of_earlier_grids_still_build(tmp_path):
    # records written before pre-training seeds and the protocol existed: no pretrain_seed, no evaluated_on
    jobs = FakeJobs()
    records = ExperimentRunner(_grid(), tmp_path / "out", pretrain_fn=jobs.pretrain, finetune_fn=jobs.finetune,
                               confirm=True).run()
    legacy = [{k: v for k, v in r.items() if k not in ("pretrain_seed", "evaluated_on")} for r in records]
    text = report.write_report(_grid(), legacy, tmp_path / "r.md", command="x").read_text()
    assert "Protocol: none (runs made before the frozen protocol" in text and "(test auc)" in text
    assert "| userbert vs none | 10% | 2 (1 x 2) | 4 |" in text
    spec_yaml = tmp_path / "old.yaml"  # an old spec file: no pretrain_seeds key
    spec_yaml.write_text("name: old\ntask: ctr\npretrain_per_split: false\n")
    assert ExperimentSpec.from_file(spec_yaml).effective_pretrain_seeds == [None]


def test_finetuning_job_with_evaluate_test_false_never_touches_the_test_split(tmp_path, monkeypatch):
    from pathlib import Path

    from transformers import Trainer

    from userbert_hf.finetuning.job import main as finetune

    prefixes, original = [], Trainer.evaluate

    def spy(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        prefixes.append(metric_key_prefix)
        return original(self, eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    monkeypatch.setattr(Trainer, "evaluate", spy)
    beauty = Path(__file__).resolve().parent / "fixtures" / "beauty_small.txt"
    out = tmp_path / "dev"
    metrics = finetune(["--task", "next_item", "--data", str(beauty), "--model_name_or_path", "gru4rec",
                        "--output_dir", str(out), "--hidden_size", "16", "--max_behaviors", "20", "--max_steps", "2",
                        "--per_device_train_batch_size", "4", "--eval_strategy", "no", "--disable_tqdm", "true",
                        "--seed", "0", "--evaluate_test", "false"])
    assert prefixes == ["eval"] and metrics and all(k.startswith("eval_") for k in metrics if k != "epoch")
    assert "eval_ndcg@10" in metrics
    assert json.loads((out / "training_results.json").read_text())["test"] == {}


def test_a_development_run_refuses_a_results_file_with_test_numbers(tmp_path):
    jobs = FakeJobs()
    ExperimentRunner(_grid(), tmp_path, pretrain_fn=jobs.pretrain, finetune_fn=jobs.finetune, confirm=True).run(
        stop_after=5)
    with pytest.raises(ValueError, match="evaluated on \\['test'\\]"):
        ExperimentRunner(_grid(), tmp_path, pretrain_fn=jobs.pretrain, finetune_fn=jobs.finetune).run()


def test_a_method_may_name_a_recipe():
    grid = _grid(methods={"none": {}, "paper": {"recipe": "paper"}, "cp_published": {"recipe": "cp_paper"}})
    run = ExperimentRunner(grid, "out", pretrain_fn=lambda a: {}, finetune_fn=lambda a: {})
    argv = run.pretrain_argv("paper", 0)
    assert _value(argv, "--recipe") == "paper" and _value(argv, "--objective") == "userbert"
    assert _value(run.pretrain_argv("cp_published", 0), "--objective") == "cp"
    with pytest.raises(ValueError, match="objective"):
        _grid(methods={"none": {}, "mine": {"recipe": "unknown"}})


def test_a_confirmation_report_shows_the_same_comparison_on_validation(tmp_path):
    grid = _grid(pretrain_seeds=[0, 1, 2])
    records = ExperimentRunner(grid, tmp_path / "out", pretrain_fn=SeededFakeJobs().pretrain,
                               finetune_fn=SeededFakeJobs().finetune, confirm=True).run()
    for r in records:  # validation: scratch 0.55, pre-trained 0.56 whatever the test value
        if r["kind"] == "finetune":
            r["validation"] = [{"eval_auc": 0.0}, {"eval_auc": 0.55 if r["method"] == "none" else 0.56}]
    text = report.experiment_section(grid, records, tmp_path, command="x", protocol=None)
    head, validation = text.split("### The same comparison on validation", 1)
    assert "| userbert vs none | 10% | 6 (3 x 2) | 12 | 0.5600 | 0.5500 | +0.0100 |" in validation
    assert "+0.0280" in head and "+0.0280" not in validation.split("###")[0]  # the test gain stays above
    development = [dict(r, evaluated_on="validation") for r in records]  # a development report has no such table
    assert "on validation" not in report.experiment_section(grid, development, tmp_path, command="x")


def test_a_record_holds_the_kept_models_validation_not_the_last_in_training_one(tmp_path):
    # Under early stopping the last in-training evaluation is of a later model than the one kept and tested.
    from pathlib import Path

    class WritingJobs(FakeJobs):
        def __init__(self, record_kept: bool):
            super().__init__()
            self.record_kept = record_kept

        def finetune(self, argv):
            metrics = super().finetune(argv)
            if "--export_pretraining_data" not in argv:
                out = Path(_value(argv, "--output_dir"))
                out.mkdir(parents=True, exist_ok=True)
                results = {"validation": [{"eval_auc": 0.64, "step": 2}, {"eval_auc": 0.61, "step": 4}]}
                if self.record_kept:
                    results["kept_model_validation"] = {"eval_auc": 0.64, "epoch": 2.0}
                (out / "training_results.json").write_text(json.dumps(results))
            return metrics

    for record_kept in (True, False):
        grid = _grid(methods={"none": {}}, split_seeds=[0], seeds=[1], label_fractions=[1.0])
        jobs, out = WritingJobs(record_kept), tmp_path / str(record_kept)
        ExperimentRunner(grid, out, pretrain_fn=jobs.pretrain, finetune_fn=jobs.finetune, confirm=True).run()
        (record,) = [r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())
                     if r["kind"] == "finetune"]
        if record_kept:  # the kept model's evaluation, marked as such
            assert record["validation"] == [{"eval_auc": 0.64, "epoch": 2.0}] and record["validation_of_kept_model"]
            assert report.record_metric(record, "auc", "validation") == 0.64
        else:  # a job that did not record it: the last in-training evaluation, unmarked
            assert record["validation"] == [{"eval_auc": 0.61, "step": 4}] and "validation_of_kept_model" not in record
