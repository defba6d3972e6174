"""Time nnunet_gen.evaluation.metrics's Dice/ASSD/HD95 against nnU-Net v2's Dice on a 256x256x100 pair.

Two overlapping ellipsoids (anisotropic spacing 0.6 x 0.5 x 2.0 mm) stand in for a prediction and a reference.
nnU-Net v2 computes Dice only (``region_or_label_to_mask`` + ``compute_tp_fp_fn_tn``, as its ``compute_metrics``
does after reading), so its time is the baseline for what overlap counting costs; our row adds both surface
distances. A third row repeats our surface distances on the full volume without the bounding-box crop, to show what
the crop saves and to check that it changes no value. Prints median wall times over ``--repeats`` runs; the ratios
are taken between medians measured in this one run.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_metrics.py
"""
from __future__ import annotations

import argparse

import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure
from timing import median_seconds

from nnunet_gen.evaluation.metrics import case_metrics

SHAPE = (100, 256, 256)  # z, y, x
SPACING = (2.0, 0.5, 0.6)  # mm, array axis order


def ellipsoid(centre: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in SHAPE)]
    return sum(((axis - c) / r) ** 2 for axis, c, r in zip(grid, centre, radii)) <= 1.0


def nnunet_dice(prediction: np.ndarray, reference: np.ndarray, label: int) -> float:
    from nnunetv2.evaluation.evaluate_predictions import compute_tp_fp_fn_tn, region_or_label_to_mask

    tp, fp, fn, _ = compute_tp_fp_fn_tn(region_or_label_to_mask(reference, label),
                                        region_or_label_to_mask(prediction, label))
    return float(2 * tp / (2 * tp + fp + fn))


def uncropped_assd_hd95(prediction: np.ndarray, reference: np.ndarray, label: int) -> tuple[float, float]:
    """Same definitions as nnunet_gen.evaluation.metrics, on the whole volume."""
    structure = generate_binary_structure(3, 1)
    masks = [prediction == label, reference == label]
    surfaces = [m & ~binary_erosion(m, structure=structure, border_value=0) for m in masks]
    pred_to_ref = distance_transform_edt(~surfaces[1], sampling=SPACING)[surfaces[0]]
    ref_to_pred = distance_transform_edt(~surfaces[0], sampling=SPACING)[surfaces[1]]
    return ((pred_to_ref.mean() + ref_to_pred.mean()) / 2,
            float(np.percentile(np.concatenate([pred_to_ref, ref_to_pred]), 95)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    repeats = parser.parse_args().repeats

    reference = ellipsoid((50, 128, 128), (30, 60, 50)).astype(np.uint8)
    prediction = ellipsoid((53, 133, 124), (28, 63, 47)).astype(np.uint8)

    ours = case_metrics(prediction, reference, SPACING, [1])[1]
    theirs = nnunet_dice(prediction, reference, 1)
    full_assd, full_hd95 = uncropped_assd_hd95(prediction, reference, 1)
    if not np.isclose(ours["Dice"], theirs, rtol=1e-12, atol=0):
        raise SystemExit(f"Dice disagrees: ours {ours['Dice']!r} vs nnU-Net {theirs!r}")
    if not (np.isclose(ours["ASSD"], full_assd, rtol=1e-12) and np.isclose(ours["HD95"], full_hd95, rtol=1e-12)):
        raise SystemExit(f"cropped surface distances disagree with the full volume: {ours} vs {full_assd, full_hd95}")

    timings = {
        "nnunetv2 Dice (tp/fp/fn counts)": median_seconds(lambda: nnunet_dice(prediction, reference, 1), repeats),
        "nnunet_gen Dice+ASSD+HD95 (bbox crop)": median_seconds(
            lambda: case_metrics(prediction, reference, SPACING, [1]), repeats),
        "same surface distances, full volume": median_seconds(
            lambda: uncropped_assd_hd95(prediction, reference, 1), repeats),
    }
    baseline = timings["nnunetv2 Dice (tp/fp/fn counts)"]
    print(f"pair {SHAPE[2]}x{SHAPE[1]}x{SHAPE[0]} voxels, spacing {SPACING[::-1]} mm (x, y, z), "
          f"median of {repeats} runs")
    print(f"Dice ours {ours['Dice']:.6f} = nnU-Net {theirs:.6f}; ASSD {ours['ASSD']:.4f} mm, "
          f"HD95 {ours['HD95']:.4f} mm (full-volume check: {full_assd:.4f}, {full_hd95:.4f})")
    print(f"| {'computation':<40} | {'median s':>9} | {'x nnU-Net Dice':>14} |")
    print(f"|{'-' * 42}|{'-' * 11}|{'-' * 16}|")
    for name, seconds in timings.items():
        print(f"| {name:<40} | {seconds:>9.4f} | {seconds / baseline:>14.1f} |")


if __name__ == "__main__":
    main()
