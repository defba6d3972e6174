"""Per-case metrics of segmentation folders: Dice, ASSD and HD95 per case and label (CrossMoDA conventions).

Conventions (all distances in mm, using the image spacing):

* Surface voxel: a foreground voxel with at least one background 6-neighbour (face neighbour; in 2D the
  4-neighbourhood). Voxels outside the image count as background, so foreground touching the image border is surface.
* Directed surface distances ``d(P->R)``: for every surface voxel of P the Euclidean distance to the nearest surface
  voxel of R. Computed with ``scipy.ndimage.distance_transform_edt(sampling=spacing)`` on the bounding box of both
  masks, which is exact because every surface voxel of both masks lies inside that box.
* ASSD = ``(mean d(P->R) + mean d(R->P)) / 2``, the mean of the two directed averages. This is ``medpy.metric.assd``,
  which the CrossMoDA organisers' scoring script (CrossMoDA2022-Evaluation-code, ``scores.py``) calls; it differs
  from the pooled average ``(sum d(P->R) + sum d(R->P)) / (|S_P| + |S_R|)`` when the two surfaces have different
  voxel counts.
* HD95 = 95th percentile (numpy linear interpolation) of the pooled distances of both directions, the
  ``medpy.metric.hd95`` convention. MONAI's ``compute_hausdorff_distance(percentile=95)`` instead takes the maximum of
  the two directed 95th percentiles, which is >= ours.
* Empty masks: both empty -> Dice 1, ASSD 0, HD95 0. Exactly one empty -> Dice 0 and ASSD = HD95 = a penalty,
  by default the diagonal of the image extent ``||shape * spacing||`` in mm (CrossMoDA used a fixed 350 mm for empty
  predictions; pass ``empty_penalty_mm=350`` to reproduce it). Each row records which side was empty in ``empty``.
"""
from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure

from nnunet_gen.errors import DataError
from nnunet_gen.io.images import Geometry, read_image
from nnunet_gen.io.raw_dataset import foreground_labels

#: Metrics computed per case and label.
METRICS: tuple[str, ...] = ("Dice", "ASSD", "HD95")
#: Whether a larger value is better, per metric (decides worst/best and the ranking direction).
HIGHER_IS_BETTER: dict[str, bool] = {"Dice": True, "ASSD": False, "HD95": False}
#: Metrics ranked by the CrossMoDA challenge.
RANKING_METRICS: tuple[str, ...] = ("Dice", "ASSD")
#: Column order of the per-case rows.
ROW_FIELDS: tuple[str, ...] = ("case", "label", *METRICS, "n_pred", "n_ref", "empty", "missing_prediction")

METRIC_UNITS = {"Dice": "", "ASSD": " (mm)", "HD95": " (mm)"}


# ----------------------------------------------------------------------------------------------------------------
# Per-case metrics
# ----------------------------------------------------------------------------------------------------------------

def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """Smallest box containing all foreground voxels, or None for an empty mask."""
    box = []
    for axis in range(mask.ndim):
        projection = np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != axis))
        indices = np.flatnonzero(projection)
        if indices.size == 0:
            return None
        box.append(slice(int(indices[0]), int(indices[-1]) + 1))
    return tuple(box)


def _union_box(box_a: tuple[slice, ...], box_b: tuple[slice, ...]) -> tuple[slice, ...]:
    return tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(box_a, box_b))


def surface_mask(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels with a background face neighbour; outside the array counts as background."""
    structure = generate_binary_structure(mask.ndim, 1)
    return mask & ~binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(prediction: np.ndarray, reference: np.ndarray,
                      spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm, ``(d(pred->ref), d(ref->pred))``, for two non-empty boolean masks.

    Works on the bounding box of both masks: cropping changes no distance since all surface voxels of both masks,
    the sources and the targets of every distance, lie inside it, and the neighbours cut away are background.
    """
    box_pred, box_ref = _bounding_box(prediction), _bounding_box(reference)
    if box_pred is None or box_ref is None:
        raise ValueError("surface distances need two non-empty masks")
    box = _union_box(box_pred, box_ref)
    surface_pred = surface_mask(prediction[box])
    surface_ref = surface_mask(reference[box])
    sampling = tuple(float(s) for s in spacing)
    distance_to_ref = distance_transform_edt(~surface_ref, sampling=sampling)
    distance_to_pred = distance_transform_edt(~surface_pred, sampling=sampling)
    return distance_to_ref[surface_pred], distance_to_pred[surface_ref]


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Diagonal of the image extent in mm, the default penalty distance for an empty mask."""
    return float(np.linalg.norm(np.asarray(shape, dtype=float) * np.asarray(spacing, dtype=float)))


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice of two boolean masks; 1 when both are empty."""
    total = int(np.count_nonzero(prediction)) + int(np.count_nonzero(reference))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(prediction & reference)) / total


def binary_metrics(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float],
                   empty_penalty_mm: float | None = None) -> dict[str, Any]:
    """Dice, ASSD and HD95 of two boolean masks, with the empty-mask conventions of the module docstring."""
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} != reference shape {reference.shape}")
    if len(spacing) != reference.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match a {reference.ndim}D mask")
    n_pred = int(np.count_nonzero(prediction))
    n_ref = int(np.count_nonzero(reference))
    if n_pred == 0 or n_ref == 0:
        penalty = image_diagonal_mm(reference.shape, spacing) if empty_penalty_mm is None else float(empty_penalty_mm)
        both_empty = n_pred == 0 and n_ref == 0
        empty = "both" if both_empty else ("prediction" if n_pred == 0 else "reference")
        return {"Dice": 1.0 if both_empty else 0.0, "ASSD": 0.0 if both_empty else penalty,
                "HD95": 0.0 if both_empty else penalty, "n_pred": n_pred, "n_ref": n_ref, "empty": empty}
    pred_to_ref, ref_to_pred = surface_distances(prediction, reference, spacing)
    return {
        "Dice": dice(prediction, reference),
        "ASSD": float((pred_to_ref.mean() + ref_to_pred.mean()) / 2.0),
        "HD95": float(np.percentile(np.concatenate([pred_to_ref, ref_to_pred]), 95)),
        "n_pred": n_pred, "n_ref": n_ref, "empty": "none",
    }


