"""Pseudo-labels from a fold-ensemble prediction: largest component per label, an optional calibrated foreground
threshold (:mod:`nnunet_gen.selftrain.calibration`), optional confidence masking (ignore label) and size-outlier
filtering, and the agreement of two pseudo-label sets (a stop rule)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nnunet_gen.errors import DataError
from nnunet_gen.evaluation.metrics import dice
from nnunet_gen.inference import largest_component_per_label
from nnunet_gen.io.files import write_text
from nnunet_gen.io.images import read_image, write_image
from nnunet_gen.selftrain.calibration import foreground_volume, load_probabilities, threshold_segmentation


def robust_z_scores(values: np.ndarray) -> np.ndarray:
    """Iglewicz-Hoaglin modified z-score ``0.6745 (v - median) / MAD``; zeros when MAD is 0."""
    median = np.median(values)
    mad = np.median(np.abs(values - median))
    return np.zeros_like(values, dtype=float) if mad == 0 else 0.6745 * (values - median) / mad


def size_outliers(volumes: dict[str, float], min_size: float | None, max_size: float | None,
                  size_z: float | None) -> dict[str, str]:
    """Case -> reason, for the cases the size rules drop (see module docstring)."""
    dropped = {}
    cases = sorted(volumes)
    z = robust_z_scores(np.array([volumes[c] for c in cases], dtype=float)) if cases else np.zeros(0)
    for case, score in zip(cases, z):
        volume = volumes[case]
        if min_size is not None and volume < min_size:
            dropped[case] = f"foreground volume {volume:.1f} mm3 < min_size {min_size}"
        elif max_size is not None and volume > max_size:
            dropped[case] = f"foreground volume {volume:.1f} mm3 > max_size {max_size}"
        elif size_z is not None and abs(score) > size_z:
            dropped[case] = f"foreground volume {volume:.1f} mm3 has robust z-score {score:.2f} (|z| > {size_z})"
    return dropped


def make_pseudo_labels(predictions: Path, out: Path, cases: Sequence[str], labels: Sequence[int],
                       file_ending: str, confidence: float | None, ignore_label: int | None,
                       min_size: float | None, max_size: float | None, size_z: float | None,
                       threshold: float | None = None) -> dict[str, Any]:
    """Largest component per label, confidence masking, size filtering; writes kept cases to ``out``.

    ``threshold`` None keeps nnU-Net's argmax segmentation; a value relabels the foreground from the saved
    probabilities (``1 - p(background) >= threshold``, :func:`nnunet_gen.selftrain.calibration.threshold_segmentation`).

    Returns ``{"kept": [...], "dropped": {case: reason}, "volumes_mm3": {...}, "ignored_fraction": {...}}``.
    """
    out.mkdir(parents=True, exist_ok=True)
    volumes, ignored, processed = {}, {}, {}
    for case in cases:
        segmentation, geometry = read_image(predictions / f"{case}{file_ending}", where=f"prediction {case}")
        probabilities = (load_probabilities(predictions / f"{case}.npz", segmentation.shape)
                         if confidence is not None or threshold is not None else None)
        if threshold is None:
            segmentation = largest_component_per_label(segmentation.astype(np.int16), labels)
        else:
            segmentation = threshold_segmentation(probabilities, threshold, labels)
        volumes[case] = foreground_volume(segmentation, labels, geometry.spacing)
        if confidence is not None:
            uncertain = probabilities.max(0) < confidence
            segmentation[uncertain] = ignore_label
            ignored[case] = float(uncertain.mean())
        processed[case] = (segmentation, geometry)
    dropped = size_outliers(volumes, min_size, max_size, size_z)
    kept = [c for c in cases if c not in dropped]
    if not kept:
        raise DataError(str(predictions), f"all {len(cases)} unlabelled cases were dropped by the size filter "
                                          f"(first: {next(iter(dropped.items()))[1]}); relax --min-size/--max-size/"
                                          f"--size-z")
    for case in kept:
        segmentation, geometry = processed[case]
        write_image(segmentation.astype(np.uint8 if segmentation.max() < 256 else np.int16), geometry,
                    out / f"{case}{file_ending}")
    for stale in out.iterdir():
        if stale.name.endswith(file_ending) and stale.name[:-len(file_ending)] in dropped:
            stale.unlink()
    summary = {"kept": kept, "dropped": dropped, "volumes_mm3": volumes, "ignored_fraction": ignored}
    write_text(out / "pseudo_labels.json", json.dumps(summary, indent=1))
    return summary


def pseudo_label_agreement(previous: Path, current: Path, labels: Sequence[int], file_ending: str,
                           ignore_label: int | None) -> float | None:
    """Mean Dice over the cases of both sets and the foreground labels; ignore voxels of either side left out."""
    common = sorted(p.name for p in current.iterdir() if p.name.endswith(file_ending)
                    and (previous / p.name).is_file())
    if not common:
        return None
    scores = []
    for name in common:
        a, _ = read_image(previous / name)
        b, _ = read_image(current / name)
        valid = (a != ignore_label) & (b != ignore_label) if ignore_label is not None else np.ones(a.shape, bool)
        scores += [dice((a == label) & valid, (b == label) & valid) for label in labels]
    return float(np.mean(scores))
