"""Generative Blending Augmentation (GBA) of a 3D volume (Sallé et al., section 3.3, eqs. 5-7; parameters 4.2.1).

Volumes are numpy arrays (Z, Y, X) with Z the axial slice axis; spacings are given in the same (Z, Y, X) order.
:class:`GenerativeBlending` is deterministic: (a) tumour voxels are rescaled by ``alpha`` with
:class:`~nnunet_gen.augment.naive_rescale.NaiveRescale` (eq. 5); (b) every axial slice containing tumour is harmonised by a
SinGAN injected at ``start_scale`` (eq. 6) and the slices are restacked; (c) the harmonised volume is merged with the
ORIGINAL (unaltered) volume with a weighting mask ``w`` = binary tumour mask dilated by ``dilation_radius`` px and
Gaussian-smoothed with ``sigma`` px, both in the axial plane only (eq. 7):
``out = w * harmonised + (1 - w) * original``.
``blend=False`` is the paper's naive tumour rescaling (no SinGAN, no merge): the same class, so both are comparable.

Contrast (our addition, measured in issue 14): the SinGAN harmonisation pulls an altered tumour back toward its
surroundings (alpha 0.5 copies of the GBA paper's pipeline had a tumour/surround ratio of 0.92 where the naive copies
had 0.66), so a model trained on them never sees the dark tumours alpha asked for. :func:`tumour_contrast` measures
that ratio; ``keep_contrast=True`` (step d, off by default = the paper) multiplies the blended tumour voxels by one
factor so that the output's ratio equals the naive copy's: the SinGAN texture (relative variation inside the tumour)
stays, the intensity change of eq. 5 is not undone.

Guarantees: the output is float32; voxels where ``w == 0`` (farther than ``dilation_radius + ceil(4 sigma)`` px from
the tumour in-plane, and every slice without tumour) equal ``image.astype(float32)`` bit for bit; a case without tumour
voxels comes back unchanged (``BlendingResult.has_tumour`` is False and a warning is logged); the mask is never divided
by its maximum, so an empty mask cannot produce NaN. Smoothing uses 'nearest' edge handling so tumours touching the
volume border keep full weight up to the border.

Slice size: a SinGAN is trained on one slice size; volumes whose axial slices have another size are REFUSED with a
ValueError (crop/resample to the training size first, as the paper's fixed-size crop of section 4.2.2 does) rather than
resized, because resizing would change the texture scale the generators learnt.
Windows (:func:`blend_in_window`): volumes of another in-plane size than the SinGAN's are handled per axis by a
window: an axis shorter than the SinGAN's is edge-padded to it (the padding is discarded afterwards); a
longer axis is cropped to a window of the SinGAN's size centred on the tumour, and the result is pasted back. The
window must contain the whole blending support (tumour bounding box + ``dilation_radius + ceil(4 sigma)`` px, clipped
to the volume), otherwise the case is REFUSED with a one-line DataError (train the SinGAN on a larger slice or
lower ``--dilation``/``--sigma``) -- so every voxel outside the support stays bit-identical to the input, and the
weighting mask equals the one computed on the whole slice.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from nnunet_gen.augment.naive_rescale import NaiveRescale
from nnunet_gen.errors import DataError
from synth.singan import SinGAN

logger = logging.getLogger(__name__)


#: Width (px, in-plane) of the ring around the tumour that :func:`tumour_contrast` compares the tumour with.
CONTRAST_RING_PX = 3


def contrast_ring(tumour: np.ndarray, ring_px: int = CONTRAST_RING_PX) -> np.ndarray:
    """Voxels within ``ring_px`` px of the tumour in the same axial slice, tumour excluded."""
    offsets = np.arange(-ring_px, ring_px + 1)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2) <= ring_px ** 2
    return ndimage.binary_dilation(tumour, structure=disk[None]) & ~tumour


def tumour_contrast(image: np.ndarray, tumour: np.ndarray, ring_px: int = CONTRAST_RING_PX) -> float:
    """Mean tumour intensity / mean intensity of the surrounding in-plane ring (raw units, which must be >= 0 as MR
    magnitudes are): 1 means the tumour is invisible by its mean, < 1 darker, > 1 brighter. NaN without tumour or
    when the ring's mean is not positive."""
    tumour = np.asarray(tumour, dtype=bool)
    ring = contrast_ring(tumour, ring_px)
    if not tumour.any() or not ring.any():
        return float("nan")
    surround = float(np.mean(image[ring], dtype=np.float64))
    return float(np.mean(image[tumour], dtype=np.float64)) / surround if surround > 0 else float("nan")


