"""Model cards generated from training results (``huggingface_hub.ModelCard``), never written by hand."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .finetuning.registry import TASK_REGISTRY

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

This model comes from `userbert_hf`, an implementation of **UserBERT: Contrastive User Model Pre-training**
(Wu, Wu, Qi, Huang) and of its baselines; the recipe this run used is under *Training settings*. It is *not* the
unrelated "UserBERT" of Li et al. (Rakuten, arXiv 2202.07605).

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
    "vocabularies cannot be encoded (unknown ids are skipped and counted by the processor and the loaders). User "
    "embeddings reflect the behaviour logs they were trained on, including their biases; do not use them to make "
    "decisions about individuals."
)

# Terms of the public data sets the package reads: the weights are derived from the data, so the card's licence
# follows the data (the code is Apache-2.0). Matched on the lower-cased --data value.
_DATA_LICENSES = (
    (("movielens", "ml-latest", "ml-1m", "ml-20m", "ml-25m"), "movielens-grouplens-terms",
     "https://files.grouplens.org/datasets/movielens/ml-latest-small-README.html",
     "MovieLens (GroupLens): research use; no commercial or revenue-bearing use without GroupLens' permission, no "
     "redistribution of the data."),
    (("mind",), "microsoft-research-license-mind", "https://github.com/msnews/MIND/blob/master/MSR%20License_Data.pdf",
     "MIND (Microsoft Research License Terms): non-commercial research use only."),
    (("beauty", "amazon"), "amazon-reviews-research-terms", "https://cseweb.ucsd.edu/~jmcauley/datasets/amazon/links.html",
     "Amazon product reviews (McAuley et al.): released for research use."),
)

# Hub task ids (the pipeline types of huggingface.js, packages/tasks/src/pipelines.ts) a card may name. A user model
# embeds users (feature-extraction); no Hub task fits the fine-tuned heads (news / CTR / next-item ranking), so their
# cards carry no pipeline_tag and their model-index task type is "other" (the task's own name stays in task.name).
HUB_TASK_IDS = frozenset({
    "text-classification", "token-classification", "table-question-answering", "question-answering",
    "zero-shot-classification", "translation", "summarization", "feature-extraction", "text-generation",
    "text2text-generation", "fill-mask", "sentence-similarity", "text-ranking", "text-to-speech", "text-to-audio",
    "automatic-speech-recognition", "audio-to-audio", "audio-classification", "voice-activity-detection",
    "depth-estimation", "image-classification", "object-detection", "image-segmentation", "text-to-image",
    "image-to-text", "image-to-image", "image-to-video", "unconditional-image-generation", "video-classification",
    "reinforcement-learning", "robotics", "tabular-classification", "tabular-regression", "tabular-to-text",
    "table-to-text", "multiple-choice", "text-retrieval", "time-series-forecasting", "text-to-video",
    "image-text-to-text", "visual-question-answering", "document-question-answering",
    "zero-shot-image-classification", "graph-ml", "mask-generation", "zero-shot-object-detection", "text-to-3d",
    "image-to-3d", "image-feature-extraction", "video-text-to-text", "keypoint-detection", "visual-document-retrieval",
    "any-to-any", "other",
})
# The conventional metric types a model-index entry may carry (evaluate / papers-with-code names).
_METRIC_TYPE = re.compile(r"(auc|mrr|accuracy|loss|log_loss|average_precision|(ndcg|hit_rate|recall)@\d+)")
# Data sets whose behaviour texts are in a known language (the titles of MIND news and MovieLens films: English).
_TEXT_LANGUAGES = ((("mind", "movielens", "ml-latest", "ml-1m", "ml-20m", "ml-25m"), "en"),)


def hub_metric_type(name: str) -> str | None:
    """The conventional metric type of one of this package's metric names, ``None`` when none fits (such metrics
    stay in the card's tables, out of ``model-index``).

    Example:

    ```python
    >>> [hub_metric_type(n) for n in ("auc", "hr@10", "logloss", "eval_mbp_loss", "eval_knn_recall_at_20",
    ...                                "eval_embedding_mean_cosine")]
    ['auc', 'hit_rate@10', 'log_loss', 'loss', 'recall@20', None]
    ```
    """
    base = name.removeprefix("eval_").removeprefix("test_")
    named = {"ap": "average_precision", "logloss": "log_loss", "auc": "auc", "mrr": "mrr", "accuracy": "accuracy",
             "loss": "loss"}
    if base in named:
        return named[base]
    match = re.fullmatch(r"(ndcg|hr)@(\d+)", base)
    if match:
        return f"{'hit_rate' if match[1] == 'hr' else 'ndcg'}@{match[2]}"
    match = re.fullmatch(r"knn_recall_at_(\d+)", base)  # the held-out retrieval probe (popularity is a reference)
    if match:
        return f"recall@{match[1]}"
    if base.endswith("_loss"):
        return "loss"
    if base.endswith("_accuracy") and not base.startswith("init_"):
        return "accuracy"
    return None


def card_language(config, data: str) -> str | None:
    """The card's ``language``: only for text behaviours of a data set whose language is known; behaviour ids have
    none."""
    if getattr(config, "behavior_type", "id") != "text":
        return None
    name = str(data).lower()
    for keys, language in _TEXT_LANGUAGES:
        if any(key in name for key in keys):
            return language
    return None


# An absolute POSIX path of at least two components (not part of a URL or of a relative path), or a Windows one.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~\\-])(?:/[^\s/'\"`,;:()\[\]{}<>|*]+){2,}/?|\b[A-Za-z]:\\[^\s'\"`,;:()|*]+")


def portable_path(path) -> str:
    """A path as a card or ``training_results.json`` may show it: relative to the working directory when inside it,
    else only the file (or folder) name; a name that is not a local path (``movielens``, a Hub id) is kept as is.
    The user's file-system layout never leaves the machine.

    Example:

    ```python
    >>> portable_path("movielens"), portable_path("/home/me/data/Beauty.txt")
    ('movielens', 'Beauty.txt')
    ```
    """
    text = str(path)
    if not (os.path.isabs(text) or os.path.exists(text)):
        return text
    absolute, cwd = os.path.abspath(text), os.getcwd()
    if absolute == cwd:
        return "."
    if absolute.startswith(cwd.rstrip(os.sep) + os.sep):
        return os.path.relpath(absolute, cwd)
    return os.path.basename(absolute.rstrip(os.sep)) or text


def portable(value):
    """``value`` (a results payload: dicts, lists, strings) with every absolute path inside a string replaced by
    :func:`portable_path` (loader summaries and skip examples name the files they read)."""
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v) for v in value]
    if isinstance(value, str):
        return _ABSOLUTE_PATH.sub(lambda m: portable_path(m[0]), value)
    return value


def data_fingerprint(path) -> str | None:
    """The first 16 hex digits of the SHA-256 of a local data file (a folder: of its files' relative names and
    contents, in sorted order); ``None`` when ``path`` is not local (a bundled name, a Hub id). Recorded beside the
    data set's name, it tells whether two runs read the same data without naming where it lay.

    Example:

    ```python
    >>> data_fingerprint("no/such/file.csv") is None
    True
    ```
    """
    if not path or not os.path.exists(str(path)):
        return None
    digest = hashlib.sha256()
    root = str(path)
    files = [root] if os.path.isfile(root) else sorted(
        os.path.join(folder, name) for folder, _, names in os.walk(root) for name in names
    )
    for file in files:
        if os.path.isdir(root):
            digest.update(os.path.relpath(file, root).encode() + b"\0")
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def data_record(data: str, source_path: str | None = None) -> dict:
    """The settings that identify a run's data: ``data`` (:func:`portable_path` of ``--data``) and ``data_sha256``
    (:func:`data_fingerprint` of ``--data``, or of ``source_path``, the file a loader read, for a bundled name)."""
    local = str(data) if os.path.exists(str(data)) else source_path
    return {"data": portable_path(data), "data_sha256": data_fingerprint(local)}


def source_dataset_name(data: str, source_path: str | None = None) -> str:
    """The name a card gives a run's data: ``--data``'s own name, except for a saved folder of behaviour data
    (``--export_pretraining_data``, marked by its ``load_summary.json``), which is named after ``source_path``, the
    file it was read from (``Beauty.txt``; ``ml-latest-small`` for a MovieLens ``ratings.csv``).

    Example:

    ```python
    >>> source_dataset_name("movielens"), source_dataset_name("../data/Beauty.txt")
    ('movielens', 'Beauty.txt')
    ```
    """
    exported = source_path and os.path.isfile(os.path.join(str(data), "load_summary.json"))
    path = os.path.normpath(str(source_path) if exported else str(data))
    name = os.path.basename(path)
    if exported and name in ("ratings.csv", "behaviors.tsv"):  # MovieLens / MIND: the folder names the data set
        name = os.path.basename(os.path.dirname(path)) or name
    return name or str(data)


def data_license(data: str) -> tuple[dict, str]:
    """``(license fields for ModelCardData, licence note)`` for a run's ``--data``: the terms of the known public
    data sets, else a note that the weights follow the terms of the training data.

    Example:

    ```python
    >>> data_license("movielens")[0]["license_name"]
    'movielens-grouplens-terms'
    ```
    """
    name = str(data).lower()
    for keys, license_name, link, note in _DATA_LICENSES:
        if any(key in name for key in keys):
            return {"license": "other", "license_name": license_name, "license_link": link}, (
                f"Licence: the weights were trained on {note} They inherit these terms; the userbert_hf code is "
                "Apache-2.0."
            )
    source = f"the Hub dataset `{data}`" if hub_dataset_id(data) else f"`{data}`"
    return {"license": "other", "license_name": "training-data-terms"}, (
        f"Licence: the weights were trained on {source}; they inherit the terms of that data (check them before "
        "sharing or deploying). The userbert_hf code is Apache-2.0."
    )


def hub_dataset_id(data) -> str | None:
    """``data`` when it names a Hub dataset (``owner/name``, not an existing local path), else ``None``: only Hub ids
    go into a card's ``datasets`` (a local folder name would link to an unrelated or missing Hub dataset)."""
    data = str(data or "")
    parts = data.split("/")
    if len(parts) != 2 or not all(parts) or os.path.exists(data) or data.startswith((".", "~")):
        return None
    if os.path.splitext(parts[1])[1] in (".csv", ".tsv", ".txt", ".json", ".jsonl", ".parquet"):
        return None
    return data


