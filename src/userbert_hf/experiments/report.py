"""The report of an experiment grid: tables with means, paired differences, confidence intervals and p-values,
plots (matplotlib, Agg), the Markdown page ``docs/results.md`` and the reference models' cards.

Each experiment writes its section to ``<report dir>/results/<name>/section.md`` with its plots beside it;
``docs/results.md`` is rebuilt from every section there, so the MovieLens and Beauty grids share one page.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from ..finetuning.registry import get_task  # noqa: E402
from .spec import NO_PRETRAINING, ExperimentSpec  # noqa: E402
from .statistics import clustered_comparison, mean_confidence_interval  # noqa: E402

ALPHA = 0.05
# Held-out pre-training metrics (``pretraining.evaluation``); each may come with ``eval_init_<name>``, the same
# architecture at initialisation.
HEALTH_KEYS = ("eval_embedding_participation_ratio", "eval_embedding_mean_cosine", "eval_knn_recall_at_20",
               "eval_mbp_accuracy", "eval_bsm_accuracy")


# ----------------------------------------------------------------------------------------------
# Collecting values
# ----------------------------------------------------------------------------------------------
def record_metric(record: dict, metric: str, split: str = "test") -> float | None:
    """A cell's ``metric`` on ``split``: ``"test"`` reads the record's metrics (the split the grid evaluated);
    ``"validation"`` the validation evaluation a fine-tuning run recorded (``eval_<metric>``): the kept and tested
    model's (``validation_of_kept_model``; with early stopping the best validated checkpoint). Confirmation records
    written before that field existed hold their last in-training evaluation instead, a later model than the one
    kept under early stopping (a development run's last evaluation always was the kept model's). None when absent.

    Example:
        >>> record = {"metrics": {"auc": 0.61}, "validation": [{"eval_auc": 0.58, "epoch": 6.0}]}
        >>> record_metric(record, "auc"), record_metric(record, "auc", "validation")
        (0.61, 0.58)
    """
    if split == "validation":
        entries = record.get("validation") or []
        return entries[-1].get(f"eval_{metric}") if entries else None
    return (record.get("metrics") or {}).get(metric)


def metric_values(records: list[dict], metric: str, split: str = "test") -> dict[tuple, float]:
    """``{(method, split_seed, seed, fraction, pretrain_seed): value}`` of fine-tuning and baseline cells
    (``pretrain_seed`` is ``None`` for scratch runs, baselines and grids without ``pretrain_seeds``);
    ``split="validation"``: the fine-tuning runs' validation values (:func:`record_metric`; baselines have none).

    Label-free baselines (one cell per split) are repeated over every seed and fraction so that they pair with
    the fine-tuned runs of the same split.
    """
    values, label_free = {}, []
    for record in records:
        value = record_metric(record, metric, split)
        if record["kind"] not in ("finetune", "baseline") or value is None:
            continue
        if record["kind"] == "baseline" and record.get("fraction") is None:
            label_free.append((record["method"], record["split_seed"], float(value)))
        else:
            values[(record["method"], record["split_seed"], record["seed"], record["fraction"],
                    record.get("pretrain_seed"))] = float(value)
    keys = {(s, seed, f) for (_, s, seed, f, _) in values}
    for method, split_seed, value in label_free:
        for s, seed, f in keys:
            if s == split_seed:
                values[(method, s, seed, f, None)] = value
    return values


def paired(values: dict[tuple, float], a: str, b: str, fraction: float):
    """``a`` against ``b`` at ``fraction``: runs pair on (split, fine-tuning seed) and, when both were pre-trained,
    the pre-training seed (a scratch run pairs with every pre-training seed's run); the test is over
    (pre-training seed, split) clusters, each averaged over its fine-tuning seeds
    (:func:`~userbert_hf.experiments.statistics.clustered_comparison`)."""
    pairs = []
    for (method, split, seed, f, pseed), value in sorted(values.items(), key=lambda kv: str(kv[0])):
        if method != a or f != fraction:
            continue
        other = values.get((b, split, seed, f, pseed), values.get((b, split, seed, f, None)))
        if other is not None:
            pairs.append((pseed, split, value, other))
    return clustered_comparison(pairs)


def _fmt(x: float, digits: int = 4) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _p(x: float) -> str:
    return "n/a" if not math.isfinite(x) else ("<0.001" if x < 1e-3 else f"{x:.3f}")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------
def means_table(spec: ExperimentSpec, values: dict, metric: str) -> str:
    """Mean test metric with its 95% CI per method (rows) and label fraction (columns)."""
    header = ["method"] + [f"{f:.0%} labels" for f in sorted(spec.label_fractions)]
    rows = []
    for method in list(spec.methods) + list(spec.baselines):
        row = [method if method in spec.methods else f"{method} (baseline)"]
        for fraction in sorted(spec.label_fractions):
            sample = [v for k, v in values.items() if k[0] == method and k[3] == fraction]
            if method in spec.label_free_baselines:  # one value per split, repeated over seeds
                sample = [v for k, v in values.items() if k[0] == method and k[3] == fraction and
                          k[2] == spec.seeds_for(fraction)[0]]
            mean, low, high = mean_confidence_interval(sample)
            row.append(f"{_fmt(mean)} [{_fmt(low)}, {_fmt(high)}] (n={len(sample)})" if sample else "n/a")
        rows.append(row)
    return _table(header, rows)


def comparison_rows(spec: ExperimentSpec, values: dict, pairs: list[tuple[str, str]]) -> list[dict]:
    rows = []
    for a, b in pairs:
        for fraction in sorted(spec.label_fractions):
            c = paired(values, a, b, fraction)
            if c.n:
                rows.append({"a": a, "b": b, "fraction": fraction, **c.to_dict()})
    return rows


def comparison_table(rows: list[dict]) -> str:
    """One row per comparison; ``n`` counts (pre-training seed x split) clusters, ``pairs`` the runs behind them;
    the two spreads are the standard deviations of the gain over pre-training seeds and over fine-tuning seeds."""
    header = ["comparison", "labels", "n clusters (pre-training seeds x splits)", "pairs", "mean A", "mean B",
              "A - B", "95% CI", "t-test p", "Wilcoxon p", "A wins", "sd over pre-training seeds",
              "sd over fine-tuning seeds"]
    body = [[f"{r['a']} vs {r['b']}", f"{r['fraction']:.0%}",
             f"{r['n']} ({r.get('pretrain_seeds', '?')} x {r.get('splits', '?')})", str(r.get("pairs", r["n"])),
             _fmt(r["mean_a"]), _fmt(r["mean_b"]), f"{r['mean_difference']:+.4f}",
             f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]", _p(r["t_pvalue"]), _p(r["wilcoxon_pvalue"]),
             f"{r['wins']}/{r['n']}", _fmt(r.get("pretrain_seed_sd", math.nan)),
             _fmt(r.get("finetune_seed_sd", math.nan))] for r in rows]
    return _table(header, body)


def verdict(row: dict, metric: str, split: str = "test") -> str:
    """One honest sentence per comparison: significant only when both tests say p < 0.05."""
    both = row["t_pvalue"] < ALPHA and row["wilcoxon_pvalue"] < ALPHA
    direction = "better than" if row["mean_difference"] > 0 else "worse than"
    if metric == "logloss":
        direction = "worse than" if row["mean_difference"] > 0 else "better than"
    stats_text = (f"mean difference {row['mean_difference']:+.4f}, 95% CI [{_fmt(row['ci_low'])}, "
                  f"{_fmt(row['ci_high'])}], n = {row['n']} clusters of {row.get('pairs', row['n'])} pairs, t-test p = {_p(row['t_pvalue'])}, Wilcoxon p = "
                  f"{_p(row['wilcoxon_pvalue'])}")
    head = f"- {row['fraction']:.0%} labels, {row['a']} vs {row['b']} ({split} {metric}):"
    if both:
        return f"{head} {row['a']} is **{direction}** {row['b']} ({stats_text})."
    return f"{head} no significant difference ({stats_text})."


def pretraining_table(records: list[dict]) -> str:
    rows = []
    for record in records:
        if record["kind"] != "pretrain":
            continue
        metrics = record.get("metrics") or {}
        shown = {k: v for k, v in metrics.items() if k.endswith(("_loss", "_accuracy")) or k in HEALTH_KEYS
                 or k.startswith(("eval_embedding", "eval_init_", "eval_knn", "eval_popularity"))}
        rows.append([record["method"], "shared" if record["split_seed"] is None else str(record["split_seed"]), f"{record['seconds']:.0f}",
                     ", ".join(f"{k} {v:.4g}" for k, v in sorted(shown.items())) or "-"])
    return _table(["method", "split", "seconds", "final metrics"], rows) if rows else "No pre-training runs."


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------
def plot_pretraining_curves(records: list[dict], path: Path) -> bool:
    curves = [(r["method"], r["split_seed"], r.get("log_history") or []) for r in records if r["kind"] == "pretrain"]
    keys = sorted({k for _, _, h in curves for e in h for k in e if k.endswith("_loss") and not k.startswith("eval_")
                   and k != "train_loss"} | ({"loss"} if any("loss" in e for _, _, h in curves for e in h) else set()))
    if not keys:
        return False
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    colours = {}
    for ax, key in zip(axes[0], keys):
        for method, split_seed, history in curves:
            points = [(e["step"], e[key]) for e in history if key in e and "step" in e]
            if points:
                colour = colours.setdefault(method, f"C{len(colours)}")
                ax.plot(*zip(*points), color=colour, alpha=0.8, label=method if split_seed == curves[0][1] else None)
        ax.set_title(key)
        ax.set_xlabel("step")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_health(records: list[dict], path: Path) -> bool:
    curves = [(r["method"], r["split_seed"], r.get("log_history") or []) for r in records if r["kind"] == "pretrain"]
    keys = [k for k in HEALTH_KEYS if any(k in e for _, _, h in curves for e in h)]
    if not keys:
        return False
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    colours = {}
    for ax, key in zip(axes[0], keys):
        for method, split_seed, history in curves:
            points = [(e["step"], e[key]) for e in history if key in e and "step" in e]
            if points:
                colour = colours.setdefault(method, f"C{len(colours)}")
                ax.plot(*zip(*points), "o-", color=colour, alpha=0.8,
                        label=method if split_seed == curves[0][1] else None)
            reference = "eval_init_" + key.removeprefix("eval_")
            at_init = [e[reference] for e in history if reference in e]
            if at_init:
                ax.axhline(at_init[-1], color="grey", linestyle="--", linewidth=0.8)
        ax.set_title(key.removeprefix("eval_"))
        ax.set_xlabel("step")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_gain(spec: ExperimentSpec, values: dict, metric: str, path: Path, split: str = "test") -> bool:
    methods = spec.pretrained_methods
    if NO_PRETRAINING not in spec.methods or not methods:
        return False
    series = {}
    for method in methods:
        rows = [(f, paired(values, method, NO_PRETRAINING, f)) for f in sorted(spec.label_fractions)]
        rows = [(f, c) for f, c in rows if c.n]
        if rows:
            series[method] = rows
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for offset, (method, rows) in enumerate(series.items()):
        x = np.array([f for f, _ in rows]) * (1 + 0.04 * (offset - (len(series) - 1) / 2))
        y = np.array([c.mean_difference for _, c in rows])
        err = np.array([[c.mean_difference - c.ci_low, c.ci_high - c.mean_difference] for _, c in rows]).T
        ax.errorbar(x, y, yerr=np.nan_to_num(err), fmt="o-", capsize=3, label=method)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xticks(sorted(spec.label_fractions), [f"{f:.0%}" for f in sorted(spec.label_fractions)])
    ax.set_xlabel("share of labelled training users")
    ax.set_ylabel(f"{split} {metric}: pre-trained - scratch")
    ax.set_title("Gain of pre-training (mean, 95% CI)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------
def machine_description() -> str:
    import torch
    import transformers

    return (f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPU cores, torch "
            f"{torch.__version__}, transformers {transformers.__version__}")


def evaluated_split(records: list[dict]) -> str:
    """``"validation"`` when the grid's runs evaluated validation only (a development run), else ``"test"``
    (confirmations, and runs made before the protocol, which always computed test metrics)."""
    tuned = [r for r in records if r.get("kind") in ("finetune", "baseline")]
    return "validation" if tuned and all(r.get("evaluated_on") == "validation" for r in tuned) else "test"


def protocol_line(records: list[dict], protocol: dict | None) -> str:
    """The protocol sentence of a section: development or confirmation, the grid's hash, and whether test numbers
    of that grid were seen before it was frozen."""
    if protocol is None or evaluated_split(records) == "test" and protocol.get("mode") != "confirmation":
        return ("Protocol: none (runs made before the frozen protocol: test metrics were computed during "
                "development, so settings may have been chosen with them in view).")
    where = f"grid `{protocol['hash']}` (config file + code `{protocol.get('code', 'unknown')}`)"
    if protocol["mode"] == "development":
        return (f"Protocol: development run of {where}: validation metrics only; the test split was not evaluated.")
    confirmations = protocol.get("confirmations") or []
    text = f"Protocol: confirmation of the frozen {where}; test metrics computed once. "
    if len(confirmations) <= 1:
        return text + "No test number of this grid was seen before it was frozen (first confirmation of this hash)."
    started = ", ".join(c.get("started", "?") for c in confirmations)
    if all(c.get("test_cells_done") == 0 for c in confirmations[1:]):  # the earlier ones computed no test number
        return text + (f"No test number of this grid was seen before it was frozen: {len(confirmations)} "
                       f"confirmations of this hash were started ({started}), and each earlier one stopped before "
                       "its first test number.")
    return text + (f"Test numbers of this grid WERE seen before: {len(confirmations)} confirmations of this hash "
                   f"(started {started}); only the first is a first look.")


def experiment_section(spec: ExperimentSpec, records: list[dict], report_dir: Path, command: str,
                       protocol: dict | None = None) -> str:
    """The Markdown section of one experiment; plots go to ``report_dir/results/<name>/``. ``protocol`` (from
    the runner: mode, hash, confirmations) gives the protocol line; development runs show validation only."""
    task = get_task(spec.task)
    split = evaluated_split(records)
    metric = task.primary_metric
    figures = report_dir / "results" / spec.name
    figures.mkdir(parents=True, exist_ok=True)
    values = metric_values(records, metric)
    total = len(spec.cells())
    finished = {r["cell"] for r in records}
    seconds = sum(r.get("seconds") or 0 for r in records)
    pretrained = spec.pretrained_methods
    vs_scratch = comparison_rows(spec, values, [(m, NO_PRETRAINING) for m in pretrained + spec.scratch_variants]
                                 if NO_PRETRAINING in spec.methods else [])
    among = comparison_rows(spec, values, [("userbert", m) for m in pretrained if m != "userbert"]
                            if "userbert" in pretrained else [])
    best_baseline = [(b, NO_PRETRAINING) for b in spec.baselines] if NO_PRETRAINING in spec.methods else []
    vs_baselines = comparison_rows(spec, values, best_baseline)
    lines = [
        f"## {spec.name}: {task.hub_task_name} on `{spec.data}`",
        "",
        spec.description.strip(),
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine_description()}  ",
        "Code (git commit of the runs): " + ", ".join(sorted({str(r.get("code", "not recorded")) for r in records}))
        + "  ",
        f"Generated: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {len(finished & {c.cell_id for c in spec.cells()})}"
        f"/{total} cells finished, {seconds / 60:.1f} minutes of compute.",
        "",
        protocol_line(records, protocol),
        "",
        f"Primary metric: {split} **{metric}** (higher is better). Paired runs share the user split, the "
        "fine-tuning seed and the label fraction (the same labelled users) and, between two pre-trained methods, "
        "the pre-training seed; a scratch run pairs with the run of every pre-training seed; label-free baselines "
        "pair with every run of their split. Pairs that share a pre-trained model are averaged over fine-tuning "
        "seeds within each (pre-training seed, split) cluster, and the tests run over those clusters. Intervals are "
        "Student-t 95% intervals over the clusters; p-values are two-sided (paired t-test, Wilcoxon signed-rank). A "
        "difference is called significant only when both tests give p < 0.05. (The means table's intervals treat "
        "every run as independent; the comparisons do not.)",
        "",
        f"### {split.capitalize()} {metric}: mean [95% CI over runs] per method and label fraction",
        "",
        means_table(spec, values, metric),
        "",
    ]
    if vs_scratch:
        lines += ["### Against from scratch (`none`), paired", "", comparison_table(vs_scratch), "",
                  *[verdict(r, metric, split) for r in vs_scratch], ""]
    on_validation = (comparison_rows(spec, metric_values(records, metric, "validation"),
                                     [(m, NO_PRETRAINING) for m in pretrained + spec.scratch_variants])
                     if split == "test" and NO_PRETRAINING in spec.methods else [])
    if on_validation:
        lines += ["### The same comparison on validation (what a development run of this grid shows)", "",
                  "The last validation evaluation of each fine-tuning run (the model tested, except under early "
                  "stopping); settings are chosen on these numbers, never on the test ones above.", "",
                  comparison_table(on_validation), ""]
    if among:
        lines += ["### UserBERT vs PTUM and CP (same budget, paired)", "", comparison_table(among), "",
                  *[verdict(r, metric, split) for r in among], ""]
    if vs_baselines:
        lines += ["### Baselines vs from scratch (paired)", "", comparison_table(vs_baselines), ""]
    other = [m for m in task.card_metrics if m != metric]
    if other:
        lines += [f"### Other {split} metrics (mean over runs)", ""]
        header = ["method", "labels"] + list(other)
        rows = []
        for method in list(spec.methods) + list(spec.baselines):
            for fraction in sorted(spec.label_fractions):
                cells = []
                for name in other:
                    sample = [v for k, v in metric_values(records, name).items() if k[0] == method and k[3] == fraction]
                    cells.append(_fmt(float(np.mean(sample))) if sample else "n/a")
                if any(c != "n/a" for c in cells):
                    rows.append([method, f"{fraction:.0%}", *cells])
        lines += [_table(header, rows), ""]
    lines += ["### Pre-training runs", "", pretraining_table(records), ""]
    plots = (
        ("gain.png", "Gain of pre-training against label fraction", plot_gain(spec, values, metric, figures / "gain.png", split)),
        ("pretraining_curves.png", "Pre-training losses",
         plot_pretraining_curves(records, figures / "pretraining_curves.png")),
        ("heldout_health.png", "Held-out health over pre-training steps (dashed: at initialisation)",
         plot_health(records, figures / "heldout_health.png")),
    )
    for name, title, made in plots:
        if made:
            lines += [f"### {title}", "", f"![{title}](results/{spec.name}/{name})", ""]
    if any(r["kind"] == "pretrain" for r in records) and not plots[2][2]:
        lines += ["(The pre-training runs logged no held-out `eval_*` metrics, so there is no health plot.)", ""]
    lines += ["### Settings", "", "```yaml", yaml.safe_dump(spec.to_dict(), sort_keys=False).strip(), "```", ""]
    return "\n".join(lines)


def write_report(spec: ExperimentSpec, records: list[dict], report_path: str | Path, command: str,
                 protocol: dict | None = None) -> Path:
    """Write this experiment's section and rebuild the whole page from every section (sections of earlier grids
    are kept as they were written)."""
    report_path = Path(report_path)
    report_dir = report_path.parent
    section = experiment_section(spec, records, report_dir, command, protocol)
    (report_dir / "results" / spec.name / "section.md").write_text(section)
    return rebuild_page(report_path)


def rebuild_page(report_path: str | Path) -> Path:
    """Rebuild the results page from every ``results/*/section.md`` next to it (e.g. after copying the section
    of a grid run elsewhere into ``docs/results/``)."""
    report_path = Path(report_path)
    sections = sorted((report_path.parent / "results").glob("*/section.md"))
    header = (
        "# Results\n\n<!-- Generated by `userbert experiment CONFIG` (userbert_hf.experiments); do not edit by hand: "
        "rerun the command. -->\n\nEach section below is one experiment grid: pre-training (UserBERT, PTUM, CP) "
        "then fine-tuning, against fine-tuning from scratch and baselines without a user model, over several user "
        "splits and seeds, at several shares of the labels. The numbers are whatever the runs gave.\n\n"
    )
    report_path.write_text(header + "\n".join(p.read_text() for p in sections))
    return report_path


def reference_model_folders(runner, finished_only: bool = True) -> list[Path]:
    """The reference models of a grid (first split: each pre-trained model, and each method fine-tuned on all labels
    with the first seed); with ``finished_only``, those whose runs have finished."""
    spec = runner.spec
    folders = [runner.pretrained_dir(m, spec.split_seeds[0], spec.effective_pretrain_seeds[0])
               for m in spec.pretrained_methods if spec.pretraining_owner(m) == m]  # or the shared one
    folders += [runner.run_dir(c) for c in spec.cells() if c.kind == "finetune" and runner.is_reference(c)]
    if not finished_only:
        return folders
    return [f for f in folders if (f / "config.json").exists() and (f / "training_results.json").exists()]


def write_model_cards(runner, cards_dir: str | Path, overwrite: bool = False) -> list[Path]:
    """Cards of the reference models, written by the package's own card code (:mod:`userbert_hf.experiments.cards`):
    no file of the working directory is run."""
    from .cards import write_cards

    folders = reference_model_folders(runner)
    return write_cards(folders, cards_dir, overwrite=overwrite) if folders else []


__all__ = ["metric_values", "paired", "means_table", "comparison_table", "verdict", "write_report", "rebuild_page",
           "write_model_cards", "experiment_section"]
