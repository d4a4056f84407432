"""Softening a pre-trained start before fine-tuning: shrink and perturb, and a fresh behaviour table.

A model warm-started from weights trained on the same data it is then trained on can generalise worse than one
trained from a fresh initialisation (Ash & Adams, "On Warm-Starting Neural Network Training", NeurIPS 2020). Their
remedy, *shrink and perturb*, scales the warm weights down and adds noise before training. Here the noise is the
model's own initialisation, so every tensor keeps its scale where the shrink factor is 0:

    theta <- factor * theta_pretrained + (1 - factor) * theta_fresh

``theta_fresh`` is a new model of the same class and config, initialised with a seed derived from the fine-tuning
seed (:func:`fresh_seed`), never the fine-tuning seed itself: a pre-trained model started from the initialisation
of some seed, and mixing it with that same initialisation would keep its scale (``init + 0.5 * change``) instead of
shrinking it. ``factor`` 1 keeps the pre-trained weights, 0 is a fresh model. ``reset_behavior_embeddings``
replaces only the ID behaviour table (factor 0 for it) and keeps the context encoder and aggregator. The fresh
model has the pre-trained config's ``initializer_gain`` unless ``initializer_gain`` is given (``userbert finetune
--initializer_gain G`` with a softening option): every random tensor of the fresh half is then drawn at G x the
default scale.

This is a variant of Ash & Adams's remedy, not their exact form: they add small Gaussian noise after shrinking;
here the perturbation is a fresh initialisation weighted ``1 - factor``, with no separate noise scale.

Example:
    >>> import torch
    >>> from userbert_hf import UserBertConfig, UserBertForNextBehaviorPrediction
    >>> config = UserBertConfig.from_preset("gru4rec", behavior_vocab_size=20, hidden_size=8)
    >>> model = UserBertForNextBehaviorPrediction(config)
    >>> before = model.userbert.behavior_encoder.behavior_embeddings.weight.detach().clone()
    >>> changed = shrink_and_perturb(model, 0.5, seed=0)
    >>> changed["parameters"] > 0, bool(torch.equal(before, model.userbert.behavior_encoder.behavior_embeddings.weight))
    (True, False)
"""

from __future__ import annotations

import copy
import hashlib

import torch

BEHAVIOR_TABLE = "userbert.behavior_encoder.behavior_embeddings.weight"


