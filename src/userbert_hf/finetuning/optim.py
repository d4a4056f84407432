"""Fine-tuning optimiser options for a pre-trained user model: its own learning rate and a frozen warm-up.

``FinetuningTrainer`` is a ``transformers.Trainer`` whose optimiser puts the user model's parameters
(``model.userbert``) and the head's parameters in separate groups: the head keeps ``--learning_rate``, the user
model takes ``--user_model_learning_rate`` (default: the same), and for the first ``--freeze_user_model_steps``
optimizer steps the user model's learning rate is 0, so its parameters do not change (Adam(W) with learning rate
0 moves nothing, weight decay included) while the head adapts to it. The schedule (warm-up, decay) applies to
both groups as usual, the frozen steps counting as steps of the schedule.
"""

from __future__ import annotations

from transformers import Trainer
from torch.optim.lr_scheduler import LambdaLR


def user_model_parameter_names(model) -> set[str]:
    """Names (as in ``model.named_parameters()``) of the user model's parameters of a task head."""
    if not hasattr(model, "userbert"):
        raise AttributeError(f"{type(model).__name__} has no user model (``userbert``) to give its own learning rate")
    return {f"userbert.{name}" for name, _ in model.userbert.named_parameters()}


class FinetuningTrainer(Trainer):
    """``Trainer`` with a learning rate of its own for the user model and an optional frozen warm-up.

    Args:
        user_model_learning_rate: learning rate of the user model's parameters (None: ``args.learning_rate``).
        freeze_user_model_steps: the user model's learning rate is 0 for this many first optimizer steps.
        Other arguments as ``transformers.Trainer``.

    Example:

    ```python
    >>> trainer = FinetuningTrainer(model=head, args=args, train_dataset=train, user_model_learning_rate=1e-4,
    ...                             freeze_user_model_steps=50)
    >>> [group["lr"] for group in trainer.create_optimizer().param_groups]  # head (decay, no decay), user model
    [0.001, 0.001, 0.0001, 0.0001]
    ```
    """

    def __init__(self, *args, user_model_learning_rate: float | None = None, freeze_user_model_steps: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.user_model_learning_rate = user_model_learning_rate
        self.freeze_user_model_steps = freeze_user_model_steps
        self.user_groups: list[int] = []  # indices of the user model's param groups

    @property
    def separate_user_model(self) -> bool:
        return self.user_model_learning_rate is not None or self.freeze_user_model_steps > 0

    def create_optimizer(self, model=None):
        if self.optimizer is not None or not self.separate_user_model:
            return super().create_optimizer(model)
        model = self.model if model is None else model
        user_names = user_model_parameter_names(model)
        decay = set(self.get_decay_parameter_names(model))
        user_lr = self.args.learning_rate if self.user_model_learning_rate is None else self.user_model_learning_rate
        groups = []
        for in_user_model, lr in ((False, self.args.learning_rate), (True, user_lr)):
            for decays in (True, False):
                params = [p for n, p in model.named_parameters()
                          if p.requires_grad and (n in user_names) == in_user_model and (n in decay) == decays]
                if params:
                    if in_user_model:
                        self.user_groups.append(len(groups))
                    groups.append({"params": params, "lr": lr, "weight_decay": self.args.weight_decay if decays else 0.0})
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        created = self.lr_scheduler is None
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        frozen = self.freeze_user_model_steps
        if created and frozen > 0 and self.user_groups:
            if not isinstance(scheduler, LambdaLR):
                raise ValueError(f"--freeze_user_model_steps needs a LambdaLR schedule (linear, cosine, constant...), "
                                 f"not --lr_scheduler_type {self.args.lr_scheduler_type}")
            for index in self.user_groups:
                schedule = scheduler.lr_lambdas[index]
                scheduler.lr_lambdas[index] = lambda step, schedule=schedule: 0.0 if step < frozen else schedule(step)
                scheduler.optimizer.param_groups[index]["lr"] = 0.0  # the first step's rate was set on creation
            scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]
        return scheduler


__all__ = ["FinetuningTrainer", "user_model_parameter_names"]