def split_metrics(metrics: dict[str, float], task_type: str) -> tuple[dict[str, float], dict[str, float]]:
    """``(held_out, training)``: what goes into ``model-index`` and what only into the card's training table.

    Held-out metrics are the ``eval_*`` ones (run time and throughput aside) when any is present (held-out
    pre-training evaluation); without them a pre-training card (``feature-extraction``) has none (its losses are
    training losses) and a fine-tuning card's metrics (test split, prefix dropped) are all held out.
    """
    metrics = {k: float(v) for k, v in metrics.items() if v is not None}
    if any(name.startswith("eval_") for name in metrics):
        held_out = {k: v for k, v in metrics.items() if k.startswith("eval_") and not k.endswith(_RUN_KEYS)}
        return held_out, {k: v for k, v in metrics.items() if k not in held_out}
    if task_type == "feature-extraction":
        return {}, metrics
    return metrics, {}


_RECIPES = {"paper": "the paper's recipe", "ptum_paper": "the recipe of the PTUM paper",
            "cp_paper": "the recipe of the CP (CL4SRec) paper"}
_SAMPLERS = {
    "random": "uniformly random negatives",
    "medium_hard": "medium-hard negatives (the paper's sampler)",
    "hardest": "globally hardest negatives",
    "in_batch": "in-batch negatives (the other users' views)",
}


