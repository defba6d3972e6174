"""Smoke test of the anatomy-shift benchmark's dataset builder on a synthetic stand-in brain (CI has no real anatomy:
``benchmarks/anatomy/setup.sh`` installs it for the benchmark only)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from benchmarks.anatomy.shift import (DARK_FOLDERS, SOURCE, TARGET, Anatomy, Counts, anatomy_from_arrays,
                                      build_dataset, simulate_case)
from nnunet_gen.io.images import read_image
from nnunet_gen.io.raw_dataset import RawDataset

CROP = (24, 24, 24)


def stand_in(name: str, seed: int) -> Anatomy:
    """An ellipsoid 'brain' with a brighter inner 'white matter' and smooth texture, 48^3."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(48.0)] * 3, indexing="ij"), -1) - 24
    radius = np.sqrt(((grid / np.array([20.0, 22.0, 18.0])) ** 2).sum(-1))
    image = np.where(radius < 1, 60.0, 0.0) + np.where(radius < 0.7, 40.0, 0.0)
    image *= 1 + 0.05 * ndimage.gaussian_filter(rng.standard_normal(image.shape), 2)
    return anatomy_from_arrays(name, image, radius < 1)


def stand_in_maps(anatomy: Anatomy) -> np.ndarray:
    """(3, Z, Y, X) CSF, GM, WM probability maps of a stand-in brain: no CSF, GM = brain outside the white matter."""
    white = anatomy.white_matter.astype(np.float32)
    return np.stack([np.zeros_like(white), anatomy.brain & ~anatomy.white_matter, white]).astype(np.float32)


@pytest.fixture(scope="module")
def anatomies():
    return {name: stand_in(name, k) for k, name in enumerate(("a", "b", "t"))}


def test_source_lesions_are_bright_and_target_lesions_dark_and_textured(anatomies):
    source, label_s = simulate_case(anatomies["a"], SOURCE, seed=3, crop=CROP)
    target, label_t = simulate_case(anatomies["t"], TARGET, seed=3, crop=CROP)
    assert source.shape == target.shape == CROP and source.dtype == np.float32 and label_s.dtype == np.uint8
    for image, label, brighter in ((source, label_s, True), (target, label_t, False)):
        assert label.sum() >= 20
        ring = ndimage.binary_dilation(label, iterations=3) & ~ndimage.binary_dilation(label) & (image > 0)
        ratio = image[label > 0].mean() / image[ring].mean()
        assert (ratio > 1.15) if brighter else (ratio < 0.85)
    texture = [image[label > 0].std() / image[label > 0].mean() for image, label in ((source, label_s),
                                                                                      (target, label_t))]
    assert texture[1] > 2 * texture[0]  # the target's lesion texture is heterogeneous
    again, label_again = simulate_case(anatomies["a"], SOURCE, seed=3, crop=CROP)
    np.testing.assert_array_equal(again, source)
    np.testing.assert_array_equal(label_again, label_s)
    assert not np.array_equal(simulate_case(anatomies["a"], SOURCE, seed=4, crop=CROP)[1], label_s)


def test_builder_writes_every_part_of_the_benchmark(anatomies, nnunet_dirs):
    counts = Counts(train_per_subject=3, in_domain_per_subject=1, target_test=2, target_unlabelled=2)
    folder = build_dataset(anatomies, 981, "AnatomyShift", seed=1, counts=counts, training=("a", "b"), target="t",
                           crop=CROP)
    raw = RawDataset(folder)
    raw.validate()
    assert raw.case_ids() == ["a_00", "a_01", "a_02", "b_00", "b_01", "b_02"]
    assert raw.case_ids("labelsTs") == ["target_00", "target_01"]
    assert raw.case_ids("imagesUnlabelledTr") == ["pool_00", "pool_01"]
    assert raw.case_ids("labelsTsInDomain") == raw.case_ids(DARK_FOLDERS[1]) == ["indomain_a_00", "indomain_b_00"]
    for case in raw.case_ids("labelsTsInDomain"):
        image, _ = read_image(folder / "imagesTsInDomain" / f"{case}_0000.nii.gz")
        dark, _ = read_image(folder / DARK_FOLDERS[0] / f"{case}_0000.nii.gz")
        label, _ = read_image(folder / "labelsTsInDomain" / f"{case}.nii.gz")
        np.testing.assert_allclose(dark[label > 0], 0.5 * image[label > 0], rtol=1e-6)
        np.testing.assert_array_equal(dark[label == 0], image[label == 0])
    assert raw.read_case("a_00").images.shape == (1, *CROP)
