"""Naive tumour intensity rescaling in raw intensity space (GBA paper, eq. 5).

The GBA paper (Sallé et al., "Generative Blending Augmentation and Self-Training", section 3.3) multiplies the
intensities of the tumour voxels by a factor ``alpha``: ``alpha < 1`` makes the tumour darker than its surroundings,
``alpha > 1`` brighter. "Naive rescaling" is that multiplication without SinGAN blending.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: The GBA paper's scaling factors for naive rescaling.
DEFAULT_ALPHAS: tuple[float, ...] = (0.5, 0.8, 1.5)


@dataclass(frozen=True)
class NaiveRescale:
    """Multiply the intensities of the voxels whose label is in ``labels`` by ``alpha`` (paper eq. 5).

    Parameters:
        alpha: scaling factor, > 0.
        labels: label values whose voxels are rescaled (CrossMoDA: only the tumour, not the cochlea).
    """

    alpha: float
    labels: tuple[int, ...] = (1,)

    def __post_init__(self) -> None:
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if not self.labels:
            raise ValueError("labels to rescale must not be empty")

    def mask(self, label: np.ndarray) -> np.ndarray:
        return np.isin(label, self.labels)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> np.ndarray:
        """Return a rescaled copy of ``image`` (any shape; ``label`` has the same spatial shape)."""
        if image.shape != label.shape:
            raise ValueError(f"image shape {image.shape} != label shape {label.shape}")
        out = np.array(image, dtype=np.float32, copy=True)
        out[self.mask(label)] *= np.float32(self.alpha)
        return out


def naive_rescale_variants(alphas: Sequence[float] = DEFAULT_ALPHAS,
                           labels: Sequence[int] = (1,)) -> list[NaiveRescale]:
    """One deterministic :class:`NaiveRescale` per alpha, in the given order."""
    return [NaiveRescale(float(a), tuple(int(v) for v in labels)) for a in alphas]
