"""Published pre-training recipes: ``userbert pretrain --recipe paper | ptum_paper | cp_paper``.

A recipe is every setting a paper publishes for its pre-training, written as the job's own options, so that one
flag runs the method as published instead of this project's defaults (cosine matchers at temperature 0.1, a
uniformity loss, random negatives, ...). Options given on the command line still win; the run records which ones
did (``recipe_overrides`` in ``training_results.json``). An option that changes what the recipe *is* (the
objective, continuing a saved model) is refused.

Sources:

- ``paper``: UserBERT (Wu et al. 2022), Section 4.1 and Table 4: dot-product matchers (no temperature), K = P = 4
  negatives, a behaviour pool of m = 1,000 per step and a sequence pool of u = 100 refreshed every T = 50 steps
  (medium-hard sampling, Section 3.3), 10% of behaviours masked (at least one) and predicted from the masked
  position's state, dropout 0.2, Adam with learning rate 1e-5 and batch size 32 for pre-training. No uniformity
  loss, no projection head.
- ``ptum_paper``: PTUM (Wu et al. 2020, Findings of EMNLP) and its released ``pretrain.py``: one masked behaviour
  per user, the next K = 2 behaviours predicted from the user embedding, 4 random negatives, dot-product
  matchers, dropout 0.2, Adam with learning rate 1e-4, 32 users per batch, two passes over the users.
- ``cp_paper``: CP / CL4SRec (Xie et al. 2022): NT-Xent over two augmented views with in-batch negatives and the
  dot product as similarity at temperature 1, no projection head, Adam with learning rate 1e-3 and batch size
  256.

Optimiser: the papers ran Keras' ``Adam`` (beta 0.9 / 0.999, epsilon 1e-7, no weight decay, no gradient
clipping, a constant learning rate). The recipes set exactly that: ``adamw_torch`` with ``weight_decay 0`` *is*
Adam, ``lr_scheduler_type constant``, no warm-up, ``max_grad_norm 0`` (no clipping).

Scaling the learning rate to our sizes (:func:`scaled_learning_rate`): a published learning rate belongs to a
run of a given number of optimiser steps (UserBERT and PTUM: 500,000 users at batch 32, i.e. 15,625 steps per
pass; UserBERT does not state its passes, we take one; PTUM's code makes two). We train 10^2 to 10^4 steps on
10^5 behaviours, so the recipe keeps the published *budget* ``learning_rate x steps`` (the distance Adam can
move each weight, about ``lr`` per step) and sets ``lr = published_lr x published_steps / max_steps``, never above
``MAX_LEARNING_RATE`` (1e-3: the largest rate stable in this project's runs, the job's own default). CL4SRec was
published on data of our size (Amazon Beauty, ...), so its rate is kept as published. At the job's 200 steps:
paper 7.8e-4, PTUM 1e-3 (capped from 1.6e-2), CP 1e-3. The user model's sizes (``--preset``, ``--hidden_size``)
are not part of a recipe: the papers compare several user models, and Table 4's hidden size 256 is one
``--hidden_size 256 --attention_query_size 200`` away.

Example:

```python
>>> from userbert_hf.pretraining.recipes import recipe_arguments
>>> args = recipe_arguments("paper", max_steps=200)
>>> args["matching_similarity"], args["uniformity_loss_weight"], args["negative_sampling"], args["learning_rate"]
('dot', 0.0, 'medium_hard', 0.00078125)
```
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

RECIPE_NAMES = ("paper", "ptum_paper", "cp_paper")
MAX_LEARNING_RATE = 1e-3
PAPER_STEPS_PER_PASS = 500_000 // 32  # 500,000 pre-training users at batch size 32 (UserBERT Table 1 and 4)

# Keras' Adam as the papers ran it: no weight decay, no clipping, constant rate, epsilon 1e-7.
KERAS_ADAM = {
    "optim": "adamw_torch", "weight_decay": 0.0, "adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-7,
    "lr_scheduler_type": "constant", "warmup_steps": 0, "max_grad_norm": 0.0,
    # the published runs train for their whole budget: no stopping on held-out users (the job's default)
    "early_stopping_patience": 0,
}


@dataclass(frozen=True)
class Recipe:
    """A published pre-training recipe.

    Args:
        name: the ``--recipe`` value.
        source: the publication the settings come from.
        options: the job options it sets (names as ``userbert pretrain`` spells them), the learning rate excepted.
        published_learning_rate: the paper's pre-training learning rate.
        published_steps: optimiser steps of the published run (``None``: data of our size, the rate is kept).
        fixed: options that define the recipe; giving another value is refused, not overridden.
    """

    name: str
    source: str
    options: dict
    published_learning_rate: float
    published_steps: int | None = None
    fixed: tuple[str, ...] = field(default=("objective",))


RECIPES: dict[str, Recipe] = {
    "paper": Recipe(
        name="paper",
        source="UserBERT (Wu et al. 2022), Section 4.1 and Table 4",
        options={
            "objective": "userbert", "mbp_loss_weight": 1.0, "bsm_loss_weight": 1.0,
            "matching_similarity": "dot", "matching_temperature": 1.0, "uniformity_loss_weight": 0.0,
            "projection_head": False, "mbp_query": "masked", "mask_ratio": 0.1, "dropout": 0.2,
            "negative_sampling": "medium_hard", "behavior_pool_size": 1000, "sequence_pool_size": 100,
            "sequence_pool_interval": 50, "num_behavior_negatives": 4, "num_sequence_negatives": 4,
            "bsm_positive": "period", "per_device_train_batch_size": 32, **KERAS_ADAM,
        },
        published_learning_rate=1e-5,
        published_steps=PAPER_STEPS_PER_PASS,
    ),
    "ptum_paper": Recipe(
        name="ptum_paper",
        source="PTUM (Wu et al. 2020) and its released pretrain.py",
        options={
            "objective": "ptum", "mbp_loss_weight": 1.0, "bsm_loss_weight": 1.0,
            "matching_similarity": "dot", "matching_temperature": 1.0, "uniformity_loss_weight": 0.0,
            "projection_head": False, "mbp_query": "masked",
            "mask_ratio": 0.01,  # one masked behaviour per user: floor(0.01 x n) <= 1 for n <= 100, at least one
            "dropout": 0.2, "negative_sampling": "random", "num_behavior_negatives": 4,
            "per_device_train_batch_size": 32, **KERAS_ADAM,
        },
        published_learning_rate=1e-4,
        published_steps=2 * PAPER_STEPS_PER_PASS,
    ),
    "cp_paper": Recipe(
        name="cp_paper",
        source="CL4SRec (Xie et al. 2022)",
        options={
            "objective": "cp", "cp_matching_similarity": "dot", "cp_matching_temperature": 1.0,
            "uniformity_loss_weight": 0.0, "projection_head": False, "per_device_train_batch_size": 256,
            **KERAS_ADAM,
        },
        published_learning_rate=1e-3,
        published_steps=None,
    ),
}


def scaled_learning_rate(recipe: Recipe, max_steps: int) -> float:
    """The published learning rate scaled to a run of ``max_steps`` optimiser steps (same ``lr x steps`` budget as
    the published run, at most ``MAX_LEARNING_RATE``); kept as published when the paper's data is of our size.

    Example:
        >>> scaled_learning_rate(RECIPES["paper"], 1000)
        0.00015625
    """
    if recipe.published_steps is None:
        return recipe.published_learning_rate
    if max_steps <= 0:
        raise ValueError(
            f"--recipe {recipe.name} scales the learning rate by the number of steps: give --max_steps (or "
            "--learning_rate)"
        )
    return min(MAX_LEARNING_RATE, recipe.published_learning_rate * recipe.published_steps / max_steps)


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"--recipe {name!r} is not one of {list(RECIPES)}")
    return RECIPES[name]


def recipe_arguments(name: str, max_steps: int) -> dict:
    """Every option the recipe ``name`` sets for a run of ``max_steps`` steps, the scaled learning rate included."""
    recipe = get_recipe(name)
    return {**recipe.options, "learning_rate": scaled_learning_rate(recipe, max_steps)}


# ----- applying a recipe to the job's options -----

def _value(value):
    """An option's value as written in the record (enums such as ``SchedulerType`` by their value)."""
    return getattr(value, "value", value)


