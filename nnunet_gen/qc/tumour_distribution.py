"""Tumour intensity / volume distributions before and after augmentation vs. the target set (GBA paper, Fig. 7).

The paper tunes alpha (section 4.2.1) by comparing, per case, the tumour's mean intensity and volume of the source
cases, of their GBA copies and of the target-modality set (labelled by pseudo-labels of a first segmentation pass).
:func:`tumour_distributions` measures the three sets and :func:`write_distribution_report` writes the PNG and a JSON.

Going beyond the paper, :func:`propose_alphas` proposes alphas whose rescaled copies cover the target distribution.
Method (quantile matching of contrast ratios, documented choice): the contrast ratio ``r`` of a tumour is its mean
intensity divided by the mean intensity of its surroundings (a ring of ``ring_px`` px around it in each axial slice,
positive voxels only), a unit-free quantity that naive rescaling (eq. 5) multiplies exactly by alpha and GBA
approximately (blending only touches the tumour border). In log space the augmented set is therefore the source
distribution shifted by ``log alpha``; K alphas ``alpha_k = exp(Q_target(q_k) - median(log r_source))`` with
``q_k`` evenly spaced in [0.05, 0.95] (the median for K = 1; the 5 % tails are left out so that a few bad
pseudo-labels cannot dictate the extremes) place the K shifted copies of the source along the target distribution,
from its low to its high end, so their mixture covers it.
Reported coverage = fraction of target ratios inside the range spanned by the source plus its predicted copies.
Mean intensities in the plot are normalised per volume (0.5th-99.5th percentiles -> [0, 1], as
:func:`nnunet_gen.augment.gba.tumour_statistics`), so sets from different scanners share one axis.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from nnunet_gen.errors import DataError
from nnunet_gen.io.files import write_text
from nnunet_gen.io.images import read_image
from nnunet_gen.io.raw_dataset import RawDataset
from nnunet_gen.qc.figures import new_figure, save_png

SET_COLOURS = {"source": "tab:blue", "augmented": "tab:orange", "target": "tab:green"}


@dataclass(frozen=True)
class TumourMeasurement:
    """One case's tumour: volume (mm^3), normalised mean intensity and contrast ratio to its surroundings."""

    case_id: str
    volume_mm3: float
    mean_intensity: float
    contrast_ratio: float | None


def measure_tumour(case_id: str, image: np.ndarray, label: np.ndarray, spacing_zyx: Sequence[float],
                   labels: Sequence[int] = (1,), ring_px: int = 3) -> TumourMeasurement | None:
    """Measure one (Z, Y, X) case; None when it has no tumour voxel."""
    image = np.asarray(image, dtype=np.float64)
    tumour = np.isin(label, tuple(labels))
    if not tumour.any():
        return None
    low, high = np.percentile(image, (0.5, 99.5))
    scale = high - low if high > low else 1.0
    volume = float(tumour.sum() * np.prod(np.asarray(spacing_zyx, dtype=np.float64)))
    offsets = np.arange(-ring_px, ring_px + 1)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2) <= ring_px ** 2
    ring = ndimage.binary_dilation(tumour, structure=disk[None]) & ~tumour & (image > 0)
    tumour_mean = float(image[tumour].mean())
    surrounding = float(image[ring].mean()) if ring.any() else 0.0
    ratio = tumour_mean / surrounding if surrounding > 0 and tumour_mean > 0 else None
    return TumourMeasurement(case_id, volume, float((tumour_mean - low) / scale), ratio)


def _measure_dataset(raw: RawDataset, case_ids: Sequence[str], labels: Sequence[int], channel: int,
                     desc: str) -> list[TumourMeasurement]:
    out = []
    for case_id in tqdm(case_ids, desc=desc, unit="case", disable=not case_ids):
        case = raw.read_case(case_id)
        m = measure_tumour(case_id, case.images[channel], case.label, case.geometry.spacing_zyx, labels)
        if m is not None:
            out.append(m)
    return out


def measure_target(images: str | Path, pseudo_labels: str | Path, file_ending: str, labels: Sequence[int],
                   channel: int = 0) -> list[TumourMeasurement]:
    """Target set: every ``<case><ending>`` (pseudo-)label with its image ``<case>_<channel:04d><ending>``."""
    images, pseudo_labels = Path(images), Path(pseudo_labels)
    if not pseudo_labels.is_dir() or not images.is_dir():
        raise DataError(str(pseudo_labels if not pseudo_labels.is_dir() else images), "folder not found")
    files = sorted(p for p in pseudo_labels.iterdir() if p.name.endswith(file_ending) and not p.name.startswith("."))
    if not files:
        raise DataError(str(pseudo_labels), f"no *{file_ending} label files")
    out = []
    for label_file in tqdm(files, desc="target", unit="case"):
        case_id = label_file.name[:-len(file_ending)]
        label, geometry = read_image(label_file, where=f"case {case_id}")
        image, image_geometry = read_image(images / f"{case_id}_{channel:04d}{file_ending}", where=f"case {case_id}")
        if image.shape != label.shape:
            raise DataError(f"case {case_id}", f"pseudo-label shape {label.shape} != image shape {image.shape}")
        m = measure_tumour(case_id, image, label, image_geometry.spacing_zyx, labels)
        if m is not None:
            out.append(m)
    return out


