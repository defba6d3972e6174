"""Van Cittert deconvolution (P. H. van Cittert, Z. Physik 1931) with a Gaussian point spread function.

The GBA paper (Sallé et al., section 4.2.2) deconvolves the blurred CycleGAN outputs with iterative Van Cittert and a
Gaussian PSF given in mm (its scale and iteration count were not recovered). The iteration is
``f_0 = g``, ``f_{k+1} = f_k + beta * (g - h * f_k)``: it adds back the residual between the observed image ``g`` and
the re-blurred estimate, which amplifies the frequencies the PSF ``h`` attenuated (and, with many iterations, noise).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter


def van_cittert(volume: np.ndarray, sigma_mm: float | Sequence[float], spacing_zyx: Sequence[float] = (1, 1, 1),
                iterations: int = 10, relaxation: float = 1.0, nonnegative: bool = True) -> np.ndarray:
    """Deconvolve ``volume`` (as many axes as ``spacing_zyx``) by a Gaussian PSF of standard deviation ``sigma_mm``
    (one value or one per axis, in mm; ``sigma / spacing`` voxels per axis) with ``iterations`` Van Cittert steps of
    relaxation ``beta = relaxation`` in (0, 2]. ``nonnegative`` clips every iterate at 0 (for nonnegative
    intensities such as MR). Returns float32; ``iterations`` 0 returns the input."""
    image = np.asarray(volume, dtype=np.float64)
    spacing = np.asarray(spacing_zyx, dtype=np.float64)
    if image.ndim != spacing.size:
        raise ValueError(f"volume has {image.ndim} axes but spacing_zyx has {spacing.size} entries")
    sigma = np.asarray(sigma_mm, dtype=np.float64).ravel()
    sigma = np.full(spacing.shape, sigma[0]) if sigma.size == 1 else sigma
    if sigma.shape != spacing.shape:
        raise ValueError(f"sigma_mm must be one value or {spacing.size} values, got {sigma_mm}")
    if not (np.isfinite(sigma).all() and (sigma >= 0).all()):
        raise ValueError(f"sigma_mm must be finite and >= 0, got {sigma_mm}")
    if not (np.isfinite(spacing).all() and (spacing > 0).all()):
        raise ValueError(f"spacing_zyx must be positive, got {spacing_zyx}")
    if int(iterations) != iterations or iterations < 0:
        raise ValueError(f"iterations must be an integer >= 0, got {iterations}")
    if not 0.0 < relaxation <= 2.0:
        raise ValueError(f"relaxation must be in (0, 2], got {relaxation}")
    if not np.isfinite(image).all():
        raise ValueError("van_cittert expects finite values")
    estimate = image.copy()
    for _ in range(int(iterations)):
        estimate += relaxation * (image - gaussian_filter(estimate, sigma / spacing))
        if nonnegative:
            np.maximum(estimate, 0.0, out=estimate)
    return estimate.astype(np.float32)