def _budget(settings: dict) -> str:
    steps = settings.get("max_steps")
    if isinstance(steps, int) and steps > 0:
        budget = f"{steps:,} optimizer steps"
    else:
        budget = f"{settings.get('num_train_epochs', '?')} epochs"
    batch = settings.get("batch_size")
    if batch is not None:
        accumulation = settings.get("gradient_accumulation_steps") or 1
        batch = f"{batch} users" if "task" not in settings else f"{batch} rows"
        budget += f" of {batch}" + (f" (x {accumulation} accumulated micro-batches)" if accumulation > 1 else "")
    if settings.get("learning_rate") is not None:
        budget += f", learning rate {settings['learning_rate']:g}"
    patience, trained = settings.get("early_stopping_patience"), settings.get("steps_trained")
    if patience and isinstance(trained, int):  # the budget above is an upper bound: say what ran
        held_out = "held-out users" if "task" not in settings else "validation"
        budget = (f"at most {budget}; early stopping on {held_out} (patience {patience}): {trained:,} steps trained"
                  + (f", the best step {settings['best_step']:,} kept" if settings.get("best_step") else ""))
    return budget


def recipe_description(settings: dict) -> str:
    """One paragraph that states the recipe a run used, from its recorded settings: "the paper's recipe" only when
    ``settings["recipe"] == "paper"`` (absent or ``None``: this project's recipe), then the objective, its
    sampler, matcher and loss weights, the MBP query and the budget.

    Example:

    ```python
    >>> recipe_description({"objective": "cp", "cp_matching_similarity": "cosine", "cp_matching_temperature": 1.0,
    ...                     "max_steps": 200, "batch_size": 32, "uniformity_loss_weight": 1.0})[:60]
    "This project's recipe: CP (two augmented views per user, con"
    ```
    """
    recipe = settings.get("recipe")
    name = _RECIPES.get(recipe, f"the `{recipe}` recipe" if recipe else "this project's recipe")
    name = name[0].upper() + name[1:]
    if "task" in settings:  # fine-tuning
        source = settings.get("model_name_or_path") or settings.get("preset_or_base")
        origin = f"trained from scratch (preset `{source}`)" if settings.get("from_scratch") else f"from `{source}`"
        frozen = "; the user model frozen" if settings.get("freeze_user_model") else ""
        if settings.get("reset_behavior_embeddings"):
            frozen += "; the behaviour table re-initialised before training"
        if settings.get("from_scratch") and settings.get("initializer_gain") not in (None, 1, 1.0):
            frozen += f"; initialised at {settings['initializer_gain']:g} x the default scale"
        if settings.get("shrink_perturb") not in (None, 1, 1.0):
            scale = ("" if settings.get("from_scratch") or settings.get("initializer_gain") in (None, 1, 1.0)
                     else f" at {settings['initializer_gain']:g} x the default scale")
            why = (", by default: pre-training read only data this task trains on"
                   if settings.get("shrink_perturb_by_default") else "")
            frozen += (f"; the start shrunk and perturbed ({settings['shrink_perturb']:g} x pre-trained + "
                       f"{1 - settings['shrink_perturb']:g} x a fresh initialisation{scale}{why})")
        return (f"{name}: fine-tuned for `{settings['task']}` {origin} on {settings.get('train_fraction', 1):.0%} of "
                f"the training split{frozen}; {_budget(settings)}.")
    objective = settings.get("objective", "userbert")
    matcher = (f"{settings.get('matching_similarity', '?')} similarity / {settings.get('matching_temperature', '?')}")
    sampler = _SAMPLERS.get(settings.get("negative_sampling"), f"`{settings.get('negative_sampling')}` negatives")
    mbp_parts = [f"weight {settings.get('mbp_loss_weight', 1.0)}"]
    if settings.get("mask_ratio") is not None:
        mbp_parts.append(f"{_share(settings['mask_ratio'])} of behaviours masked")
    if settings.get("num_behavior_negatives") is not None:
        mbp_parts.append(f"K = {settings['num_behavior_negatives']} negatives each")
    if settings.get("mbp_query") in _MBP_QUERIES:  # older runs did not record it
        mbp_parts.append(f"predicted from the {_MBP_QUERIES[settings['mbp_query']]}")
    mbp = f"masked behaviour prediction ({', '.join(mbp_parts)})"
    if objective == "cp":
        cp_matcher = (f"matcher {settings['cp_matching_similarity']} similarity / {settings['cp_matching_temperature']}"
                      if "cp_matching_similarity" in settings else "matcher not recorded")
        task = f"CP (two augmented views per user, contrasted with {_SAMPLERS['in_batch']}; {cp_matcher})"
    elif objective == "ptum":
        task = (f"PTUM: {mbp} + next-behaviour prediction, both with {sampler}; matcher {matcher}")
    else:
        bsm_parts = [f"weight {settings.get('bsm_loss_weight', 1.0)}"]
        if settings.get("num_sequence_negatives") is not None:
            bsm_parts.append(f"P = {settings['num_sequence_negatives']} negative sequences")
        task = (f"UserBERT: {mbp} + behaviour sequence matching ({', '.join(bsm_parts)}), both with {sampler}; "
                f"matcher {matcher}")
    uniformity = settings.get("uniformity_loss_weight")
    extra = f"; uniformity loss weight {uniformity}" if uniformity is not None else ""
    if settings.get("projection_head"):
        extra += "; projection head"
    if settings.get("initializer_gain") not in (None, 1, 1.0):
        extra += f"; initialised at {settings['initializer_gain']:g} x the default scale"
    return f"{name}: {task}{extra}; {_budget(settings)}."


