"""Compare two grids cell by cell: the same method, user split, fine-tuning seed and label fraction in each.

Two grids that differ in one setting for every method (e.g. ``experiments/movielens_ctr_plm.yaml`` and its word-
encoder twin ``experiments/movielens_ctr_word.yaml``) share their splits and seeds, so each fine-tuning cell of one
has a twin in the other. :func:`compare_grids` pairs them and tests the difference (A - B) per method and label
fraction with :func:`~userbert_hf.experiments.statistics.clustered_comparison`: pairs are averaged over the
fine-tuning seeds within each (pre-training seed, split) cluster, and the test runs over the clusters.

Command line (the table in markdown)::

    python -m userbert_hf.experiments.compare A/results.jsonl B/results.jsonl --names plm word [--metric auc]
    # --section docs/results/NAME/section.md: also write it as a section of docs/results.md and rebuild that page

Example:
    >>> a = [{"kind": "finetune", "method": "none", "split_seed": s, "seed": 1, "fraction": 1.0,
    ...       "metrics": {"auc": 0.60 + s / 100}} for s in range(3)]
    >>> b = [dict(r, metrics={"auc": r["metrics"]["auc"] - 0.02}) for r in a]
    >>> [(row["method"], row["n"], round(row["mean_difference"], 3)) for row in compare_grids(a, b, "auc")]
    [('none', 3, 0.02)]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .statistics import clustered_comparison


def read_records(path: str | Path) -> list[dict]:
    """The records of a grid's ``results.jsonl`` (a line that is not JSON is an error naming the file and line)."""
    records = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not a JSON record ({error.msg})") from None
    return records


def join_grids(paths: list[str | Path]) -> list[dict]:
    """The records of several grids as one (rows run as separate grids on the same splits and seeds). A fine-tuning
    cell (method, label fraction, pre-training seed, split, seed) found in two grids must hold the same numbers, its
    timings aside (a reproduced scratch run counts once); two different values are an error naming both files. (The
    validation figures are compared only when both records are of the same kind: the kept model's, or a record
    older than that field's last in-training evaluation.)"""
    records, seen = [], {}
    for path in paths:
        for record in read_records(path):
            if record.get("kind") == "finetune":
                key = tuple(record.get(k) for k in ("method", "fraction", "pretrain_seed", "split_seed", "seed"))
                numbers = (_measured(record.get("metrics") or {}),
                           [_measured(entry) for entry in record.get("validation") or []],
                           bool(record.get("validation_of_kept_model")))
                if key in seen:
                    earlier = seen[key][1]
                    # a record from before the kept model's validation was recorded holds another evaluation
                    same_validation = earlier[1] == numbers[1] or earlier[2] != numbers[2]
                    if earlier[0] != numbers[0] or not same_validation:
                        raise ValueError(f"{path} and {seen[key][0]} both hold fine-tuning cell {key} (method, "
                                         "fraction, pre-training seed, split, seed) with different numbers")
                    continue
                seen[key] = (path, numbers)
            records.append(record)
    return records


def _measured(metrics: dict) -> dict:
    """``metrics`` without the timings (``runtime``, ``*_per_second``), which differ between two runs of one cell."""
    return {k: v for k, v in metrics.items() if not (k.endswith("runtime") or k.endswith("_per_second"))}


def _cells(records: list[dict], metric: str, split: str = "test") -> dict[tuple, float]:
    """``(method, fraction, pretrain_seed, split, seed) -> metric`` of the finished fine-tuning cells on ``split``
    (``"test"``, or ``"validation"``: :func:`~userbert_hf.experiments.report.record_metric`)."""
    from .report import record_metric

    cells = {}
    for r in records:
        value = record_metric(r, metric, split) if r.get("kind") == "finetune" else None
        if value is not None:
            cells[(r["method"], float(r["fraction"]), r.get("pretrain_seed"), r["split_seed"], r["seed"])] = float(value)
    return cells