def derived_seed(*entropy: int) -> int:
    """A 32-bit seed derived from integers (independent streams for slices / renders)."""
    return int(np.random.SeedSequence([int(e) for e in entropy]).generate_state(1)[0])


def axial_weighting_mask(tumour: np.ndarray, dilation_radius: int, sigma: float) -> np.ndarray:
    """Eq. 7 weighting mask in [0, 1]: per axial slice, binary dilation with a disk of ``dilation_radius`` px, then a
    Gaussian of ``sigma`` px (truncated at 4 sigma); no mixing across slices, no normalisation by the maximum."""
    tumour = np.asarray(tumour, dtype=bool)
    if tumour.ndim != 3:
        raise ValueError(f"expected a (Z, Y, X) mask, got shape {tumour.shape}")
    if not tumour.any():
        return np.zeros(tumour.shape, dtype=np.float32)
    radius = int(dilation_radius)
    if radius > 0:
        offsets = np.arange(-radius, radius + 1)
        disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius ** 2
        tumour = ndimage.binary_dilation(tumour, structure=disk[None])
    weights = tumour.astype(np.float32)
    if sigma > 0:
        weights = ndimage.gaussian_filter(weights, sigma=(0.0, float(sigma), float(sigma)), mode="nearest")
    return np.clip(weights, 0.0, 1.0)