def _share(value) -> str:
    return f"{value:.0%}" if isinstance(value, (int, float)) else "?"


_MBP_QUERIES = {"masked": "state at the masked position", "previous": "prefix state before it (mbp_query previous)"}


def validate_card_metadata(text: str) -> ModelCardData:
    """Parse a card's YAML front matter offline with ``huggingface_hub`` (``ModelCard`` parses the metadata and the
    ``model-index``) and check what the Hub would reject or misread: ``pipeline_tag`` and each result's task type
    are Hub task ids, no ``language`` for ID behaviours, metric types from the conventional vocabulary with the split
    named, ``license: other`` with a ``license_name``, and no absolute path anywhere in the card. Raises
    ``ValueError`` listing every problem; returns the parsed ``ModelCardData``."""
    data = ModelCard(text, ignore_metadata_errors=False).data
    problems = []
    if data.pipeline_tag is not None and data.pipeline_tag not in HUB_TASK_IDS:
        problems.append(f"pipeline_tag {data.pipeline_tag!r} is not a Hub task id")
    if data.language and "text-behaviours" not in (data.tags or []):
        problems.append(f"language {data.language!r} on a model of behaviour ids")
    for result in data.eval_results or []:
        if result.task_type not in HUB_TASK_IDS:
            problems.append(f"model-index task type {result.task_type!r} is not a Hub task id")
        if not _METRIC_TYPE.fullmatch(str(result.metric_type)):
            problems.append(f"model-index metric type {result.metric_type!r} is not a conventional metric type")
        if not result.dataset_split:
            problems.append(f"model-index metric {result.metric_name!r} does not name its split")
    if data.license == "other" and not getattr(data, "license_name", None):
        problems.append("license 'other' without license_name")
    paths = _ABSOLUTE_PATH.findall(text)
    if paths:
        problems.append(f"absolute paths {paths[:3]}")
    if problems:
        raise ValueError("model card metadata: " + "; ".join(problems))
    return data


