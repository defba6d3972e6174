"""Tests of nnunet_gen.augment.gba (one tiny SinGAN trained once per module)."""
from __future__ import annotations

import numpy as np
import pytest

from nnunet_gen.augment.gba import (
    GBASelectionRules,
    GenerativeBlending,
    axial_weighting_mask,
    derived_seed,
    select_gba_parameters,
    tumour_contrast,
    tumour_statistics,
)
from nnunet_gen.augment.naive_rescale import NaiveRescale
from synth.singan import SinGAN, SinGANConfig, train_singan

SIZE = 32




def textured_volume(depth: int = 6) -> np.ndarray:
    zz, yy, xx = np.mgrid[0:depth, 0:SIZE, 0:SIZE].astype(np.float64)
    return (300.0 + 80.0 * np.sin(xx / 1.3) * np.cos(yy / 1.7) + 10.0 * zz).astype(np.float32)


def ball(shape: tuple[int, int, int], center: tuple[float, float, float], radius: float) -> np.ndarray:
    zz, yy, xx = np.indices(shape)
    return ((zz - center[0]) ** 2 + (yy - center[1]) ** 2 + (xx - center[2]) ** 2 <= radius ** 2).astype(np.uint8)


@pytest.fixture(scope="module")
def singan() -> SinGAN:
    config = SinGANConfig(iterations_per_scale=4, critic_steps=1, generator_steps=1)
    return train_singan(textured_volume()[0], config, seed=0, progress=False)


def test_weighting_mask_is_axial_local_and_nan_free() -> None:
    tumour = ball((5, 64, 64), (2, 20, 20), 3).astype(bool)
    weights = axial_weighting_mask(tumour, dilation_radius=7, sigma=5.0)
    assert weights.dtype == np.float32 and np.isfinite(weights).all()
    assert weights.min() >= 0 and weights.max() <= 1
    assert weights[2, 20, 20] > 0.8  # the tumour keeps most weight
    assert not weights[tumour.any(axis=(1, 2)) == 0].any()  # no smoothing across slices
    assert weights[2, 20 + 3 + 7 + 20 + 1:, :].max() == 0  # beyond radius + dilation + 4 sigma: exactly 0
    empty = axial_weighting_mask(np.zeros((3, 16, 16), bool), 7, 5.0)
    assert np.isfinite(empty).all() and not empty.any()


def test_naive_path_equals_naive_rescale() -> None:
    image = textured_volume()
    label = ball(image.shape, (3, 12, 12), 4) * 1 + ball(image.shape, (3, 25, 25), 2) * 2
    naive = GenerativeBlending(alpha=1.5, start_scale=1, labels=(1,), blend=False)(image, label)
    np.testing.assert_array_equal(naive, NaiveRescale(1.5, (1,))(image, label))


def test_blending_follows_eq7_and_keeps_far_voxels(singan: SinGAN) -> None:
    image = textured_volume()
    label = ball(image.shape, (3, 9, 9), 3)
    transform = GenerativeBlending(alpha=0.5, start_scale=1, dilation_radius=2, sigma=1.5, seed=11)
    result = transform.render(image, label, singan)
    out = result.image
    assert out.shape == image.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert result.has_tumour and result.harmonised_slices == (0, 1, 2, 3, 4, 5)  # the ball spans every slice
    weights = axial_weighting_mask(label.astype(bool), 2, 1.5)
    far = weights == 0
    assert far.sum() > 0.5 * far.size
    np.testing.assert_array_equal(out[far], image[far])  # bit-identical
    z = 3
    rescaled = NaiveRescale(0.5)(image, label)
    harmonised = singan.harmonize(rescaled[z], 1, derived_seed(11, z))
    expected = weights[z] * harmonised + (1 - weights[z]) * image[z]
    np.testing.assert_allclose(out[z], expected, rtol=1e-6, atol=1e-4)
    tumour = label.astype(bool)
    assert out[tumour].mean() < 0.8 * image[tumour].mean()  # alpha = 0.5 darkens the tumour
    np.testing.assert_array_equal(transform(image, label, singan), out)  # deterministic
    again = GenerativeBlending.from_parameters(transform.parameters())
    assert again == transform


def test_tumour_contrast_is_tumour_mean_over_ring_mean() -> None:
    image = np.full((3, 16, 16), 100.0, np.float32)
    tumour = np.zeros(image.shape, bool)
    tumour[1] = ball(image.shape, (1, 8, 8), 2)[1].astype(bool)
    image[tumour] = 50.0
    image[0] = 7.0  # other slices are not part of the ring
    assert tumour_contrast(image, tumour) == pytest.approx(0.5)
    assert np.isnan(tumour_contrast(image, np.zeros_like(tumour)))


