"""Seeded cross-modal phantom: labelled "ceT1-like" source (T1), unlabelled "hrT2-like" target (T2), two centres per
modality, and the paired T2 of every labelled subject to measure translation quality (GBA paper sections 3.1, 4.1).

A seed is a *subject*: its anatomy (outer CSF rim and two ventricles, a grey-matter shell, a white-matter core with
an irregular border, smooth tissue texture) and its tumour (shape, position, internal structure) are the same in
both modalities and both centres; only the contrast and the acquisition change.

* Modality (contrast): T1 orders tissues WM > GM > CSF and the tumour enhances (1.5 x WM, nearly homogeneous); T2
  inverts the order, CSF > GM > WM, and the tumour is intermediate (between GM and CSF) and heterogeneous.
* Centre (acquisition, per modality): global intensity scale, contrast curve (gamma), bias field, Rician noise and
  through-plane resolution: centre B acquires thick slices (2 or 3 slices averaged) that are resampled back onto
  the common grid, so its images are blurred along z, as CrossMoDA's Tilburg images with their thicker slices.

The T1 -> T2 shift is not an intensity transform a model can undo by rescaling: the map from T1 to T2 intensity
decreases over CSF, GM and WM (25 -> 100, 65 -> 60, 100 -> 40) and then rises again for the tumour (150 -> 70), so no
monotonic (let alone linear) function of intensity turns one into the other; the tumour's texture also differs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from nnunet_gen.convert.phantom import _ellipsoid, _smooth_noise

MODALITIES = ("T1", "T2")
CSF, GM, WM = 1, 2, 3
#: mean intensity of CSF, GM, WM and tumour per modality, before the centre's acquisition
TISSUE_INTENSITY = {"T1": (25.0, 65.0, 100.0, 150.0), "T2": (100.0, 60.0, 40.0, 70.0)}
#: amplitude of the tumour's internal structure per modality (T2: heterogeneous), floored at 0.2 x its mean
TUMOUR_TEXTURE = {"T1": 0.03, "T2": 0.3}
TARGET_FOLDER = "imagesTrTarget"


@dataclass(frozen=True)
class Acquisition:
    """One centre's acquisition of one modality: ``scale * 100 * (x / 100) ** gamma`` after a bias field of
    amplitude ``bias``, Rician noise in the brain (standard deviation ``noise`` before ``scale``), and
    ``slice_factor`` slices averaged into one thick slice (1: full resolution)."""

    scale: float
    gamma: float
    bias: float
    noise: float
    slice_factor: int


ACQUISITIONS: dict[tuple[str, str], Acquisition] = {
    ("T1", "A"): Acquisition(scale=1.0, gamma=1.0, bias=0.05, noise=2.0, slice_factor=1),
    ("T1", "B"): Acquisition(scale=0.8, gamma=1.15, bias=0.15, noise=4.0, slice_factor=2),
    ("T2", "A"): Acquisition(scale=1.0, gamma=1.0, bias=0.10, noise=2.5, slice_factor=1),
    ("T2", "B"): Acquisition(scale=1.4, gamma=0.8, bias=0.20, noise=5.0, slice_factor=3),
}


@dataclass(frozen=True)
class Subject:
    """Anatomy of one phantom subject: ``tissue`` (0 background, CSF, GM, WM), ``tumour`` mask (overrides the
    tissue), smooth tissue ``texture`` in [-1, 1] and the tumour's unit-variance ``structure`` (its texture)."""

    tissue: np.ndarray
    tumour: np.ndarray
    texture: np.ndarray
    structure: np.ndarray


