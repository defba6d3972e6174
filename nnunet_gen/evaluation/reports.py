"""Evaluation reports on disk: per-case CSV, JSON with the summary, Markdown tables and a box plot PNG, all written
atomically."""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from nnunet_gen.evaluation.metrics import METRIC_UNITS, METRICS, ROW_FIELDS
from nnunet_gen.evaluation.summary import ranking_markdown, summarize, summary_markdown
from nnunet_gen.io.files import write_text
from nnunet_gen.qc.figures import new_figure, save_png


def csv_text(rows: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _json_ready(value: Any) -> Any:
    """Plain Python types for ``json.dumps`` (numpy scalars come from user-supplied rows)."""
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _boxplot_png(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], path: Path) -> None:
    """Box plot per metric with one box per label."""
    labels = sorted({int(row["label"]) for row in rows})
    figure = new_figure(4 * len(metrics), 4)
    for index, metric in enumerate(metrics):
        axes = figure.add_subplot(1, len(metrics), index + 1)
        data = [[float(row[metric]) for row in rows if int(row["label"]) == label] for label in labels]
        axes.boxplot(data)
        axes.set_xticks(range(1, len(labels) + 1), [str(label) for label in labels])
        axes.set_xlabel("label")
        axes.set_title(metric + METRIC_UNITS.get(metric, ""))
    save_png(figure, path)


def write_reports(rows: Sequence[Mapping[str, Any]], out_folder: str | os.PathLike,
                  summary: Mapping[str, Any] | None = None, name: str = "evaluation",
                  metrics: Sequence[str] = METRICS, boxplot: bool = True) -> dict[str, Path]:
    """Write ``<name>.csv`` (per case), ``<name>.json`` (cases + summary), ``<name>.md`` and ``<name>_boxplot.png``.

    ``summary`` defaults to ``summarize(rows, metrics)``. Every file is written atomically. Returns the paths by kind.
    """
    if not rows:
        raise ValueError("no rows to report")
    out_folder = Path(out_folder)
    summary = summarize(rows, metrics) if summary is None else summary
    paths = {"csv": out_folder / f"{name}.csv", "json": out_folder / f"{name}.json",
             "markdown": out_folder / f"{name}.md"}
    fields = [f for f in ROW_FIELDS if f in rows[0]] + [f for f in rows[0] if f not in ROW_FIELDS]
    write_text(paths["csv"], csv_text(rows, fields))
    write_text(paths["json"], json.dumps(_json_ready({"cases": list(rows), "summary": summary}), indent=2))
    write_text(paths["markdown"], summary_markdown(summary, metrics))
    if boxplot:
        paths["boxplot"] = out_folder / f"{name}_boxplot.png"
        _boxplot_png(rows, metrics, paths["boxplot"])
    return paths


def write_ranking(ranking: Sequence[Mapping[str, Any]], out_folder: str | os.PathLike,
                  name: str = "ranking") -> dict[str, Path]:
    """Write the ``rank_methods`` table as ``<name>.csv``, ``<name>.json`` and ``<name>.md`` (atomically)."""
    if not ranking:
        raise ValueError("empty ranking")
    out_folder = Path(out_folder)
    paths = {"csv": out_folder / f"{name}.csv", "json": out_folder / f"{name}.json",
             "markdown": out_folder / f"{name}.md"}
    write_text(paths["csv"], csv_text(ranking, list(ranking[0])))
    write_text(paths["json"], json.dumps(_json_ready(list(ranking)), indent=2))
    write_text(paths["markdown"], ranking_markdown(ranking))
    return paths
