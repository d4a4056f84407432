"""Tests for the fine-tuning task registry (userbert_hf.finetuning): every registered task resolves a head, a collator and metrics that work together
on hand-made rows, the job and the cards read the one registry, and the package has no import cycle."""

from __future__ import annotations

import ast
import doctest
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from transformers import EvalPrediction, PreTrainedModel

import userbert_hf
from userbert_hf import finetuning, model_card
from userbert_hf.finetuning import ctr, job as finetuning_job, news, next_item, registry, user_classification
from userbert_hf.collation import BehaviorCatalog
from userbert_hf.finetuning import TASK_REGISTRY, get_task

PACKAGE = Path(userbert_hf.__file__).resolve().parent

# Hand-made rows of every task: ids index a vocabulary of 40 behaviours (the tiny config's).
ROWS = {
    "news": [{"impression_id": "i1", "user_id": "u1", "history": [3, 5], "candidates": [7, 8, 9],
              "labels": [1.0, 0.0, 0.0]},
             {"impression_id": "i2", "user_id": "u2", "history": [4], "candidates": [10, 11], "labels": [0.0, 1.0]}],
    "ctr": [{"user_id": "u1", "history": [3, 5, 6], "candidate": 7, "label": 1.0},
            {"user_id": "u2", "history": [4], "candidate": 9, "label": 0.0}],
    "next_item": [{"user_id": "u1", "history": [3, 5, 6], "target": 7, "exclude": [3, 5, 6]},
                  {"user_id": "u2", "history": [4, 8], "target": 9, "exclude": []}],
    "user_classification": [{"user_id": "u1", "history": [3, 5], "label": 1},
                            {"user_id": "u2", "history": [4, 8, 2], "label": 0}],
}
ROWS["implicit_ctr"] = ROWS["ctr"]


def test_docstring_examples():
    for module in (finetuning, registry, ctr, news, next_item, user_classification):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0 and result.attempted > 0, module.__name__


def test_registry_names_are_the_job_choices():
    assert set(TASK_REGISTRY) == {"news", "ctr", "implicit_ctr", "next_item", "user_classification"}
    task_option = next(a for a in finetuning_job.build_parser().parser._actions if a.dest == "task")
    assert task_option.choices is TASK_REGISTRY  # the live registry: a registered task is a valid --task
    with pytest.raises(ValueError, match="unknown task 'nope'.*implicit_ctr"):
        get_task("nope")
    for task in TASK_REGISTRY.values():
        assert task.primary_metric in task.card_metrics


@pytest.mark.parametrize("name", sorted(ROWS))
def test_every_task_resolves_head_collator_and_metrics(tiny_config, name):
    task = get_task(name)
    assert issubclass(task.head, PreTrainedModel)
    overrides = {"num_labels": 2} if name == "user_classification" else {}
    config = tiny_config("gru4rec", **overrides)
    rows = ROWS[name]
    if task.packs_candidates:  # the job packs CTR rows per user; the collator takes both layouts
        rows = [{"user_id": r["user_id"], "history": r["history"], "candidates": [r["candidate"]],
                 "labels": [r["label"]]} for r in rows]
    batch = task.collator(BehaviorCatalog(config.behavior_vocab_size), config.max_behaviors)(rows)
    model = task.head(config).eval()
    with torch.no_grad():
        out = model(**batch)
    assert out.loss is not None and torch.isfinite(out.loss)
    # The Trainer's view: predictions without the ignored keys, then the task's compute_metrics.
    predictions = tuple(v.numpy() for k, v in out.items() if k not in ("loss", *task.eval_ignore_keys))
    metrics = task.metrics_function()(EvalPrediction(predictions=predictions, label_ids=batch["labels"].numpy()))
    card = task.card_metrics_from({f"test_{k}": v for k, v in metrics.items()})
    assert card and set(card) <= set(task.card_metrics)
    assert task.primary_metric in metrics


def test_card_metrics_keep_the_registry_order_and_drop_non_finite():
    task = get_task("ctr")
    got = task.card_metrics_from({"test_logloss": 0.6, "test_auc": 0.7, "test_ap": float("nan"), "test_loss": 1.0})
    assert list(got) == ["auc", "logloss"]
    results = {"settings": {"task": "implicit_ctr"}, "test": {"test_auc": 0.8, "test_ap": 0.7, "test_runtime": 3.0}}
    assert model_card.card_metrics(results) == {"auc": 0.8, "ap": 0.7}


def test_prepare_training_splits_keeps_a_share_of_users_and_packs(tiny_config):
    rows = datasets.Dataset.from_dict({
        "user_id": [f"u{i // 3}" for i in range(30)], "history": [[1, 2]] * 30, "candidate": list(range(30)),
        "label": [float(i % 2) for i in range(30)],
    })
    splits = datasets.DatasetDict({"train": rows, "validation": rows, "test": rows})
    out = get_task("ctr").prepare_training_splits(splits, 0.2, seed=0, candidates_per_row=2)
    assert len(set(out["train"]["user_id"])) == 2  # 20% of 10 users
    assert max(len(c) for c in out["train"]["candidates"]) == 2
    assert sum(len(c) for c in out["test"]["candidates"]) == 30 and len(out["test"]) == 10