def given_options(argv: list[str]) -> set[str]:
    """The option names written on a command line (``--name value``, ``--name=value``, ``--name-with-dashes``)."""
    return {token[2:].split("=", 1)[0].replace("-", "_") for token in argv if token.startswith("--")}


def _recorded_keys() -> list[str]:
    keys = ["learning_rate"]
    for recipe in RECIPES.values():
        keys += [k for k in recipe.options if k not in keys]
    return keys


def recipe_settings(*args_objects) -> dict:
    """What ``training_results.json`` and the card record about recipes: ``recipe`` (its name or ``None``), the
    value of every option any recipe sets (so runs with and without a recipe are compared on the same keys), and
    ``recipe_overrides``: the options whose value differs from the recipe's (given explicitly)."""
    values = {}
    for key in _recorded_keys():
        for obj in args_objects:
            if hasattr(obj, key):
                values[key] = _value(getattr(obj, key))
                break
    name = next((getattr(obj, "recipe") for obj in args_objects if hasattr(obj, "recipe")), None)
    overrides = {}
    if name is not None:
        max_steps = next(getattr(obj, "max_steps") for obj in args_objects if hasattr(obj, "max_steps"))
        expected = recipe_arguments(name, max_steps) if max_steps > 0 else get_recipe(name).options
        overrides = {k: values[k] for k, v in expected.items() if k in values and values[k] != v}
    return {"recipe": name, **values, "recipe_overrides": overrides}