def fresh_seed(seed: int) -> int:
    """The seed of the fresh initialisation for fine-tuning seed ``seed``: a hash of it, so that it equals no small
    seed a pre-training run is likely to have used.

    Example:
        >>> fresh_seed(1) == fresh_seed(1), fresh_seed(1) == 1, 0 <= fresh_seed(1) < 2**31
        (True, False, True)
    """
    digest = hashlib.sha256(f"userbert_hf.shrink_perturb:{seed}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 2**31


def fresh_copy(model: torch.nn.Module, seed: int, initializer_gain: float | None = None) -> torch.nn.Module:
    """A new model of ``model``'s class and config (``initializer_gain`` replacing the config's when given),
    initialised with ``seed`` (the global RNG state is restored)."""
    config = model.config
    if initializer_gain is not None:
        config = copy.deepcopy(config)
        config.initializer_gain = initializer_gain
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return type(model)(config)
    finally:
        torch.random.set_rng_state(state)


@torch.no_grad()
def shrink_and_perturb(model: torch.nn.Module, factor: float, seed: int, *, only: tuple[str, ...] | None = None,
                       initializer_gain: float | None = None) -> dict:
    """In place: every trainable user-model parameter (``userbert.*``; those named in ``only``, when given)
    becomes ``factor * itself + (1 - factor) * fresh``, ``fresh`` that parameter in :func:`fresh_copy`.

    Frozen parameters (e.g. a frozen language model's layers) are left as they are: their fresh values would
    never be trained back. Returns ``{"parameters": tensors changed, "values": numbers changed}``.
    """
    if not 0 <= factor <= 1:
        raise ValueError(f"the shrink factor must be in [0, 1], got {factor}")
    fresh = dict(fresh_copy(model, seed, initializer_gain).named_parameters())
    changed = {"parameters": 0, "values": 0}
    for name, param in model.named_parameters():
        if not name.startswith("userbert.") or not param.requires_grad:
            continue
        if only is not None and name not in only:
            continue
        new = fresh[name].to(device=param.device, dtype=param.dtype)  # (same shape as param)
        param.mul_(factor).add_(new, alpha=1 - factor)
        changed["parameters"] += 1
        changed["values"] += param.numel()
    if only is not None and changed["parameters"] != len(only):
        raise ValueError(f"{type(model).__name__} has no trainable parameter named {sorted(set(only))}: it "
                         "encodes behaviours from their text, not from an ID table")
    return changed


def soften_pretrained_start(model: torch.nn.Module, *, shrink_perturb: float | None, reset_behavior_embeddings: bool,
                            seed: int, initializer_gain: float | None = None) -> dict:
    """Apply ``--reset_behavior_embeddings`` then ``--shrink_perturb`` to a pre-trained model, the fresh weights
    initialised with :func:`fresh_seed` of the fine-tuning ``seed`` (at ``initializer_gain`` when given); returns
    what changed (for the log). With both, the table is the fresh one (mixing it with the same fresh values leaves
    it unchanged)."""
    seed = fresh_seed(seed)
    record = {}
    if reset_behavior_embeddings:
        record["reset_behavior_embeddings"] = shrink_and_perturb(model, 0.0, seed, only=(BEHAVIOR_TABLE,),
                                                                 initializer_gain=initializer_gain)
    if shrink_perturb is not None and shrink_perturb != 1:
        record["shrink_perturb"] = shrink_and_perturb(model, shrink_perturb, seed, initializer_gain=initializer_gain)
    return record


# The factor `userbert finetune` softens a warm start on its own data with when --shrink_perturb is not given. It
# was set by hand and not tuned; the measurements behind the default (docs/finetuning.md, "Which start"): on Amazon
# Beauty, whose next-item task trains on everything its pre-training read, the softened start beat the start as it
# was at 100% and 10% of the labels; on MovieLens CTR, whose pre-training also read users the task never trains on,
# the start as it was beat the softened one at both fractions.
SAME_DATA_SHRINK_PERTURB = 0.5
# The scale of that default's fresh half (x the default initialisation) when --initializer_gain is not given, chosen
# on validation (Beauty, 100% of the labels, split 0, 3 pre-training seeds): 0.0603 / 0.0604 / 0.0608 NDCG@10 at 0.5
# against 0.0579 / 0.0576 / 0.0566 at 1 (experiments/beauty_softened_small_fresh.yaml, beauty_shrink_factor.yaml).
SAME_DATA_FRESH_GAIN = 0.5


def same_data_warm_start(pretraining_data: dict | None, task: str, data_sha256: str | None) -> str | None:
    """Why a pre-trained model is a warm start on the fine-tuning data itself, or ``None`` when it is not (or
    nothing says so).

    It is one when the model's record of what it was pre-trained on (``UserBertConfig.pretraining_data``, written
    from an ``--export_pretraining_data`` folder) names this ``task``, a file with this content hash, and a task
    that trains on every exported sequence with all its labels (``Task.trains_on_whole_export``): pre-training then
    read nothing that fine-tuning does not train on. A model with no record (pre-trained on a log of its own, or
    before the record existed) is never called one.

    Example:
        >>> record = {"task": "next_item", "data_sha256": "ab12", "trains_on_whole_export": True}
        >>> same_data_warm_start(record, "next_item", "ab12") is not None
        True
        >>> same_data_warm_start(record, "next_item", "ffff"), same_data_warm_start(None, "next_item", "ab12")
        (None, None)
    """
    if not isinstance(pretraining_data, dict) or data_sha256 is None:
        return None
    if (pretraining_data.get("task") != task or pretraining_data.get("data_sha256") != data_sha256
            or pretraining_data.get("trains_on_whole_export") is not True):
        return None
    return (f"pre-trained on this task's --export_pretraining_data of the same file (sha256 {data_sha256}), every "
            f"sequence of which {task} trains on")


__all__ = ["BEHAVIOR_TABLE", "SAME_DATA_FRESH_GAIN", "SAME_DATA_SHRINK_PERTURB", "fresh_copy", "fresh_seed",
           "same_data_warm_start", "shrink_and_perturb", "soften_pretrained_start"]
