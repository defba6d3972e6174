"""Tests of synth.singan (tiny configs: whole file runs in seconds on one CPU core)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synth.checkpoint import sha256_of_file
from synth.singan import (
    PatchCritic,
    ResidualGenerator,
    SinGAN,
    SinGANConfig,
    _train_scale,
    image_pyramid,
    pyramid_shapes,
    train_singan,
)

TINY = SinGANConfig(iterations_per_scale=15, critic_steps=1, generator_steps=1)  # 32x32 -> 3 scales




def textured_image(size: int = 32) -> np.ndarray:
    """Smooth image with fine texture, in MR-like raw units (not [0, 1], not [-1, 1])."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    return (300.0 + 80.0 * np.sin(xx / 0.9) * np.cos(yy / 1.1) + 60.0 * np.sin((xx + yy) / 6.0)).astype(np.float32)


@pytest.fixture(scope="module")
def model() -> SinGAN:
    return train_singan(textured_image(), TINY, seed=0, device="cpu", progress=False)


def test_pyramid_shapes_follow_singan_rules() -> None:
    shapes = pyramid_shapes((128, 128), SinGANConfig())
    assert shapes[0] == (25, 25) and shapes[-1] == (128, 128) and len(shapes) == 8
    assert pyramid_shapes((256, 256), SinGANConfig())[-1] == (250, 250)  # long side capped at max_size
    assert pyramid_shapes((32, 32), TINY) == [(25, 25), (29, 29), (32, 32)]
    with pytest.raises(ValueError):
        pyramid_shapes((20, 40), SinGANConfig())


def test_pyramid_is_float_not_256_levels() -> None:
    yy, xx = np.mgrid[0:64, 0:64]
    image = (1e-3 * (xx + 0.7 * yy) / 64.0 + 2e-5 * np.sin(xx)).astype(np.float32)  # range ~1.7e-3
    levels = image_pyramid(image, SinGANConfig(min_size=25))
    coarsest = levels[0]
    assert coarsest.shape == (25, 25)
    assert len(np.unique(coarsest)) > 256
    expected = F.interpolate(torch.from_numpy(image)[None, None], size=(25, 25), mode="bicubic",
                             align_corners=False, antialias=True)[0, 0].numpy()
    np.testing.assert_allclose(coarsest, expected, rtol=0, atol=1e-9)


def test_outputs_have_the_input_shape_and_units(model: SinGAN) -> None:
    image = textured_image()
    assert model.num_scales == 3 and model.training_shape == (32, 32)
    samples = model.sample(2, seed=1)
    assert samples.shape == (2, 32, 32) and samples.dtype == np.float32 and np.isfinite(samples).all()
    assert abs(float(samples.mean()) - float(image.mean())) < 0.25 * float(image.std())
    harmonized = model.harmonize(image, start_scale=1, seed=2)
    assert harmonized.shape == (32, 32) and harmonized.dtype == np.float32 and np.isfinite(harmonized).all()
    assert len(model.reconstruction_rmse) == len(model.noise_amplitudes) == 3
    assert model.noise_amplitudes[0] == 1.0 and all(0 < a < 1 for a in model.noise_amplitudes[1:])


