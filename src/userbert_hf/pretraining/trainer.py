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
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..collation import UserBertPretrainingCollator
from .checkpoints import checkpoint_problem, last_complete_checkpoint
from .evaluation import PretrainingEvaluator
from .objectives import build_objective
from .samplers import SAMPLERS

BSM_POSITIVES = ("period", "crop", "balanced")


def validate_training_length(args: TrainingArguments) -> None:
    """Reject training lengths and batch sizes the Trainer would silently bend (``max_steps 0`` trains one step)."""
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps"):
        value = getattr(args, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"--{name} must be an integer >= 1, got {value!r}")
    if args.max_steps == 0 or args.max_steps < -1:
        raise ValueError(f"--max_steps must be > 0 (or -1 to train --num_train_epochs), got {args.max_steps}")
    if args.max_steps == -1 and not args.num_train_epochs > 0:
        raise ValueError(f"--num_train_epochs must be > 0 when --max_steps is not set, got {args.num_train_epochs}")


@dataclass
class UserBertTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus the pre-training task and negative-sampler settings.

    Which defaults are the paper's (UserBERT, Section 4.1 and Table 4):

    - the paper's: ``negative_sampling`` medium_hard, ``behavior_pool_size`` m = 1000, ``sequence_pool_size``
      u = 100, ``sequence_pool_interval`` T = 50, ``num_behavior_negatives`` K = 4, ``num_sequence_negatives``
      P = 4, ``mask_ratio`` 0.1 (at least one), ``bsm_positive`` period (the whole later period B).
    - this project's (the paper does not say): ``bsm_min_behaviors`` 2, ``bsm_gap`` 0, ``behavior_table_interval``
      50 (``hardest`` sampling, Section 4.4), the held-out evaluation settings.
    - inherited from ``transformers`` and *not* the paper's: ``learning_rate`` 5e-5 (paper: 1e-5 on 63M
      behaviours), ``per_device_train_batch_size`` 8 (paper: 32), ``lr_scheduler_type`` linear with decay to 0
      (paper: constant), ``optim`` AdamW with ``weight_decay`` 0 (paper: Adam, the same update), ``adam_epsilon``
      1e-8 (paper, Keras: 1e-7), ``max_grad_norm`` 1.0 (paper: no clipping).

    ``userbert pretrain --recipe paper`` sets all of them as published (the learning rate scaled to the run's
    length); see ``userbert_hf.pretraining.recipes``.

    Example:

    ```python
    >>> args = UserBertTrainingArguments(output_dir="out", negative_sampling="random", max_steps=100)
    >>> args.behavior_pool_size, args.num_behavior_negatives, args.mask_ratio
    (1000, 4, 0.1)
    ```
    """

    negative_sampling: str = field(
        default="medium_hard", metadata={"help": "Negative sampling strategy.", "choices": SAMPLERS}  # the live registry
    )
    behavior_pool_size: int = field(default=1000, metadata={"help": "m: behaviours drawn into the pool each step."})
    sequence_pool_size: int = field(default=100, metadata={"help": "u: sequences cropped into the sequence pool."})
    sequence_pool_interval: int = field(default=50, metadata={"help": "T: steps between sequence pool refreshes."})
    num_behavior_negatives: int = field(default=4, metadata={"help": "K: negatives per masked behaviour."})
    num_sequence_negatives: int = field(default=4, metadata={"help": "P: negative sequences per target sequence."})
    mask_ratio: float = field(default=0.1, metadata={"help": "Share of behaviours masked (at least one)."})
    bsm_min_behaviors: int = field(default=2, metadata={"help": "Minimum behaviours in each BSM period."})
    bsm_gap: int = field(default=0, metadata={"help": "Time between the two BSM periods (strictly greater)."})
    bsm_positive: str = field(
        default="period",
        metadata={"choices": list(BSM_POSITIVES),
                  "help": "The BSM positive: 'period' (all of the later period B) or 'crop' (a random-length crop of B "
                  "starting right after A, so its length varies like the negative crops') or 'balanced' (A and B "
                  "split at the valid point nearest the middle: no 2-behaviour A or B on short histories)."},
    )
    behavior_pool_fraction: float | None = field(
        default=None, metadata={"help": "m as a share of the catalogue (e.g. 0.01); replaces --behavior_pool_size."}
    )
    exclude_own_behaviors: bool = field(
        default=False, metadata={"help": "MBP negatives are never one of the user's own behaviours."}
    )
    hard_negative_fraction: float = field(
        default=1.0, metadata={"help": "Share of the K and P negatives chosen hard (medium_hard, hardest); the rest "
                                       "are uniformly random (paper: 1.0)."}
    )
    behavior_table_interval: int = field(
        default=50, metadata={"help": "'hardest' sampling: steps between re-encodings of the whole behaviour set."}
    )
    eval_knn_neighbors: int = field(default=20, metadata={"help": "Held-out probe: neighbours per held-out user."})
    eval_max_users: int = field(default=1000, metadata={"help": "Held-out evaluation: at most this many users."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept False: the collator needs all columns."})

    def __post_init__(self):
        self.validate_pretraining_settings()
        super().__post_init__()

    def validate_pretraining_settings(self) -> None:
        """Reject every setting that cannot work, naming the option, before any data is loaded (a negative count
        of 0 would give loss 0 and accuracy 1; a negative one crashes mid-training)."""
        at_least = {
            "behavior_pool_size": 1, "sequence_pool_size": 1, "sequence_pool_interval": 1,
            "num_behavior_negatives": 1, "num_sequence_negatives": 1, "bsm_min_behaviors": 1, "bsm_gap": 0,
            "behavior_table_interval": 1, "eval_knn_neighbors": 1, "eval_max_users": 1,
        }
        for name, low in at_least.items():
            value = getattr(self, name, low)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"--{name} must be an integer >= {low}, got {value!r}")
        for name, allowed in (("negative_sampling", tuple(SAMPLERS)), ("bsm_positive", BSM_POSITIVES)):
            if getattr(self, name, allowed[0]) not in allowed:
                raise ValueError(f"--{name} {getattr(self, name)!r} is not one of {list(allowed)}")
        if self.behavior_pool_fraction is not None and not 0 < self.behavior_pool_fraction <= 1:
            raise ValueError(f"--behavior_pool_fraction must be in (0, 1], got {self.behavior_pool_fraction}")
        if not 0 <= self.hard_negative_fraction <= 1:
            raise ValueError(f"--hard_negative_fraction must be in [0, 1], got {self.hard_negative_fraction}")
        if not 0 < self.mask_ratio <= 1:
            raise ValueError(f"--mask_ratio must be in (0, 1], got {self.mask_ratio}")
        if self.behavior_pool_size < self.num_behavior_negatives:
            raise ValueError(
                f"--behavior_pool_size {self.behavior_pool_size} cannot give --num_behavior_negatives "
                f"{self.num_behavior_negatives} negatives per masked behaviour: the pool must hold at least K behaviours"
            )
        validate_training_length(self)


class SamplerCheckpointCallback(TrainerCallback):
    """Writes the negative sampler's state (sequence pool and its encodings) into every checkpoint folder.

    ``UserBertTrainer._save_checkpoint`` calls :meth:`write` before transformers saves the model, optimizer, RNG
    and trainer state; transformers removes older checkpoints (``save_total_limit``) only after all of that, so a
    kill at any moment leaves a complete checkpoint to resume from. (An ``on_save`` callback would run after the
    rotation: a kill in between left only an incomplete checkpoint.)
    """

    def __init__(self, trainer: "UserBertTrainer"):
        self.trainer = trainer

    def write(self, directory: str) -> None:
        if self.trainer.sampler is not None and self.trainer.args.should_save:
            os.makedirs(directory, exist_ok=True)
            self.trainer.sampler.save(directory)


class UserBertTrainer(Trainer):
    """Pre-trains a ``UserBertForPreTraining`` with the objective named by ``config.pretraining_objective``
    (UserBERT's MBP + BSM, PTUM or CP; see ``userbert_hf.pretraining.objectives``).

    Args:
        catalog: ``BehaviorCatalog`` of the behaviour vocabulary (text word ids for text behaviours).
        train_dataset: one row per user with ``behavior_ids`` and ``timestamps`` (from ``userbert_hf.data``).
        eval_dataset: held-out users (same columns). ``evaluate()`` then reports held-out MBP / BSM loss and
            accuracy against a fixed evaluation batch, representation health of the held-out users' embeddings
            beside the same architecture at initialisation, and a label-free retrieval probe
            (``userbert_hf.pretraining.evaluation``).
        Other arguments as ``transformers.Trainer``; ``args`` is a ``UserBertTrainingArguments``.

    The trainer only decides how batches and negatives are built: ``get_batch_samples`` prepares every
    micro-batch of a step (masking, periods, negatives) and attaches the item counts of the whole step over all
    ranks, which normalise the losses; the model computes the losses. Logs each task's loss and accuracy and the
    users that sat out a task (``mbp_excluded_users``, ``bsm_excluded_users``, ``bsm_targets_without_negatives``).

    Example:

    ```python
    >>> trainer = UserBertTrainer(model=model, args=UserBertTrainingArguments("out", max_steps=100),
    ...                           train_dataset=data.users, catalog=catalog)
    >>> trainer.train()
    ```
    """

    # The loss is normalised by the item counts of the whole accumulated, all-rank batch (see get_batch_samples).
    loss_is_scaled_for_ga = True

    def __init__(self, model=None, args: UserBertTrainingArguments = None, train_dataset=None, catalog=None, eval_dataset=None, **kwargs):
        if catalog is None:
            raise ValueError("UserBertTrainer needs the BehaviorCatalog of the behaviour vocabulary (catalog=...)")
        if train_dataset is not None and "user_index" not in train_dataset.column_names:
            train_dataset = train_dataset.add_column("user_index", list(range(len(train_dataset))))
        kwargs.setdefault("data_collator", UserBertPretrainingCollator(model.config.max_behaviors))
        super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, **kwargs)
        config = model.config
        self.catalog = catalog
        self.objective = build_objective(config.pretraining_objective, args, config, catalog, train_dataset)
        self.sampler = self.objective.sampler
        if "bsm" in self.objective.tasks and config.bsm_loss_weight > 0:
            if train_dataset is not None and len(train_dataset) <= args.num_sequence_negatives:
                raise ValueError(
                    f"--num_sequence_negatives {args.num_sequence_negatives} needs more than that many other users, "
                    f"but the data has {len(train_dataset)} users: BSM could never run (lower P or set --bsm_loss_weight 0)"
                )
        self.evaluator = None
        if eval_dataset is not None:
            self.evaluator = PretrainingEvaluator(model.userbert.config, catalog, eval_dataset, train_dataset, args)
        self.sampler_checkpoint = SamplerCheckpointCallback(self)
        self._task_sums: dict[str, float] = {}
        self._task_counts: dict[str, int] = {}

    # ------------------------------------------------------------------ batches
    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Fetch the micro-batches of one optimizer step, prepare their model inputs (masking, periods, negatives)
        and attach the item counts of the whole step (all micro-batches, all ranks) that normalise the losses.

        Every rank prepares the same number of micro-batches, and each preparation enters the sampler's
        collectives whatever its data, so ranks never wait on each other in different places."""
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        user_model = self.accelerator.unwrap_model(self.model).userbert
        step, config = self.state.global_step, self.model.config
        prepared = [self.objective.model_inputs(self.objective.prepare(b, step), user_model, step, config) for b in batches]
        tasks = self.objective.tasks
        if config.uniformity_loss_weight > 0:  # users per micro-batch: weights each micro-batch's uniformity term
            tasks = (*tasks, "uniformity")
            for inputs, counts in prepared:
                counts["uniformity"] = int(inputs["behavior_index"].shape[0])
        totals = torch.tensor(
            [[float(counts.get(task, 0)) for task in tasks] for _, counts in prepared] or [[0.0] * len(tasks)], device=device
        ).sum(0)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)
        out = []
        for inputs, _ in prepared:
            for task, total in zip(tasks, totals):
                inputs[f"{task}_normalizer"] = total.clamp(min=1.0)
            out.append({k: v.to(device) if torch.is_tensor(v) else v for k, v in inputs.items()})
        return out, None

    # ------------------------------------------------------------------ loss and logging
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        self.track_loss_components(outputs)
        # Normalisers are global over ranks; DDP averages gradients over ranks, so scale back to a sum.
        loss = outputs.loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

    def track_loss_components(self, outputs) -> None:
        """Add every loss component the model output carries (each ``<task>_loss`` / ``<task>_accuracy`` beside the
        total) to the running sums, weighted by the rows its mean was taken over (``outputs.loss_rows``), so the
        logs are means over the whole step and all ranks."""
        for name, value in outputs.items():
            if name == "loss" or not name.endswith(("_loss", "_accuracy")):
                continue
            weight = int(outputs.loss_rows[name.rsplit("_", 1)[0]])
            self._task_sums[name] = self._task_sums.get(name, 0.0) + float(value) * weight
            self._task_counts[name] = self._task_counts.get(name, 0) + weight

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._task_sums and "loss" in logs:
            names = sorted(self._task_sums)
            counters = sorted(k for k in self.objective.stats if k != "users")
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            if distributed:  # a rank may lack a component (e.g. no valid BSM target): reduce the union of names
                gathered = [None] * torch.distributed.get_world_size()
                torch.distributed.all_gather_object(gathered, (names, counters))
                names = sorted(set().union(*(g[0] for g in gathered)))
                counters = sorted(set().union(*(g[1] for g in gathered)))
            values = [[self._task_sums.get(n, 0.0), self._task_counts.get(n, 0)] for n in names]
            values += [[float(self.objective.stats.get(c, 0)), 0.0] for c in counters]
            values = torch.tensor(values, dtype=torch.float64, device=self.args.device)
            if distributed:
                torch.distributed.all_reduce(values)  # sums over ranks
            for name, (total, count) in zip(names, values[: len(names)].tolist()):
                logs[name] = round(total / max(count, 1), 4)
            for name, (total, _) in zip(counters, values[len(names) :].tolist()):
                logs[name] = int(total)  # users that sat out a task so far (all ranks)
            if self.sampler is not None:
                logs["sequence_pool_refreshes"] = self.sampler.counters["sequence_pool_refreshes"]
            self._task_sums, self._task_counts = {}, {}
        super().log(logs, start_time)

    # ------------------------------------------------------------------ held-out evaluation
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Held-out pre-training metrics (see ``PretrainingEvaluator``), logged and returned with the prefix."""
        if eval_dataset is not None:
            raise ValueError("UserBertTrainer evaluates the held-out users given at construction (eval_dataset=...)")
        if self.evaluator is None:
            raise ValueError("UserBertTrainer.evaluate() needs held-out users: pass eval_dataset=... to the trainer")
        model = self.accelerator.unwrap_model(self.model)
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in self.evaluator.evaluate(model).items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # ------------------------------------------------------------------ checkpoints and resume
    def _save_checkpoint(self, model, trial) -> None:
        """The sampler state goes into the new checkpoint before anything else (see SamplerCheckpointCallback)."""
        run_dir = self.args.output_dir if trial is None else self._get_output_dir(trial=trial)
        self.sampler_checkpoint.write(os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"))
        super()._save_checkpoint(model, trial)

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        """As ``Trainer.train``; ``resume_from_checkpoint`` is a checkpoint folder (checked complete first) or
        ``True`` / ``"last"``: the last complete checkpoint of ``output_dir`` (incomplete newer ones skipped)."""
        from ..output_dir import parse_resume_argument

        resume_from_checkpoint = parse_resume_argument(resume_from_checkpoint)
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
    "validate_training_length",
    "UserBertTrainer",
    "UserBertTrainingArguments",
    "SamplerCheckpointCallback",
    "checkpoint_problem",
    "last_complete_checkpoint",
]