def compare_grids(records_a: list[dict], records_b: list[dict], metric: str, split: str = "test",
                  methods: tuple[str, str] | None = None, scratch_seeds: list[int] | None = None) -> list[dict]:
    """Per method and label fraction present in both grids: the clustered comparison of A against B over the
    cells the two share, as dicts (``method``, ``fraction``, ``n`` clusters, ``pairs``, means, ``mean_difference``,
    ``ci_low``, ``ci_high``, ``t_pvalue``, ``wilcoxon_pvalue``, ``wins``, ...). Cells without a twin are left out
    and counted in ``unpaired``.

    ``methods=(m_a, m_b)`` compares method ``m_a`` of grid A with method ``m_b`` of grid B instead (e.g. two
    recipes run as two grids on the same splits and seeds, or one grid against its own scratch runs); a B cell
    that was not pre-trained (pre-training seed None) pairs with A's cell of every pre-training seed, as in the
    grid reports. ``m_a = "*"``: every method of A other than ``m_b``, one row each.

    ``scratch_seeds=[s1, s2, ...]`` (with ``methods``) gives every pre-trained cluster scratch cells of its own
    instead: A's cell of the i-th of its pre-training seeds and the j-th of its fine-tuning seeds (both in ascending
    order, counted from 0, per method and fraction) on a split pairs with B's not-pre-trained cell of fine-tuning
    seed ``s_k``, ``k = i * (number of A's fine-tuning seeds) + j``, on that split. With one fine-tuning seed the
    i-th pre-training seed takes ``s_i``; with fine-tuning seeds 1-3 and pre-training seeds 8-10, seed 8's cells
    take ``s_1..s_3``, seed 9's ``s_4..s_6``. So scratch's own seed spread is in the test, and no scratch cell is
    shared by two clusters (a (pre-training seed, split) cluster averages its own pairs).
    """
    a, b = _cells(records_a, metric, split), _cells(records_b, metric, split)
    if methods is not None:
        m_a, m_b = methods
        names = sorted({k[0] for k in a} - {m_b}) if m_a == "*" else [m_a]
        return [row for name in names for row in _compare_methods(a, b, name, m_b, scratch_seeds)]
    if scratch_seeds:
        raise ValueError("scratch_seeds pairs a method of grid A with a scratch method of grid B: name both methods")
    rows = []
    for method, fraction in sorted({k[:2] for k in a} & {k[:2] for k in b}):
        keys_a = {k for k in a if k[:2] == (method, fraction)}
        keys_b = {k for k in b if k[:2] == (method, fraction)}
        shared = sorted(keys_a & keys_b, key=str)
        pairs = [(k[2], k[3], a[k], b[k]) for k in shared]
        comparison = clustered_comparison(pairs).to_dict()
        rows.append({"method": method, "fraction": fraction, **comparison,
                     "unpaired": len(keys_a ^ keys_b)})
    return rows


def _compare_methods(a: dict, b: dict, m_a: str, m_b: str, scratch_seeds: list[int] | None = None) -> list[dict]:
    """Method ``m_a`` of cells ``a`` against ``m_b`` of cells ``b``, per label fraction (see compare_grids)."""
    rows = []
    for fraction in sorted({k[1] for k in a if k[0] == m_a} & {k[1] for k in b if k[0] == m_b}):
        pairs, unpaired = [], 0
        keys = sorted((k for k in a if k[:2] == (m_a, fraction)), key=str)
        pretrain_seeds = sorted({k[2] for k in keys if k[2] is not None})
        finetune_seeds = sorted({k[4] for k in keys if k[2] is not None})
        if scratch_seeds and len(pretrain_seeds) * len(finetune_seeds) > len(scratch_seeds):
            raise ValueError(f"method {m_a!r} at {fraction:g} of the labels has {len(pretrain_seeds)} pre-training "
                             f"seeds {pretrain_seeds} x {len(finetune_seeds)} fine-tuning seeds {finetune_seeds}, "
                             f"but scratch_seeds names only {len(scratch_seeds)}: {list(scratch_seeds)}")
        for key in keys:
            _, _, pseed, split_seed, seed = key
            if scratch_seeds and pseed is not None:  # the (i, j)-th (pre-training, fine-tuning) seed's own scratch
                own = pretrain_seeds.index(pseed) * len(finetune_seeds) + finetune_seeds.index(seed)
                other = b.get((m_b, fraction, None, split_seed, scratch_seeds[own]))
            else:
                other = b.get((m_b, fraction, pseed, split_seed, seed), b.get((m_b, fraction, None, split_seed, seed)))
            if other is None:
                unpaired += 1
            else:
                pairs.append((pseed, split_seed, a[key], other))
        if pairs:
            rows.append({"method": f"{m_a} vs {m_b}", "fraction": fraction, **clustered_comparison(pairs).to_dict(),
                         "unpaired": unpaired})
    return rows