@dataclass(frozen=True)
class BlendingResult:
    """Output of :meth:`GenerativeBlending.render`: the image and what was done."""

    image: np.ndarray
    has_tumour: bool
    harmonised_slices: tuple[int, ...] = field(default=())
    contrast: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class GenerativeBlending:
    """Deterministic GBA of one (Z, Y, X) volume (eqs. 5-7); see the module docstring.

    Parameters:
        alpha: tumour intensity scaling factor (eq. 5), > 0.
        start_scale: SinGAN injection scale n in [1, num_scales - 1]; generators n..finest are used, so a smaller n
            blends more strongly. Ignored when ``blend`` is False.
        labels: label values forming the tumour.
        dilation_radius: in-plane dilation of the tumour mask in pixels (eq. 7).
        sigma: in-plane Gaussian smoothing of the dilated mask in pixels (eq. 7).
        seed: the noise of slice z is drawn from ``derived_seed(seed, z)``.
        blend: False gives the paper's naive tumour rescaling (NaiveRescale only).
        keep_contrast: after blending, rescale the tumour so that its :func:`tumour_contrast` equals the naive copy's
            (module docstring; not in the paper).
    """

    alpha: float
    start_scale: int
    labels: tuple[int, ...] = (1,)
    dilation_radius: int = 7
    sigma: float = 5.0
    seed: int = 0
    blend: bool = True
    keep_contrast: bool = False

    def __post_init__(self) -> None:
        NaiveRescale(float(self.alpha), tuple(self.labels))  # validates alpha and labels
        if self.dilation_radius < 0 or self.sigma < 0:
            raise ValueError("dilation_radius and sigma must be >= 0")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")

    def parameters(self) -> dict[str, Any]:
        """Plain dict that :meth:`from_parameters` turns back into an identical transform (for manifests)."""
        return {"alpha": float(self.alpha), "start_scale": int(self.start_scale), "labels": list(self.labels),
                "dilation_radius": int(self.dilation_radius), "sigma": float(self.sigma), "seed": int(self.seed),
                "blend": bool(self.blend), "keep_contrast": bool(self.keep_contrast)}

    @classmethod
    def from_parameters(cls, parameters: dict[str, Any]) -> "GenerativeBlending":
        known = {k: parameters[k] for k in ("alpha", "start_scale", "labels", "dilation_radius", "sigma", "seed",
                                            "blend", "keep_contrast") if k in parameters}
        if "labels" in known:
            known["labels"] = tuple(int(v) for v in known["labels"])
        return cls(**known)

    def with_blend(self, blend: bool) -> "GenerativeBlending":
        """The same parameters with blending on or off (off: the naive copy this GBA copy is compared with)."""
        return dataclasses.replace(self, blend=blend)

    def render(self, image: np.ndarray, label: np.ndarray, singan: SinGAN | None = None) -> BlendingResult:
        """Apply GBA (or naive rescaling when ``blend`` is False) and report what was done, including the
        :func:`tumour_contrast` of the input (``original``), of the naive copy (``naive``) and of the output."""
        image = np.asarray(image)
        label = np.asarray(label)
        if image.ndim != 3 or image.shape != label.shape:
            raise ValueError(f"expected (Z, Y, X) image and label of one shape, got {image.shape}, {label.shape}")
        original = image.astype(np.float32, copy=True)
        naive = NaiveRescale(float(self.alpha), tuple(self.labels))
        tumour = naive.mask(label)
        if not tumour.any():
            logger.warning("GBA: no voxel with label in %s; image returned unchanged", self.labels)
            return BlendingResult(original, has_tumour=False)
        rescaled = naive(image, label)
        contrast = {"original": tumour_contrast(original, tumour), "naive": tumour_contrast(rescaled, tumour)}
        if not self.blend:
            return BlendingResult(rescaled, has_tumour=True, contrast={**contrast, "output": contrast["naive"]})
        if singan is None:
            raise ValueError("blend=True needs a trained SinGAN")
        singan.check_slice_shape(image.shape[1:])
        if not np.isfinite(rescaled).all():
            raise ValueError("GBA needs a finite image")
        tumour_slices = tuple(int(z) for z in np.flatnonzero(tumour.any(axis=(1, 2))))
        harmonised = rescaled.copy()
        for z in tumour_slices:
            harmonised[z] = singan.harmonize(rescaled[z], self.start_scale, derived_seed(self.seed, z))
        weights = axial_weighting_mask(tumour, self.dilation_radius, self.sigma)
        support = weights > 0
        merged = original.copy()
        merged[support] = weights[support] * harmonised[support] + (1.0 - weights[support]) * original[support]
        blended_contrast = tumour_contrast(merged, tumour)
        if self.keep_contrast and blended_contrast > 0 and np.isfinite(contrast["naive"]):
            merged[tumour] *= np.float32(contrast["naive"] / blended_contrast)
        return BlendingResult(merged, has_tumour=True, harmonised_slices=tumour_slices,
                              contrast={**contrast, "blended": blended_contrast,
                                        "output": tumour_contrast(merged, tumour)})

    def __call__(self, image: np.ndarray, label: np.ndarray, singan: SinGAN | None = None) -> np.ndarray:
        return self.render(image, label, singan).image


@dataclass(frozen=True)
class TumourStatistics:
    """Tumour volume (mm^3) and intensity standard deviation (robust-[0, 1]-normalised units) of one case."""

    volume_mm3: float
    intensity_std: float


def tumour_statistics(image: np.ndarray, label: np.ndarray, spacing: Sequence[float],
                      labels: Sequence[int] = (1,)) -> TumourStatistics:
    """Volume = tumour voxel count x voxel volume; std of tumour intensities after mapping the volume's 0.5th-99.5th
    percentiles to [0, 1] (unit-free, so thresholds transfer across scanners; the paper works on normalised images)."""
    image = np.asarray(image, dtype=np.float64)
    if image.shape != np.shape(label):
        raise ValueError(f"image shape {image.shape} != label shape {np.shape(label)}")
    tumour = np.isin(label, tuple(labels))
    if len(spacing) != image.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match image dimensions {image.shape}")
    volume = float(tumour.sum()) * float(np.prod(np.asarray(spacing, dtype=np.float64)))
    if not tumour.any():
        return TumourStatistics(0.0, 0.0)
    low, high = np.percentile(image, (0.5, 99.5))
    scale = high - low if high > low else 1.0
    return TumourStatistics(volume, float(np.std((image[tumour] - low) / scale)))


