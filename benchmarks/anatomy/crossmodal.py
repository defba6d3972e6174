"""The cross-modal benchmark dataset from real anatomy: labelled "ceT1-like" T1 cases, unlabelled "hrT2-like" T2
cases of other subjects, a labelled T2 test set of a subject never used as source, and the paired T2 of every
labelled case (``imagesTrTarget``) to measure T1 -> T2 translation quality. The layout and the centres' acquisitions
are those of the cross-modal phantom (:mod:`nnunet_gen.convert.crossmodal_phantom`); the anatomy is ``setup.sh``'s.

Each subject's T1 is its real template/scan (loaded, skull-stripped and scaled by :mod:`benchmarks.anatomy.shift`);
its T2 is made from tissue probability maps, ``sum_t p_t * mu_t`` with the inverted hrT2 ordering CSF (100) > GM (60)
> WM (40):

* icbm2009a: the ICBM152 2009a GM/WM probability maps (nilearn), CSF = brain - GM - WM; source (T1 + paired T2);
* mni152nlin6, colin27: maps estimated as the posteriors of a 3-class Gaussian mixture (tied variance) of their own
  T1; source;
* robex: estimated maps; target pool (unlabelled T2, centres A and B);
* itk: estimated maps; test set (labelled T2, centres A and B), never a source.

Only icbm2009a ships tissue maps, and every role needs a T2 (the source for its paired reference, the target and test
sets for their images), so the other subjects' maps are estimated from their T1: their tissue T2 is then a smooth
(decreasing) function of their T1 intensity, while icbm2009a's is not (its maps come from a population
segmentation). The target pool and the test set are different subjects, none of them a source.

A case is a crop of one subject with one simulated lesion (:func:`benchmarks.anatomy.shift.simulate_case`, same seed
in both modalities, hence the same crop, lesion shape and internal structure): bright and nearly homogeneous in T1
(1.35-1.65 x WM, enhancing), intermediate (60-80, between GM and CSF) and heterogeneous in T2 with a brighter core.
Each modality is then acquired at centre A or B (bias field, contrast curve, scale, Rician noise, slice thickness;
:data:`~nnunet_gen.convert.crossmodal_phantom.ACQUISITIONS`).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.mixture import GaussianMixture

from benchmarks.anatomy.shift import (CROP, SPACING_MM, VOLUMES, Anatomy, DomainStyle, _array, load_anatomy,
                                      simulate_case)
from nnunet_gen.convert.crossmodal_phantom import (ACQUISITIONS, TISSUE_INTENSITY, acquire, acquisition_rng,
                                                   crossmodal_plan, write_crossmodal)

SOURCE_SUBJECTS = ("icbm2009a", "mni152nlin6", "colin27")
TARGET_SUBJECTS = ("robex",)
TEST_SUBJECTS = ("itk",)
#: lesion appearance per modality (acquisition effects come from the centre, not from here)
LESION = {"T1": DomainStyle(lesion_ratio=(1.35, 1.65), texture=0.05, texture_sigma=1.5, core_factor=1.0, bias=0.0,
                            noise=0.0, gamma=1.0),
          "T2": DomainStyle(lesion_ratio=(0.6, 0.8), texture=0.3, texture_sigma=0.8, core_factor=1.3, bias=0.0,
                            noise=0.0, gamma=1.0)}


def tissue_maps(anatomy: Anatomy, volumes: Path = VOLUMES) -> np.ndarray:
    """(3, Z, Y, X) CSF, GM, WM probabilities of ``anatomy`` (module docstring), 0 outside the brain."""
    if anatomy.name == "icbm2009a":
        gm, wm = (_array(volumes / f"icbm2009a_{t}.nii.gz") for t in ("gm", "wm"))
        gm, wm = gm / gm.max(), wm / wm.max()
        maps = np.stack([np.clip(1.0 - gm - wm, 0.0, 1.0), gm, wm])
    else:
        values = anatomy.image[anatomy.brain][:, None].astype(np.float64)
        mixture = GaussianMixture(3, covariance_type="tied", random_state=0,  # tied: posteriors monotonic in T1
                                  means_init=[[30.0], [65.0], [100.0]]).fit(values[::4])
        maps = np.zeros((3, *anatomy.image.shape))
        maps[:, anatomy.brain] = mixture.predict_proba(values)[:, np.argsort(mixture.means_[:, 0])].T
    return (maps * anatomy.brain).astype(np.float32)


def t2_anatomy(anatomy: Anatomy, maps: np.ndarray) -> Anatomy:
    """The T2 of the same subject: ``sum_t p_t * mu_t(T2)``; same brain and white matter (so the same lesions)."""
    image = np.tensordot(np.array(TISSUE_INTENSITY["T2"][:3], dtype=np.float32), maps, axes=1)
    return replace(anatomy, image=image.astype(np.float32))


def load_subjects(names: Sequence[str], volumes: Path = VOLUMES) -> dict[str, dict[str, Anatomy]]:
    """name -> {"T1": anatomy, "T2": its T2 anatomy}."""
    subjects = {}
    for name in names:
        t1 = load_anatomy(name, volumes)
        subjects[name] = {"T1": t1, "T2": t2_anatomy(t1, tissue_maps(t1, volumes))}
    return subjects


def crossmodal_case(subject: dict[str, Anatomy], seed: int, modality: str, centre: str,
                    crop: Sequence[int] = CROP) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, label uint8): case ``seed`` of ``subject`` in ``modality`` acquired at ``centre``; the label
    and the crop depend on ``seed`` only, not on the modality or centre."""
    rng = acquisition_rng(seed, modality, centre)
    image, label = simulate_case(subject[modality], LESION[modality], seed, crop)
    return acquire(image, image > 0, ACQUISITIONS[modality, centre], rng), label