def markdown_table(rows: list[dict], names: tuple[str, str], metric: str) -> str:
    """The comparison as a markdown table."""
    a, b = names
    lines = [f"| method | labels | clusters (pairs) | {a} {metric} | {b} {metric} | {a} - {b} | 95% CI | t-test p | "
             f"Wilcoxon p | {a} wins |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['fraction']:.0%} | {r['n']} ({r['pairs']}) | {r['mean_a']:.4f} | "
                     f"{r['mean_b']:.4f} | {r['mean_difference']:+.4f} | [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] | "
                     f"{r['t_pvalue']:.3f} | {r['wilcoxon_pvalue']:.3f} | {r['wins']}/{r['n']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results_a", help="results.jsonl of grid A")
    parser.add_argument("results_b", help="results.jsonl of grid B (the same splits and seeds)")
    parser.add_argument("--join_a", nargs="+", default=[], metavar="RESULTS",
                        help="more grids whose cells join grid A (rows run as separate grids on the same splits and "
                             "seeds); a cell in two of them must hold the same numbers")
    parser.add_argument("--join_b", nargs="+", default=[], metavar="RESULTS", help="the same for grid B")
    parser.add_argument("--names", nargs=2, default=("A", "B"), help="names of the two grids in the table")
    parser.add_argument("--metric", default="auc", help="fine-tuning metric (auc, ndcg@10, ...)")
    parser.add_argument("--split", default="test", choices=("test", "validation"),
                        help="compare the test metrics (of confirmation runs) or the runs' last validation values")
    parser.add_argument("--methods", nargs=2, default=None, metavar=("METHOD_A", "METHOD_B"),
                        help="compare METHOD_A of grid A with METHOD_B of grid B (default: each method with its "
                             "namesake); METHOD_A '*' = every other method of grid A, e.g. '* none' with A = B "
                             "gives every pre-trained method against scratch")
    parser.add_argument("--scratch_seeds", nargs="+", type=int, default=None, metavar="SEED",
                        help="with --methods A_METHOD SCRATCH_METHOD: A's cell of its i-th pre-training seed "
                             "and j-th fine-tuning seed (ascending, from 0) pairs with the scratch cell of "
                             "fine-tuning seed SEED_k, k = i * (A's number of fine-tuning seeds) + j, on the same "
                             "split, so every (pre-training seed, split) cluster has scratch cells of its own")
    parser.add_argument("--fractions", nargs="+", type=float, default=None, metavar="FRACTION",
                        help="compare only these label fractions (e.g. 0.1 where grid B's scratch row of that "
                             "fraction is another method than at 1.0)")
    parser.add_argument("--section", default=None,
                        help="also write the table as docs/results/NAME/section.md (a section of the results page "
                             "next to that folder's parent) and rebuild the page")
    args = parser.parse_args(argv)
    try:
        records_a, records_b = join_grids([args.results_a, *args.join_a]), join_grids([args.results_b, *args.join_b])
    except (OSError, ValueError) as error:  # a missing file, a bad line, two grids that disagree: a usage error
        parser.error(str(error))
    if args.scratch_seeds and not args.methods:
        parser.error("--scratch_seeds needs --methods METHOD_A SCRATCH_METHOD")
    try:
        rows = compare_grids(records_a, records_b, args.metric, args.split,
                             tuple(args.methods) if args.methods else None, args.scratch_seeds)
    except ValueError as error:
        parser.error(str(error))
    if args.fractions:
        rows = [r for r in rows if any(abs(r["fraction"] - f) < 1e-9 for f in args.fractions)]
    if not rows:
        parser.error(f"no method and label fraction has {args.split} {args.metric!r} in both "
                     f"{' + '.join([args.results_a, *args.join_a])} and {' + '.join([args.results_b, *args.join_b])}"
                     + (f" for methods {args.methods}" if args.methods else "")
                     + (f" at label fractions {args.fractions}" if args.fractions else ""))
    table = markdown_table(rows, tuple(args.names), args.metric)
    print(table)
    if args.section:
        write_section(Path(args.section), table, args, argv)
    return table


def write_section(path: Path, table: str, args, argv: list[str] | None) -> Path:
    """``path`` (``<docs>/results/<name>/section.md``): the comparison as a section of ``<docs>/results.md``,
    which is rebuilt from every section."""
    import shlex
    import sys

    from .report import rebuild_page

    given = sys.argv[1:] if argv is None else argv
    a, b = args.names
    grid_a, grid_b = " + ".join([args.results_a, *args.join_a]), " + ".join([args.results_b, *args.join_b])
    text = (f"## {path.parent.name}: {a} against {b}, cell by cell\n\n"
            f"Command: `python -m userbert_hf.experiments.compare {' '.join(shlex.quote(x) for x in given)}`\n\n"
            f"{args.split.capitalize()} {args.metric} of "
            + (f"{'every method' if args.methods[0] == '*' else 'method ' + args.methods[0]} in grid A ({grid_a}) "
               f"against {args.methods[1]} in grid B "
               f"({grid_b}), paired " if args.methods else
               f"each method in grid A ({grid_a}) and its namesake in grid B ({grid_b}), paired ")
            + ("by user split, label fraction and pre-training seed, the (pre-training seed, fine-tuning seed) "
               "cells in ascending order with the scratch runs of fine-tuning seed "
               f"{', '.join(map(str, args.scratch_seeds))} in that order (every cluster has scratch runs of its "
               "own); pairs are averaged over fine-tuning seeds "
               if getattr(args, "scratch_seeds", None) else
               "by user split, fine-tuning seed, label fraction and pre-training seed (a scratch run pairs with "
               "every pre-training seed); pairs are averaged over fine-tuning seeds ")
            + "within each (pre-training seed, split) cluster and the tests run over the clusters (Student-t 95% "
            "interval, paired t-test and Wilcoxon p-values).\n\n" + table + "\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    rebuild_page(path.parent.parent.parent / "results.md")
    return path


if __name__ == "__main__":
    main()
