"""Tests of synth.gen_metrics: FID with a tiny locally trained extractor, bMMD^2, MS-SSIM, diversity, nearest
neighbours, label-consistency Dice (16 x 16 images, a few iterations)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from synth.checkpoint import CheckpointError, save_tensors
from synth.gen_metrics import (
    FeatureExtractor,
    batch_mmd2,
    fid,
    frechet_distance,
    label_consistency_dice,
    ms_ssim,
    ms_ssim_diversity,
    ms_ssim_setup,
    nearest_real_neighbours,
    per_plane_slices,
    train_feature_extractor,
)

SIZE = 16


def discs(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 1, 16, 16) float32 images (smooth background, a bright disc in 70% of them, noise) and their labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    background = np.exp(-((yy - 8) ** 2 + (xx - 8) ** 2) / 60.0)
    images, labels = np.empty((count, 1, SIZE, SIZE), np.float32), np.zeros((count, SIZE, SIZE), np.int64)
    for image, label in zip(images, labels, strict=True):
        cy, cx, radius = rng.uniform(4, 12), rng.uniform(4, 12), rng.uniform(1.5, 4)
        label[:] = ((yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2) * (rng.random() < 0.7)
        image[0] = background + label * rng.uniform(0.5, 1.0) + 0.05 * rng.normal(size=(SIZE, SIZE))
    return images, labels


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    real, labels = discs(96, 0)
    return real, labels, discs(96, 1)[0]


@pytest.fixture(scope="module")
def extractor(data) -> FeatureExtractor:
    return train_feature_extractor(data[0], data[1], seed=0, iterations=25, width=8)


def whitened(count: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Samples with sample mean exactly 0 and sample covariance exactly I."""
    z = rng.normal(size=(count, dim))
    z -= z.mean(axis=0)
    return z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T


def test_frechet_distance_closed_form():
    rng = np.random.default_rng(0)
    mean_a, mean_b = np.array([0.0, 1.0, -2.0]), np.array([1.5, 1.0, 0.0])
    var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 0.25])
    a = whitened(500, 3, rng) * np.sqrt(var_a) + mean_a
    b = whitened(400, 3, rng) * np.sqrt(var_b) + mean_b
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    shifts = [frechet_distance(a, a + shift) for shift in (0.5, 1.0, 2.0)]
    assert shifts == pytest.approx([3 * 0.25, 3 * 1.0, 3 * 4.0], rel=1e-9)


def test_frechet_distance_more_dimensions_than_samples():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(10, 32))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, rng.normal(size=(10, 32)) + 3.0) > 32 * 9 * 0.5


def test_fid_with_tiny_extractor(data, extractor):
    real, _, other = data
    rng = np.random.default_rng(2)
    perturbed = real + 0.02 * rng.normal(size=real.shape).astype(np.float32)
    noise = rng.uniform(real.min(), real.max(), size=real.shape).astype(np.float32)
    assert fid(real, real, extractor) == pytest.approx(0.0, abs=1e-8)
    close, same_distribution, far = fid(real, perturbed, extractor), fid(real, other, extractor), \
        fid(real, noise, extractor)
    assert far > 20 * max(close, same_distribution)
    assert extractor.features(real).shape == (96, extractor.dim) == (96, 64)


def test_extractor_determinism_and_round_trip(data, tmp_path):
    real, labels, _ = data
    first, second = (train_feature_extractor(real[:32], labels[:32], seed=3, iterations=3, width=4)
                     for _ in range(2))
    other = train_feature_extractor(real[:32], labels[:32], seed=4, iterations=3, width=4)
    assert np.array_equal(first.features(real[:8]), second.features(real[:8]))
    assert first.history == second.history
    assert not np.allclose(first.features(real[:8]), other.features(real[:8]))
    loaded = FeatureExtractor.load(first.save(tmp_path / "features.safetensors"))
    assert np.array_equal(loaded.features(real[:8]), first.features(real[:8]))
    assert (loaded.seed, loaded.history, loaded.network.label_classes) == (3, first.history, 1)
    unlabelled = train_feature_extractor(real[:8, 0], None, seed=0, iterations=1, width=4)
    assert unlabelled.network.label_head is None and unlabelled.features(real[:2]).shape == (2, 32)
    save_tensors(tmp_path / "other.safetensors", {"w": torch.zeros(1)}, {"nnunet_gen_format": "translator-1"})
    with pytest.raises(CheckpointError):
        FeatureExtractor.load(tmp_path / "other.safetensors")


def test_ms_ssim_properties():
    rng = np.random.default_rng(3)
    for size in (16, 32, 48):
        image = rng.random((size, size))
        noisy = [image + sigma * rng.normal(size=image.shape) for sigma in (0.05, 0.2, 0.8)]
        assert ms_ssim(image, image) == 1.0
        scores = [ms_ssim(image, other, data_range=1.0) for other in noisy]
        assert scores[0] > scores[1] > scores[2]
        assert ms_ssim(image, noisy[1]) == ms_ssim(noisy[1], image)
    assert [ms_ssim_setup(s, s) for s in (5, 16, 32, 64, 176, 256)] == [(1, 5), (1, 11), (2, 11), (3, 11), (5, 11),
                                                                          (5, 11)]
    batch = rng.random((4, 2, 20, 24))
    assert ms_ssim(batch, batch).shape == (4, 2)