def tumour_distributions(dataset: str | int, images: str | Path | None = None,
                         pseudo_labels: str | Path | None = None, labels: Sequence[int] = (1,),
                         channel: int = 0) -> dict[str, list[TumourMeasurement]]:
    """Measurements per set: ``source`` (real cases), ``augmented`` (synthetic cases of a rendered dataset, if any)
    and ``target`` (when ``images`` and ``pseudo_labels`` are given)."""
    if (images is None) != (pseudo_labels is None):
        raise DataError("--images/--pseudo-labels", "give both (target images and their pseudo-labels) or neither")
    raw = RawDataset.find(dataset)
    manifest = raw.manifest()
    sets = {"source": _measure_dataset(raw, manifest.base_cases(), labels, channel, "source"),
            "augmented": _measure_dataset(raw, manifest.of_kind("synthetic"), labels, channel, "augmented")}
    if images is not None:
        sets["target"] = measure_target(images, pseudo_labels, raw.file_ending, labels, channel)
    return sets


def _ratios(measurements: Sequence[TumourMeasurement]) -> np.ndarray:
    return np.array([m.contrast_ratio for m in measurements if m.contrast_ratio is not None], dtype=np.float64)


def propose_alphas(source: Sequence[TumourMeasurement], target: Sequence[TumourMeasurement], count: int = 3) -> dict:
    """Quantile matching of log contrast ratios (module docstring): ``count`` alphas plus coverage before/after."""
    source_ratios, target_ratios = _ratios(source), _ratios(target)
    if count < 1:
        raise DataError("--propose-alphas", f"need at least 1 alpha, got {count}")
    if source_ratios.size == 0 or target_ratios.size == 0:
        raise DataError("--propose-alphas", "needs source and target cases with a measurable contrast ratio")
    log_source, log_target = np.log(source_ratios), np.log(target_ratios)
    quantiles = np.linspace(0.05, 0.95, count) if count > 1 else np.array([0.5])
    alphas = np.exp(np.quantile(log_target, quantiles) - np.median(log_source))
    predicted = np.concatenate([source_ratios, *(a * source_ratios for a in alphas)])

    def coverage(values: np.ndarray) -> float:
        return float(np.mean((target_ratios >= values.min()) & (target_ratios <= values.max())))

    return {"method": "quantile matching of log tumour/surrounding contrast ratios",
            "alphas": [round(float(a), 3) for a in alphas], "target_quantiles": quantiles.tolist(),
            "source_median_ratio": float(np.exp(np.median(log_source))),
            "target_ratio_range": [float(target_ratios.min()), float(target_ratios.max())],
            "coverage_before": coverage(source_ratios), "coverage_predicted_after": coverage(predicted)}


def _summary(measurements: Sequence[TumourMeasurement]) -> dict:
    if not measurements:
        return {"n": 0}
    out = {"n": len(measurements)}
    for key in ("volume_mm3", "mean_intensity"):
        values = np.array([getattr(m, key) for m in measurements])
        out[key] = {q: float(np.quantile(values, p)) for q, p in (("min", 0), ("median", 0.5), ("max", 1))}
    ratios = _ratios(measurements)
    if ratios.size:
        out["contrast_ratio"] = {q: float(np.quantile(ratios, p)) for q, p in (("min", 0), ("median", 0.5),
                                                                              ("max", 1))}
    return out


def write_distribution_report(sets: dict[str, list[TumourMeasurement]], out_dir: str | Path,
                              proposal: dict | None = None) -> tuple[Path, Path]:
    """``tumour_distribution.png`` (volume vs. mean intensity scatter, intensity and contrast-ratio histograms, as
    the paper's Fig. 7) and ``tumour_distribution.json`` in ``out_dir``."""
    out_dir = Path(out_dir)
    figure = new_figure(13, 3.8)
    axes = [figure.add_subplot(1, 3, i + 1) for i in range(3)]
    for name, measurements in sets.items():
        if not measurements:
            continue
        colour = SET_COLOURS.get(name)
        volumes = [m.volume_mm3 for m in measurements]
        intensities = [m.mean_intensity for m in measurements]
        axes[0].scatter(volumes, intensities, s=12, alpha=0.6, color=colour, label=f"{name} (n={len(volumes)})")
        axes[1].hist(intensities, bins=20, alpha=0.5, color=colour, density=True, label=name)
        ratios = _ratios(measurements)
        if ratios.size:
            axes[2].hist(ratios, bins=20, alpha=0.5, color=colour, density=True, label=name)
    if proposal is not None:
        for alpha in proposal["alphas"]:
            axes[2].axvline(alpha * proposal["source_median_ratio"], color="k", ls="--", lw=0.8)
    axes[0].set(xscale="log", xlabel="tumour volume (mm$^3$)", ylabel="tumour mean intensity (normalised)")
    axes[1].set(xlabel="tumour mean intensity (normalised)", ylabel="density")
    axes[2].set(xlabel="tumour / surrounding contrast ratio" + (" (dashed: proposed alpha x source median)"
                                                                if proposal else ""), ylabel="density")
    for ax in axes:
        ax.legend(fontsize=7)
    png = save_png(figure, out_dir / "tumour_distribution.png")
    report = {"sets": {k: [asdict(m) for m in v] for k, v in sets.items()},
              "summary": {k: _summary(v) for k, v in sets.items()}, "proposal": proposal}
    json_path = out_dir / "tumour_distribution.json"
    write_text(json_path, json.dumps(report, indent=1))
    return png, json_path
