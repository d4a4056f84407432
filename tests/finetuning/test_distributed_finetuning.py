"""Fine-tuning under torchrun with two CPU processes: evaluation is gathered from both ranks (every test pair
counted once, not a per-rank average) and matches a single-process run of the same global batch."""

import json
import socket
import subprocess
import sys

import pytest

COMMON = [
    "--task", "ctr", "--model_name_or_path", "gru4rec", "--hidden_size", "16", "--dropout", "0", "--max_steps", "3",
    "--eval_strategy", "no", "--save_strategy", "no", "--disable_tqdm", "true", "--use_cpu", "--learning_rate", "1e-2",
    "--report_to", "none", "--logging_steps", "1",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _test_metrics(output_dir):
    results = json.loads((output_dir / "training_results.json").read_text())
    return results["test"]


@pytest.mark.slow
def test_two_process_finetuning_gathers_evaluation(tmp_path):
    from userbert_hf.cli import main

    single, multi = tmp_path / "single", tmp_path / "multi"
    # The single-process run goes in this process (`userbert finetune`'s entry point): no interpreter to start.
    assert main(["finetune", *COMMON, "--per_device_train_batch_size", "16", "--output_dir", str(single)]) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(_free_port()), "-m", "userbert_hf.cli", "finetune", *COMMON, "--per_device_train_batch_size", "8",
               "--ddp_backend", "gloo", "--output_dir", str(multi)]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    one, two = _test_metrics(single), _test_metrics(multi)
    # Every test pair is scored once: the gathered count is the whole test split, not one rank's share.
    assert two["test_num_examples"] == one["test_num_examples"] > 1000
    # Same global batch of 16 rows per step; per-rank mean losses weight the rows slightly differently.
    for key in ("test_auc", "test_ap", "test_logloss"):
        assert two[key] == pytest.approx(one[key], abs=5e-3), key