@dataclass(frozen=True)
class GBASelectionRules:
    """Per-case GBA parameter selection of section 4.2.1.

    The paper's numbers are stripped from our copy of the text; these defaults are OUR documented choices that follow
    its rules: large (> ``large_volume_mm3``) heterogeneous (intensity std > ``large_intensity_std``) tumours, from
    ``large_centers`` (paper: Tilburg only; None = any centre), get larger alphas; small (< ``small_volume_mm3``)
    tumours from any centre get smaller alphas (their contrast is reduced); other cases get no GBA. Each alpha is
    rendered at every injection scale and ``samples_per_setting`` times: 3 alphas x 2 scales x 3 samples = the
    paper's 18 augmentations per patient. Injection scales are given as the number of finest generators retained
    (start_scale = num_scales - retained).
    """

    large_volume_mm3: float = 1500.0
    large_intensity_std: float = 0.1
    large_alphas: tuple[float, ...] = (1.2, 1.5, 2.0)
    large_centers: tuple[str, ...] | None = None
    small_volume_mm3: float = 500.0
    small_alphas: tuple[float, ...] = (0.5, 0.65, 0.8)
    generators_retained: tuple[int, ...] = (3, 4)
    samples_per_setting: int = 3

    def __post_init__(self) -> None:
        if self.small_volume_mm3 > self.large_volume_mm3:
            raise ValueError("small_volume_mm3 must not exceed large_volume_mm3")
        if not self.generators_retained or min(self.generators_retained) < 1 or self.samples_per_setting < 1:
            raise ValueError("generators_retained must be non-empty and >= 1, samples_per_setting >= 1")

    def group(self, statistics: TumourStatistics, center: str | None = None) -> str | None:
        """'large_heterogeneous', 'small' or None (no GBA for this case)."""
        if statistics.volume_mm3 <= 0:
            return None
        in_large_centers = self.large_centers is None or center in self.large_centers
        if (in_large_centers and statistics.volume_mm3 > self.large_volume_mm3
                and statistics.intensity_std > self.large_intensity_std):
            return "large_heterogeneous"
        if statistics.volume_mm3 < self.small_volume_mm3:
            return "small"
        return None


def select_gba_parameters(image: np.ndarray, label: np.ndarray, spacing: Sequence[float], num_scales: int,
                          seed: int, rules: GBASelectionRules = GBASelectionRules(), center: str | None = None,
                          labels: Sequence[int] = (1,), dilation_radius: int = 7, sigma: float = 5.0
                          ) -> list[dict[str, Any]]:
    """All GBA renders for one case (section 4.2.1): a list of :meth:`GenerativeBlending.parameters` dicts (plus the
    selection ``group``), empty when the case matches no rule. Same inputs and seed give the same list."""
    statistics = tumour_statistics(image, label, spacing, labels)
    group = rules.group(statistics, center)
    if group is None:
        return []
    alphas = rules.large_alphas if group == "large_heterogeneous" else rules.small_alphas
    return parameter_grid(alphas, rules.generators_retained, rules.samples_per_setting, num_scales, seed, labels,
                          dilation_radius, sigma, group)


def parameter_grid(alphas: Sequence[float], generators_retained: Sequence[int], samples: int, num_scales: int,
                   seed: int, labels: Sequence[int], dilation_radius: int, sigma: float, group: str
                   ) -> list[dict[str, Any]]:
    """Every alpha x retained-generator count x noise sample as :meth:`GenerativeBlending.parameters` dicts (plus the
    selection ``group``); render ``(a, s, k)`` gets the seed ``derived_seed(seed, a, s, k)``. A retained count that
    leaves no injection scale in [1, num_scales - 1] raises ValueError."""
    renders = []
    for alpha_index, alpha in enumerate(alphas):
        for scale_index, retained in enumerate(generators_retained):
            start_scale = int(num_scales) - int(retained)
            if not 1 <= start_scale < num_scales:
                raise ValueError(f"cannot retain {retained} generators of a {num_scales}-scale SinGAN "
                                 f"(allowed: 1..{num_scales - 1})")
            for sample in range(int(samples)):
                transform = GenerativeBlending(float(alpha), start_scale, tuple(int(v) for v in labels),
                                               dilation_radius, sigma,
                                               derived_seed(seed, alpha_index, scale_index, sample))
                renders.append({**transform.parameters(), "group": group})
    return renders