def _table(rows: dict) -> str:
    lines = ["| setting | value |", "|---|---|"]
    lines += [f"| `{k}` | {_cell(v)} |" for k, v in rows.items()]
    return "\n".join(lines)


def _cell(value) -> str:
    """A settings-table cell: a record (``pretraining_data``) as ``key=value`` pairs, anything else as it prints."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


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
    usage: str | None = None,
    tags: list[str] | None = None,
    base_model: str | None = None,
    model_id: str | None = None,
    data: str | None = None,
    example_behaviors: list[list[str]] | None = None,
) -> ModelCard:
    """A ``ModelCard``: held-out metrics in ``model-index`` (``EvalResult`` per metric), training losses in a table.

    Args:
        metrics: the run's numbers; :func:`split_metrics` decides which are held out (``eval_*``, or a fine-tuned
            model's test metrics) and which are training values.
        task_type: ``feature-extraction`` for pre-trained user models, else the task's Hub type; also the card's
            ``pipeline_tag``.
        usage: the loading snippet; default :func:`usage_snippet` of ``model_id`` with ``example_behaviors``.
        model_id: the Hub repository id (or folder) the usage snippet loads.
        data: the run's ``--data``: picks the licence (:func:`data_license`) and, when it is a Hub dataset id,
            the card's ``datasets`` (default: ``dataset_name``).
        example_behaviors: raw behaviour ids of example users for the usage snippet (e.g.
            :func:`example_histories` of the vocabulary).

    Example:

    ```python
    >>> card = build_model_card(title="t", summary="s", config=config, dataset_name="movielens", data_description="d",
    ...                         settings={"max_steps": 10}, metrics={"mbp_loss": 1.2, "eval_mbp_loss": 1.3},
    ...                         task_type="feature-extraction", task_name="User model pre-training",
    ...                         model_id="org/userbert-movielens", example_behaviors=[["1", "50"], ["2"]])
    >>> card.save("README.md")
    ```
    """
    data = dataset_name if data is None else data
    settings = portable(dict(settings))
    held_out, training = split_metrics(metrics, task_type)
    split = "held_out" if task_type == "feature-extraction" else "test"  # pre-training: held-out users
    hub_task = task_type if task_type in HUB_TASK_IDS else "other"
    eval_results = [
        EvalResult(
            task_type=hub_task, task_name=task_name, dataset_type=dataset_name, dataset_name=dataset_name,
            dataset_split=split, metric_type=hub_metric_type(name), metric_name=name,
            metric_value=round(float(value), 6),
        )
        for name, value in held_out.items()
        if hub_metric_type(name)
    ]
    license_fields, license_note = data_license(data)
    hub_dataset = hub_dataset_id(data)
    language = card_language(config, data)
    behaviours = "text-behaviours" if config.behavior_type == "text" else "id-behaviours"
    card_data = ModelCardData(
        language=language,
        library_name="transformers",
        pipeline_tag=task_type if task_type in HUB_TASK_IDS else None,
        tags=["userbert", "user-modeling", "recommendation", "contrastive-learning", behaviours] + list(tags or []),
        datasets=[hub_dataset] if hub_dataset else None,
        base_model=base_model,
        model_name=title,
        eval_results=eval_results or None,
        **license_fields,
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
    results = _results_section(held_out, training)
    if usage is None:
        usage = usage_snippet(portable_path(model_id or "path/to/model"), example_behaviors)
    card = ModelCard.from_template(
        card_data,
        template_str=_TEMPLATE,
        title=title,
        summary=summary,
        model_section=model_section,
        data_section=data_description,
        settings_section=f"{recipe_description(settings)}\n\n{_table(settings)}",
        results_section=results,
        usage=usage,
        limits=f"{_LIMITS}\n\n{license_note}",
        citation=PAPER_CITATION,
    )
    card.content = portable(card.content)  # a path in free text (a loader's summary) keeps no local layout
    validate_card_metadata(card.content)
    return card


def _results_section(held_out: dict[str, float], training: dict[str, float]) -> str:
    parts = []
    if held_out:
        parts.append("Held-out metrics (those with a conventional metric type, such as losses, accuracies, AUC or "
                     "nDCG, are also in the card's `model-index`):\n\n" + _metric_table(held_out))
    else:
        parts.append("No held-out metrics were recorded for this run.")
    if training:
        parts.append("Training values at the end of the run (not held out):\n\n" + _metric_table(training))
    return "\n\n".join(parts)


def _metric_table(metrics: dict[str, float]) -> str:
    return "\n".join(["| metric | value |", "|---|---|"] + [f"| `{k}` | {v:.4f} |" for k, v in metrics.items()])


def save_run_results(output_dir: str, results: dict) -> str:
    """Write ``results`` (metrics, settings) as ``training_results.json`` next to the model."""
    path = os.path.join(output_dir, "training_results.json")
    with open(path, "w") as f:  # no absolute path: the folder is pushed to the Hub as it is
        json.dump(portable(json.loads(json.dumps(results, default=str))), f, indent=2)
    return path


# Entries of a results payload that describe the run (time, throughput), not the model's quality.
_RUN_KEYS = ("runtime", "runtime_seconds", "samples_per_second", "steps_per_second", "total_flos", "epoch")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def card_metrics(results: dict) -> dict[str, float]:
    """The metrics of a ``training_results.json`` payload that go into a card's ``model-index``.

    Pre-training runs (``{"metrics": {...}}``): the held-out ``eval_*`` numbers with a conventional metric type
    (:func:`hub_metric_type`: losses, accuracies, the retrieval probe; none when the run had no held-out
    evaluation: training losses never go into ``model-index``), run time / throughput excluded. Fine-tuning
    runs (``{"test": {"test_auc": ...}, "settings": {"task": ...}}``): the task's card metrics from the test split
    (``finetuning.TASK_REGISTRY[task].card_metrics``), prefix dropped. Keys are the ``model-index`` metric names.
    """
    task = (results.get("settings") or {}).get("task")
    if task and isinstance(results.get("test"), dict):
        test = {k.removeprefix("test_"): v for k, v in results["test"].items()}
        names = TASK_REGISTRY[task].card_metrics if task in TASK_REGISTRY else [
            k for k in test if not k.endswith(_RUN_KEYS)
        ]
        return {name: float(test[name]) for name in names if _is_number(test.get(name)) and hub_metric_type(name)}
    metrics = _run_metrics(results)
    return {k: v for k, v in split_metrics(metrics, "feature-extraction")[0].items() if hub_metric_type(k)}


def _run_metrics(results: dict) -> dict[str, float]:
    metrics = results.get("metrics") or {}
    return {name: float(v) for name, v in metrics.items() if _is_number(v) and not name.endswith(_RUN_KEYS)}


def example_histories(vocabulary, users: int = 2, length: int = 3) -> list[list[str]]:
    """Raw ids of the vocabulary's first behaviours, cut into ``users`` example histories (for usage snippets)."""
    raw = vocabulary.raw_ids[1 : 1 + users * length]
    return [raw[i * length : (i + 1) * length] for i in range(users) if raw[i * length : (i + 1) * length]]


