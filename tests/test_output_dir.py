"""`--output_dir` never destroys files the job did not write; a folder of an earlier run is resumed from its last
complete checkpoint; `--resume_from_checkpoint` takes a path, `True` or `last` (issue 10, items 2, 4, 10)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from job_helpers import add_sentinel, folder_snapshot, sentinels, tiny_pretrain_args
from userbert_hf.pretraining import job as pretraining_job
from userbert_hf.output_dir import MARKER_FILE, OutputDirError, prepare_output_dir


def _no_data_loading(*args, **kwargs):
    raise AssertionError("the data must not be loaded when the settings are refused")


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    """A finished tiny `userbert pretrain` folder with checkpoint-1 and checkpoint-2."""
    folder = tmp_path_factory.mktemp("pretrain") / "run"
    pretraining_job.main(tiny_pretrain_args(folder))
    assert sorted(p.name for p in folder.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    return folder


@pytest.fixture
def run_copy(pretrained_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(pretrained_run, copy)
    return copy


def _someone_elses_folder(root: Path) -> Path:
    folder = root / "theirs"
    (folder / "checkpoint-7").mkdir(parents=True)
    (folder / "checkpoint-7" / "notes.txt").write_text("their checkpoint")
    (folder / "README.md").write_text("# my thesis results\n")
    (folder / "config.json").write_text('{"mine": true}\n')
    return folder


# ----------------------------------------------------------------------------------------------- refused
@pytest.mark.parametrize("owner", [None, "finetune"])
def test_pretrain_refuses_a_folder_it_did_not_write(tmp_path, monkeypatch, capsys, owner):
    folder = _someone_elses_folder(tmp_path)
    if owner:  # another job's output is not ours either
        (folder / MARKER_FILE).write_text(json.dumps({"job": owner}))
    before = folder_snapshot(folder)
    monkeypatch.setattr(pretraining_job, "load_behavior_data", _no_data_loading)
    with pytest.raises(SystemExit) as exit_info:
        pretraining_job.main(tiny_pretrain_args(folder))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: userbert pretrain")
    assert f"--output_dir {folder} is not empty" in err and "--overwrite_output_dir" in err
    assert ("userbert finetune" in err) == (owner == "finetune")
    assert folder_snapshot(folder) == before  # checkpoint-7, README.md and config.json untouched


def test_finetune_refuses_a_pretraining_folder_and_embed_a_foreign_file(pretrained_run, tmp_path, capsys):
    from userbert_hf import embedding_export
    from userbert_hf.finetuning import job as finetuning_job

    before = folder_snapshot(pretrained_run)
    with pytest.raises(SystemExit) as exit_info:
        finetuning_job.main(["--model_name_or_path", "gru4rec", "--output_dir", str(pretrained_run)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: userbert finetune") and "written by `userbert pretrain`" in err
    assert folder_snapshot(pretrained_run) == before

    table = tmp_path / "sales.csv"
    table.write_text("region,revenue\nnorth,10\n")
    with pytest.raises(SystemExit) as exit_info:
        embedding_export.main(["--model_name_or_path", str(pretrained_run), "--output", str(table)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: userbert embed") and f"--output {table}" in err and "--overwrite_output" in err
    assert table.read_text() == "region,revenue\nnorth,10\n"


def test_overwrite_output_dir_starts_over_without_the_old_checkpoints(run_copy):
    assert prepare_output_dir(str(run_copy), "pretrain", overwrite=True, expect_sampler_state=True) is None
    assert not list(run_copy.glob("checkpoint-*"))  # a later resume cannot mix the two runs
    assert (run_copy / "model.safetensors").exists()


def test_a_finished_run_without_checkpoints_is_not_replaced_silently(run_copy):
    for checkpoint in run_copy.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)
    with pytest.raises(OutputDirError, match="finished run of `userbert pretrain`"):
        prepare_output_dir(str(run_copy), "pretrain", expect_sampler_state=True)
    assert prepare_output_dir(str(run_copy / "new"), "pretrain") is None  # a new folder is fine


# ----------------------------------------------------------------------------------------------- resumed
def test_rerun_in_the_same_folder_resumes_from_its_last_checkpoint(run_copy, capsys):
    add_sentinel(run_copy / "checkpoint-2")
    pretraining_job.main(tiny_pretrain_args(run_copy, "--max_steps", "3"))
    assert "resuming from" in capsys.readouterr().out
    assert sentinels(run_copy / "checkpoint-3" / "trainer_state.json") == ["checkpoint-2"]
    assert json.loads((run_copy / "checkpoint-3" / "trainer_state.json").read_text())["global_step"] == 3


@pytest.mark.parametrize("value", ["True", "last"])
def test_resume_true_or_last_skips_a_truncated_checkpoint(run_copy, caplog, value):
    add_sentinel(run_copy / "checkpoint-1")
    rng = run_copy / "checkpoint-2" / "rng_state.pth"
    rng.write_bytes(rng.read_bytes()[:100])  # killed while writing the newest checkpoint
    with caplog.at_level("WARNING"):
        pretraining_job.main(tiny_pretrain_args(run_copy, "--max_steps", "3", "--resume_from_checkpoint", value))
    assert f"{rng} is truncated or corrupted" in caplog.text
    assert sentinels(run_copy / "checkpoint-3" / "trainer_state.json") == ["checkpoint-1"]


def test_resume_from_an_incomplete_checkpoint_names_the_file(run_copy, capsys):
    rng = run_copy / "checkpoint-2" / "rng_state.pth"
    rng.write_bytes(rng.read_bytes()[:100])
    with pytest.raises(SystemExit) as exit_info:
        pretraining_job.main(tiny_pretrain_args(
            run_copy, "--max_steps", "3", "--resume_from_checkpoint", str(run_copy / "checkpoint-2")))
    assert exit_info.value.code == 2
    assert f"{rng} is truncated or corrupted" in capsys.readouterr().err
    assert not (run_copy / "checkpoint-3").exists()


def test_resuming_a_checkpoint_into_someone_elses_folder_is_refused(pretrained_run, tmp_path):
    folder = _someone_elses_folder(tmp_path)
    with pytest.raises(OutputDirError, match="not written by `userbert pretrain`"):
        prepare_output_dir(str(folder), "pretrain", resume_from_checkpoint=str(pretrained_run / "checkpoint-2"),
                           expect_sampler_state=True)
    resumed = prepare_output_dir(str(tmp_path / "fresh"), "pretrain",
                                 resume_from_checkpoint=str(pretrained_run / "checkpoint-2"), expect_sampler_state=True)
    assert resumed == str(pretrained_run / "checkpoint-2")


def test_embed_output_is_replaced_only_when_it_holds_embeddings(tmp_path):
    import numpy as np

    from userbert_hf.embedding_export import _embeddings_dataset, save_user_embeddings
    from userbert_hf.output_dir import check_embedding_output

    embeddings = _embeddings_dataset(["1", "2"], np.zeros((2, 4), dtype=np.float32))
    for path in (tmp_path / "e.parquet", tmp_path / "e_folder"):
        save_user_embeddings(embeddings, str(path))
        check_embedding_output(str(path))  # an earlier export: replaced without asking
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    with pytest.raises(OutputDirError, match="does not hold user embeddings"):
        check_embedding_output(str(notes))
    check_embedding_output(str(notes), overwrite=True)
