"""Experiment grids: pre-train -> fine-tune over user splits x seeds x label fractions for UserBERT, PTUM, CP and
no pre-training, plus baselines without a user model, with paired statistics and a generated report.

``userbert experiment experiments/movielens_ctr.yaml`` runs a grid (resumable) and writes ``docs/results.md``.

Modules: ``spec`` (the grid and its cells), ``runner`` (runs and resumes cells), ``baselines`` (popularity,
item mean, BPR matrix factorisation), ``statistics`` (confidence intervals, paired tests), ``report`` (tables,
plots, Markdown, model cards).
"""

from .baselines import BASELINES, ItemMeanBaseline, MatrixFactorization, PopularityBaseline, evaluate_baseline
from .runner import ExperimentRunner, ResultsStore, main
from .spec import Cell, ExperimentSpec
from .statistics import PairedComparison, mean_confidence_interval, paired_comparison

__all__ = [
    "BASELINES",
    "Cell",
    "ExperimentRunner",
    "ExperimentSpec",
    "ItemMeanBaseline",
    "MatrixFactorization",
    "PairedComparison",
    "PopularityBaseline",
    "ResultsStore",
    "evaluate_baseline",
    "main",
    "mean_confidence_interval",
    "paired_comparison",
]
