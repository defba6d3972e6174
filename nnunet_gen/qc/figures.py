"""PNG figures people look at, in one style: axial slices through the tumour with label contours, and plots.

Every figure is a matplotlib ``Figure`` on the Agg canvas (no global pyplot state, safe in worker processes), saved
atomically by :func:`save_png`.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nnunet_gen.io.files import write_bytes

DPI = 110
#: Colour of reference contours and of predictions drawn over them.
CONTOUR_COLOURS = ("r", "c")


def new_figure(width: float, height: float) -> Figure:
    """An empty figure of ``width`` x ``height`` inches."""
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, path: str | Path) -> Path:
    """Lay out and write ``figure`` as PNG (atomically)."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    write_bytes(path, buffer.getvalue())
    return Path(path)


def tumour_slice(label: np.ndarray) -> int:
    """Axial index (axis 0) with the most foreground voxels (the middle slice when there is none)."""
    counts = (label > 0).reshape(label.shape[0], -1).sum(1)
    return int(counts.argmax()) if counts.any() else label.shape[0] // 2


Panel = tuple[str, np.ndarray, "np.ndarray | Sequence[np.ndarray] | None"]


def slice_montage(rows: Sequence[Sequence[Panel]], path: str | Path, title: str = "") -> Path:
    """Grid of 2D panels ``(title, image_slice, contours)``; each row shares its intensity window.

    ``contours`` is None, one mask (drawn in red) or a sequence of masks (red, cyan: e.g. reference, prediction).
    """
    n_cols = max(len(r) for r in rows)
    figure = new_figure(2.6 * n_cols, 2.7 * len(rows))
    for r, row in enumerate(rows):
        vmin = min(float(np.percentile(p[1], 1)) for p in row)
        vmax = max(float(np.percentile(p[1], 99.5)) for p in row)
        for c in range(n_cols):
            axes = figure.add_subplot(len(rows), n_cols, r * n_cols + c + 1)
            axes.axis("off")
            if c >= len(row):
                continue
            name, image, contours = row[c]
            axes.imshow(image, cmap="gray", vmin=vmin, vmax=vmax)
            masks = [] if contours is None else [contours] if isinstance(contours, np.ndarray) else list(contours)
            for mask, colour in zip(masks, CONTOUR_COLOURS):
                if mask is not None and mask.any():
                    axes.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=0.8)
            axes.set_title(name, fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    return save_png(figure, path)


def line_plot(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, xlabel: str,
              ylabel: str, title: str = "", reference: dict[str, float] | None = None,
              marker: tuple[float, float] | None = None) -> Path:
    """One line per ``series`` entry (name -> (x, y)), dashed horizontal lines for ``reference`` (name -> y) and
    a star at ``marker`` (x, y), e.g. a validation curve, the baseline's score and the checkpoint kept."""
    figure = new_figure(6.0, 3.6)
    axes = figure.add_subplot(1, 1, 1)
    for name, (x, y) in series.items():
        axes.plot(x, y, marker="o", markersize=3, label=name)
    for (name, y), colour in zip((reference or {}).items(), ("grey", "k", "m")):
        axes.axhline(y, linestyle="--", color=colour, linewidth=1, label=name)
    if marker is not None:
        axes.plot(*marker, marker="*", markersize=12, color="r", linestyle="none", label="kept")
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    if title:
        axes.set_title(title, fontsize=10)
    return save_png(figure, path)