def crossmodal_subject(seed: int, shape: tuple[int, int, int] = (32, 48, 48)) -> Subject:
    """The subject ``seed`` (module docstring): the same in every modality and centre."""
    rng = np.random.default_rng(seed)
    size = np.array(shape, dtype=np.float32)
    centre = size / 2 + rng.uniform(-1.5, 1.5, 3)
    radii = size / 2 * rng.uniform(0.8, 0.9, 3)
    brain = _ellipsoid(shape, centre, radii)
    inner = _ellipsoid(shape, centre, radii * 0.86)  # inside the outer CSF rim
    core = ndimage.gaussian_filter(_ellipsoid(shape, centre, radii * 0.62).astype(np.float32), 1.5)
    white = (core + 0.35 * _smooth_noise(rng, shape, 2.0) > 0.5) & inner  # irregular grey/white border
    side = np.array([0.0, 0.0, 0.2]) * radii
    ventricles = (_ellipsoid(shape, centre + side, radii * [0.3, 0.3, 0.1])
                  | _ellipsoid(shape, centre - side, radii * [0.3, 0.3, 0.1]))
    tissue = np.select([ventricles, white, inner, brain], [CSF, WM, GM, CSF], 0).astype(np.uint8)

    tumour_radii = np.maximum(rng.uniform(3.0, 6.0, 3) * [min(1.0, shape[0] / shape[1]), 1.0, 1.0], 1.5)
    direction = rng.standard_normal(3)
    offset = direction / np.linalg.norm(direction) * rng.uniform(0.0, 0.55) * (radii - tumour_radii.max())
    tumour = _ellipsoid(shape, centre + offset, tumour_radii) & brain
    texture, structure = _smooth_noise(rng, shape, 2.0), _smooth_noise(rng, shape, 1.0)
    return Subject(tissue, tumour, texture, structure / structure.std())


def thick_slices(image: np.ndarray, factor: int) -> np.ndarray:
    """``image`` acquired with ``factor`` times thicker slices (axis 0 averaged in slabs) and linearly resampled
    back onto its grid: what a coarser through-plane resolution leaves after resampling to a common spacing."""
    if factor == 1:
        return image
    z = image.shape[0]
    slabs = -(-z // factor)
    padded = np.pad(image, [(0, slabs * factor - z)] + [(0, 0)] * (image.ndim - 1), mode="edge")
    thick = padded.reshape(slabs, factor, *image.shape[1:]).mean(1)
    return ndimage.zoom(thick, (factor,) + (1,) * (image.ndim - 1), order=1, grid_mode=True, mode="nearest")[:z]


def acquire(image: np.ndarray, brain: np.ndarray, acquisition: Acquisition,
            rng: np.random.Generator) -> np.ndarray:
    """A centre's acquisition of a noise-free ``image`` (module docstring); float32, 0 outside ``brain``."""
    image = image * (1.0 + acquisition.bias * _smooth_noise(rng, image.shape, 8.0))
    image = acquisition.scale * 100.0 * (np.clip(image, 0.0, None) / 100.0) ** acquisition.gamma
    noise = acquisition.noise * acquisition.scale
    image = np.sqrt((image + rng.normal(0.0, noise, image.shape)) ** 2 + rng.normal(0.0, noise, image.shape) ** 2)
    image = thick_slices(np.where(brain, image, 0.0), acquisition.slice_factor)
    return image.astype(np.float32)


def acquisition_rng(seed: int, modality: str, centre: str) -> np.random.Generator:
    """Random draws of one acquisition, independent of the subject's (same seed) and of the other acquisitions."""
    if (modality, centre) not in ACQUISITIONS:
        raise ValueError(f"modality/centre must be T1|T2 and A|B, not {modality!r}/{centre!r}")
    return np.random.default_rng([seed, 1 + MODALITIES.index(modality), ord(centre)])


def crossmodal_case(seed: int, modality: str, centre: str,
                    shape: tuple[int, int, int] = (32, 48, 48)) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, label uint8) of subject ``seed`` in ``modality`` (T1|T2) acquired at ``centre`` (A|B)."""
    rng = acquisition_rng(seed, modality, centre)
    subject = crossmodal_subject(seed, shape)
    means = np.array((0.0, *TISSUE_INTENSITY[modality][:3]), dtype=np.float32)
    image = means[subject.tissue] * (1.0 + 0.06 * subject.texture)
    tumour = TISSUE_INTENSITY[modality][3] * np.maximum(1.0 + TUMOUR_TEXTURE[modality] * subject.structure, 0.2)
    image = ndimage.gaussian_filter(np.where(subject.tumour, tumour, image), 0.6)  # partial volume
    return acquire(image, subject.tissue > 0, ACQUISITIONS[modality, centre], rng), subject.tumour.astype(np.uint8)


@dataclass(frozen=True)
class PlannedCase:
    """One image to write: subject ``subject`` in ``modality`` at ``centre`` into ``images`` (+ ``labels``)."""

    case_id: str
    subject: str
    modality: str
    centre: str
    images: str
    labels: str | None


def crossmodal_plan(source: Sequence[str], target: Sequence[str], test: Sequence[str],
                    source_centre: str = "A") -> list[PlannedCase]:
    """The cross-modal layout for subjects named ``source``, ``target``, ``test`` (disjoint):

    * ``imagesTr/labelsTr``: T1 of each source subject at ``source_centre`` (``source<centre>_<subject>``);
    * ``imagesTrTarget``: the T2 of the same source subject at ``source_centre``, same case ID: the paired reference
      of a T1 -> T2 translation, never a training image (nnU-Net ignores the folder);
    * ``imagesUnlabelledTr``: T2 of each target subject, centres A and B alternating (``target<centre>_<subject>``);
    * ``imagesTs/labelsTs``: T2 with labels of each test subject, centres alternating (``test<centre>_<subject>``).

    A source case's reference comes first, so a case is complete once its label exists (resuming)."""
    if source_centre not in ("A", "B"):
        raise ValueError(f"source centre must be A or B, not {source_centre!r}")
    if len({*source, *target, *test}) != len(source) + len(target) + len(test):
        raise ValueError("source, target and test subjects must be distinct")
    plan = []
    for s in source:
        case_id = f"source{source_centre}_{s}"
        plan += [PlannedCase(case_id, s, "T2", source_centre, TARGET_FOLDER, None),
                 PlannedCase(case_id, s, "T1", source_centre, "imagesTr", "labelsTr")]
    for prefix, subjects, images, labels in (("target", target, "imagesUnlabelledTr", None),
                                             ("test", test, "imagesTs", "labelsTs")):
        plan += [PlannedCase(f"{prefix}{'AB'[k % 2]}_{s}", s, "T2", "AB"[k % 2], images, labels)
                 for k, s in enumerate(subjects)]
    return plan