def case_metrics(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float], labels: Iterable[int],
                 empty_penalty_mm: float | None = None) -> dict[int, dict[str, Any]]:
    """Per-label metrics of one case: ``{label: {"Dice", "ASSD", "HD95", "n_pred", "n_ref", "empty"}}``.

    ``prediction`` and ``reference`` are label maps of the same shape; ``spacing`` is in array axis order (mm).
    """
    return {int(label): binary_metrics(prediction == label, reference == label, spacing, empty_penalty_mm)
            for label in labels}


# ----------------------------------------------------------------------------------------------------------------
# Folders
# ----------------------------------------------------------------------------------------------------------------

def read_segmentation(path: str | os.PathLike, where: str) -> tuple[np.ndarray, Geometry]:
    """Integer label map and geometry; unreadable or non-integer files raise :class:`DataError` naming ``where``."""
    segmentation, geometry = read_image(path, where)
    if not np.issubdtype(segmentation.dtype, np.integer):
        if not np.array_equal(segmentation, np.round(segmentation)):
            raise DataError(where, f"{Path(path).name} is not a label map (non-integer values)")
        segmentation = segmentation.astype(np.int32)
    return segmentation, geometry


def _evaluate_case(case: str, prediction_path: str | None, reference_path: str, labels: Sequence[int],
                   empty_penalty_mm: float | None) -> list[dict[str, Any]]:
    """Rows of one case; a missing prediction (``None``) is scored as an empty label map."""
    reference, geometry = read_segmentation(reference_path, f"case {case} (reference)")
    if prediction_path is None:
        prediction = np.zeros_like(reference)
    else:
        prediction, prediction_geometry = read_segmentation(prediction_path, f"case {case} (prediction)")
        problem = ("shape", prediction.shape, reference.shape) if prediction.shape != reference.shape \
            else prediction_geometry.difference(geometry)
        if problem:
            raise DataError(f"case {case}", f"prediction {Path(prediction_path).name}: {problem[0]} {problem[1]} "
                                            f"does not match the reference's {problem[2]} (resample the prediction "
                                            f"onto the reference)")
    per_label = case_metrics(prediction, reference, geometry.spacing_zyx, labels, empty_penalty_mm)
    return [{"case": case, "label": label, **values, "missing_prediction": prediction_path is None}
            for label, values in per_label.items()]


def _evaluate_case_star(arguments: tuple) -> list[dict[str, Any]]:
    return _evaluate_case(*arguments)


def evaluate_folders(pred_folder: str | os.PathLike, ref_folder: str | os.PathLike, labels: Sequence[int],
                     file_ending: str = ".nii.gz", num_processes: int = 2, allow_missing: bool = False,
                     empty_penalty_mm: float | None = None) -> list[dict[str, Any]]:
    """Per-case, per-label rows (see ``ROW_FIELDS``) for every reference file of ``ref_folder``.

    Files are paired by name. Reference cases without a prediction raise a ``ValueError`` naming them unless
    ``allow_missing``, which scores them as empty predictions (flag ``missing_prediction``). Predictions without a
    reference are not evaluated. A shape, spacing, origin or direction mismatch, or an unreadable file, raises a
    :class:`DataError` naming the case, before any report is written. Rows are
    ordered by case name, then by label in the given order.
    """
    pred_folder, ref_folder = Path(pred_folder), Path(ref_folder)
    labels = [int(label) for label in labels]
    if not labels:
        raise ValueError("no labels to evaluate")
    reference_files = sorted(p for p in ref_folder.iterdir() if p.is_file() and p.name.endswith(file_ending))
    if not reference_files:
        raise ValueError(f"no reference files ending with {file_ending!r} in {ref_folder}")
    cases = [p.name[: -len(file_ending)] for p in reference_files]
    prediction_paths = {case: pred_folder / (case + file_ending) for case in cases}
    missing = [case for case in cases if not prediction_paths[case].is_file()]
    if missing and not allow_missing:
        raise ValueError(f"{len(missing)} of {len(cases)} reference cases have no prediction in {pred_folder}: "
                         f"{', '.join(missing)} (allow_missing=True scores them as empty predictions)")
    jobs = [(case, None if case in missing else str(prediction_paths[case]), str(reference), labels,
             empty_penalty_mm) for case, reference in zip(cases, reference_files)]
    if num_processes <= 1 or len(jobs) == 1:
        per_case = [_evaluate_case_star(job) for job in jobs]
    else:
        with multiprocessing.get_context("spawn").Pool(min(num_processes, len(jobs))) as pool:
            per_case = pool.map(_evaluate_case_star, jobs)
    return [row for rows in per_case for row in rows]


def labels_from_dataset_json(dataset_json: str | os.PathLike | Mapping[str, Any]) -> list[int]:
    """Foreground label values of an nnU-Net ``dataset.json`` (nnunetv2's ``LabelManager``)."""
    if not isinstance(dataset_json, Mapping):
        dataset_json = json.loads(Path(dataset_json).read_text())
    labels = dataset_json["labels"]
    regions = [name for name, value in labels.items() if not isinstance(value, int)]
    if regions:
        raise ValueError(f"label {regions[0]!r} is a region {labels[regions[0]]}; only integer labels are supported")
    return foreground_labels(labels)