def usage_snippet(model_id: str, example_behaviors: list[list[str]] | None = None) -> str:
    """How to load a released user model and embed users from raw behaviour ids, without installing userbert_hf.

    Example:

    ```python
    >>> print(usage_snippet("org/userbert-movielens", [["1", "50", "296"], ["2", "3"]]).splitlines()[1])
    processor = AutoProcessor.from_pretrained('org/userbert-movielens', trust_remote_code=True)
    ```
    """
    histories = example_behaviors or [["<behaviour id>", "<behaviour id>"], ["<behaviour id>"]]
    return (
        "from transformers import AutoModel, AutoProcessor\n"
        f"processor = AutoProcessor.from_pretrained({model_id!r}, trust_remote_code=True)\n"
        f"model = AutoModel.from_pretrained({model_id!r}, trust_remote_code=True)  # the user model\n"
        "# Each user: raw behaviour ids as in the training data, oldest first (or pass timestamps=...).\n"
        f"histories = {histories!r}\n"
        "inputs = processor(histories, return_tensors='pt')  # unknown ids are dropped: inputs.unknown_behaviors\n"
        "user_embeddings = model(**inputs).user_embedding    # (users, hidden size)\n"
        "# or, sentence-transformers style: model.encode(histories, normalize_embeddings=True)"
    )