def two_contrast_case(subject: dict[str, Anatomy], seed: int, crop: Sequence[int] = CROP,
                      centre: str = "A") -> tuple[np.ndarray, np.ndarray]:
    """((2, Z, Y, X) T1 + T2 float32, label uint8): case ``seed`` of ``subject`` in both contrasts at ``centre``, one
    lesion with each contrast's own appearance (:data:`LESION`): a multi-contrast case for joint image + label
    generators (``benchmarks/bench_stylegan.py --data anatomy``)."""
    t1, label = crossmodal_case(subject, seed, "T1", centre, crop)
    t2, _ = crossmodal_case(subject, seed, "T2", centre, crop)
    return np.stack([t1, t2]), label


@dataclass(frozen=True)
class Counts:
    """Cases per subject of each role (module docstring)."""

    source: int = 5
    target: int = 12
    test: int = 12


def build_dataset(subjects: dict[str, dict[str, Anatomy]], dataset_id: int, name: str, seed: int = 0,
                  counts: Counts = Counts(), source: Sequence[str] = SOURCE_SUBJECTS,
                  target: Sequence[str] = TARGET_SUBJECTS, test: Sequence[str] = TEST_SUBJECTS,
                  crop: Sequence[int] = CROP, source_centre: str = "A", overwrite: bool = False) -> Path:
    """Write the benchmark's raw dataset (layout: :func:`~nnunet_gen.convert.crossmodal_phantom.crossmodal_plan`);
    case ``<subject>_<k>`` has seed ``seed * 1_000_003 + its index``, centres alternate over a target/test list."""
    tags = {role: [f"{s}_{k:02d}" for s in names for k in range(n)]
            for role, names, n in (("source", source, counts.source), ("target", target, counts.target),
                                   ("test", test, counts.test))}
    case_seeds = {tag: seed * 1_000_003 + i for i, tag in enumerate(sum(tags.values(), []))}
    job = {"command": "anatomy crossmodal", "seed": seed, "counts": vars(counts), "crop": list(crop),
           "source": list(source), "target": list(target), "test": list(test), "source_centre": source_centre}
    return write_crossmodal(
        dataset_id, name, crossmodal_plan(tags["source"], tags["target"], tags["test"], source_centre),
        lambda tag, modality, centre: crossmodal_case(subjects[tag.rsplit("_", 1)[0]], case_seeds[tag], modality,
                                                      centre, crop),
        job, SPACING_MM, overwrite=overwrite,
        description=f"nnunet_gen cross-modal benchmark: real anatomy, T1 of {', '.join(source)} (labelled), T2 of "
                    f"{', '.join(target)} (unlabelled) and {', '.join(test)} (test), paired T2 in imagesTrTarget "
                    f"(benchmarks/anatomy/crossmodal.py)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-d", type=int, required=True, help="dataset ID")
    parser.add_argument("--name", default="AnatomyCrossModal")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source-centre", choices=["A", "B"], default="A")
    parser.add_argument("--volumes", default=str(VOLUMES), help="folder filled by benchmarks/anatomy/setup.sh")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    subjects = load_subjects((*SOURCE_SUBJECTS, *TARGET_SUBJECTS, *TEST_SUBJECTS), Path(args.volumes))
    print(build_dataset(subjects, args.d, args.name, args.seed, source_centre=args.source_centre,
                        overwrite=args.overwrite))


if __name__ == "__main__":
    main()
