"""Early stopping for the pre-training and fine-tuning jobs: transformers' ``EarlyStoppingCallback`` with
``load_best_model_at_end``, set up from one job option, ``--early_stopping_patience N``.

Training stops when the evaluation metric (``metric_for_best_model``) has not improved for N evaluations in a
row, and the checkpoint with the best value is loaded at the end, so the saved model is the best one evaluated
(``max_steps`` / ``num_train_epochs`` stay the upper bound). Checkpoints are written at every evaluation for that
(``save_strategy`` and ``save_steps`` follow the evaluations); ``save_total_limit`` keeps the best one besides
the newest.

Example:

```python
>>> callbacks = configure_early_stopping(training_args, patience=3, default_metric="knn_recall_at_20")
>>> trainer = Trainer(model, training_args, ..., callbacks=callbacks)
```
"""

from __future__ import annotations

from transformers import EarlyStoppingCallback
from transformers.trainer_utils import SaveStrategy


def validate_patience(patience: int | None) -> None:
    """Reject a patience that is not ``None`` or an integer >= 0 (usage error naming the option)."""
    if patience is not None and (not isinstance(patience, int) or isinstance(patience, bool) or patience < 0):
        raise ValueError(f"--early_stopping_patience must be an integer >= 0, got {patience!r}")


def _strategy(value) -> str:
    return str(getattr(value, "value", value))


def configure_early_stopping(args, patience: int | None, default_metric: str) -> list:
    """Set the (initialised) training arguments ``args`` for early stopping with ``patience`` evaluations and
    return the callbacks for the Trainer: ``[EarlyStoppingCallback]``, or ``[]`` (``args`` unchanged) when
    ``patience`` is ``None`` / 0 or nothing is evaluated (``eval_strategy`` "no").

    ``metric_for_best_model`` defaults to ``default_metric``; a name ending in ``loss`` is minimised, any other
    maximised (transformers' rule), unless ``greater_is_better`` is given.
    """
    validate_patience(patience)
    if not patience or _strategy(args.eval_strategy) == "no":
        return []
    args.load_best_model_at_end = True
    args.save_strategy = SaveStrategy(_strategy(args.eval_strategy))  # the best evaluated model needs a checkpoint
    if args.eval_steps is not None:
        args.save_steps = args.eval_steps
    if args.metric_for_best_model is None:
        args.metric_for_best_model = default_metric
    if args.greater_is_better is None:
        args.greater_is_better = not args.metric_for_best_model.endswith("loss")
    if args.save_total_limit is None:
        args.save_total_limit = 1  # transformers keeps the best checkpoint besides the newest one
    return [EarlyStoppingCallback(early_stopping_patience=patience)]


__all__ = ["configure_early_stopping", "validate_patience"]
