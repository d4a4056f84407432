"""The experiment grid: what a YAML (or JSON) config asks for, validated, and the cells it expands to.

```yaml
name: movielens_ctr
task: ctr                      # a task of userbert_hf.finetuning
data: movielens
preset: nrms                   # the user model of every method (pre-trained or from scratch)
split_seeds: [0, 1, 2]         # user splits (--split_seed)
seeds: [1, 2, 3]               # fine-tuning seeds (--seed; also which training users a label fraction keeps)
label_fractions: [0.1, 0.25, 1.0]
methods:                       # "none" fine-tunes from scratch; the others pre-train first
  none: {}
  userbert: {objective: userbert}
  ptum: {objective: ptum}
  cp: {objective: cp}
baselines: [popularity, item_mean, mf]
model_args: {hidden_size: 64}  # architecture, the same for pre-training and from-scratch fine-tuning
task_args: {max_behaviors: 50} # data arguments of the task (fine-tuning and the pre-training export)
pretraining_args: {max_steps: 200}
finetuning_args: {num_train_epochs: 3}
fraction_args: {0.1: {num_train_epochs: 10}}   # per label fraction, over finetuning_args
fraction_seeds: {1.0: [1]}     # per label fraction, a subset of seeds (default: all; cheaper all-label runs)
fraction_split_seeds: {1.0: [0]}  # per label fraction, a subset of split_seeds (default: all; cheaper all-label runs)
pretrain_seeds: [0, 1, 2]      # each method pre-trained once per seed, shared over splits (default: see below)
mf_args: {factors: 32, epochs: 20}
```

A method's own keys (``objective`` and any other pre-training argument) override ``pretraining_args``, except two:
``finetuning_args`` (a mapping over the grid's ``finetuning_args`` and ``fraction_args`` for that method's
fine-tunings, e.g. ``{shrink_perturb: 0.5}``) and ``pretrained_model_of: METHOD`` (fine-tune the models that METHOD
pre-trains, seed by seed, instead of pre-training again: rows that differ in fine-tuning only). A method with
``objective: none`` is another from-scratch row beside ``none``, e.g. ``scratch_gain0.5: {objective: none,
finetuning_args: {initializer_gain: 0.5}}``; it takes no other key. The
pre-training data (what the task lets pre-training see) does not depend on the user split.

``pretrain_seeds`` lists the pre-training seeds: each pre-trained method is pre-trained once per seed (with that
``--seed``) and every one of those models is fine-tuned on every split, fine-tuning seed and label fraction, so a
pair is (pre-training seed, fine-tuning seed, split, fraction); scratch runs do not depend on it. The report
averages over fine-tuning seeds within each (pre-training seed, split) and tests over those clusters. Without
the key (older specs: one pre-training seed, ``[0]``) the earlier layout holds: with ``pretrain_per_split: true``
(default) each method is pre-trained once per split, with the split seed as its seed; with ``false`` once (seed
= the first split seed), that one model fine-tuned everywhere. Pre-training runs for ``max_steps`` unless
``pretraining_args`` set ``early_stopping_patience`` (then it stops on the held-out k-NN probe); fine-tuning cells
stop early with e.g. ``finetuning_args: {num_train_epochs: 40, eval_strategy: epoch, early_stopping_patience: 3,
eval_sample_users: 2000}`` (the best validated checkpoint is kept; evaluations between checkpoints rank a fixed
sample of validation users). Fine-tunings run fraction by fraction in the order of ``label_fractions``, so a grid stopped
early has every pair of the first fractions.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from ..pretraining.objectives import OBJECTIVES
from ..finetuning.registry import TASK_REGISTRY, get_task
from .baselines import BASELINES

# The objective of each published recipe (``recipe:`` in a method's settings; userbert_hf.pretraining.recipes).
RECIPE_OBJECTIVES = {"paper": "userbert", "ptum_paper": "ptum", "cp_paper": "cp"}
# Tasks whose test rows the baselines can score: (user, candidate, label) rows or next-item targets.
BASELINE_TASKS = ("ctr", "implicit_ctr", "next_item")
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
NO_PRETRAINING = "none"
# Arguments that describe the data the user model reads: pre-training takes them from the task arguments too.
SHARED_DATA_ARGS = ("max_behaviors",)


@dataclass(frozen=True)
class Cell:
    """One unit of work of the grid; ``cell_id`` names it in the results file."""

    kind: str  # "export", "pretrain", "finetune" or "baseline"
    method: str = ""
    split_seed: int | None = None
    seed: int | None = None
    fraction: float | None = None
    pretrain_seed: int | None = None  # with ``pretrain_seeds``: the pre-trained model's seed (None: scratch, legacy)

    @property
    def cell_id(self) -> str:
        parts = [self.kind, self.method]
        if self.pretrain_seed is not None:
            parts.append(f"pseed{self.pretrain_seed}")
        if self.split_seed is not None:
            parts.append(f"split{self.split_seed}")
        if self.seed is not None:
            parts.append(f"seed{self.seed}")
        if self.fraction is not None:
            parts.append(f"frac{self.fraction:g}")
        return "/".join(p for p in parts if p)


@dataclass
class ExperimentSpec:
    """A validated experiment grid (see the module docstring for the YAML form).

    Example:
        >>> spec = ExperimentSpec(name="t", task="ctr", split_seeds=[0, 1], seeds=[1], label_fractions=[0.1, 1.0],
        ...                       methods={"none": {}, "userbert": {"objective": "userbert"}}, baselines=["popularity"])
        >>> [c.cell_id for c in spec.cells()][:4]
        ['export', 'pretrain/userbert/split0', 'pretrain/userbert/split1', 'finetune/none/split0/seed1/frac0.1']
        >>> len(spec.cells())
        13
    """

    name: str
    task: str
    data: str = "movielens"
    preset: str = "nrms"
    split_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    label_fractions: list[float] = field(default_factory=lambda: [0.1, 0.25, 1.0])
    methods: dict[str, dict] = field(
        default_factory=lambda: {"none": {}, "userbert": {"objective": "userbert"}, "ptum": {"objective": "ptum"},
                                 "cp": {"objective": "cp"}}
    )
    baselines: list[str] = field(default_factory=lambda: ["popularity", "item_mean", "mf"])
    model_args: dict = field(default_factory=dict)
    task_args: dict = field(default_factory=dict)
    pretraining_args: dict = field(default_factory=dict)
    finetuning_args: dict = field(default_factory=dict)
    fraction_args: dict = field(default_factory=dict)
    fraction_seeds: dict = field(default_factory=dict)
    fraction_split_seeds: dict = field(default_factory=dict)
    pretrain_per_split: bool | None = None  # legacy layout only (no pretrain_seeds): default true
    pretrain_seeds: list[int] | None = None
    mf_args: dict = field(default_factory=dict)
    description: str = ""

    def __post_init__(self):
        where = f"experiment {self.name!r}"
        # Names become folder and file names under the output folder and next to the report: one plain component.
        for kind, value in [("name", self.name), *(("method", m) for m in self.methods)]:
            if not isinstance(value, str) or not SAFE_NAME.fullmatch(value) or ".." in value:
                raise ValueError(f"{where}: {kind} {value!r} must be a plain name (letters, digits, '_', '-', '.'; "
                                 "no '/', no '..'): it names folders and files")
        if self.task not in TASK_REGISTRY:
            raise ValueError(f"{where}: task {self.task!r} is not one of {tuple(TASK_REGISTRY)}")
        if not self.split_seeds or not self.seeds or not self.label_fractions:
            raise ValueError(f"{where}: split_seeds, seeds and label_fractions must each list at least one value")
        for name, values in (("split_seeds", self.split_seeds), ("seeds", self.seeds),
                             ("label_fractions", self.label_fractions)):
            if len(set(values)) != len(values):
                raise ValueError(f"{where}: {name} has duplicates: {values}")
        if any(not 0 < f <= 1 for f in self.label_fractions):
            raise ValueError(f"{where}: label_fractions must be in (0, 1], got {self.label_fractions}")
        for method, settings in self.methods.items():
            settings = settings or {}
            if not isinstance(settings.get("finetuning_args", {}), dict):
                raise ValueError(f"{where}: method {method!r}: finetuning_args must be a mapping of fine-tuning options")
            owner = settings.get("pretrained_model_of")
            if self.is_scratch(method) and set(settings) - {"objective", "finetuning_args"}:
                raise ValueError(f"{where}: method {method!r} trains from scratch: it takes only objective: "
                                 f"{NO_PRETRAINING} and finetuning_args, got {sorted(settings)}")
            if owner is not None:
                if self.is_scratch(method) or owner not in self.methods or self.is_scratch(owner) or owner == method:
                    raise ValueError(f"{where}: method {method!r}: pretrained_model_of must name another pre-trained "
                                     f"method of the grid, got {owner!r}")
                if (self.methods[owner] or {}).get("pretrained_model_of") is not None:
                    raise ValueError(f"{where}: method {method!r}: pretrained_model_of names {owner!r}, which pre-trains "
                                     "nothing itself")
                if set(settings) - {"pretrained_model_of", "finetuning_args"}:
                    raise ValueError(f"{where}: method {method!r} fine-tunes {owner!r}'s models: it takes only "
                                     "pretrained_model_of and finetuning_args, got "
                                     f"{sorted(set(settings) - {'pretrained_model_of', 'finetuning_args'})}")
                continue
            objective = method_objective(method, settings)
            if not self.is_scratch(method) and objective not in OBJECTIVES:
                raise ValueError(f"{where}: method {method!r} needs an objective in {tuple(OBJECTIVES)} (or the name "
                                 f"{NO_PRETRAINING!r} for no pre-training), got {objective!r}")
        self.fraction_args = {float(k): dict(v or {}) for k, v in (self.fraction_args or {}).items()}
        if set(self.fraction_args) - set(self.label_fractions):
            raise ValueError(f"{where}: fraction_args names fractions {sorted(self.fraction_args)} that are not in "
                             f"label_fractions {self.label_fractions}")
        self.fraction_seeds = {float(k): list(v or []) for k, v in (self.fraction_seeds or {}).items()}
        for fraction, seeds in self.fraction_seeds.items():
            if fraction not in self.label_fractions or not seeds or set(seeds) - set(self.seeds):
                raise ValueError(f"{where}: fraction_seeds[{fraction:g}] = {seeds} must name a fraction of "
                                 f"label_fractions {self.label_fractions} and a non-empty subset of seeds {self.seeds}")
        self.fraction_split_seeds = {float(k): list(v or []) for k, v in (self.fraction_split_seeds or {}).items()}
        for fraction, splits in self.fraction_split_seeds.items():
            if fraction not in self.label_fractions or not splits or set(splits) - set(self.split_seeds):
                raise ValueError(f"{where}: fraction_split_seeds[{fraction:g}] = {splits} must name a fraction of "
                                 f"label_fractions {self.label_fractions} and a non-empty subset of split_seeds "
                                 f"{self.split_seeds}")
        if self.pretrain_seeds is not None:
            seeds = self.pretrain_seeds
            if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(x, int) for x in seeds):
                raise ValueError(f"{where}: pretrain_seeds must list distinct integers, got {seeds}")
            if self.pretrain_per_split:
                raise ValueError(f"{where}: pretrain_seeds pre-trains each method once per seed, shared over the "
                                 "splits; remove pretrain_per_split")
        elif self.pretrain_per_split is None:
            self.pretrain_per_split = True
        unknown = set(self.baselines) - set(BASELINES)
        if unknown:
            raise ValueError(f"{where}: unknown baselines {sorted(unknown)}; choose from {BASELINES}")
        if self.baselines and self.task not in BASELINE_TASKS:
            raise ValueError(f"{where}: baselines {self.baselines} rank items for a user; task {self.task!r} cannot run "
                             f"them (tasks with baselines: {', '.join(BASELINE_TASKS)}); set baselines: []")
        if "item_mean" in self.baselines and not get_task(self.task).packs_candidates:
            raise ValueError(f"{where}: item_mean scores labelled candidates; task {self.task!r} has none")

    @classmethod
    def from_file(cls, path: str | Path) -> ExperimentSpec:
        """Read a YAML or JSON config; unknown keys are an error naming the file."""
        path = Path(path)
        text = path.read_text()
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping of settings, got {type(raw).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
        raw.setdefault("name", path.stem)
        try:
            return cls(**raw)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: {error}") from None

    def to_dict(self) -> dict:
        return asdict(self)

    def is_scratch(self, method: str) -> bool:
        """Whether ``method`` fine-tunes from scratch: ``none``, or a method with ``objective: none``."""
        return method == NO_PRETRAINING or (self.methods.get(method) or {}).get("objective") == NO_PRETRAINING

    @property
    def pretrained_methods(self) -> list[str]:
        return [m for m in self.methods if not self.is_scratch(m)]

    @property
    def scratch_variants(self) -> list[str]:
        """From-scratch rows other than ``none`` (``objective: none``), compared with ``none`` in reports."""
        return [m for m in self.methods if self.is_scratch(m) and m != NO_PRETRAINING]

    def pretraining_owner(self, method: str) -> str:
        """The method whose pre-training runs make ``method``'s models: its ``pretrained_model_of``, or itself."""
        return (self.methods.get(method) or {}).get("pretrained_model_of") or method

    def method_finetuning_args(self, method: str) -> dict:
        """A method's own fine-tuning options (its ``finetuning_args``)."""
        return dict((self.methods.get(method) or {}).get("finetuning_args") or {})

    @property
    def label_free_baselines(self) -> list[str]:
        return [b for b in self.baselines if b != "item_mean"]

    def pretraining_split(self, split_seed: int) -> int | None:
        """The split whose pre-trained model a fine-tuning on ``split_seed`` starts from (``None``: shared)."""
        return split_seed if self.pretrain_per_split else None

    @property
    def effective_pretrain_seeds(self) -> list[int | None]:
        """The pre-training seeds of the cells: ``pretrain_seeds``, or ``[None]`` for the legacy layout."""
        return list(self.pretrain_seeds) if self.pretrain_seeds is not None else [None]

    def cells(self) -> list[Cell]:
        """Every cell in run order: the export, the pre-training runs, fine-tunings fraction by fraction (in the
        order of ``label_fractions``), then the baselines."""
        cells = [Cell("export")] if self.pretrained_methods else []
        pseeds = self.effective_pretrain_seeds
        splits = self.split_seeds if self.pretrain_per_split else [None]
        cells += [Cell("pretrain", m, s, pretrain_seed=p) for p in pseeds for s in splits
                  for m in self.pretrained_methods if self.pretraining_owner(m) == m]
        for f in self.label_fractions:
            for s in self.split_seeds_for(f):
                for seed in self.seeds_for(f):
                    for m in self.methods:
                        scratch = self.is_scratch(m)
                        cells += [Cell("finetune", m, s, seed, f, pretrain_seed=None if scratch else p)
                                  for p in ([None] if scratch else pseeds)]
        for s in self.split_seeds:  # split-major: the runner builds each split's rows once
            cells += [Cell("baseline", b, s) for b in self.label_free_baselines]
            if "item_mean" in self.baselines:
                cells += [Cell("baseline", "item_mean", s, seed, f) for f in self.label_fractions
                          if s in self.split_seeds_for(f) for seed in self.seeds_for(f)]
        return cells

    def seeds_for(self, fraction: float) -> list[int]:
        """The fine-tuning seeds run at a label fraction (``fraction_seeds``, else every seed)."""
        return self.fraction_seeds.get(float(fraction), self.seeds)

    def split_seeds_for(self, fraction: float) -> list[int]:
        """The user splits fine-tuned at a label fraction (``fraction_split_seeds``, else every split)."""
        return self.fraction_split_seeds.get(float(fraction), self.split_seeds)


def method_objective(method: str, settings: dict | None) -> str:
    """The pre-training objective of a method: its ``objective``, its ``recipe``'s, or its name."""
    settings = settings or {}
    return settings.get("objective", RECIPE_OBJECTIVES.get(settings.get("recipe"), method))


__all__ = ["Cell", "ExperimentSpec", "NO_PRETRAINING", "RECIPE_OBJECTIVES", "method_objective"]
