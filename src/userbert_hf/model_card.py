"""Model cards generated from training results (``huggingface_hub.ModelCard``), never written by hand."""

from __future__ import annotations

import json
import os

from huggingface_hub import EvalResult, ModelCard, ModelCardData

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


__all__ = ["build_model_card", "save_run_results", "PAPER_CITATION"]
