"""Every invalid setting is refused before any data is loaded, naming the option, with a usage line and no
traceback; `--help` is grouped and described, printed from a current snapshot without torch or transformers (issue 10 item 6, issue 12 item 7)."""

from __future__ import annotations

import pytest

from job_helpers import run_cli
from userbert_hf import embedding_export, help_snapshot
from userbert_hf.finetuning import job as finetuning_job
from userbert_hf.pretraining import job as pretraining_job


@pytest.fixture(autouse=True)
def no_data_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("invalid settings must be refused before the data is loaded")

    for module in (pretraining_job, finetuning_job, embedding_export):
        for name in ("load_behavior_data", "load_task_data"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, refuse)


@pytest.mark.parametrize("argv, option", [
    (["--num_behavior_negatives", "0"], "--num_behavior_negatives"),
    (["--num_sequence_negatives", "-2"], "--num_sequence_negatives"),
    (["--bsm_min_behaviors", "-1"], "--bsm_min_behaviors"),
    (["--bsm_gap", "-3"], "--bsm_gap"),
    (["--max_steps", "0"], "--max_steps"),
    (["--behavior_pool_size", "0"], "--behavior_pool_size"),
    (["--behavior_pool_size", "3", "--num_behavior_negatives", "4"], "--behavior_pool_size"),
    (["--sequence_pool_size", "0"], "--sequence_pool_size"),
    (["--sequence_pool_interval", "0"], "--sequence_pool_interval"),
    (["--mask_ratio", "0"], "--mask_ratio"),
    (["--mask_ratio", "1.5"], "--mask_ratio"),
    (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size"),
    (["--preset", "caser"], "--preset"),
    (["--objective", "bert"], "--objective"),
    (["--negative_sampling", "hard"], "--negative_sampling"),
    (["--hidden_size", "30", "--num_attention_heads", "4"], "--hidden_size"),
    (["--dropout", "1.0"], "--dropout"),
    (["--mbp_loss_weight", "0", "--bsm_loss_weight", "0"], "loss_weight"),
    (["--objective", "ptum", "--mbp_loss_weight", "0", "--next_behavior_loss_weight", "0"], "next_behavior_loss_weight"),
    (["--next_behavior_loss_weight", "-1"], "loss weights"),
    (["--max_behaviors", "0"], "--max_behaviors"),
    (["--no_such_option", "1"], "--no_such_option"),
])
def test_pretrain_refuses_invalid_settings_naming_the_option(tmp_path, capsys, argv, option):
    with pytest.raises(SystemExit) as exit_info:
        pretraining_job.main([*argv, "--output_dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: userbert pretrain [--option value ...]\n"), err
    assert "userbert pretrain: error:" in err and option in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, option", [
    (["--task", "sasrec"], "--task"),
    (["--max_steps", "0"], "--max_steps"),
    (["--num_train_epochs", "0"], "--num_train_epochs"),
    (["--train_fraction", "0"], "--train_fraction"),
    (["--npratio", "0"], "--npratio"),
    (["--model_name_or_path", "nrms", "--hidden_size", "30", "--num_attention_heads", "4"], "--hidden_size"),
])
def test_finetune_refuses_invalid_settings_naming_the_option(tmp_path, capsys, argv, option):
    with pytest.raises(SystemExit) as exit_info:
        finetuning_job.main([*argv, "--output_dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: userbert finetune") and option in err, err


def test_embed_refuses_invalid_settings(capsys):
    with pytest.raises(SystemExit) as exit_info:
        embedding_export.main(["--model_name_or_path", "x", "--batch_size", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: userbert embed") and "--batch_size must be >= 1" in err


def test_argument_errors_print_usage_not_a_traceback():
    done = run_cli("pretrain", "--num_behavior_negatives", "0", timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("usage: userbert pretrain"), done.stderr[-2000:]
    assert "--num_behavior_negatives must be an integer >= 1, got 0" in done.stderr
    assert "Traceback" not in done.stderr


def test_help_is_grouped_described_and_quick():
    done = run_cli("pretrain", "--help", timeout=120)  # its CPU time: benchmarks/startup.py
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert out.startswith("usage: userbert pretrain [--option value ...]\n")
    assert "Pre-train a user model on behaviour logs" in out and "examples:\n  userbert pretrain" in out
    assert "--preset {bert4rec,gru4rec,lstur,naml,nativectr,nrms,sasrec}" in out
    # Our options come first, the many TrainingArguments after them.
    positions = [out.index(f"\n  {option}") for option in
                 ("--data ", "--preset ", "--num_behavior_negatives ", "--overwrite_output_dir", "--learning_rate ",
                  "--lr_scheduler_type ")]
    assert positions == sorted(positions)
    assert "training (transformers.TrainingArguments" in out


@pytest.mark.parametrize("command", help_snapshot.COMMANDS)
def test_shipped_help_is_the_live_parsers(command):
    live, files = help_snapshot.live_help(command)
    assert help_snapshot.snapshot_help(command) == live, (
        f"src/userbert_hf/cli_help.json is stale for `userbert {command} --help`: "
        "run `python -m userbert_hf.help_snapshot`")
    job_file = {"pretrain": "pretraining/job.py", "finetune": "finetuning/job.py"}[command]
    assert set(files) >= {"cli.py", "configuration_userbert.py", job_file}  # edits there make the snapshot stale


START_UP = """
import io, json, sys, contextlib
import userbert_hf
from userbert_hf.cli import main
heavy = lambda: sorted(m for m in ("torch", "transformers", "datasets") if m in sys.modules)
seen = {"import": heavy()}
for argv in (["--help"], ["pretrain", "--help"], ["finetune", "--help"]):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(argv) == 0
    seen[" ".join(argv)] = heavy()
    seen[" ".join(argv) + " text"] = out.getvalue()
# Importing transformers afterwards registers the package's classes, also when a submodule imports it.
from userbert_hf.configuration_userbert import PRESETS
from transformers import AutoConfig, AutoModelForCausalLM, pipeline
from transformers.pipelines import PIPELINE_REGISTRY
seen["registered"] = [type(AutoConfig.for_model("userbert")).__name__,
                      "user-feature-extraction" in PIPELINE_REGISTRY.get_supported_tasks()]
print("RESULT " + json.dumps(seen))
"""


def test_help_and_import_load_neither_torch_nor_transformers():
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", START_UP], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.split("RESULT ", 1)[1])
    for key in ("import", "--help", "pretrain --help", "finetune --help"):
        assert seen[key] == [], (key, seen[key])
    assert seen["pretrain --help text"] == help_snapshot.live_help("pretrain")[0]
    assert "--learning_rate" in seen["pretrain --help text"] and "--task" in seen["finetune --help text"]
    assert seen["registered"] == ["UserBertConfig", True]


def test_a_run_prints_the_load_summary_once_and_no_pin_memory_warning(tmp_path):
    from job_helpers import tiny_pretrain_args

    done = run_cli("pretrain", *tiny_pretrain_args(tmp_path / "run", "--max_steps", "1"))
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert output.count("rows read:") == 1, output[-3000:]
    assert "pin_memory" not in output


def test_bad_data_is_a_usage_error_naming_the_file_and_column(tmp_path, monkeypatch, capsys):
    from userbert_hf.cli import main

    monkeypatch.undo()  # these runs must read the data
    wrong_columns = tmp_path / "events.csv"
    wrong_columns.write_text("user,item,ts\n1,2,3\n")
    not_parquet = tmp_path / "events.parquet"
    not_parquet.write_bytes(b"\x00\x01 not a parquet file")
    cases = [
        (["pretrain", "--data", str(wrong_columns)], [str(wrong_columns), "missing required column 'user_id'"]),
        (["pretrain", "--data", str(tmp_path / "typo.csv")], ["behaviour data not found", str(tmp_path / "typo.csv")]),
        (["pretrain", "--data", str(not_parquet)], [str(not_parquet), "cannot read as Parquet"]),
        (["finetune", "--task", "ctr", "--data", str(wrong_columns)], [str(wrong_columns), "'user_id'"]),
    ]
    for number, (argv, expected) in enumerate(cases):
        output_dir = str(tmp_path / f"out-{number}")
        assert main([*argv, "--output_dir", output_dir, "--max_steps", "1", "--report_to", "none"]) == 2, argv
        stderr = capsys.readouterr().err
        assert stderr.startswith(f"usage: userbert {argv[0]} "), stderr[-2000:]
        for text in expected:
            assert text in stderr, (text, stderr[-2000:])
