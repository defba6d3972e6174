"""Per-case intensity statistics that let a transform rescale tumours in *raw* units on normalised patches.

nnU-Net hands augmentation z-score-normalised patches, ``x_n = (x - mu) / sigma`` with the case's own ``mu`` and
``sigma`` (over the nonzero region when ``use_mask_for_norm``). Multiplying ``x_n`` by alpha is not the GBA paper's
eq. 5: a tumour darker than the case mean gets darker still for alpha > 1. The exact equivalent of "multiply the raw
tumour intensities, then let nnU-Net normalise the new case" is::

    x   = sigma * x_n + mu                         (back to raw units)
    x'  = alpha * x on the tumour, x elsewhere     (eq. 5)
    mu' = mu + (alpha - 1) * S1 / N                (new case mean)
    E'  = E[x^2] + (alpha^2 - 1) * S2 / N          (new case second moment)
    x_n' = (x' - mu') / sqrt(E' - mu'^2)

with N voxels in the normalisation region and S1, S2 the sums of x and x^2 over its tumour voxels. These constants
come from the raw case, computed exactly as nnU-Net's preprocessing does (crop to the nonzero region first).
CT normalisation uses dataset-level constants and clipping; no normalisation needs nothing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero

from nnunet_gen.errors import DataError

SUPPORTED_SCHEMES = ("ZScoreNormalization", "CTNormalization", "NoNormalization")


@dataclass(frozen=True)
class ChannelStats:
    """Normalisation constants of one channel of one case plus raw tumour sums (see module docstring).

    For CTNormalization ``mean``/``std`` are the dataset constants and ``clip`` the percentile bounds.
    """

    scheme: str
    mean: float
    std: float
    second_moment: float = 0.0
    count: int = 0
    tumour_sum: float = 0.0
    tumour_sum_sq: float = 0.0
    clip: tuple[float, float] | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "ChannelStats":
        clip = tuple(d["clip"]) if d.get("clip") is not None else None
        return cls(**{**d, "clip": clip})


def case_channel_stats(images: np.ndarray, label: np.ndarray, schemes: Sequence[str],
                       use_mask_for_norm: Sequence[bool], intensity_properties: dict,
                       tumour_labels: Sequence[int]) -> list[ChannelStats]:
    """Stats of a raw case ``images`` (C, Z, Y, X) with ``label`` (Z, Y, X), as nnU-Net's preprocessor sees it."""
    data, seg, _ = crop_to_nonzero(images.astype(np.float32), label[None].astype(np.int16))
    stats = []
    for c, scheme in enumerate(schemes):
        if scheme not in SUPPORTED_SCHEMES:
            raise DataError(f"channel {c}", f"normalisation {scheme} is not supported for tumour rescaling "
                                            f"(supported: {', '.join(SUPPORTED_SCHEMES)})")
        x = data[c].astype(np.float64)
        if scheme == "CTNormalization":
            p = intensity_properties[str(c)]
            stats.append(ChannelStats(scheme, p["mean"], p["std"],
                                      clip=(p["percentile_00_5"], p["percentile_99_5"])))
            continue
        if scheme == "NoNormalization":
            stats.append(ChannelStats(scheme, 0.0, 1.0))
            continue
        region = seg[0] >= 0 if use_mask_for_norm[c] else np.ones(x.shape, dtype=bool)
        tumour = region & np.isin(seg[0], tumour_labels)
        xr, xt = x[region], x[tumour]
        stats.append(ChannelStats(scheme, float(xr.mean()), float(xr.std()), float((xr ** 2).mean()),
                                  int(xr.size), float(xt.sum()), float((xt ** 2).sum())))
    return stats


def rescale_normalised(image: torch.Tensor, tumour: torch.Tensor, region: torch.Tensor | None,
                       stats: ChannelStats, alpha: float) -> torch.Tensor:
    """One channel of a normalised patch after multiplying the raw tumour intensities by ``alpha``.

    ``tumour``: bool mask of voxels to rescale; ``region``: bool mask of voxels nnU-Net normalised (None = all).
    """
    eps = 1e-8
    if stats.scheme == "NoNormalization":
        return torch.where(tumour, image * alpha, image)
    raw = image * max(stats.std, eps) + stats.mean
    raw = torch.where(tumour, raw * alpha, raw)
    if stats.scheme == "CTNormalization":
        return (raw.clamp(*stats.clip) - stats.mean) / max(stats.std, eps)
    n = stats.count
    new_mean = stats.mean + (alpha - 1.0) * stats.tumour_sum / n
    new_second = stats.second_moment + (alpha ** 2 - 1.0) * stats.tumour_sum_sq / n
    new_std = max(float(np.sqrt(max(new_second - new_mean ** 2, 0.0))), eps)
    out = (raw - new_mean) / new_std
    return out if region is None else torch.where(region, out, image)
