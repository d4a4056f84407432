"""Pre-training objectives as classes: UserBERT (MBP + BSM), PTUM (MBP + next behaviours) and CP (CL4SRec views).

An objective turns the collated rows of a micro-batch into a :class:`PretrainingBatch` (``prepare``: masking,
periods, targets; per user, seeded by ``(seed, step, user)``), then into model inputs with their negatives
(``model_inputs``), and says how many rows each of its losses sums over (the trainer normalises by the counts of
the whole step over all micro-batches and ranks). The model runs each loss whose inputs are present.

``OBJECTIVES`` is the one list of objectives: the config, ``userbert pretrain --objective`` and the experiment
specs read it. An objective built from the model's existing losses is one ``@register_objective`` class (here or
in a module of yours); docs/extending.md lists what a new loss adds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..collation import BehaviorCatalog, build_behavior_table, pad_sequences
from .batch import PretrainingBatch
from .masking import (
    RandomStream,
    choose_balanced_split,
    choose_masked_positions,
    choose_period_split,
    crop_view,
    mask_view,
    reorder_view,
    user_rng,
)
from .samplers import NegativeSampler, RandomNegativeSampler, build_sampler


@dataclass
class ObjectiveSettings:
    """The settings objectives read (a subset of ``UserBertTrainingArguments`` and the config)."""

    mask_ratio: float = 0.1
    bsm_min_behaviors: int = 2
    bsm_gap: int = 0
    bsm_positive: str = "period"  # "period": all of B; "crop": a random-length crop of B starting after A
    seed: int = 42
    ptum_next_k: int = 2
    cp_crop_ratio: float = 0.6
    cp_mask_ratio: float = 0.3
    cp_reorder_ratio: float = 0.6
    first_maskable: int = 0  # 1 when MBP reads the state before a masked behaviour (config.mbp_query "previous")


# The one list of pre-training objectives, by name (filled by ``@register_objective``).
OBJECTIVES: dict[str, type["PretrainingObjective"]] = {}


def register_objective(objective: type["PretrainingObjective"]) -> type["PretrainingObjective"]:
    """Class decorator: make ``objective`` available as ``UserBertConfig(pretraining_objective=objective.name)``
    and ``userbert pretrain --objective <name>``.

    Example:

    ```python
    >>> @register_objective
    ... class MbpOnlyObjective(UserBertObjective):  # UserBERT's masking, MBP only
    ...     name = "mbp_only"
    ...     tasks = ("mbp",)
    >>> UserBertConfig(pretraining_objective="mbp_only", bsm_loss_weight=0.0).pretraining_objective
    'mbp_only'
    ```
    """
    if not objective.name or objective.name == PretrainingObjective.name:
        raise ValueError(f"{objective.__name__} needs its own name (a class attribute) to be registered")
    if OBJECTIVES.get(objective.name, objective) is not objective:
        raise ValueError(f"a pre-training objective named {objective.name!r} is already registered "
                         f"({OBJECTIVES[objective.name].__name__})")
    OBJECTIVES[objective.name] = objective
    return objective


def _rows(batch: dict):
    """(user, behaviour ids, timestamps) of each collated row, without padding."""
    ids = batch["sequence_ids"].cpu().numpy()
    times = batch["timestamps"].cpu().numpy()
    lengths = batch["attention_mask"].cpu().numpy().astype(bool).sum(1)
    users = batch["user_index"].cpu().numpy()
    for i in range(len(ids)):
        yield int(users[i]), ids[i, : lengths[i]].tolist(), times[i, : lengths[i]]


def _positions_tensor(positions: list, length: int) -> torch.Tensor:
    out = torch.zeros(len(positions), length, dtype=torch.bool)
    for i, cols in enumerate(positions):
        out[i, list(cols)] = True
    return out


def _mask_for_mbp(seq: list, settings: ObjectiveSettings, seed_step_user: tuple) -> np.ndarray:
    """Masked positions of a sequence; none for a sequence of fewer than two behaviours (its masked position would
    see nothing but [MASK]: it sits out MBP and is counted)."""
    if len(seq) < 2:
        return np.zeros(0, dtype=int)
    return choose_masked_positions(
        len(seq), settings.mask_ratio, user_rng(*seed_step_user, RandomStream.MASK), first=settings.first_maskable
    )


class PretrainingObjective:
    """Base class. Subclasses set ``name`` and ``tasks`` (the losses whose row counts ``model_inputs`` returns: each
    gets a ``<task>_normalizer`` input) and implement ``prepare`` and ``model_inputs``.

    Class attributes that choose the objective's sampler and MBP query:

    * ``uses_sampler``: whether it draws negatives (and checkpoints carry the sampler's state).
    * ``sampler_strategy``: the sampler it always uses; ``None``: the one ``--negative_sampling`` names.
    * ``uses_mbp_query``: whether MBP reads contextual states (so ``config.mbp_query`` "previous" applies, and
      ``--mbp_query auto`` picks it for left-to-right models).
    """

    name = "base"
    tasks: tuple[str, ...] = ()
    uses_sampler = True
    sampler_strategy: str | None = None
    uses_mbp_query = False

    def __init__(self, settings: ObjectiveSettings, catalog: BehaviorCatalog, sampler: NegativeSampler | None = None):
        self.settings = settings
        self.catalog = catalog
        self.sampler = sampler
        self.stats = {"users": 0}

    def prepare(self, batch: dict, step: int) -> PretrainingBatch:
        raise NotImplementedError

    def model_inputs(self, batch: PretrainingBatch, user_model, step: int, config) -> tuple[dict, dict[str, int]]:
        """Model inputs (negatives chosen, one behaviour table) and the rows each task's loss sums over."""
        raise NotImplementedError

    def _mbp_candidates(self, batch: PretrainingBatch, user_model, step: int) -> torch.Tensor:
        """(M, 1 + K) candidate ids of each masked behaviour, the positive first, negatives from the sampler."""
        negatives = self.sampler.behavior_negatives(user_model, batch.masked_ids, batch.masked_users, step)  # (M, K)
        return torch.cat([batch.masked_ids[:, None], negatives], 1)

    def _with_table(self, inputs: dict, sequence_ids: torch.Tensor, candidates: dict[str, torch.Tensor]) -> dict:
        """Put the sequences' and every candidate tensor's behaviours in one table: ``behavior_index`` for the
        sequences and, for each ``candidates`` entry, the input of that name indexing the table."""
        table, indices = build_behavior_table(self.catalog, sequence_ids, *candidates.values())
        inputs.update(table, behavior_index=indices[0])
        inputs.update(zip(candidates, indices[1:]))
        return inputs

    def _count(self, batch: PretrainingBatch) -> None:
        self.stats["users"] += batch.num_users
        for name, value in batch.excluded_users.items():
            self.stats[name] = self.stats.get(name, 0) + value


@register_objective
class UserBertObjective(PretrainingObjective):
    """Masked behaviour prediction + behaviour sequence matching between non-overlapping periods (Section 3.2).

    Each user is split at a time boundary into A (earlier) and B (later); 10% of A (at least one) is masked. The
    masked A serves both tasks: MBP predicts each masked behaviour from the contextual state at its position
    against K sampler negatives; BSM matches A's user embedding to B against P sequences of other users outside
    A's span. Users without two periods take part in MBP only; A of fewer than two behaviours sits out MBP; a
    target without P negatives sits out BSM; each is counted (``*_excluded_users`` in the logs).
    """

    name = "userbert"
    tasks = ("mbp", "bsm")
    uses_mbp_query = True

    def prepare(self, batch: dict, step: int) -> PretrainingBatch:
        s = self.settings
        a_seqs, b_seqs, a_times, masked, valid, windows = [], [], [], [], [], []
        excluded = {"bsm_excluded_users": 0, "mbp_excluded_users": 0}
        for user, seq, ts in _rows(batch):
            choose = choose_balanced_split if s.bsm_positive == "balanced" else choose_period_split
            split = choose(
                ts, s.bsm_min_behaviors, s.bsm_min_behaviors, s.bsm_gap, user_rng(s.seed, step, user, RandomStream.PERIOD_SPLIT)
            )
            if split is None:
                excluded["bsm_excluded_users"] += 1
                a, b, ta = seq, [], ts
            else:
                a, b, ta = seq[:split], seq[split:], ts[:split]
                if s.bsm_positive == "crop":  # B's length varies like the negative crops' (no length shortcut)
                    rng = user_rng(s.seed, step, user, RandomStream.BSM_POSITIVE_CROP)
                    b = b[: int(rng.integers(min(s.bsm_min_behaviors, len(b)), len(b) + 1))]
            a_seqs.append(a)
            b_seqs.append(b)
            a_times.append(ta)
            valid.append(split is not None)
            windows.append([int(ta.min()), int(ta.max())] if len(ta) else [0, 0])
            positions = _mask_for_mbp(a, s, (s.seed, step, user))
            excluded["mbp_excluded_users"] += int(len(a) > 0 and len(positions) == 0)
            masked.append(positions)
        a_ids = pad_sequences(a_seqs)
        masked_positions = _positions_tensor(masked, a_ids.shape[1])
        out = PretrainingBatch(
            user_index=batch["user_index"].cpu(),
            sequence_ids=a_ids,  # (B, La) sequence A (or the whole sequence when BSM is impossible)
            attention_mask=a_ids != 0,
            timestamps=pad_sequences([t.tolist() for t in a_times], length=a_ids.shape[1]),
            masked_positions=masked_positions,  # (B, La)
            masked_ids=a_ids[masked_positions],  # (M,)
            positive_ids=pad_sequences(b_seqs),  # (B, Lb)
            bsm_valid=torch.tensor(valid, dtype=torch.bool),
            target_window=torch.tensor(windows, dtype=torch.long).view(-1, 2),
            excluded_users=excluded,
        )
        self._count(out)
        return out

    def model_inputs(self, batch, user_model, step, config):
        sampler = self.sampler
        seq_ids = batch.sequence_ids
        inputs = {"attention_mask": batch.attention_mask, "masked_positions": batch.masked_positions}
        counts = {"mbp": 0, "bsm": 0}
        candidates = {}
        if config.mbp_loss_weight > 0:
            candidates["mbp_candidate_index"] = self._mbp_candidates(batch, user_model, step)  # (M, 1 + K)
            counts["mbp"] = len(batch.masked_ids)
        if config.bsm_loss_weight > 0:
            valid = batch.bsm_valid.clone()
            rows = valid.nonzero(as_tuple=True)[0]
            # The sampler encodes each target A as the model will: with its [MASK] tokens under the paper's MBP
            # query, whole under mbp_query "previous" (whose targets stay in the input).
            target_masks = batch.masked_positions[rows] if getattr(config, "mbp_query", "masked") == "masked" else None
            found = sampler.sequence_negatives(  # every rank calls this every step (pool refresh gathers)
                user_model, seq_ids[rows], target_masks, batch.user_index[rows], batch.target_window[rows], step
            )
            candidate_seqs = [[[0]] * (1 + sampler.num_sequence_negatives) for _ in range(len(seq_ids))]
            without = 0
            for r, row in enumerate(rows.tolist()):
                if found.has_negatives[r]:
                    positive = batch.positive_ids[row]
                    candidate_seqs[row] = [positive[positive != 0].tolist()] + found.ids[r]
                else:  # no user offers P sequences outside A's time span: this target sits out BSM
                    valid[row] = False
                    without += 1
            self.stats["bsm_targets_without_negatives"] = self.stats.get("bsm_targets_without_negatives", 0) + without
            width = max(len(s) for seqs in candidate_seqs for s in seqs)
            bsm_ids = torch.stack([pad_sequences(seqs, length=width) for seqs in candidate_seqs])  # (B, 1 + P, Lb)
            candidates["bsm_candidate_index"] = bsm_ids
            inputs.update(bsm_candidate_mask=bsm_ids != 0, bsm_valid=valid)
            counts["bsm"] = int(valid.sum())
        return self._with_table(inputs, seq_ids, candidates), counts


@register_objective
class PtumObjective(PretrainingObjective):
    """PTUM (Wu et al. 2020): masked behaviour prediction from the user embedding of the sequence without the
    masked behaviours, plus prediction of the next ``ptum_next_k`` behaviours with per-k projections; random
    negatives."""

    name = "ptum"
    tasks = ("mbp", "nbp")
    sampler_strategy = RandomNegativeSampler.name

    def prepare(self, batch, step):
        s, k = self.settings, self.settings.ptum_next_k
        seqs, masked, next_ids, next_valid = [], [], [], []
        excluded = {"mbp_excluded_users": 0}
        for user, seq, _ in _rows(batch):
            # The last k behaviours are the next-K targets (kept only if at least one behaviour stays visible).
            cut = min(k, max(len(seq) - 1, 0))
            context, targets = seq[: len(seq) - cut], seq[len(seq) - cut :]
            seqs.append(context)
            positions = _mask_for_mbp(context, s, (s.seed, step, user))
            excluded["mbp_excluded_users"] += int(len(context) > 0 and len(positions) == 0)
            masked.append(positions)
            next_ids.append(targets + [0] * (k - len(targets)))
            next_valid.append([True] * len(targets) + [False] * (k - len(targets)))
        ids = pad_sequences(seqs)
        masked_positions = _positions_tensor(masked, ids.shape[1])
        out = PretrainingBatch(
            user_index=batch["user_index"].cpu(), sequence_ids=ids, attention_mask=ids != 0,
            masked_positions=masked_positions, masked_ids=ids[masked_positions],
            next_ids=torch.tensor(next_ids, dtype=torch.long).view(-1, k),  # (B, k)
            next_valid=torch.tensor(next_valid, dtype=torch.bool).view(-1, k), excluded_users=excluded,
        )
        self._count(out)
        return out

    def model_inputs(self, batch, user_model, step, config):
        # The masked behaviours are removed from the sequence (not replaced by [MASK]); each is predicted from the
        # user embedding of its row.
        keep = batch.attention_mask & ~batch.masked_positions
        kept_ids = pad_sequences([row[k].tolist() for row, k in zip(batch.sequence_ids, keep)])  # (B, L')
        inputs = {"attention_mask": kept_ids != 0}
        counts = {"mbp": 0, "nbp": 0}
        candidates = {}
        if config.mbp_loss_weight > 0:
            candidates["mbp_candidate_index"] = self._mbp_candidates(batch, user_model, step)  # (M, 1 + K)
            inputs["mbp_query_rows"] = batch.masked_rows  # (M,)
            counts["mbp"] = len(batch.masked_ids)
        if config.next_behavior_loss_weight > 0:
            flat_next = batch.next_ids.reshape(-1).clamp(min=1)
            flat_users = batch.user_index[:, None].expand_as(batch.next_ids).reshape(-1)
            negatives = self.sampler.random_behavior_negatives(flat_next, flat_users, step, RandomStream.NEXT_BEHAVIOR_NEGATIVES)
            candidates["nbp_candidate_index"] = torch.cat([flat_next[:, None], negatives], 1).view(*batch.next_ids.shape, -1)  # (B, k, 1+K)
            inputs["nbp_valid"] = batch.next_valid
            counts["nbp"] = int(batch.next_valid.sum())
        return self._with_table(inputs, kept_ids, candidates), counts


@register_objective
class CpObjective(PretrainingObjective):
    """CP / CL4SRec: two augmented views per user (crop 0.6, mask 0.3, reorder 0.6), matched against the views of
    the other users of the batch (NT-Xent). Under data parallelism the views are gathered from every rank with
    gradients, so two processes see the negatives of one large batch; with gradient accumulation each micro-batch
    is its own in-batch set (fewer negatives than one large batch: a different loss, by design of in-batch
    contrastive learning)."""

    name = "cp"
    tasks = ("cp",)
    uses_sampler = False

    def prepare(self, batch, step):
        s = self.settings
        augmentations = (
            lambda seq, r: crop_view(seq, s.cp_crop_ratio, r),
            lambda seq, r: mask_view(seq, s.cp_mask_ratio, r),
            lambda seq, r: reorder_view(seq, s.cp_reorder_ratio, r),
        )
        views = ([], []), ([], [])
        for user, seq, _ in _rows(batch):
            rng = user_rng(s.seed, step, user, RandomStream.CP_VIEWS)
            for v in range(2):
                view, view_masked = augmentations[int(rng.integers(0, 3))](list(seq), rng)
                views[v][0].append(view)
                views[v][1].append(view_masked)
        first, second = (pad_sequences(v[0]) for v in views)
        out = PretrainingBatch(
            user_index=batch["user_index"].cpu(), sequence_ids=first, attention_mask=first != 0,
            masked_positions=_positions_tensor(views[0][1], first.shape[1]),
            view_ids=second, view_attention_mask=second != 0,
            view_masked_positions=_positions_tensor(views[1][1], second.shape[1]),
        )
        self._count(out)
        return out

    def model_inputs(self, batch, user_model, step, config):
        inputs = {
            "attention_mask": batch.attention_mask, "masked_positions": batch.masked_positions,
            "view_attention_mask": batch.view_attention_mask, "view_masked_positions": batch.view_masked_positions,
        }
        return self._with_table(inputs, batch.sequence_ids, {"view_index": batch.view_ids}), {"cp": 2 * batch.num_users}


def build_objective(name: str, args, config, catalog: BehaviorCatalog, users) -> PretrainingObjective:
    """The objective ``name`` with its sampler, from ``UserBertTrainingArguments`` ``args`` and the model config:
    the objective's own ``sampler_strategy`` (PTUM: random negatives), else ``args.negative_sampling`` (UserBERT);
    none for an objective without ``uses_sampler`` (CP)."""
    if name not in OBJECTIVES:
        raise ValueError(f"pre-training objective {name!r} is not one of {tuple(OBJECTIVES)}")
    objective = OBJECTIVES[name]
    settings = ObjectiveSettings(
        mask_ratio=args.mask_ratio, bsm_min_behaviors=args.bsm_min_behaviors, bsm_gap=args.bsm_gap,
        bsm_positive=args.bsm_positive, seed=args.seed, ptum_next_k=config.ptum_next_k,
        first_maskable=int(objective.uses_mbp_query and config.mbp_query == "previous"),
    )
    sampler = None
    if objective.uses_sampler:
        strategy = objective.sampler_strategy or args.negative_sampling
        sampler = build_sampler(
            strategy, catalog, users,
            behavior_pool_size=args.behavior_pool_size, sequence_pool_size=args.sequence_pool_size,
            sequence_pool_interval=args.sequence_pool_interval, num_behavior_negatives=args.num_behavior_negatives,
            num_sequence_negatives=args.num_sequence_negatives, min_crop_behaviors=args.bsm_min_behaviors,
            max_crop_behaviors=config.max_behaviors, seed=args.seed,
            behavior_table_interval=args.behavior_table_interval,
            behavior_pool_fraction=getattr(args, "behavior_pool_fraction", None),
            exclude_own_behaviors=getattr(args, "exclude_own_behaviors", False),
            hard_negative_fraction=getattr(args, "hard_negative_fraction", 1.0),
        )
    return objective(settings, catalog, sampler)


__all__ = [
    "ObjectiveSettings",
    "PretrainingObjective",
    "UserBertObjective",
    "PtumObjective",
    "CpObjective",
    "OBJECTIVES",
    "register_objective",
    "build_objective",
]