def _recipe_name(parsed) -> str | None:
    return next((getattr(obj, "recipe") for obj in parsed if hasattr(obj, "recipe")), None)


def _refuse_contradictions(recipe: Recipe, parsed, given: set[str]) -> None:
    for key in recipe.fixed:
        value = next((getattr(obj, key) for obj in parsed if hasattr(obj, key)), None)
        if key in given and value != recipe.options[key]:
            raise ValueError(f"--recipe {recipe.name} is the {recipe.options[key]!r} objective; --{key} {value!r} "
                             "contradicts it (leave --recipe out to pre-train another objective)")
    if any(getattr(obj, "model_name_or_path", None) for obj in parsed):
        raise ValueError(f"--recipe {recipe.name} builds a model from scratch; it cannot be combined with "
                         "--model_name_or_path (the saved model's config decides its settings)")


def parse_with_recipe(parser, argv: list[str]) -> tuple:
    """Parse ``argv`` with ``parser`` (a ``JobArgumentParser``); with ``--recipe NAME`` the recipe's options are
    inserted before the user's, so an option the user gives explicitly wins (and is recorded as an override by
    :func:`recipe_settings`), and an option that contradicts the recipe is a usage error (exit 2).

    A single ``.json`` argument is a dict of options: its keys are the explicit ones.
    """
    if len(argv) == 1 and argv[0].endswith(".json"):
        with open(argv[0]) as f:
            given_dict = json.load(f)
        if given_dict.get("recipe") is None:
            return parser.parse(argv)
        parsed = parser.parse(argv)
        try:
            recipe = get_recipe(given_dict["recipe"])
            _refuse_contradictions(recipe, parsed, set(given_dict))
            max_steps = next(getattr(o, "max_steps") for o in parsed if hasattr(o, "max_steps"))
            options = recipe_arguments(recipe.name, max_steps) if "learning_rate" not in given_dict else recipe.options
            return tuple(parser.parser.parse_dict({**options, **given_dict}))
        except ValueError as err:
            parser.error(str(err))
    parsed = parser.parse(argv)
    name = _recipe_name(parsed)
    if name is None:
        return parsed
    given = given_options(argv)
    try:
        recipe = get_recipe(name)
        _refuse_contradictions(recipe, parsed, given)
        max_steps = next(getattr(o, "max_steps") for o in parsed if hasattr(o, "max_steps"))
        options = recipe.options if "learning_rate" in given else recipe_arguments(name, max_steps)
    except ValueError as err:
        parser.error(str(err))
    inserted = [item for key, value in options.items() if key not in given for item in (f"--{key}", str(value))]
    return parser.parse(inserted + argv)


__all__ = ["RECIPE_NAMES", "RECIPES", "Recipe", "get_recipe", "recipe_arguments", "scaled_learning_rate",
           "MAX_LEARNING_RATE", "parse_with_recipe", "recipe_settings", "given_options"]