def write_crossmodal(dataset_id: int, name: str, plan: Sequence[PlannedCase],
                     make_case: Callable[[str, str, str], tuple[np.ndarray, np.ndarray]], job: dict,
                     spacing_mm: float, description: str, overwrite: bool = False) -> Path:
    """Write ``plan`` (see :func:`crossmodal_plan`) as a raw dataset, ``make_case(subject, modality, centre)``
    giving each (image, label); resumable like every :class:`~nnunet_gen.io.writer.DatasetWriter` dataset."""
    from tqdm import tqdm

    from nnunet_gen.io.images import Geometry
    from nnunet_gen.io.manifest import Manifest
    from nnunet_gen.io.writer import DatasetWriter

    geometry = Geometry.isotropic(spacing_mm)
    with DatasetWriter(dataset_id, name, {0: "T1"}, {"background": 0, "tumour": 1}, job, overwrite=overwrite) as w:
        for case in tqdm(plan, desc=job["command"], unit="image"):
            if w.has_case(case.case_id, case.images, case.labels):
                continue
            image, label = make_case(case.subject, case.modality, case.centre)
            w.write_case(case.case_id, image[None], label if case.labels else None, geometry, case.images,
                         case.labels or "labelsTr")
        return w.finalize(Manifest.for_real_cases([c.case_id for c in plan if c.images == "imagesTr"]),
                          description=description, unlabelled_modality="T2", paired_target_folder=TARGET_FOLDER)


def write_crossmodal_phantom(dataset_id: int, name: str, n_source: int, n_target: int, n_test: int, seed: int = 0,
                             shape: tuple[int, int, int] = (32, 48, 48), source_centre: str = "A",
                             overwrite: bool = False) -> Path:
    """Raw dataset of :func:`crossmodal_plan` with ``n_source`` + ``n_target`` + ``n_test`` distinct phantom subjects
    (named ``000``, ``001``, ...; subject k has seed ``seed * 100003 + k``), 1 mm spacing."""
    subjects = [f"{k:03d}" for k in range(n_source + n_target + n_test)]
    plan = crossmodal_plan(subjects[:n_source], subjects[n_source:n_source + n_target],
                           subjects[n_source + n_target:], source_centre)
    job = {"command": "phantom-crossmodal", "n_source": n_source, "n_target": n_target, "n_test": n_test,
           "seed": seed, "shape": list(shape), "source_centre": source_centre}
    return write_crossmodal(
        dataset_id, name, plan, lambda s, modality, centre: crossmodal_case(seed * 100003 + int(s), modality, centre,
                                                                             shape),
        job, 1.0, description=f"nnunet_gen cross-modal phantom: labelled T1 (centre {source_centre}), unlabelled T2 "
                              f"(centres A, B), T2 test set, paired T2 of the source subjects in {TARGET_FOLDER}",
        overwrite=overwrite)
