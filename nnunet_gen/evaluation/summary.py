"""Challenge summaries of per-case rows (mean, worst, 1st..99th percentiles, best: GBA paper Table 3) and the CrossMoDA
ranking (per case and label, methods ranked on Dice and on ASSD; a method's score is the mean of its ranks)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from scipy.stats import rankdata

from nnunet_gen.evaluation.metrics import HIGHER_IS_BETTER, METRIC_UNITS, METRICS, RANKING_METRICS

#: Percentiles reported in the summary (GBA paper, Table 3).
SUMMARY_PERCENTILES: tuple[int, ...] = (1, 5, 25, 50, 75, 95, 99)


def _statistics(values: np.ndarray, higher_is_better: bool) -> dict[str, float]:
    """Mean, sample std, worst, percentiles and best of one metric (GBA paper, Table 3)."""
    stats = {"n": int(values.size), "mean": float(values.mean()),
             "std": float(values.std(ddof=1)) if values.size > 1 else 0.0,
             "worst": float(values.min() if higher_is_better else values.max())}
    for q in SUMMARY_PERCENTILES:
        stats[f"p{q:02d}"] = float(np.percentile(values, q))
    stats["best"] = float(values.max() if higher_is_better else values.min())
    return stats


def summarize(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] = METRICS) -> dict[str, dict[str, Any]]:
    """Per label (as str, for JSON): ``{metric: statistics}`` plus ``"empty"``, the count of each empty flag.

    Percentiles are plain numeric percentiles of the values (numpy linear interpolation), whatever the metric's
    direction: the 1st percentile of ASSD is near its best value. Worst is the minimum for Dice and the maximum for
    distances; std is the sample standard deviation (ddof=1, 0 for a single case).
    """
    summary: dict[str, dict[str, Any]] = {}
    for label in sorted({int(row["label"]) for row in rows}):
        label_rows = [row for row in rows if int(row["label"]) == label]
        entry: dict[str, Any] = {}
        for metric in metrics:
            values = np.asarray([row[metric] for row in label_rows], dtype=float)
            if not np.all(np.isfinite(values)):
                raise ValueError(f"label {label}: {metric} has non-finite values")
            entry[metric] = _statistics(values, HIGHER_IS_BETTER[metric])
        flags: dict[str, int] = {}
        for row in label_rows:
            flags[row["empty"]] = flags.get(row["empty"], 0) + 1
        entry["empty"] = flags
        summary[str(label)] = entry
    return summary


def _rows_by_key(method: str, rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, int], Mapping[str, Any]]:
    indexed: dict[tuple[str, int], Mapping[str, Any]] = {}
    for row in rows:
        key = (str(row["case"]), int(row["label"]))
        if key in indexed:
            raise ValueError(f"method {method!r}: duplicate row for case {key[0]!r}, label {key[1]}")
        indexed[key] = row
    return indexed


def rank_methods(rows_by_method: Mapping[str, Sequence[Mapping[str, Any]]],
                 metrics: Sequence[str] = RANKING_METRICS, tie_method: str = "average") -> list[dict[str, Any]]:
    """CrossMoDA ranking: for every case, label and metric, rank the methods; score = mean of a method's ranks.

    Dice is ranked higher-is-better, distances lower-is-better. Ties get the average rank by default
    (``tie_method`` is passed to ``scipy.stats.rankdata``; the CrossMoDA ranking script used ``"min"``). All methods
    must have rows for the same (case, label) pairs. Returns one flat dict per method, best first: ``position``
    (1 + number of methods with a strictly lower score), ``method``, ``score``, ``n_ranks``, ``mean_rank_<metric>``
    and ``mean_<metric>_<label>``.
    """
    if len(rows_by_method) < 1:
        raise ValueError("no methods to rank")
    methods = list(rows_by_method)
    indexed = {method: _rows_by_key(method, rows) for method, rows in rows_by_method.items()}
    keys = sorted(indexed[methods[0]])
    for method in methods[1:]:
        differing = sorted(set(keys) ^ set(indexed[method]))
        if differing:
            shown = ", ".join(f"{case}/label {label}" for case, label in differing[:10])
            raise ValueError(f"methods {methods[0]!r} and {method!r} were evaluated on different cases/labels "
                             f"({len(differing)} differ: {shown})")
    ranks = {method: {metric: [] for metric in metrics} for method in methods}
    for key in keys:
        for metric in metrics:
            values = np.asarray([indexed[method][key][metric] for method in methods], dtype=float)
            if not np.all(np.isfinite(values)):
                raise ValueError(f"case {key[0]!r}, label {key[1]}: non-finite {metric} cannot be ranked")
            metric_ranks = rankdata(-values if HIGHER_IS_BETTER[metric] else values, method=tie_method)
            for method, rank in zip(methods, metric_ranks):
                ranks[method][metric].append(float(rank))
    labels = sorted({label for _, label in keys})
    table = []
    for method in methods:
        all_ranks = [rank for metric in metrics for rank in ranks[method][metric]]
        entry: dict[str, Any] = {"method": method, "score": float(np.mean(all_ranks)), "n_ranks": len(all_ranks)}
        for metric in metrics:
            entry[f"mean_rank_{metric}"] = float(np.mean(ranks[method][metric]))
        for metric in metrics:
            for label in labels:
                entry[f"mean_{metric}_{label}"] = float(np.mean(
                    [indexed[method][key][metric] for key in keys if key[1] == label]))
        table.append(entry)
    table.sort(key=lambda entry: (entry["score"], entry["method"]))
    scores = [entry["score"] for entry in table]
    return [{"position": 1 + sum(other < entry["score"] for other in scores), **entry} for entry in table]


def _format_number(value: float, metric: str) -> str:
    return f"{value:.4f}" if metric == "Dice" else f"{value:.3f}"


def _ordinal_suffix(number: int) -> str:
    if number % 100 in (11, 12, 13):
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")


def summary_markdown(summary: Mapping[str, Mapping[str, Any]], metrics: Sequence[str] = METRICS) -> str:
    """One Table-3-style Markdown table per label: statistics as rows, metrics as columns."""
    statistic_names = [("mean", "Mean"), ("std", "Std"), ("worst", "Worst")]
    statistic_names += [(f"p{q:02d}", f"{q}{_ordinal_suffix(q)} perc.") for q in SUMMARY_PERCENTILES]
    statistic_names += [("best", "Best")]
    lines = []
    for label, entry in summary.items():
        n_cases = entry[metrics[0]]["n"]
        lines.append(f"### Label {label} ({n_cases} cases; empty masks: "
                     + ", ".join(f"{flag} {count}" for flag, count in sorted(entry["empty"].items())) + ")")
        lines.append("")
        lines.append("| Statistic | " + " | ".join(m + METRIC_UNITS.get(m, "") for m in metrics) + " |")
        lines.append("|---|" + "---|" * len(metrics))
        for key, name in statistic_names:
            cells = [_format_number(entry[m][key], m) for m in metrics]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def ranking_markdown(ranking: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of ``rank_methods`` output, best first."""
    fields = list(ranking[0])
    lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    for entry in ranking:
        cells = [f"{entry[f]:.4f}" if isinstance(entry[f], float) else str(entry[f]) for f in fields]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
