"""Model cards generated from training results (``huggingface_hub.ModelCard``), never written by hand."""

from __future__ import annotations

import json
import math
import os

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .tasks import TASK_REGISTRY

PAPER_CITATION = """@inproceedings{wu2022userbert,
  title     = {UserBERT: Contrastive User Model Pre-training},
  author    = {Wu, Chuhan and Wu, Fangzhao and Qi, Tao and Huang, Yongfeng},
  booktitle = {Proceedings of the 45th International ACM SIGIR Conference on Research and Development in Information Retrieval},
  year      = {2022}
}"""

_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

{{ summary }}

This model implements **UserBERT: Contrastive User Model Pre-training** (Wu, Wu, Qi, Huang; the masked behaviour
prediction + behaviour sequence matching method with medium-hard negative sampling). It is *not* the unrelated
"UserBERT" of Li et al. (Rakuten, arXiv 2202.07605).

## Model
{{ model_section }}

## Training data
{{ data_section }}

## Training settings
{{ settings_section }}

## Results
{{ results_section }}

## How to load
```python
{{ usage }}
```

## Intended use and limits
{{ limits }}

## Citation
```bibtex
{{ citation }}
```
"""

_LIMITS = (
    "A user model for research on user modeling and recommendation: pre-training on unlabeled behaviour logs, then "
    "fine-tuning for news recommendation, CTR or next-item prediction. Behaviour ids and words outside the saved "
    "vocabularies cannot be encoded (unknown ids are skipped and counted by the loaders). User embeddings reflect "
    "the behaviour logs they were trained on, including their biases; do not use them to make decisions about "
    "individuals. MovieLens data is for research use only (see its GroupLens licence)."
)


def _table(rows: dict) -> str:
    lines = ["| setting | value |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in rows.items()]
    return "\n".join(lines)


def build_model_card(
    *,
    title: str,
    summary: str,
    config,
    dataset_name: str,
    data_description: str,
    settings: dict,
    metrics: dict[str, float],
    task_type: str,
    task_name: str,
    usage: str,
    tags: list[str] | None = None,
    base_model: str | None = None,
) -> ModelCard:
    """A ``ModelCard`` whose ``model-index`` holds ``metrics`` (``EvalResult`` per metric).

    Example:

    ```python
    >>> card = build_model_card(title="t", summary="s", config=config, dataset_name="movielens", data_description="d",
    ...                         settings={"max_steps": 10}, metrics={"mbp_loss": 1.2}, task_type="feature-extraction",
    ...                         task_name="User model pre-training", usage="...")
    >>> card.save("README.md")
    ```
    """
    eval_results = [
        EvalResult(
            task_type=task_type, task_name=task_name, dataset_type=dataset_name, dataset_name=dataset_name,
            metric_type=name, metric_name=name, metric_value=round(float(value), 6),
        )
        for name, value in metrics.items()
        if value is not None
    ]
    card_data = ModelCardData(
        language="en",
        license="apache-2.0",
        library_name="transformers",
        tags=["userbert", "user-modeling", "recommendation", "contrastive-learning"] + list(tags or []),
        datasets=[dataset_name],
        base_model=base_model,
        model_name=title,
        eval_results=eval_results or None,
    )
    model_section = _table(
        {
            "behaviour type": config.behavior_type,
            "text encoder": config.text_encoder if config.behavior_type == "text" else "-",
            "context encoder": config.context_encoder,
            "aggregator": config.aggregator,
            "hidden size": config.hidden_size,
            "max behaviours per user": config.max_behaviors,
            "behaviour vocabulary": config.behavior_vocab_size,
            "word vocabulary": config.word_vocab_size if config.behavior_type == "text" else "-",
            "pre-training objective": config.pretraining_objective,
        }
    )
    results = "\n".join(f"- **{k}**: {float(v):.4f}" for k, v in metrics.items() if v is not None) or "No metrics recorded."
    return ModelCard.from_template(
        card_data,
        template_str=_TEMPLATE,
        title=title,
        summary=summary,
        model_section=model_section,
        data_section=data_description,
        settings_section=_table(settings),
        results_section=results,
        usage=usage,
        limits=_LIMITS,
        citation=PAPER_CITATION,
    )


def save_run_results(output_dir: str, results: dict) -> str:
    """Write ``results`` (metrics, settings) as ``training_results.json`` next to the model."""
    path = os.path.join(output_dir, "training_results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2, default=str)
    return path


# Entries of a results payload that describe the run (time, throughput), not the model's quality.
_RUN_KEYS = ("runtime", "runtime_seconds", "samples_per_second", "steps_per_second", "total_flos", "epoch")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def card_metrics(results: dict) -> dict[str, float]:
    """The metrics of a ``training_results.json`` payload that go into a card's ``model-index``.

    Pre-training runs (``{"metrics": {...}}``): every finite number except run time / throughput. Fine-tuning
    runs (``{"test": {"test_auc": ...}, "settings": {"task": ...}}``): the task's card metrics from the test split
    (``tasks.TASK_REGISTRY[task].card_metrics``), prefix dropped.
    """
    task = (results.get("settings") or {}).get("task")
    if task and isinstance(results.get("test"), dict):
        test = {k.removeprefix("test_"): v for k, v in results["test"].items()}
        names = TASK_REGISTRY[task].card_metrics if task in TASK_REGISTRY else [
            k for k in test if not k.endswith(_RUN_KEYS)
        ]
        return {name: float(test[name]) for name in names if _is_number(test.get(name))}
    metrics = results.get("metrics") or {}
    return {name: float(v) for name, v in metrics.items() if _is_number(v) and not name.endswith(_RUN_KEYS)}


def usage_snippet(model_id: str) -> str:
    """How to load a released user model and embed users with it."""
    return (
        "from transformers import AutoModel\n"
        f"model = AutoModel.from_pretrained({model_id!r}, trust_remote_code=True)\n"
        "# with userbert_hf installed, the vocabulary and tokenizer come along:\n"
        "from userbert_hf.embedding_export import embed_users\n"
        f"embeddings = embed_users({model_id!r}, 'movielens')  # datasets.Dataset: user_id, embedding"
    )


def model_card_from_results(config, results: dict, model_id: str, title: str | None = None) -> ModelCard:
    """Rebuild the card of a saved run from its config and ``training_results.json`` payload (written by
    ``save_run_results`` in the pre-training or fine-tuning job).

    ``model_id`` (a Hub repository id or a folder) appears in the loading instructions.
    """
    settings = dict(results.get("settings") or {})
    data = str(settings.get("data", "unknown"))
    dataset_name = os.path.basename(os.path.normpath(data)) or data
    task = settings.get("task")
    if task:
        if task in TASK_REGISTRY:
            task_type, task_name = TASK_REGISTRY[task].hub_task_type, TASK_REGISTRY[task].hub_task_name
        else:
            task_type, task_name = str(task).replace("_", "-"), str(task)
        model = f"{config.context_encoder}/{config.aggregator}"
        title = title or f"UserBERT {model} user model fine-tuned for {task_name.lower()} on {dataset_name}"
        source = settings.get("model_name_or_path")
        origin = f" from `{source}`" if source else ""
        summary = f"A {model} user model fine-tuned for {task_name.lower()}{origin}; metrics are on the test split."
    else:
        preset = settings.get("preset", config.context_encoder)
        title = title or f"UserBERT {preset} user model pre-trained on {dataset_name}"
        summary = (
            f"A {preset} user model pre-trained with the `{settings.get('objective', config.pretraining_objective)}` "
            f"objective on {int(settings.get('users', 0)):,} users and {int(settings.get('behaviours', 0)):,} distinct "
            "behaviours."
        )
        task_type, task_name = "feature-extraction", "User model pre-training"
    if results.get("data_summary"):
        from .data import LoadSummary

        summary_text = str(LoadSummary.from_dict(results["data_summary"]))
        data_description = f"`{data}`, loaded with `userbert_hf.data`:\n\n```\n{summary_text}\n```"
    else:
        data_description = f"`{data}`."
    base_model = settings.get("model_name_or_path") if task and not settings.get("from_scratch") else None
    return build_model_card(
        title=title,
        summary=summary,
        config=config,
        dataset_name=dataset_name,
        data_description=data_description,
        settings={k: v for k, v in settings.items() if not isinstance(v, (dict, list))},
        metrics=card_metrics(results),
        task_type=task_type,
        task_name=task_name,
        usage=usage_snippet(model_id),
        tags=[str(task).replace("_", "-")] if task else None,
        base_model=base_model if base_model and "/" in str(base_model) and not os.path.isdir(str(base_model)) else None,
    )

__all__ = [
    "build_model_card",
    "save_run_results",
    "PAPER_CITATION",
    "card_metrics",
    "usage_snippet",
    "model_card_from_results",
]
