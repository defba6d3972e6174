"""Evaluation of harmonisers on held-out perturbed cases, regenerating ARHNet Table 1 and Table 3.

The held-out set follows the paper's protocol: each test image is scaled to [0, 1], a patch of the training patch
size (64^3 in the paper) is taken around its lesion (centred on the bounding box of the largest lesion component),
and its foreground is perturbed with eq. 1. The perturbation of case ``i`` is drawn from
``numpy.random.default_rng([seed, i])``, so every method sees the same inputs. That the paper evaluates patches and
not whole MNI volumes follows from its Table 1: MAE / fMAE = 0.0014 / 0.23 means ~0.6 % foreground voxels, as for a
lesion of <= 5,000 voxels in a 64^3 patch, not in a 197x233x189 volume.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage
from tqdm.auto import tqdm

from synth.arhnet.config import TABLE1_METHODS, HarmonizerConfig
from synth.arhnet.harmonize import Harmonizer, harmonize_volume
from synth.arhnet.metrics import METRIC_NAMES, average_metrics, harmonization_metrics
from synth.arhnet.patches import centered_patch_origin, crop_patch
from synth.arhnet.perturbation import (
    ForegroundIntensityPerturbation,
    IntensityScaling,
    RandomForegroundIntensityPerturbation,
)
from synth.arhnet.train import Case, scale_cases, train_harmonizer


@dataclass(frozen=True)
class HeldOutCase:
    """One evaluation input: the real [0, 1] patch, its perturbed version, the mask and the perturbation used."""

    real: np.ndarray
    perturbed: np.ndarray
    mask: np.ndarray
    tissue_mask: np.ndarray | None
    perturbation: ForegroundIntensityPerturbation


def _largest_component_center(mask: np.ndarray) -> np.ndarray:
    components, count = ndimage.label(mask > 0)
    sizes = ndimage.sum_labels(np.ones(mask.shape), components, index=np.arange(1, count + 1))
    box = ndimage.find_objects(components)[int(np.argmax(sizes))]
    return np.array([(s.start + s.stop - 1) / 2 for s in box])


def make_held_out_set(cases: Sequence[Case], patch_size: tuple[int, int, int], seed: int = 0,
                      alpha_range: tuple[float, float] = (-0.3, 0.3),
                      lambda_range: tuple[float, float] = (-0.3, 0.3)) -> list[HeldOutCase]:
    """Deterministic perturbed lesion patches of the test ``cases`` (see module docstring)."""
    sampler = RandomForegroundIntensityPerturbation(alpha_range, lambda_range)
    held_out = []
    for index, (case, scaled) in enumerate(zip(cases, scale_cases(cases))):
        origin = centered_patch_origin(_largest_component_center(scaled.mask), patch_size, scaled.mask.shape)
        real = crop_patch(scaled.image, origin, patch_size)
        mask = crop_patch(scaled.mask, origin, patch_size)
        tissue = crop_patch(np.asarray(case[2]) > 0, origin, patch_size) if len(case) > 2 else None
        perturbation = sampler.sample(np.random.default_rng([seed, index]))
        held_out.append(HeldOutCase(real, perturbation(real, mask), mask, tissue, perturbation))
    return held_out


def evaluate_harmonizers(harmonizers: Mapping[str, Harmonizer], cases: Sequence[Case],
                         patch_size: tuple[int, int, int] = (64, 64, 64), seed: int = 0,
                         progress: bool = False) -> dict[str, dict[str, float]]:
    """Mean MAE / fMAE / PSNR / fPSNR of every harmoniser on the same deterministic held-out set."""
    held_out = make_held_out_set(cases, patch_size, seed)
    table = {}
    for name, harmonizer in harmonizers.items():
        per_case = []
        for case in tqdm(held_out, desc=f"evaluate {name}", disable=not progress):
            output = harmonize_volume(harmonizer, case.perturbed, case.mask, case.tissue_mask, IntensityScaling())
            per_case.append(harmonization_metrics(output, case.real, case.mask))
        table[name] = average_metrics(per_case)
    return table


def run_harmonization_benchmark(train_cases: Sequence[Case], test_cases: Sequence[Case],
                                methods: Sequence[str] = TABLE1_METHODS,
                                base_config: HarmonizerConfig = HarmonizerConfig(), seed: int = 0,
                                device: str | torch.device = "cpu",
                                progress: bool = True) -> tuple[dict[str, dict[str, float]], dict[str, Harmonizer]]:
    """Train every method of ``methods`` with ``base_config`` (only the method changes) and evaluate them all."""
    harmonizers = {method: train_harmonizer(train_cases, replace(base_config, method=method), seed, device, progress)
                   for method in methods}
    table = evaluate_harmonizers(harmonizers, test_cases, base_config.patch_size, seed, progress)
    return table, harmonizers


def format_metric_table(table: Mapping[str, Mapping[str, float]]) -> str:
    """Markdown table with the paper's precision (MAE 4 decimals, fMAE 2, PSNR / fPSNR 2)."""
    digits = {"MAE": 4, "fMAE": 2, "PSNR": 2, "fPSNR": 2}
    lines = ["| Method | " + " | ".join(METRIC_NAMES) + " |", "|---" * (len(METRIC_NAMES) + 1) + "|"]
    for name, row in table.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[m]:.{digits[m]}f}" for m in METRIC_NAMES) + " |")
    return "\n".join(lines)
