"""``UserBertTrainer``: a thin ``transformers.Trainer`` that builds pre-training batches and negatives.

The trainer decides how batches and negatives are built (masking, periods, the negative sampler); the model
owns the scoring and the losses. Every random decision is seeded by ``(seed, step, user)`` or ``(seed, step)``,
so runs are reproducible, resumable and identical across gradient-accumulation and data-parallel layouts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from .checkpoints import checkpoint_problem, last_complete_checkpoint

from ..collation import BehaviorCatalog, UserBertPretrainingCollator, build_behavior_table, pad_sequences
from .samplers import STRATEGIES, MediumHardNegativeSampler
from .masking import PretrainingBatchBuilder

_LOGGED = ("mbp_loss", "bsm_loss", "nbp_loss", "cp_loss", "mbp_accuracy", "bsm_accuracy", "nbp_accuracy", "cp_accuracy")


@dataclass
class UserBertTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus the pre-training task and negative-sampler settings (paper defaults)."""

    negative_sampling: str = field(
        default="medium_hard", metadata={"help": f"Negative sampling strategy, one of {STRATEGIES}."}
    )
    behavior_pool_size: int = field(default=1000, metadata={"help": "m: behaviours drawn into the pool each step."})
    sequence_pool_size: int = field(default=100, metadata={"help": "u: sequences cropped into the sequence pool."})
    sequence_pool_interval: int = field(default=50, metadata={"help": "T: steps between sequence pool refreshes."})
    num_behavior_negatives: int = field(default=4, metadata={"help": "K: negatives per masked behaviour."})
    num_sequence_negatives: int = field(default=4, metadata={"help": "P: negative sequences per target sequence."})
    mask_ratio: float = field(default=0.1, metadata={"help": "Share of behaviours masked (at least one)."})
    bsm_min_behaviors: int = field(default=2, metadata={"help": "Minimum behaviours in each BSM period."})
    bsm_gap: int = field(default=0, metadata={"help": "Time between the two BSM periods (strictly greater)."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept False: the collator needs all columns."})

    def __post_init__(self):
        super().__post_init__()
        if self.negative_sampling not in STRATEGIES:
            raise ValueError(f"--negative_sampling {self.negative_sampling!r} is not one of {STRATEGIES}")
        if not 0 < self.mask_ratio <= 1:
            raise ValueError(f"--mask_ratio must be in (0, 1], got {self.mask_ratio}")


class SamplerCheckpointCallback(TrainerCallback):
    """Saves the negative sampler's state (sequence pool and its encodings) into every checkpoint."""

    def __init__(self, trainer: "UserBertTrainer"):
        self.trainer = trainer

    def on_save(self, args, state, control, **kwargs):
        if self.trainer.sampler is not None and state.is_world_process_zero:
            directory = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            if os.path.isdir(directory):
                self.trainer.sampler.save(directory)
        return control


class UserBertTrainer(Trainer):
    """Pre-trains a ``UserBertForPreTraining`` with MBP + BSM (or PTUM / CP, from ``config.pretraining_objective``).

    Args:
        catalog: ``BehaviorCatalog`` of the behaviour vocabulary (text word ids for text behaviours).
        train_dataset: one row per user with ``behavior_ids`` and ``timestamps`` (from ``userbert_hf.data``).
        Other arguments as ``transformers.Trainer``; ``args`` is a ``UserBertTrainingArguments``.

    Logs ``mbp_loss``, ``bsm_loss`` (or ``nbp_loss`` / ``cp_loss``) and their accuracies separately.

    Example:

    ```python
    >>> trainer = UserBertTrainer(model=model, args=UserBertTrainingArguments("out", max_steps=100),
    ...                           train_dataset=data.users, catalog=catalog)
    >>> trainer.train()
    ```
    """

    # The loss is normalised by the item counts of the whole accumulated, all-rank batch (see get_batch_samples).
    loss_is_scaled_for_ga = True

    def __init__(self, model=None, args: UserBertTrainingArguments = None, train_dataset=None, catalog=None, **kwargs):
        if catalog is None:
            raise ValueError("UserBertTrainer needs the BehaviorCatalog of the behaviour vocabulary (catalog=...)")
        if train_dataset is not None and "user_index" not in train_dataset.column_names:
            train_dataset = train_dataset.add_column("user_index", list(range(len(train_dataset))))
        kwargs.setdefault("data_collator", UserBertPretrainingCollator(model.config.max_behaviors))
        super().__init__(model=model, args=args, train_dataset=train_dataset, **kwargs)
        config = model.config
        self.catalog = catalog
        self.objective = config.pretraining_objective
        self.batch_builder = PretrainingBatchBuilder(
            objective=self.objective, mask_ratio=args.mask_ratio, bsm_min_behaviors=args.bsm_min_behaviors,
            bsm_gap=args.bsm_gap, ptum_next_k=config.ptum_next_k, seed=args.seed,
        )
        self.sampler = None
        if self.objective != "cp":
            self.sampler = MediumHardNegativeSampler(
                catalog, train_dataset, strategy=args.negative_sampling if self.objective == "userbert" else "random",
                behavior_pool_size=args.behavior_pool_size, sequence_pool_size=args.sequence_pool_size,
                sequence_pool_interval=args.sequence_pool_interval,
                num_behavior_negatives=args.num_behavior_negatives, num_sequence_negatives=args.num_sequence_negatives,
                min_crop_behaviors=args.bsm_min_behaviors, max_crop_behaviors=config.max_behaviors, seed=args.seed,
            )
        self.add_callback(SamplerCheckpointCallback(self))
        self._task_sums: dict[str, float] = {}
        self._task_counts: dict[str, int] = {}

    # ------------------------------------------------------------------ batches
    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Fetch the micro-batches of one optimizer step, build their pre-training inputs and attach the item
        counts of the whole step (all micro-batches, all ranks) that normalise the losses."""
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        step = self.state.global_step
        prepared = [self.batch_builder.prepare(batch, step) for batch in batches]
        counts = torch.tensor(
            [sum(float(p["mbp_count"]) for p in prepared), sum(float(p["bsm_count"]) for p in prepared)], device=device
        )
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)
        for p in prepared:
            p["mbp_normalizer"] = counts[0].clamp(min=1.0)
            p["bsm_normalizer"] = counts[1].clamp(min=1.0)
        return prepared, None

    def _model_inputs(self, model, inputs: dict) -> dict:
        user_model = self.accelerator.unwrap_model(model).userbert
        step = self.state.global_step
        device = inputs["sequence_ids"].device
        cpu = {k: v.cpu() if torch.is_tensor(v) else v for k, v in inputs.items()}
        seq_ids = cpu["sequence_ids"]
        common = {
            "attention_mask": inputs["attention_mask"], "masked_positions": inputs["masked_positions"],
            "mbp_normalizer": inputs["mbp_normalizer"], "bsm_normalizer": inputs["bsm_normalizer"],
        }
        if self.objective == "userbert":
            masked_ids = cpu["masked_ids"]
            negatives = self.sampler.sample_behavior_negatives(user_model, masked_ids, step)  # (M, K)
            mbp_candidates = torch.cat([masked_ids[:, None], negatives], 1)  # (M, 1 + K), positive first
            valid = cpu["bsm_valid"].clone()
            candidate_seqs = [[[0]] * (1 + self.sampler.num_sequence_negatives) for _ in range(len(seq_ids))]
            if valid.any() and self.model.config.bsm_loss_weight > 0:
                rows = valid.nonzero(as_tuple=True)[0]
                targets = self.sampler.encode_sequences(user_model, seq_ids[rows], cpu["masked_positions"][rows])
                negatives = self.sampler.sample_sequence_negatives(
                    user_model, targets, cpu["user_index"][rows], cpu["target_window"][rows], step
                )
                for r, row in enumerate(rows.tolist()):
                    positive = cpu["positive_ids"][row]
                    if negatives.has_negatives[r]:
                        candidate_seqs[row] = [positive[positive != 0].tolist()] + negatives.ids[r]
                    else:  # no user offers a sequence outside A's time span: this user sits out BSM
                        valid[row] = False
            width = max(len(s) for seqs in candidate_seqs for s in seqs)
            bsm_ids = torch.stack([pad_sequences(seqs, length=width) for seqs in candidate_seqs])  # (B, 1 + P, L2)
            table, (index, mbp_index, bsm_index) = build_behavior_table(self.catalog, seq_ids, mbp_candidates, bsm_ids)
            extra = {
                "mbp_candidate_index": mbp_index, "bsm_candidate_index": bsm_index,
                "bsm_candidate_mask": bsm_ids != 0, "bsm_valid": valid,
            }
        elif self.objective == "ptum":
            masked_ids, next_ids = cpu["masked_ids"], cpu["next_ids"]
            mbp_candidates = torch.cat([masked_ids[:, None], self.sampler.random_behavior_negatives(masked_ids, step)], 1)
            flat_next = next_ids.reshape(-1).clamp(min=1)
            nbp_negatives = self.sampler.random_behavior_negatives(flat_next, step + 1_000_003)
            nbp_candidates = torch.cat([flat_next[:, None], nbp_negatives], 1).view(*next_ids.shape, -1)  # (B, k, 1+K)
            table, (index, mbp_index, nbp_index) = build_behavior_table(self.catalog, seq_ids, mbp_candidates, nbp_candidates)
            extra = {"mbp_candidate_index": mbp_index, "nbp_candidate_index": nbp_index, "nbp_valid": cpu["nbp_valid"]}
        else:  # cp
            table, (index, view_index) = build_behavior_table(self.catalog, seq_ids, cpu["view_sequence_ids"])
            extra = {
                "view_index": view_index, "view_attention_mask": inputs["view_attention_mask"],
                "view_masked_positions": inputs["view_masked_positions"],
            }
        model_inputs = {**table, "behavior_index": index, **common, **extra}
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in model_inputs.items()}

    # ------------------------------------------------------------------ loss and logging
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "sequence_ids" not in inputs:  # already model inputs (e.g. a user calling compute_loss directly)
            outputs = model(**inputs)
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        model_inputs = self._model_inputs(model, inputs)
        outputs = model(**model_inputs)
        rows = self._rows_per_task(model_inputs)
        for name in _LOGGED:
            value = getattr(outputs, name, None)
            if value is not None:  # weighted by rows so logs are means over the whole step, all ranks
                weight = rows[name.split("_")[0]]
                self._task_sums[name] = self._task_sums.get(name, 0.0) + float(value) * weight
                self._task_counts[name] = self._task_counts.get(name, 0) + weight
        # Normalisers are global over ranks; DDP averages gradients over ranks, so scale back to a sum.
        loss = outputs.loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

    @staticmethod
    def _rows_per_task(model_inputs: dict) -> dict[str, int]:
        """How many rows each task's mean loss of a micro-batch was taken over."""
        rows = {"mbp": 0, "bsm": 0, "nbp": 0, "cp": 0}
        if "mbp_candidate_index" in model_inputs:
            rows["mbp"] = int(model_inputs["mbp_candidate_index"].shape[0])
        if "bsm_valid" in model_inputs:
            rows["bsm"] = int(model_inputs["bsm_valid"].sum())
        if "nbp_valid" in model_inputs:
            rows["nbp"] = int(model_inputs["nbp_valid"].sum())
        if "view_index" in model_inputs:
            rows["cp"] = 2 * int(model_inputs["view_index"].shape[0])
        return rows

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._task_sums and "loss" in logs:
            names = sorted(self._task_sums)
            values = [[self._task_sums[n], self._task_counts[n]] for n in names]
            values.append([float(self.batch_builder.stats["bsm_excluded_users"]), 0.0])
            values = torch.tensor(values, dtype=torch.float64, device=self.args.device)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(values)  # sums over ranks
            for name, (total, count) in zip(names, values[:-1].tolist()):
                logs[name] = round(total / max(count, 1), 4)
            logs["bsm_excluded_users"] = int(values[-1, 0])
            if self.sampler is not None:
                logs["sequence_pool_refreshes"] = self.sampler.counters["sequence_pool_refreshes"]
            self._task_sums, self._task_counts = {}, {}
        super().log(logs, start_time)

    # ------------------------------------------------------------------ resume
    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir, self.sampler is not None)
            if resume_from_checkpoint is None:
                raise ValueError(f"No complete checkpoint found in {self.args.output_dir} to resume from")
        elif resume_from_checkpoint:
            problem = checkpoint_problem(resume_from_checkpoint, self.sampler is not None)
            if problem:
                raise ValueError(f"Cannot resume from {resume_from_checkpoint}: {problem}")
        if resume_from_checkpoint and self.sampler is not None:
            if not self.sampler.load(resume_from_checkpoint):
                raise ValueError(
                    f"Checkpoint {resume_from_checkpoint} has no negative sampler state "
                    f"({os.path.join(resume_from_checkpoint, 'negative_sampler.json')}); it was not written by UserBertTrainer"
                )
        return super().train(resume_from_checkpoint, *args, **kwargs)


__all__ = [
    "UserBertTrainer",
    "UserBertTrainingArguments",
    "SamplerCheckpointCallback",
    "checkpoint_problem",
    "last_complete_checkpoint",
]