@dataclass(frozen=True)
class SliceWindow:
    """Per in-plane axis (Y, X): the ``[start, stop)`` crop of the volume and the (before, after) edge padding that
    bring the axial slices to the SinGAN's training shape."""

    crops: tuple[tuple[int, int], tuple[int, int]]
    pads: tuple[tuple[int, int], tuple[int, int]]

    def to_json(self) -> dict:
        return {"crops": [list(c) for c in self.crops], "pads": [list(p) for p in self.pads]}


def blending_margin(dilation_radius: int, sigma: float) -> int:
    """In-plane distance (px) beyond the tumour where the eq. 7 weight can be non-zero (Gaussian cut at 4 sigma)."""
    return int(dilation_radius) + (math.ceil(4.0 * float(sigma)) if sigma > 0 else 0)


def singan_window(tumour: np.ndarray, singan_shape: Sequence[int], margin: int, where: str = "volume") -> SliceWindow:
    """The window that maps the (Z, Y, X) volume of ``tumour`` onto ``singan_shape`` slices (module docstring)."""
    crops, pads = [], []
    for axis, target in ((1, int(singan_shape[0])), (2, int(singan_shape[1]))):
        size = tumour.shape[axis]
        if size <= target:
            crops.append((0, size))
            pads.append(((target - size) // 2, target - size - (target - size) // 2))
            continue
        occupied = np.flatnonzero(tumour.any(axis=tuple(a for a in (0, 1, 2) if a != axis)))
        low, high = max(int(occupied[0]) - margin, 0), min(int(occupied[-1]) + 1 + margin, size)
        if high - low > target:
            raise DataError(where, f"tumour + blending margin spans {high - low} px along axis {axis}, more than the "
                                   f"SinGAN's {target} px slice; use a SinGAN trained on larger slices or a smaller "
                                   f"--dilation/--sigma")
        start = min(max((low + high) // 2 - target // 2, 0), size - target)
        crops.append((start, start + target))
        pads.append((0, 0))
    return SliceWindow(tuple(crops), tuple(pads))


def blend_in_window(transform: GenerativeBlending, image: np.ndarray, label: np.ndarray, singan: SinGAN | None,
                    where: str = "volume") -> tuple[np.ndarray, SliceWindow | None]:
    """Apply ``transform`` to a (Z, Y, X) volume of any in-plane size through a :func:`singan_window`.

    Returns the float32 volume and the window used (None when no window was needed: naive path or matching size).
    """
    image = np.asarray(image)
    if not transform.blend or singan is None or tuple(image.shape[1:]) == singan.training_shape:
        return transform(image, label, singan), None
    tumour = np.isin(label, transform.labels)
    if not tumour.any():
        return transform(image, label, singan), None
    window = singan_window(tumour, singan.training_shape,
                           blending_margin(transform.dilation_radius, transform.sigma), where)
    (y0, y1), (x0, x1) = window.crops
    pad = ((0, 0), *window.pads)
    crop_image = np.pad(image[:, y0:y1, x0:x1], pad, mode="edge")
    crop_label = np.pad(np.asarray(label)[:, y0:y1, x0:x1], pad, mode="edge")
    blended = transform(crop_image, crop_label, singan)
    (py, _), (px, _) = window.pads
    out = image.astype(np.float32, copy=True)
    out[:, y0:y1, x0:x1] = blended[:, py:py + (y1 - y0), px:px + (x1 - x0)]
    return out, window
