"""Seeded multi-site phantom: one T1-weighted task acquired at several sites (adversarial normalisation's setting).

Subjects are the cross-modal phantom's (:func:`~nnunet_gen.convert.crossmodal_phantom.crossmodal_subject`: CSF rim
and ventricles, grey-matter shell, white-matter core, one enhancing tumour). A site is a scanner and protocol: its
own T1 *tissue contrast* (mean CSF, GM, WM and tumour intensities: sequence parameters change how far apart the
tissues are, not just a global scale or gamma) and its own acquisition (scale, contrast curve, bias field, Rician
noise, slice thickness; :class:`~nnunet_gen.convert.crossmodal_phantom.Acquisition`). Per-case z-scoring removes
the scale but not the contrast, bias, noise or blur differences.

Sites A, B, C are the training sites; D is never seen in training: its tumour-to-white-matter contrast (1.2) is the
lowest, and its bias field and slice thickness are the strongest.

Layout: ``imagesTr/labelsTr`` (``<site>_<subject>``, the site in the manifest's ``params["site"]``, which
:mod:`nnunet_gen.io.sites` reads), and held-out subjects per site in ``imagesTs<site>/labelsTs<site>``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from nnunet_gen.convert.crossmodal_phantom import Acquisition, acquire, crossmodal_subject


@dataclass(frozen=True)
class Site:
    """One site: mean CSF, GM, WM and tumour intensity (``tissue``) and the ``acquisition``."""

    tissue: tuple[float, float, float, float]
    acquisition: Acquisition


SITES: dict[str, Site] = {
    "A": Site((25.0, 65.0, 100.0, 150.0), Acquisition(scale=1.0, gamma=1.0, bias=0.05, noise=2.0, slice_factor=1)),
    "B": Site((40.0, 78.0, 100.0, 135.0), Acquisition(scale=0.6, gamma=1.0, bias=0.20, noise=3.0, slice_factor=1)),
    "C": Site((12.0, 50.0, 100.0, 170.0), Acquisition(scale=1.5, gamma=0.8, bias=0.10, noise=6.0, slice_factor=2)),
    "D": Site((35.0, 80.0, 100.0, 120.0), Acquisition(scale=0.9, gamma=1.2, bias=0.25, noise=4.0, slice_factor=3)),
}
SEEN_SITES = ("A", "B", "C")
UNSEEN_SITES = ("D",)
TUMOUR_TEXTURE = 0.05


def site_rng(seed: int, site: str) -> np.random.Generator:
    """Random draws of one site's acquisition of subject ``seed`` (independent of the subject's own draws)."""
    return np.random.default_rng([seed, 7, ord(site)])


def multisite_case(seed: int, site: str, shape: tuple[int, int, int] = (32, 48, 48)) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, label uint8) of subject ``seed`` acquired at ``site`` (module docstring)."""
    if site not in SITES:
        raise ValueError(f"site must be one of {', '.join(SITES)}, not {site!r}")
    profile = SITES[site]
    subject = crossmodal_subject(seed, shape)
    means = np.array((0.0, *profile.tissue[:3]), dtype=np.float32)
    image = means[subject.tissue] * (1.0 + 0.06 * subject.texture)
    tumour = profile.tissue[3] * np.maximum(1.0 + TUMOUR_TEXTURE * subject.structure, 0.2)
    image = np.where(subject.tumour, tumour, image)
    return (acquire(image, subject.tissue > 0, profile.acquisition, site_rng(seed, site)),
            subject.tumour.astype(np.uint8))


def held_out_folders(site: str) -> tuple[str, str]:
    """Images and labels folder of ``site``'s held-out cases."""
    return f"imagesTs{site}", f"labelsTs{site}"


@dataclass(frozen=True)
class SiteCase:
    """One case to write: ``subject`` (its patient group) acquired at ``site``, into ``images``/``labels``."""

    case_id: str
    subject: str
    site: str
    images: str
    labels: str


def write_multisite(dataset_id: int, name: str, plan: Sequence[SiteCase],
                    make_case: Callable[[int, SiteCase], tuple[np.ndarray, np.ndarray]], job: dict, spacing_mm: float,
                    labels: dict[str, int], description: str, overwrite: bool = False) -> Path:
    """Write ``plan`` as a raw dataset, ``make_case(index in plan, case)`` giving each (image, label); training cases
    carry their site in the manifest (``params["site"]``) and their subject as patient group; resumable like every
    :class:`~nnunet_gen.io.writer.DatasetWriter` dataset."""
    from tqdm import tqdm

    from nnunet_gen.io.images import Geometry
    from nnunet_gen.io.manifest import CaseRecord, Manifest
    from nnunet_gen.io.writer import DatasetWriter

    geometry = Geometry.isotropic(spacing_mm)
    manifest = Manifest(command=job["command"])
    with DatasetWriter(dataset_id, name, {0: "T1"}, labels, job, overwrite=overwrite) as w:
        for k, case in enumerate(tqdm(plan, desc=job["command"], unit="case")):
            if case.images == "imagesTr":
                manifest.add(CaseRecord(case.case_id, "real", case.case_id, case.subject, params={"site": case.site}))
            if not w.has_case(case.case_id, case.images, case.labels):
                image, label = make_case(k, case)
                w.write_case(case.case_id, image[None], label, geometry, case.images, case.labels)
        return w.finalize(manifest, description=description)


def write_multisite_phantom(dataset_id: int, name: str, n_train: int, n_test: int, seed: int = 0,
                            shape: tuple[int, int, int] = (32, 48, 48), seen: Sequence[str] = SEEN_SITES,
                            unseen: Sequence[str] = UNSEEN_SITES, overwrite: bool = False) -> Path:
    """Raw dataset (module docstring): ``n_train`` labelled subjects per seen site, ``n_test`` held-out subjects per
    seen and unseen site, every subject distinct (subject k has seed ``seed * 100003 + k``), 1 mm spacing."""
    if len(seen) < 2 or set(seen) & set(unseen) or not set(seen) | set(unseen) <= set(SITES):
        raise ValueError(f"need >= 2 seen sites, seen and unseen disjoint, all of {', '.join(SITES)}")
    folders = [(site, "imagesTr", "labelsTr") for site in seen for _ in range(n_train)]
    folders += [(site, *held_out_folders(site)) for site in (*seen, *unseen) for _ in range(n_test)]
    plan = [SiteCase(f"{site}_{k:03d}", f"{site}_{k:03d}", site, images, labels)
            for k, (site, images, labels) in enumerate(folders)]
    job = {"command": "phantom-multisite", "n_train": n_train, "n_test": n_test, "seed": seed, "shape": list(shape),
           "seen": list(seen), "unseen": list(unseen)}
    return write_multisite(dataset_id, name, plan, lambda k, case: multisite_case(seed * 100003 + k, case.site, shape),
                           job, 1.0, {"background": 0, "tumour": 1},
                           f"nnunet_gen multi-site phantom: training sites {', '.join(seen)}, unseen "
                           f"{', '.join(unseen)}; held-out cases in imagesTs<site>", overwrite)
