"""Foreground-threshold calibration and volume diagnostics of pseudo-labels (the fix for ensembles that
under-segment a shifted target, and the numbers that show it).

nnU-Net turns the ensemble's softmax into labels by argmax, i.e. a foreground threshold of 0.5 on two classes. Under
domain shift the target probabilities are lower, the pseudo-labels too small, and training on them shrinks the
next model's tumours further. A calibrated threshold ``t`` labels a voxel foreground when ``1 - p(background) >= t``
(the most probable foreground label among those), then keeps the largest component per label, like the default path.
Modes (``SelfTrainConfig.calibrate_threshold``):

- ``dice``: maximise the mean Dice on the labelled cases' fold-validation probabilities (``nnUNetv2_train --npz``;
  each case is predicted by the one fold that did not train on it, which stands in for the ensemble);
- ``volume``: make the predicted foreground volume of those validation cases equal their reference volume;
- ``prior``: make the unlabelled pool's mean pseudo-label volume equal the labelled cases' mean foreground volume
  (a label-proportion prior as in class-balanced self-training; it needs no validation probabilities and is the only
  mode that looks at the target's probabilities, assuming the target's lesions are as large as the source's).

Ties go to the threshold closest to 0.5 (nnU-Net's argmax), so a calibration without evidence changes nothing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_gen.errors import DataError
from nnunet_gen.evaluation.metrics import dice
from nnunet_gen.inference import largest_component_per_label
from nnunet_gen.io.images import read_image

CALIBRATION_MODES = ("dice", "volume", "prior")
#: Candidate foreground thresholds of the calibration.
THRESHOLDS = np.round(np.arange(0.02, 0.99, 0.02), 2)


def threshold_segmentation(probabilities: np.ndarray, threshold: float, labels: Sequence[int]) -> np.ndarray:
    """Foreground where ``1 - p(background) >= threshold``, labelled with the most probable foreground channel, then
    the largest component per label. ``probabilities`` is nnU-Net's ``(channels, *shape)`` softmax."""
    foreground = 1.0 - probabilities[0] >= threshold
    segmentation = np.where(foreground, np.argmax(probabilities[1:], axis=0) + 1, 0).astype(np.int16)
    return largest_component_per_label(segmentation, labels)


def foreground_volume(segmentation: np.ndarray, labels: Sequence[int], spacing: Sequence[float]) -> float:
    """Volume in mm^3 of all foreground labels (the ignore label is not foreground)."""
    return float(np.isin(segmentation, labels).sum() * np.prod(spacing))


def load_probabilities(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """nnU-Net's saved softmax (``<case>.npz``, key ``probabilities``), checked against the label image shape."""
    if not path.is_file():
        raise DataError(path.name, f"probabilities {path} not found (prediction without --save_probabilities?)")
    probabilities = np.load(path)["probabilities"]
    if probabilities.shape[1:] != tuple(shape):
        raise DataError(path.name, f"probabilities {probabilities.shape[1:]} do not match the segmentation {shape}")
    return probabilities


def threshold_curves(probabilities: np.ndarray, labels: Sequence[int], spacing: Sequence[float],
                     reference: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Foreground volume (mm^3) and, with a reference, mean Dice over ``labels`` for every candidate threshold."""
    volumes, scores = [], []
    for threshold in THRESHOLDS:
        segmentation = threshold_segmentation(probabilities, float(threshold), labels)
        volumes.append(foreground_volume(segmentation, labels, spacing))
        if reference is not None:
            scores.append(np.mean([dice(segmentation == label, reference == label) for label in labels]))
    curves = {"volume": np.array(volumes)}
    if reference is not None:
        curves["dice"] = np.array(scores)
    return curves


def _best(scores: np.ndarray) -> float:
    """Threshold with the highest score; ties to the one closest to 0.5."""
    candidates = np.flatnonzero(np.isclose(scores, scores.max()))
    return float(THRESHOLDS[candidates[np.argmin(np.abs(THRESHOLDS[candidates] - 0.5))]])


def threshold_for_volume(volume_curve: np.ndarray, target_volume: float) -> float:
    """Threshold whose (summed or mean) volume curve comes closest to ``target_volume``."""
    return _best(-np.abs(volume_curve - target_volume))


def calibrate_on_validation(folders: Sequence[Path], reference_folder: Path, labels: Sequence[int],
                            file_ending: str, mode: str) -> float:
    """``dice`` or ``volume`` threshold from the fold-validation probabilities (``<case>.npz``) in ``folders``,
    scored against ``reference_folder/<case><file_ending>``."""
    dice_curves, volume_sum, reference_sum = [], np.zeros(len(THRESHOLDS)), 0.0
    for folder in folders:
        for path in sorted(folder.glob("*.npz")):
            case = path.name[:-len(".npz")]
            reference, geometry = read_image(reference_folder / f"{case}{file_ending}", where=f"reference {case}")
            curves = threshold_curves(load_probabilities(path, reference.shape), labels, geometry.spacing, reference)
            dice_curves.append(curves["dice"])
            volume_sum += curves["volume"]
            reference_sum += foreground_volume(reference, labels, geometry.spacing)
    if not dice_curves:
        raise DataError(", ".join(map(str, folders)), "no validation probabilities (<case>.npz) to calibrate on")
    if mode == "dice":
        return _best(np.mean(dice_curves, axis=0))
    return threshold_for_volume(volume_sum, reference_sum)


def pool_volume_curve(predictions: Path, cases: Sequence[str], labels: Sequence[int], file_ending: str) -> np.ndarray:
    """Mean pseudo-label foreground volume (mm^3) of the pool for every candidate threshold (``prior`` mode)."""
    curves = []
    for case in cases:
        segmentation, geometry = read_image(predictions / f"{case}{file_ending}", where=f"prediction {case}")
        probabilities = load_probabilities(predictions / f"{case}.npz", segmentation.shape)
        curves.append(threshold_curves(probabilities, labels, geometry.spacing)["volume"])
    return np.mean(curves, axis=0)


def label_volumes(folder: Path, cases: Sequence[str], labels: Sequence[int], file_ending: str) -> dict[str, float]:
    """Case -> foreground volume (mm^3) of ``folder/<case><file_ending>``; cases without a file are left out."""
    volumes = {}
    for case in cases:
        path = folder / f"{case}{file_ending}"
        if path.is_file():
            segmentation, geometry = read_image(path, where=f"label {case}")
            volumes[case] = foreground_volume(segmentation, labels, geometry.spacing)
    return volumes


def volume_diagnostics(pseudo: dict[str, float], reference: dict[str, float]) -> dict[str, dict[str, float | None]]:
    """Case -> pseudo-label volume, reference volume and their ratio (None without a reference or when it is 0)."""
    rows = {}
    for case, volume in pseudo.items():
        truth = reference.get(case)
        rows[case] = {"pseudo_mm3": volume, "reference_mm3": truth,
                      "ratio": volume / truth if truth else None}
    return rows
