"""Whose run is an output folder: a job deletes only what carries its own mark, writes through no link, resumes
only a run with its own fingerprint (data content + settings), holds a lock for its lifetime, and reuses a folder
of a run that failed before its first checkpoint (docs/reliability.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from job_helpers import folder_snapshot, tiny_pretrain_args
from userbert_hf.pretraining import job as pretraining_job
from userbert_hf.output_dir import (
    CHECKPOINT_MARK, LOCK_FILE, MARKER_FILE, OutputDirError, acquire_lock, data_fingerprint, prepare_output_dir,
    release_lock,
)


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("own") / "run"
    pretraining_job.main(tiny_pretrain_args(folder))
    return folder


@pytest.fixture
def run_copy(pretrained_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(pretrained_run, copy, symlinks=True)
    return copy


def _their_checkpoint(folder: Path, name: str = "checkpoint-99") -> Path:
    theirs = folder / name
    theirs.mkdir()
    (theirs / "notes.txt").write_text("not written by the job")
    return theirs


# ---------------------------------------------------------------------------------------------- marks
def test_checkpoints_the_job_wrote_carry_its_mark(pretrained_run):
    marker = json.loads((pretrained_run / MARKER_FILE).read_text())
    for checkpoint in pretrained_run.glob("checkpoint-*"):
        mark = json.loads((checkpoint / CHECKPOINT_MARK).read_text())
        assert mark["job"] == "pretrain" and mark["fingerprint"] == marker["fingerprint"]
    assert not (pretrained_run / LOCK_FILE).exists()  # released when the job ended


def test_overwrite_output_dir_keeps_a_checkpoint_folder_the_job_did_not_write(run_copy, capsys):
    theirs = _their_checkpoint(run_copy)
    before = folder_snapshot(theirs)
    with pytest.raises(SystemExit) as exit_info:
        pretraining_job.main(tiny_pretrain_args(run_copy, "--overwrite_output_dir", "true"))
    assert exit_info.value.code == 2
    assert "checkpoint-99" in capsys.readouterr().err
    assert folder_snapshot(theirs) == before
    assert (run_copy / "checkpoint-2").exists()  # refused before anything was deleted
    shutil.rmtree(theirs)
    assert prepare_output_dir(str(run_copy), "pretrain", overwrite=True) is None
    assert not list(run_copy.glob("checkpoint-*"))  # its own checkpoints are removed


def test_a_link_planted_in_the_output_folder_is_not_written_through(run_copy, tmp_path, capsys):
    outside = tmp_path / "precious.json"
    outside.write_text('{"keep": true}\n')
    (run_copy / "config.json").unlink()
    (run_copy / "config.json").symlink_to(outside)
    with pytest.raises(SystemExit) as exit_info:
        pretraining_job.main(tiny_pretrain_args(run_copy, "--overwrite_output_dir", "true"))
    assert exit_info.value.code == 2 and "link" in capsys.readouterr().err
    assert outside.read_text() == '{"keep": true}\n'


# ---------------------------------------------------------------------------------------------- fingerprint
def test_a_rerun_with_other_settings_is_not_resumed(run_copy, capsys):
    before = folder_snapshot(run_copy)
    with pytest.raises(SystemExit) as exit_info:
        pretraining_job.main(tiny_pretrain_args(run_copy, "--max_steps", "3", "--learning_rate", "0.01"))
    assert exit_info.value.code == 2
    assert "other data or with other settings" in capsys.readouterr().err
    assert folder_snapshot(run_copy) == before


def test_a_rerun_on_other_data_is_not_resumed(run_copy, tmp_path, capsys):
    data = tmp_path / "events.csv"
    data.write_text("user_id,item_id,timestamp\n" + "".join(f"u{u},i{(u * 7 + k) % 40},{k}\n"
                                                            for u in range(30) for k in range(6)))
    with pytest.raises(SystemExit) as exit_info:
        pretraining_job.main(tiny_pretrain_args(run_copy, "--max_steps", "3", "--data", str(data)))
    assert exit_info.value.code == 2 and "other data" in capsys.readouterr().err
    first = data_fingerprint(data)
    data.write_text(data.read_text().replace("i1,", "i2,", 1))
    assert data_fingerprint(data) != first  # the content, not the name, is fingerprinted


# ---------------------------------------------------------------------------------------------- lock
def test_a_second_job_on_a_folder_in_use_is_refused_and_a_stale_lock_taken_over(run_copy, capsys):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_copy / LOCK_FILE).write_text(json.dumps({"pid": sleeper.pid, "host": os.uname().nodename,
                                                      "job": "pretrain"}))
        before = folder_snapshot(run_copy)
        with pytest.raises(SystemExit) as exit_info:
            pretraining_job.main(tiny_pretrain_args(run_copy, "--max_steps", "3"))
        assert exit_info.value.code == 2 and f"process {sleeper.pid}" in capsys.readouterr().err
        assert folder_snapshot(run_copy) == before
    finally:
        sleeper.kill()
        sleeper.wait()
    pretraining_job.main(tiny_pretrain_args(run_copy, "--max_steps", "3"))  # its process is gone: taken over
    assert (run_copy / "checkpoint-3").exists() and not (run_copy / LOCK_FILE).exists()


def test_acquire_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    folder = tmp_path / "a"
    folder.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (folder / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "job": "pretrain"}))
    acquire_lock(str(folder), "pretrain")  # stale: taken over
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    release_lock(str(folder))
    assert not (folder / LOCK_FILE).exists()
    (folder / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": os.uname().nodename, "job": "finetune"}))
    with pytest.raises(OutputDirError, match="in use by another running job .*userbert finetune.*process 1"):
        acquire_lock(str(folder), "pretrain")


# ---------------------------------------------------------------------------------------------- failed run
def test_a_run_that_failed_on_its_data_leaves_a_reusable_folder(tmp_path, capsys):
    folder = tmp_path / "run"
    with pytest.raises((SystemExit, Exception)):
        pretraining_job.main(tiny_pretrain_args(folder, "--data", str(tmp_path / "typo.csv")))
    (folder / "my_notes.txt").write_text("mine")
    pretraining_job.main(tiny_pretrain_args(folder))  # the corrected rerun, without --overwrite_output_dir
    assert (folder / "model.safetensors").exists() and (folder / "my_notes.txt").read_text() == "mine"


# ---------------------------------------------------------------------------------------------- property
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    first=st.sampled_from(["a", "b"]), second=st.sampled_from(["a", "b"]), overwrite=st.booleans(),
    resume=st.sampled_from([None, "last"]), keep_checkpoints=st.booleans(), keep_model=st.booleans(),
    foreign=st.lists(st.sampled_from(["notes.txt", "checkpoint-50", "sub/data.csv", "link", "checkpoint-1/link"]),
                     unique=True, max_size=3),
)
def test_pairs_of_runs_on_one_folder(pretrained_run, tmp_path_factory, first, second, overwrite, resume,
                                     keep_checkpoints, keep_model, foreign):
    """Whatever the earlier run left and whatever the second run asks: files without the job's mark survive, a
    link makes it refuse, a run is resumed only with its own fingerprint, and a refusal changes nothing."""
    folder = tmp_path_factory.mktemp("pair") / "run"
    shutil.copytree(pretrained_run, folder)
    marker = json.loads((folder / MARKER_FILE).read_text())
    marker["fingerprint"] = first
    (folder / MARKER_FILE).write_text(json.dumps(marker))
    for checkpoint in folder.glob("checkpoint-*"):
        if keep_checkpoints:
            (checkpoint / CHECKPOINT_MARK).write_text(json.dumps({"job": "pretrain", "fingerprint": first}))
        else:
            shutil.rmtree(checkpoint)
    if not keep_model:
        (folder / "model.safetensors").unlink()
    outside = folder.parent / "outside.txt"
    outside.write_text("outside")
    for name in foreign:
        path = folder / name
        if name.endswith("link"):
            if path.parent.exists():
                path.symlink_to(outside)
        else:
            (path if name.startswith("checkpoint") else path.parent).mkdir(parents=True, exist_ok=True)
            (path / "x" if name.startswith("checkpoint") else path).write_text("theirs")
    theirs = {k: v for k, v in folder_snapshot(folder).items()
              if not k.startswith("checkpoint-") or k.startswith("checkpoint-50")}
    theirs = {k: v for k, v in theirs.items() if any(k.startswith(f) for f in foreign)}
    before = folder_snapshot(folder)
    try:
        resumed = prepare_output_dir(str(folder), "pretrain", overwrite=overwrite, resume_from_checkpoint=resume,
                                     expect_sampler_state=True, fingerprint=second)
    except OutputDirError:
        assert folder_snapshot(folder) == before
    else:
        assert not any(os.path.islink(folder / n) for n in foreign if n.endswith("link") and (folder / n).exists())
        assert resumed is None or (first == second and keep_checkpoints)
        if keep_model and keep_checkpoints and not overwrite:
            assert resumed is not None  # an own, finished, matching run is resumed, never restarted silently
    after = folder_snapshot(folder)
    assert {k: after.get(k) for k in theirs} == theirs
    assert outside.read_text() == "outside"