def test_reconstruction_rmse_decreases_over_scales(model: SinGAN) -> None:
    image = textured_image()
    errors = [float(np.sqrt(np.mean((model.reconstruct(scale) - image) ** 2))) for scale in range(model.num_scales)]
    assert all(finer < coarser for coarser, finer in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.25 * float(image.std()), errors
    per_level = model.reconstruction_rmse  # each scale vs. its own pyramid level, normalised [-1, 1] units
    assert all(finer < coarser for coarser, finer in zip(per_level, per_level[1:])), per_level
    assert per_level[-1] < 0.1


def test_training_and_generation_are_deterministic(model: SinGAN) -> None:
    config = SinGANConfig(iterations_per_scale=2, critic_steps=1, generator_steps=1)
    first = train_singan(textured_image(), config, seed=5, progress=False)
    second = train_singan(textured_image(), config, seed=5, progress=False)
    np.testing.assert_array_equal(first.sample(1, seed=3), second.sample(1, seed=3))
    np.testing.assert_array_equal(model.sample(2, seed=7), model.sample(2, seed=7))
    assert not np.array_equal(model.sample(1, seed=7), model.sample(1, seed=8))
    image = textured_image()
    np.testing.assert_array_equal(model.harmonize(image, 2, seed=4), model.harmonize(image, 2, seed=4))


def test_save_load_round_trip_is_exact(model: SinGAN, tmp_path) -> None:
    path = model.save(tmp_path / "singan.safetensors")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    loaded = SinGAN.load(path, device="cpu", expected_shape=(32, 32))
    image = textured_image()
    np.testing.assert_array_equal(loaded.sample(2, seed=9), model.sample(2, seed=9))
    np.testing.assert_array_equal(loaded.harmonize(image, 1, seed=9), model.harmonize(image, 1, seed=9))
    assert loaded.reconstruction_rmse == model.reconstruction_rmse
    assert loaded.scale_shapes == model.scale_shapes and loaded.training_shape == (32, 32)
    digest = sha256_of_file(path)
    assert len(digest) == 64 and digest == sha256_of_file(model.save(tmp_path / "again.safetensors"))


def test_wrong_slice_size_and_bad_inputs_are_refused(model: SinGAN, tmp_path) -> None:
    path = model.save(tmp_path / "singan.safetensors")
    with pytest.raises(ValueError, match="trained on"):
        SinGAN.load(path, expected_shape=(40, 32))
    with pytest.raises(ValueError, match="trained on"):
        model.harmonize(np.zeros((32, 40), dtype=np.float32), 1, seed=0)
    with pytest.raises(ValueError):
        model.harmonize(textured_image(), 0, seed=0)  # scale 0 has no coarser scale to inject from
    with pytest.raises(ValueError):
        train_singan(np.full((32, 32), 5.0), TINY, progress=False)
    with pytest.raises(ValueError):
        train_singan(np.zeros((2, 32, 32)), TINY, progress=False)


def test_generator_receives_the_adversarial_gradient() -> None:
    """With the reconstruction loss switched off, only the critic can move G: the `detach_` workaround would not."""
    config = SinGANConfig(iterations_per_scale=1, critic_steps=1, generator_steps=1, reconstruction_weight=0.0)
    torch.manual_seed(0)
    generator, critic = ResidualGenerator(8, config), PatchCritic(8, config)
    before = [p.detach().clone() for p in generator.parameters()]
    real = torch.from_numpy(textured_image())[None, None] / 400.0
    zeros = torch.zeros_like(real)
    _train_scale(0, generator, critic, real, zeros, torch.randn_like(real), 1.0, [], [], [(32, 32)], config,
                 torch.Generator().manual_seed(0), torch.device("cpu"), progress=False)
    assert any(not torch.equal(b, a) for b, a in zip(before, generator.parameters()))


@pytest.mark.parametrize("flags, iterations", [([], 2000), (["--preset", "fast"], 200),
                                               (["--preset", "fast", "--iters", "7"], 7)])
def test_singan_train_presets(flags, iterations, monkeypatch):
    """``singan train --preset``: paper = SinGAN's 2000 iterations per scale, fast = 200; --iters overrides."""
    import nnunet_gen.generators.singan as generators
    from nnunet_gen.cli import main

    class Captured(Exception):
        pass

    def capture(*args):
        raise Captured(args[6].iterations_per_scale)

    monkeypatch.setattr(generators, "train_singan_on_case", capture)
    with pytest.raises(Captured) as captured:
        main(["singan", "train", "-d", "1", "--case", "c", "-o", "s.safetensors", *flags])
    assert captured.value.args[0] == iterations