def model_card_from_results(
    config, results: dict, model_id: str, title: str | None = None, example_behaviors: list[list[str]] | None = None
) -> ModelCard:
    """Rebuild the card of a saved run from its config and ``training_results.json`` payload (written by
    ``save_run_results`` in the pre-training or fine-tuning job).

    ``model_id`` (a Hub repository id or a folder) and ``example_behaviors`` appear in the loading instructions.
    """
    settings = dict(results.get("settings") or {})
    data = str(settings.get("data", "unknown"))
    dataset_name = source_dataset_name(data, (results.get("data_summary") or {}).get("path"))
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
        if "initializer_gain" not in settings and getattr(config, "initializer_gain", 1.0) != 1.0:
            settings["initializer_gain"] = config.initializer_gain  # recorded in the config by earlier runs
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
        metrics=card_metrics(results) if task else _run_metrics(results),
        task_type=task_type,
        task_name=task_name,
        model_id=model_id,
        data=data,
        example_behaviors=example_behaviors,
        tags=[str(task).replace("_", "-")] if task else None,
        base_model=base_model if base_model and "/" in str(base_model) and not os.path.isdir(str(base_model)) else None,
    )

__all__ = [
    "build_model_card",
    "save_run_results",
    "PAPER_CITATION",
    "card_metrics",
    "card_language",
    "data_fingerprint",
    "data_license",
    "data_record",
    "example_histories",
    "hub_dataset_id",
    "hub_metric_type",
    "HUB_TASK_IDS",
    "portable",
    "portable_path",
    "recipe_description",
    "validate_card_metadata",
    "split_metrics",
    "usage_snippet",
    "model_card_from_results",
]
