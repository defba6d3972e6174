"""Harmonisation metrics of ARHNet Table 1 (section 3.1.3): MAE, fMAE, PSNR and fPSNR on images in [0, 1].

* MAE  = mean |I^ - I| over all voxels of the evaluated image (the paper's 64^3 lesion patches);
* fMAE = the same over the foreground (mask) voxels only;
* PSNR = 10 log10(1 / MSE) with peak 1 (images in [0, 1]); fPSNR uses the MSE over mask voxels only.

Per-case values are averaged over the test set (so the mean PSNR is the mean of per-case PSNRs, which is what makes
the paper's fMAE 0.23 / fPSNR 14.62 pair of "Composite" possible: a single pooled MSE could not give it). (f)PSNR
is capped at :data:`PSNR_CAP_DB` = 60 dB (an RMSE of 0.1% of the range): a foreground restored exactly (e.g. a
saturated one clipped back to its true value) would otherwise give infinity, or 100 dB for a floored MSE, and
dominate a mean over cases.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

METRIC_NAMES: tuple[str, ...] = ("MAE", "fMAE", "PSNR", "fPSNR")
PSNR_CAP_DB = 60.0


def _differences(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {prediction.shape} != target shape {target.shape}")
    return np.asarray(prediction, dtype=np.float64) - np.asarray(target, dtype=np.float64)


def _foreground(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if mask.shape != shape:
        raise ValueError(f"mask shape {mask.shape} != image shape {shape}")
    foreground = mask > 0
    if not foreground.any():
        raise ValueError("foreground metrics need a non-empty mask")
    return foreground


def _psnr(mse: float, data_range: float) -> float:
    if mse <= 0:
        return PSNR_CAP_DB
    return float(min(10.0 * np.log10(data_range ** 2 / mse), PSNR_CAP_DB))


def mae(prediction: np.ndarray, target: np.ndarray) -> float:
    return float(np.abs(_differences(prediction, target)).mean())


def foreground_mae(prediction: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    difference = _differences(prediction, target)
    return float(np.abs(difference[_foreground(mask, difference.shape)]).mean())


def psnr(prediction: np.ndarray, target: np.ndarray, data_range: float = 1.0) -> float:
    return _psnr(float((_differences(prediction, target) ** 2).mean()), data_range)


def foreground_psnr(prediction: np.ndarray, target: np.ndarray, mask: np.ndarray, data_range: float = 1.0) -> float:
    difference = _differences(prediction, target)
    return _psnr(float((difference[_foreground(mask, difference.shape)] ** 2).mean()), data_range)


def harmonization_metrics(prediction: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """The four Table 1 metrics of one case."""
    return {"MAE": mae(prediction, target), "fMAE": foreground_mae(prediction, target, mask),
            "PSNR": psnr(prediction, target), "fPSNR": foreground_psnr(prediction, target, mask)}


def average_metrics(per_case: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over cases."""
    rows = list(per_case)
    if not rows:
        raise ValueError("no cases to average")
    return {name: float(np.mean([row[name] for row in rows])) for name in rows[0]}
