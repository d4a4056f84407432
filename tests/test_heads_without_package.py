"""A fine-tuned folder loads as its head where userbert_hf cannot be imported: one call, the auto class of the
task with ``trust_remote_code=True`` (the table in docs/hub.md), and scores candidates exactly as the local head.

========================  ==========================================  ======================================
task                      head                                        call
========================  ==========================================  ======================================
ctr                       UserBertForCTRPrediction                    AutoModelForSequenceClassification
next_item                 UserBertForNextBehaviorPrediction           AutoModelForCausalLM
news                      UserBertForNewsRecommendation               AutoModelForMultipleChoice
classification            UserBertForUserClassification               AutoModelForSequenceClassification
========================  ==========================================  ======================================
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from userbert_hf import (
    UserBertConfig,
    UserBertForCTRPrediction,
    UserBertForNewsRecommendation,
    UserBertForNextBehaviorPrediction,
    UserBertForUserClassification,
)

HEADS = {  # folder name -> (head, auto class, extra inputs)
    "ctr": (UserBertForCTRPrediction, "AutoModelForSequenceClassification",
            {"candidate_index": [[4, 5, 6], [7, 1, 0]], "candidate_mask": [[1, 1, 1], [1, 1, 0]]}),
    "next_item": (UserBertForNextBehaviorPrediction, "AutoModelForCausalLM", {"exclude_index": [[1, 2], [3, 0]]}),
    "news": (UserBertForNewsRecommendation, "AutoModelForMultipleChoice",
             {"candidate_index": [[4, 5, 6], [7, 1, 2]], "candidate_mask": [[1, 1, 1], [1, 1, 0]]}),
    "classification": (UserBertForUserClassification, "AutoModelForSequenceClassification", {}),
}
USERS = {"behavior_ids": [0, 11, 12, 13, 21, 22, 23, 24], "behavior_index": [[1, 2, 3], [4, 5, 0]],
         "attention_mask": [[1, 1, 1], [1, 1, 0]]}

# The loading half of test_modeling_userbert's REMOTE_SCRIPT: the package must not be importable.
WITHOUT_PACKAGE = r"""
import importlib.util, json, sys
sys.path = [p for p in sys.path if 'src' not in p and 'userbert' not in p]
sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f).lower() and 'userbert' not in repr(f).lower()]
sys.modules['userbert_hf'] = None
assert importlib.util.find_spec('userbert_hf') is None
import torch
import transformers

results = []
for folder, auto_class, inputs in json.loads(sys.argv[1]):
    model = getattr(transformers, auto_class).from_pretrained(folder, trust_remote_code=True).eval()  # documented call
    with torch.no_grad():
        logits = model(**{k: torch.tensor(v) for k, v in inputs.items()}).logits
    results.append({'class': type(model).__module__ + '.' + type(model).__name__, 'logits': logits.tolist()})
print('RESULT ' + json.dumps(results))
"""


def load_without_package(jobs: list, cwd) -> list[dict]:
    """Run ``WITHOUT_PACKAGE`` on ``[(folder, auto class, inputs), ...]`` in one fresh process."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_MODULES_CACHE")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(cwd / "hf_home"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", WITHOUT_PACKAGE, json.dumps(jobs, default=str)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads([l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1][len("RESULT "):])


def test_every_fine_tuned_head_loads_as_itself_without_the_package(tmp_path):
    work = tmp_path / "cwd"
    work.mkdir()
    jobs, expected = [], []
    for name, (head, auto_class, extra) in HEADS.items():
        config = UserBertConfig.from_preset("gru4rec", behavior_vocab_size=30, hidden_size=8, max_behaviors=6,
                                            num_labels=3, dropout=0.0)
        torch.manual_seed(len(name))
        model = head(config).eval()
        with torch.no_grad():  # a fine-tuned head: nothing left at its initial value
            for param in model.parameters():
                param.add_(0.3 * torch.randn_like(param))
        model.save_pretrained(tmp_path / name)
        auto_map = json.loads((tmp_path / name / "config.json").read_text())["auto_map"]
        assert auto_map[auto_class] == f"modeling_userbert.{head.__name__}"
        assert auto_map["AutoModel"] == "modeling_userbert.UserBertModel"  # AutoModel: the user model, as ever
        inputs = {**USERS, **extra}
        jobs.append((str(tmp_path / name), auto_class, inputs))
        with torch.no_grad():
            expected.append(model(**{k: torch.tensor(v) for k, v in inputs.items()}).logits)
        assert torch.unique(expected[-1]).numel() > 2  # candidates scored differently: the comparison means something
    for (name, (head, _, _)), out, logits in zip(HEADS.items(), load_without_package(jobs, work), expected):
        assert out["class"].startswith("transformers_modules.") and out["class"].endswith(f".{head.__name__}"), out
        torch.testing.assert_close(torch.tensor(out["logits"]), logits, atol=1e-6, rtol=1e-5)