def test_bmmd2(data):
    real, _, other = data
    rng = np.random.default_rng(4)
    noise = rng.uniform(real.min(), real.max(), size=real.shape)
    for kernel in ("linear", "gaussian"):
        same, _ = batch_mmd2(real, other, batch_size=16, kernel=kernel, batches=20)
        different, _ = batch_mmd2(real, noise, batch_size=16, kernel=kernel, batches=20)
        assert different > 10 * abs(same)
    assert batch_mmd2(real, other, 8, batches=5, seed=1) == batch_mmd2(real, other, 8, batches=5, seed=1)
    volumes = rng.normal(size=(10, 1, 4, 5, 6))
    assert batch_mmd2(volumes, volumes + 1.0, 4, batches=3)[0] > 100  # about 120 = |mean shift|^2


def test_nearest_neighbours_and_diversity(data):
    real, _, other = data
    fakes = np.concatenate([other[:5], real[7:8]])
    found = nearest_real_neighbours(fakes, real[:20])
    assert found.index[-1] == 7 and found.score[-1] == pytest.approx(1.0, abs=1e-12)
    assert (found.score[:-1] < 1.0).all() and found.real_score.shape == (20,)
    assert (found.real_index != np.arange(20)).all()
    rng = np.random.default_rng(5)
    near_duplicates = real[:1] + 0.01 * rng.normal(size=(12, 1, SIZE, SIZE))
    collapsed, varied = (ms_ssim_diversity(fakes, real, pairs=50, data_range=2.0) for fakes in (near_duplicates, other))
    assert collapsed.fake > 0.9 > varied.fake + 0.3
    assert collapsed.real == varied.real  # the same real pairs (seed) and constants (data_range)
    assert ms_ssim_diversity(other, real, pairs=20, seed=7) == ms_ssim_diversity(other, real, pairs=20, seed=7)


def test_label_consistency_dice():
    labels = np.random.default_rng(6).integers(0, 3, size=(4, 8, 8))
    assert np.array_equal(label_consistency_dice(labels, labels, 3), np.ones(4))
    prediction = np.zeros((2, 4, 4), int)
    prediction[0, :2] = 1
    generated = np.zeros((2, 4, 4), int)
    generated[0, :1] = 1
    generated[0, 3, 3] = 2  # class 2 only in the generated label: Dice 0
    assert label_consistency_dice(prediction, generated, 3) == pytest.approx([(2 * 4 / 12 + 0) / 2, 1.0])


def test_per_plane_slices():
    volumes = np.arange(2 * 1 * 4 * 5 * 6).reshape(2, 1, 4, 5, 6)
    assert per_plane_slices(volumes, "axial").shape == (2, 1, 5, 6)
    assert per_plane_slices(volumes, "coronal").shape == (2, 1, 4, 6)
    assert per_plane_slices(volumes, "sagittal").shape == (2, 1, 4, 5)
    assert np.array_equal(per_plane_slices(volumes, "axial")[1, 0], volumes[1, 0, 2])
    assert per_plane_slices(volumes, "sagittal", "all").shape == (12, 1, 4, 5)
    assert np.array_equal(per_plane_slices(volumes, "coronal", "all")[5 + 3], volumes[1, :, :, 3])


@pytest.mark.parametrize("call", [
    lambda: frechet_distance(np.zeros((1, 3)), np.zeros((5, 3))),
    lambda: frechet_distance(np.zeros((5, 3)), np.zeros((5, 4))),
    lambda: frechet_distance(np.full((5, 3), np.nan), np.zeros((5, 3))),
    lambda: ms_ssim(np.zeros((8, 8)), np.zeros((8, 9))),
    lambda: ms_ssim(np.zeros((8, 8)), np.zeros((8, 8))),
    lambda: ms_ssim(np.zeros((2, 2)), np.ones((2, 2))),
    lambda: batch_mmd2(np.zeros((4, 8)), np.zeros((4, 8)), batch_size=8),
    lambda: batch_mmd2(np.zeros((8, 8)), np.zeros((8, 8)), batch_size=4, kernel="cubic"),
    lambda: per_plane_slices(np.zeros((2, 4, 5, 6)), "axial"),
    lambda: per_plane_slices(np.zeros((2, 1, 4, 5, 6)), "oblique"),
    lambda: ms_ssim_diversity(np.zeros((1, 8, 8)), np.ones((4, 8, 8))),
    lambda: nearest_real_neighbours(np.zeros((2, 8, 8)), np.ones((3, 9, 8))),
    lambda: label_consistency_dice(np.zeros((2, 4)), np.zeros((2, 4)), 1),
    lambda: label_consistency_dice(np.full((2, 4), 3), np.zeros((2, 4)), 3),
    lambda: label_consistency_dice(np.full((2, 4), 0.5), np.zeros((2, 4)), 3),
    lambda: train_feature_extractor(np.zeros((4, 1, 8, 8)), np.zeros((4, 8, 9)), iterations=1),
    lambda: train_feature_extractor(np.zeros((4, 1, 8, 8)), -np.ones((4, 8, 8)), iterations=1),
    lambda: train_feature_extractor(np.zeros((4, 1, 8, 8)), None, iterations=0),
    lambda: train_feature_extractor(np.zeros((0, 1, 8, 8)), None, iterations=1),
])
def test_bad_inputs_raise(call):
    with pytest.raises(ValueError):
        call()


def test_features_reject_wrong_channels(extractor):
    with pytest.raises(ValueError, match="channels"):
        extractor.features(np.zeros((2, 3, SIZE, SIZE)))