def _imports(path: Path, module: str) -> set[str]:
    """Modules of the package that ``path`` imports anywhere (top level or inside functions)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{alias.name}" for alias in node.names]
            found |= {name for name in names if _module_path(name)} or {target}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.startswith("userbert_hf") and _module_path(name)}


def _module_path(name: str) -> Path | None:
    parts = name.split(".")[1:]
    base = PACKAGE.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).with_suffix("")
        parts = [p for p in relative.parts if p != "__init__"]
        module = ".".join(["userbert_hf", *parts])
        graph[module] = _imports(path, module) - {module}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every group of modules that import each other (strongly connected components of 2+ modules, Tarjan)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in sorted(graph.get(node, ())):
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def test_cycle_finder_finds_the_old_job_card_cycle():
    graph = {"a.job": {"a.card", "a.tasks"}, "a.card": {"a.job"}, "a.tasks": set()}
    assert import_cycles(graph) == [["a.card", "a.job"]]
    assert import_cycles({"a.job": {"a.card", "a.tasks"}, "a.card": {"a.tasks"}, "a.tasks": set()}) == []
    chain = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d"}}
    assert import_cycles(chain) == [["a", "b", "c"], ["d", "e"]]


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert "userbert_hf.finetuning.registry" in graph["userbert_hf.finetuning.job"]
    assert "userbert_hf.finetuning.registry" in graph["userbert_hf.model_card"]
    assert {"userbert_hf.finetuning.ctr", "userbert_hf.finetuning.news", "userbert_hf.finetuning.next_item",
            "userbert_hf.finetuning.user_classification"} <= graph["userbert_hf.finetuning"]
    assert "userbert_hf.finetuning.job" not in graph["userbert_hf.model_card"]  # lazy imports count too
    # The package __init__ re-exports everything; a module importing the package root would be a real cycle, so
    # only the root's own edges are left out.
    graph = {k: v for k, v in graph.items() if k != "userbert_hf"}
    assert import_cycles(graph) == [], "modules importing each other (at module level or lazily)"


def test_implicit_ctr_on_movielens_rated_vs_unrated_popular_items():
    from collections import Counter

    from userbert_hf.data import load_movielens
    from userbert_hf.finetuning.ctr import build_implicit_ctr_dataset
    from userbert_hf.finetuning.splits import history_cut

    data = load_movielens(max_behaviors=None, verbose=False)
    splits = build_implicit_ctr_dataset(data, popular_items=300, seed=3)
    sequences = {r["user_id"]: (r["behavior_ids"], history_cut(r["timestamps"])) for r in data.users}
    # Popularity recomputed here from the history parts only.
    counts = Counter(b for ids, cut in sequences.values() if cut for b in ids[:cut])
    popular = {b for b, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:300]}
    by_user: dict[str, list] = {}
    for split in ("train", "validation", "test"):
        for row in splits[split]:
            by_user.setdefault(row["user_id"], []).append(row)
    assert set(by_user) == {u for u, (_, cut) in sequences.items() if cut}
    for user, rows in list(by_user.items())[::7]:
        ids, cut = sequences[user]
        assert all(row["history"] == ids[:cut][-100:] for row in rows)
        positives = [r["candidate"] for r in rows if r["label"] == 1.0]
        negatives = [r["candidate"] for r in rows if r["label"] == 0.0]
        assert positives == list(dict.fromkeys(ids[cut:]))
        assert set(negatives) <= popular - set(ids) and len(set(negatives)) == len(negatives)
        assert len(negatives) == min(len(positives), len(popular - set(ids)))
    labels = np.asarray(splits["train"]["label"])
    assert 0.5 <= labels.mean() < 0.6  # balanced except for heavy raters who had most popular items
    users = {s: set(splits[s]["user_id"]) for s in ("train", "validation", "test")}
    assert not users["train"] & users["test"] and not users["validation"] & users["test"]


@pytest.mark.parametrize("every_prefix", [True, False])
def test_next_item_trains_on_every_prefix_by_default(every_prefix):
    from types import SimpleNamespace

    from userbert_hf.finetuning.job import FinetuningDataArguments

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "beauty_small.txt"
    assert FinetuningDataArguments().train_every_prefix is True
    args = SimpleNamespace(data=str(fixture), strict_data=False, max_behaviors=50, exclude_history=True,
                           train_every_prefix=every_prefix, max_train_targets_per_user=1)
    built = get_task("next_item").build_splits(args, None)
    sequences = [list(r["behavior_ids"]) for r in built.behavior_data.users]
    # Every prefix: a sequence of n items gives training targets at positions 1 .. n-3; otherwise one per user.
    expected = sum(max(len(s) - 3, 0) for s in sequences) if every_prefix else sum(len(s) >= 4 for s in sequences)
    assert len(built.splits["train"]) == expected
    assert get_task("next_item").settings_of(args)["train_every_prefix"] is every_prefix
