"""Per-iteration report of a self-training run: Markdown, CSV, JSON and a PNG of validation Dice and pseudo-label
agreement per iteration; the Markdown and JSON also list each case's pseudo-label volume against its reference."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Sequence

from nnunet_gen.io.files import write_text
from nnunet_gen.qc.figures import new_figure, save_png


def _plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Validation Dice and pseudo-label agreement per iteration."""
    figure = new_figure(5, 3.5)
    axes = figure.add_subplot(1, 1, 1)
    for key, name in (("val_dice", "validation Dice"), ("pseudo_agreement", "pseudo-label agreement (Dice)")):
        points = [(row["iteration"], row[key]) for row in rows if row[key] is not None]
        if points:
            axes.plot(*zip(*points), marker="o", label=name)
    axes.set_xlabel("self-training iteration")
    axes.set_ylim(0, 1.02)
    axes.set_xticks([row["iteration"] for row in rows])
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="lower right")
    else:
        axes.text(0.5, 0.5, "no validation set, no previous pseudo-labels yet", ha="center",
                  transform=axes.transAxes)
    axes.grid(alpha=0.3)
    save_png(figure, path)


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _volume_lines(volumes: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Markdown table: iteration, case, pseudo-label volume, reference volume, ratio."""
    lines = ["", "Pseudo-label foreground volume per case (mm3; reference: the pool's labels when given):", "",
             "| iteration | case | pseudo-label | reference | ratio |", "|---|---|---|---|---|"]
    for iteration in sorted(volumes, key=int):
        lines += [f"| {iteration} | {case} | {_cell(row['pseudo_mm3'])} | {_cell(row['reference_mm3'])} | "
                  f"{_cell(row['ratio'])} |" for case, row in sorted(volumes[iteration].items())]
    return lines


def write_selftrain_report(rows: Sequence[dict[str, Any]], config: dict[str, Any], timing: dict[str, float],
                           folder: Path, title: str,
                           volumes: dict[str, dict[str, dict[str, Any]]] | None = None) -> dict[str, Path]:
    """``selftrain_report.{md,csv,json,png}`` in ``folder`` from the per-iteration ``rows``; ``volumes`` is
    iteration -> case -> ``{"pseudo_mm3", "reference_mm3", "ratio"}``."""
    fields = list(rows[0])
    paths = {kind: folder / f"selftrain_report.{kind}" for kind in ("md", "csv", "json", "png")}
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(paths["csv"], buffer.getvalue())
    write_text(paths["json"], json.dumps({"config": config, "iterations": list(rows), "timing": timing,
                                          "volumes_mm3": volumes or {}}, indent=1))
    lines = [f"# {title}", "", "| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    lines += ["| " + " | ".join(_cell(row[f]) for f in fields) + " |" for row in rows]
    total = timing["total_seconds"]
    if total > 0:
        lines += ["", f"Time: {total:.0f} s, of which nnU-Net (training, prediction, preprocessing) "
                      f"{timing['nnunet_seconds']:.0f} s; orchestration "
                      f"{100 * (total - timing['nnunet_seconds']) / total:.1f}%."]
    if any(volumes.values() if volumes else ()):
        lines += _volume_lines(volumes)
    write_text(paths["md"], "\n".join(lines) + "\n")
    _plot(rows, paths["png"])
    return paths
