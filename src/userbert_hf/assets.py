"""What travels with a user model besides its weights: the behaviour id vocabulary and, for text behaviours,
the word tokenizer. Saved next to the model and read from a local folder or a Hub repository."""

from __future__ import annotations

import os
from pathlib import Path

from .collation import BehaviorCatalog
from .vocabulary import VOCAB_FILE_NAME, BehaviorVocabulary


def resolve_model_file(name_or_path: str, filename: str, required: bool = True) -> str | None:
    """Path of ``filename`` in a local model folder or a Hub repository (downloaded into the HF cache)."""
    if os.path.isdir(name_or_path):
        path = Path(name_or_path) / filename
        if path.exists():
            return str(path)
        if required:
            raise FileNotFoundError(f"{path} does not exist: {name_or_path} is not a userbert_hf model folder")
        return None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    try:
        return hf_hub_download(name_or_path, filename)
    except RemoteEntryNotFoundError:  # not LocalEntryNotFoundError: offline misses are not "missing from the Hub"
        if required:
            raise FileNotFoundError(f"{filename} is missing from the Hub repository {name_or_path}") from None
        return None


def safetensors_problem(path: str) -> str | None:
    """Why a safetensors file cannot be read (missing, truncated, corrupted; the path is named), or ``None``.
    Reads every tensor: a file cut short passes the header check but not this one."""
    from safetensors import safe_open

    if not os.path.isfile(path):
        return f"{path} is missing"
    try:
        with safe_open(path, framework="pt") as f:
            for key in f.keys():
                f.get_tensor(key)
    except Exception as err:  # safetensors raises its own SafetensorError, OSError or RuntimeError
        return f"{path} is truncated or corrupted ({type(err).__name__}: {err})"
    return None


def check_model_weights(name_or_path: str) -> None:
    """Raise ``OSError`` naming the file when a local model folder's ``model.safetensors`` cannot be read."""
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, "model.safetensors")
        problem = safetensors_problem(path) if os.path.exists(path) else None
        if problem:
            raise OSError(f"Cannot load the model in {name_or_path}: {problem}")


def non_finite_parameters(model) -> list[str]:
    """Names of the parameters of ``model`` holding a NaN or an infinity."""
    import torch

    return [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]


def check_finite_run(model, metrics: dict, where: str) -> None:
    """Raise ``ValueError`` when a trained model's weights or its reported metrics are not finite: a diverged run
    ends with an error naming the cause, never with a saved NaN model or a NaN metric."""
    import math

    bad = non_finite_parameters(model)
    if bad:
        raise ValueError(f"{where}: training diverged, {len(bad)} parameter tensors hold NaN or infinite values "
                         f"({', '.join(bad[:3])}); nothing was saved. Lower --learning_rate or check the data.")
    bad_metrics = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad_metrics:
        raise ValueError(f"{where}: non-finite metrics {bad_metrics}; nothing was saved")


def load_complete_model(model_class, name_or_path: str, **kwargs):
    """``model_class.from_pretrained`` that fails, naming the folder, when weights are missing (transformers only
    warns and initialises them at random) or not finite: a model that was not trained is never used silently."""
    check_model_weights(name_or_path)
    model, info = model_class.from_pretrained(name_or_path, output_loading_info=True, **kwargs)
    missing = list(info.get("missing_keys") or [])
    if missing:
        shown = ", ".join(sorted(missing)[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(f"{name_or_path}: the weights file lacks {len(missing)} of the model's tensors ({shown}); "
                         "they would be random. Is model.safetensors empty or from another model?")
    bad = non_finite_parameters(model)
    if bad:
        raise ValueError(f"{name_or_path}: the weights hold NaN or infinite values ({', '.join(bad[:5])})")
    return model


def save_user_model_assets(output_dir: str, vocabulary: BehaviorVocabulary, tokenizer=None) -> None:
    """Write the behaviour vocabulary (and tokenizer) next to a saved model."""
    os.makedirs(output_dir, exist_ok=True)
    vocabulary.save(output_dir)
    if tokenizer is not None:
        from .tokenization_userbert import own_word_tokenizer

        own_word_tokenizer(tokenizer).save_pretrained(output_dir)


def load_user_model_assets(name_or_path: str, config) -> tuple[BehaviorVocabulary, object | None]:
    """Vocabulary (frozen) and tokenizer of a pre-trained user model, checked against its config: a
    vocabulary or tokenizer that does not match the model is rejected with a clear error."""
    vocab_path = resolve_model_file(name_or_path, VOCAB_FILE_NAME)
    vocabulary = BehaviorVocabulary.load(vocab_path)
    if len(vocabulary) > config.behavior_vocab_size:
        raise ValueError(
            f"{vocab_path} has {len(vocabulary)} behaviours but the model's config.behavior_vocab_size is "
            f"{config.behavior_vocab_size}: the vocabulary does not belong to this model"
        )
    vocabulary.freeze()
    tokenizer = None
    if config.behavior_type == "plm":  # the language model's own tokenizer, saved with the processor
        from transformers import PreTrainedTokenizerFast

        resolve_model_file(name_or_path, "tokenizer_config.json")
        tokenizer_file = resolve_model_file(name_or_path, "tokenizer.json")
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(Path(tokenizer_file).parent))
    elif config.behavior_type == "text":
        from transformers import PreTrainedTokenizerFast

        from .tokenization_userbert import check_tokenizer_matches

        tokenizer_file = resolve_model_file(name_or_path, "tokenizer.json")
        try:
            tokenizer = PreTrainedTokenizerFast.from_pretrained(str(Path(tokenizer_file).parent))
        except Exception as err:  # tokenizers raises a bare Exception for a malformed file
            raise ValueError(f"{tokenizer_file} is truncated or corrupted ({type(err).__name__}: {err})") from err
        check_tokenizer_matches(tokenizer, config.word_vocab_size)
    return vocabulary, tokenizer


def build_catalog(vocabulary: BehaviorVocabulary, config, tokenizer=None) -> BehaviorCatalog:
    """The ``BehaviorCatalog`` of a vocabulary for a model config (word ids for text behaviours)."""
    if config.behavior_type in ("text", "plm"):
        if tokenizer is None:
            raise ValueError(f"{config.behavior_type} behaviours need the tokenizer saved with the model")
        return BehaviorCatalog.from_vocabulary(vocabulary, tokenizer, config.max_words, config.behavior_type)
    return BehaviorCatalog(len(vocabulary))


__all__ = [
    "safetensors_problem",
    "check_model_weights",
    "resolve_model_file",
    "save_user_model_assets",
    "load_complete_model",
    "check_finite_run",
    "non_finite_parameters",
    "load_user_model_assets",
    "build_catalog",
]