def test_keep_contrast_restores_the_naive_contrast_and_keeps_texture(singan: SinGAN) -> None:
    image = textured_volume()
    label = ball(image.shape, (3, 12, 12), 4)
    tumour = label.astype(bool)
    for alpha in (0.5, 1.5):
        plain = GenerativeBlending(alpha, start_scale=1, dilation_radius=2, sigma=1.5, seed=5).render(
            image, label, singan)
        kept = GenerativeBlending(alpha, start_scale=1, dilation_radius=2, sigma=1.5, seed=5,
                                  keep_contrast=True).render(image, label, singan)
        naive = NaiveRescale(alpha)(image, label)
        assert kept.contrast["naive"] == pytest.approx(tumour_contrast(naive, tumour))
        assert kept.contrast["output"] == pytest.approx(kept.contrast["naive"], rel=1e-5)
        assert abs(plain.contrast["output"] - plain.contrast["naive"]) > 1e-3  # the SinGAN moved it
        np.testing.assert_array_equal(kept.image[~tumour], plain.image[~tumour])  # only tumour voxels change
        factor = kept.image[tumour] / plain.image[tumour]
        np.testing.assert_allclose(factor, factor[0], rtol=1e-5)  # one factor: the SinGAN texture is kept
    recorded = {"alpha": 0.5, "start_scale": 1}  # a manifest written before keep_contrast existed
    assert GenerativeBlending.from_parameters(recorded).keep_contrast is False
    assert GenerativeBlending.from_parameters({**recorded, "keep_contrast": True}).keep_contrast


def test_case_without_tumour_is_unchanged(singan: SinGAN, caplog: pytest.LogCaptureFixture) -> None:
    image = textured_volume()
    label = np.zeros(image.shape, np.uint8)
    label[2, 5, 5] = 2  # another label only
    result = GenerativeBlending(alpha=2.0, start_scale=1).render(image, label, singan)
    assert not result.has_tumour and "no voxel" in caplog.text
    np.testing.assert_array_equal(result.image, image)


def test_tumour_touching_the_border(singan: SinGAN) -> None:
    image = textured_volume()
    label = ball(image.shape, (0, 0, 16), 4)  # touches z = 0 and y = 0
    out = GenerativeBlending(alpha=1.8, start_scale=2, dilation_radius=2, sigma=1.5, seed=3)(image, label, singan)
    assert np.isfinite(out).all()
    tumour = label.astype(bool)
    assert out[tumour].mean() > 1.3 * image[tumour].mean()
    weights = axial_weighting_mask(tumour, 2, 1.5)
    assert weights[0, 0, 16] > 0.9  # 'nearest' edges keep full weight at the border
    np.testing.assert_array_equal(out[weights == 0], image[weights == 0])


def test_other_slice_size_is_refused(singan: SinGAN) -> None:
    image = np.ones((3, SIZE, SIZE + 8), np.float32)
    label = ball(image.shape, (1, 10, 10), 2)
    with pytest.raises(ValueError, match="trained on"):
        GenerativeBlending(alpha=1.5, start_scale=1)(image, label, singan)
    with pytest.raises(ValueError, match="needs a trained SinGAN"):
        GenerativeBlending(alpha=1.5, start_scale=1)(image[:, :, :SIZE], label[:, :, :SIZE])


def test_parameter_selection_follows_section_4_2_1() -> None:
    spacing = (1.5, 0.5, 0.5)  # voxel volume 0.375 mm^3
    shape = (20, 64, 64)
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 5.0, shape).astype(np.float32)
    large = ball(shape, (10, 32, 32), 14)  # ~ 11500 voxels ~ 4300 mm^3
    image[large.astype(bool)] += rng.uniform(0, 200, int(large.sum())).astype(np.float32)  # heterogeneous
    small = ball(shape, (10, 32, 32), 5)  # ~ 520 voxels ~ 195 mm^3
    medium = ball(shape, (10, 32, 32), 9)  # ~ 3050 voxels ~ 1145 mm^3
    rules = GBASelectionRules()
    assert tumour_statistics(image, large, spacing).intensity_std > rules.large_intensity_std
    renders = select_gba_parameters(image, large, spacing, num_scales=10, seed=1)
    assert len(renders) == 18
    assert {r["alpha"] for r in renders} == set(rules.large_alphas) and {r["start_scale"] for r in renders} == {7, 6}
    assert len({r["seed"] for r in renders}) == 18 and {r["group"] for r in renders} == {"large_heterogeneous"}
    assert renders == select_gba_parameters(image, large, spacing, num_scales=10, seed=1)
    small_renders = select_gba_parameters(image, small, spacing, num_scales=10, seed=1)
    assert len(small_renders) == 18 and {r["alpha"] for r in small_renders} == set(rules.small_alphas)
    assert select_gba_parameters(image, medium, spacing, num_scales=10, seed=1) == []
    tilburg_only = GBASelectionRules(large_centers=("Tilburg",))
    assert select_gba_parameters(image, large, spacing, 10, 1, tilburg_only, center="London") == []
    assert len(select_gba_parameters(image, large, spacing, 10, 1, tilburg_only, center="Tilburg")) == 18
    renders = select_gba_parameters(image, large, spacing, 10, 4)
    assert len({r["seed"] for r in renders}) == len(renders)  # every render its own noise
    for chosen in renders:
        assert GenerativeBlending.from_parameters(chosen).parameters() == {k: v for k, v in chosen.items()
                                                                           if k != "group"}
    with pytest.raises(ValueError):
        select_gba_parameters(image, large, spacing, num_scales=4, seed=1)  # cannot retain 4 generators of 4


