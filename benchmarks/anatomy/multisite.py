"""The multi-site benchmark dataset from real anatomy: the multi-site phantom's sites
(:data:`~nnunet_gen.convert.multisite_phantom.SITES`: per-site T1 tissue contrast and acquisition) applied to
``setup.sh``'s subjects.

A subject's image at a site is ``sum_t p_t * mu_t(site)`` over its CSF, GM and WM probability maps
(:func:`benchmarks.anatomy.crossmodal.tissue_maps`) plus a simulated lesion at the site's tumour intensity
(:func:`benchmarks.anatomy.shift.simulate_case`, nearly homogeneous and enhancing), then the site's acquisition.
Training cases: the four training subjects at the seen sites A, B, C; held-out cases: the test subject ``itk``
(never trained on) at every seen site and at the unseen site D, in ``imagesTs<site>/labelsTs<site>``.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from benchmarks.anatomy.crossmodal import tissue_maps
from benchmarks.anatomy.shift import (CROP, SPACING_MM, TARGET_SUBJECT, TRAINING_SUBJECTS, VOLUMES, Anatomy,
                                      DomainStyle, load_anatomy, simulate_case)
from nnunet_gen.convert.multisite_phantom import (SEEN_SITES, SITES, TUMOUR_TEXTURE, UNSEEN_SITES, SiteCase,
                                                  held_out_folders, site_rng, write_multisite)
from nnunet_gen.convert.crossmodal_phantom import acquire


def load_subjects(names: Sequence[str] = (*TRAINING_SUBJECTS, TARGET_SUBJECT),
                  volumes: Path = VOLUMES) -> dict[str, tuple[Anatomy, np.ndarray]]:
    """name -> (T1 anatomy, its (3, Z, Y, X) CSF/GM/WM probability maps)."""
    subjects = {}
    for name in names:
        anatomy = load_anatomy(name, volumes)
        subjects[name] = (anatomy, tissue_maps(anatomy, volumes))
    return subjects


def multisite_case(subject: tuple[Anatomy, np.ndarray], site: str, seed: int,
                   crop: Sequence[int] = CROP) -> tuple[np.ndarray, np.ndarray]:
    """(image float32, label uint8): case ``seed`` of ``subject`` acquired at ``site``."""
    anatomy, maps = subject
    profile = SITES[site]
    image = np.tensordot(np.array(profile.tissue[:3], dtype=np.float32), maps, axes=1).astype(np.float32)
    ratio = profile.tissue[3] / 100.0
    lesion = DomainStyle(lesion_ratio=(0.95 * ratio, 1.05 * ratio), texture=TUMOUR_TEXTURE, texture_sigma=1.5,
                         core_factor=1.0, bias=0.0, noise=0.0, gamma=1.0)
    image, label = simulate_case(replace(anatomy, image=image), lesion, seed, crop)
    return acquire(image, image > 0, profile.acquisition, site_rng(seed, site)), label


def build_dataset(subjects: dict[str, tuple[Anatomy, np.ndarray]], dataset_id: int, name: str, seed: int = 0,
                  train_per_subject: int = 2, test_per_site: int = 4, training: Sequence[str] = TRAINING_SUBJECTS,
                  test: str = TARGET_SUBJECT, crop: Sequence[int] = CROP, overwrite: bool = False) -> Path:
    """Write the raw dataset (module docstring); case k has seed ``seed * 1_000_003 + k``."""
    folders = [(site, s, "imagesTr", "labelsTr") for site in SEEN_SITES for s in training
               for _ in range(train_per_subject)]
    folders += [(site, test, *held_out_folders(site)) for site in (*SEEN_SITES, *UNSEEN_SITES)
                for _ in range(test_per_site)]
    plan = [SiteCase(f"{site}_{subject}_{k:03d}", subject, site, images, labels)
            for k, (site, subject, images, labels) in enumerate(folders)]
    job = {"command": "anatomy multisite", "seed": seed, "train_per_subject": train_per_subject,
           "test_per_site": test_per_site, "training": list(training), "test": test, "crop": list(crop)}
    return write_multisite(
        dataset_id, name, plan,
        lambda k, case: multisite_case(subjects[case.subject], case.site, seed * 1_000_003 + k, crop), job,
        SPACING_MM, {"background": 0, "lesion": 1},
        "nnunet_gen multi-site benchmark: real anatomy, sites of nnunet_gen.convert.multisite_phantom "
        "(benchmarks/anatomy/multisite.py)", overwrite)
