"""Tests of synth.stylegan2: the joint image + segmentation StyleGAN2 (tiny configs, CPU, a few seconds)."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from synth.checkpoint import CheckpointError, save_tensors
from synth.stylegan2 import (
    FORMAT_KEY,
    FORMAT_VALUE,
    PRESETS,
    Discriminator,
    EqualizedConv2d,
    EqualizedLinear,
    MappingNetwork,
    ModulatedConv2d,
    StyleGAN2Config,
    StyleGAN2Model,
    build_generator,
    discriminator_loss,
    generator_loss,
    path_length_penalty,
    r1_penalty,
    train_stylegan2,
)
from synth.stylegan2.train import sample_batch
from synth.translation import IntensityRange

TINY = StyleGAN2Config(resolution=16, image_channels=2, num_classes=3, latent_dim=8, style_dim=8, mapping_layers=2,
                       channel_base=64, channel_max=8, batch_size=4, iterations=3, r1_interval=2,
                       path_length_interval=2, ema_half_life_images=20.0)


def phantoms(count: int, seed: int = 0, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Two-contrast discs on a zero background, in MR-like units; label 1 the disc, 2 a smaller lesion inside."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.zeros((count, 2, size, size), dtype=np.float32)
    labels = np.zeros((count, size, size), dtype=np.int64)
    for index in range(count):
        cy, cx = rng.uniform(6, size - 6, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(4, 6) ** 2
        lesion = (yy - cy - 1) ** 2 + (xx - cx) ** 2 < 2.0 ** 2
        labels[index][disc], labels[index][lesion] = 1, 2
        images[index, 0][disc] = 400 + 20 * rng.standard_normal(int(disc.sum()))
        images[index, 1][disc] = 900 + 50 * rng.standard_normal(int(disc.sum()))
        images[index, 0][lesion], images[index, 1][lesion] = 200.0, 1500.0
    return images, labels


@pytest.fixture(scope="module")
def trained() -> StyleGAN2Model:
    return train_stylegan2(*phantoms(8), TINY, seed=0, progress=False)


def test_generator_joint_output_and_discriminator() -> None:
    torch.manual_seed(0)
    generator = build_generator(TINY)
    output = generator(torch.randn(3, TINY.latent_dim))
    assert output.shape == (3, TINY.image_channels + TINY.num_classes, 16, 16)
    assert generator.num_ws == 6 and generator.noise_resolutions == [4, 8, 8, 16, 16]
    segmentation = output[:, TINY.image_channels:]
    assert (segmentation >= 0).all() and torch.allclose(segmentation.sum(1), torch.ones(3, 16, 16), atol=1e-5)
    assert Discriminator(16, 5, TINY.channel_base, TINY.channel_max)(output).shape == (3,)
    paper = build_generator(replace(PRESETS["paper"], latent_dim=16, style_dim=16, channel_max=8))
    assert paper.num_ws == 14  # StyleGAN2 at 256 x 256: 13 styled convolutions + the last output layer


def test_demodulation_gives_unit_norm_per_output_channel() -> None:
    torch.manual_seed(0)
    w = torch.randn(4, 8)
    for demodulate in (True, False):
        weight = ModulatedConv2d(6, 5, 3, 8, demodulate=demodulate).modulated_weight(w)
        norms = weight.square().sum((2, 3, 4)).sqrt()
        assert weight.shape == (4, 5, 6, 3, 3)
        assert torch.allclose(norms, torch.ones(4, 5), atol=1e-4) == demodulate


def test_modulated_conv_equals_per_sample_conv() -> None:
    torch.manual_seed(0)
    layer, x, w = ModulatedConv2d(3, 4, 3, 8), torch.randn(2, 3, 5, 5), torch.randn(2, 8)
    weight = layer.modulated_weight(w)
    expected = torch.cat([torch.nn.functional.conv2d(x[i:i + 1], weight[i], padding=1) for i in range(2)])
    assert torch.allclose(layer(x, w), expected, atol=1e-5)
    assert ModulatedConv2d(3, 4, 3, 8, upsample=True)(x, w).shape == (2, 4, 10, 10)


def test_equalized_learning_rate_scaling() -> None:
    linear = EqualizedLinear(16, 4, lr_multiplier=0.01)
    assert linear.weight_gain == pytest.approx(0.01 / 4) and linear.weight.std() > 10  # stored as N(0, 1) / 0.01
    with torch.no_grad():
        linear.weight.fill_(1.0)
    assert torch.allclose(linear(torch.ones(1, 16)), torch.full((1, 4), 16 * 0.01 / 4))
    conv = EqualizedConv2d(3, 2, 3, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    assert conv(torch.ones(1, 3, 5, 5))[0, 0, 2, 2].item() == pytest.approx(27 / math.sqrt(27))
    assert EqualizedConv2d(3, 2, 3, down=True)(torch.ones(1, 3, 8, 8)).shape == (1, 2, 4, 4)


def test_mapping_network_shape_and_pixel_norm() -> None:
    torch.manual_seed(0)
    mapping, z = MappingNetwork(8, 12, 3), torch.randn(5, 8)
    assert mapping(z).shape == (5, 12)
    assert torch.allclose(mapping(3 * z), mapping(z), atol=1e-5)  # z is normalised first


def test_style_mixing_uses_both_latents() -> None:
    torch.manual_seed(0)
    generator = build_generator(TINY)
    z1, z2 = torch.randn(2, TINY.latent_dim), torch.randn(2, TINY.latent_dim)
    single = generator(z1, noise_mode="const")
    mixed, ws = generator([z1, z2], noise_mode="const", crossover=3, return_latents=True)
    assert not torch.allclose(mixed, single) and not torch.allclose(mixed, generator(z2, noise_mode="const"))
    assert torch.equal(ws[:, :3], generator.mapping(z1)[:, None].expand(-1, 3, -1))
    assert torch.equal(ws[:, 3:], generator.mapping(z2)[:, None].expand(-1, 3, -1))
    assert torch.allclose(generator([z1, z2], noise_mode="const", crossover=generator.num_ws), single)
    with pytest.raises(ValueError):
        generator([z1, z2, z1])


def test_truncation_zero_gives_the_mean_latent_image(trained) -> None:
    generator = trained.generator
    assert generator.w_avg.abs().sum() > 0  # tracked during training
    centre = generator.synthesis(generator.w_avg[None, None].expand(1, generator.num_ws, -1), "const")
    images, labels = trained.generate([0, 1, 12345], truncation_psi=0.0, noise_mode="const")
    raw = trained.render([0, 1, 12345], truncation_psi=0.0, noise_mode="const")
    assert np.allclose(raw, centre.numpy(), atol=1e-5)
    assert np.array_equal(images[0], images[2]) and np.array_equal(labels[0], labels[1])
    assert not np.array_equal(trained.render([0], 1.0, "const"), trained.render([1], 1.0, "const"))


def test_loss_signs() -> None:
    low, high = torch.full((4,), -2.0), torch.full((4,), 2.0)
    assert generator_loss(high) < generator_loss(torch.zeros(4)) < generator_loss(low)
    assert generator_loss(torch.zeros(4)).item() == pytest.approx(math.log(2))
    assert discriminator_loss(high, low) < discriminator_loss(low, high)
    assert discriminator_loss(high, low) > 0 and discriminator_loss(torch.zeros(4), torch.zeros(4)).item() == \
        pytest.approx(2 * math.log(2))


def test_r1_equals_the_analytic_gradient_norm_of_a_linear_discriminator() -> None:
    torch.manual_seed(0)
    weight = torch.randn(3, 4, 4)
    real = torch.randn(5, 3, 4, 4, requires_grad=True)
    penalty = r1_penalty((real * weight).sum((1, 2, 3)), real)
    assert penalty.item() == pytest.approx(weight.square().sum().item(), rel=1e-5)
    quadratic = r1_penalty(real.square().sum((1, 2, 3)), real)  # gradient 2x
    assert quadratic.item() == pytest.approx((4 * real.detach().square().sum((1, 2, 3))).mean().item(), rel=1e-5)
    assert quadratic.requires_grad  # differentiable, for the D step


def test_path_length_penalty_and_running_mean() -> None:
    torch.manual_seed(0)
    generator = build_generator(TINY)
    fake, ws = generator(torch.randn(3, TINY.latent_dim), return_latents=True)
    penalty, mean, lengths = path_length_penalty(fake, ws, 0.0, decay=0.01)
    assert torch.isfinite(penalty) and penalty.requires_grad and lengths.shape == (3,) and (lengths > 0).all()
    assert mean.item() == pytest.approx(0.01 * lengths.mean().item(), rel=1e-5)
    _, second, _ = path_length_penalty(*generator(torch.randn(3, TINY.latent_dim), return_latents=True), mean, 0.5)
    assert second.item() != mean.item() and not second.requires_grad


def test_training_is_deterministic_for_a_seed(trained) -> None:
    state = torch.random.get_rng_state()
    again = train_stylegan2(*phantoms(8), TINY, seed=0, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    other = train_stylegan2(*phantoms(8), TINY, seed=1, progress=False)
    reference = trained.generator.state_dict()
    assert all(torch.equal(reference[name], value) for name, value in again.generator.state_dict().items())
    assert again.history == trained.history
    assert not all(torch.equal(reference[name], value) for name, value in other.generator.state_dict().items())


def test_generate_is_a_function_of_the_seed_only(trained) -> None:
    images, labels = trained.generate([3, 7, 11])
    alone, alone_labels = trained.generate([7])
    assert images.shape == (3, 2, 16, 16) and images.dtype == np.float32
    assert labels.shape == (3, 16, 16) and labels.dtype == np.uint8 and labels.max() < TINY.num_classes
    assert np.array_equal(alone[0], images[1]) and np.array_equal(alone_labels[0], labels[1])
    assert np.array_equal(trained.generate([11, 3])[0], images[[2, 0]])
    assert not np.array_equal(images[0], images[1])
    assert trained.generate([])[0].shape == (0, 2, 16, 16)


def test_generate_returns_real_intensity_units() -> None:
    torch.manual_seed(0)
    model = StyleGAN2Model(build_generator(TINY), TINY, [IntensityRange(0.0, 300.0), IntensityRange(100.0, 200.0)])
    raw = model.render([4])
    images, labels = model.generate([4])
    assert np.allclose(images[0, 0], (raw[0, 0] + 1) * 150, atol=1e-3)
    assert np.allclose(images[0, 1], (raw[0, 1] + 1) * 50 + 100, atol=1e-3)
    assert np.array_equal(labels[0], raw[0, 2:].argmax(0))
    grid = model.sample_grid([4, 5])
    assert grid.shape == (32, 48) and grid.dtype == np.uint8
    with pytest.raises(ValueError):
        StyleGAN2Model(build_generator(TINY), TINY, [IntensityRange(0.0, 1.0)])


def test_checkpoint_round_trip(trained, tmp_path) -> None:
    path = trained.save(tmp_path / "g.safetensors")
    loaded = StyleGAN2Model.load(path)
    assert loaded.config == TINY and loaded.ranges == trained.ranges and loaded.seed == 0
    assert loaded.history == trained.history
    for got, expected in zip(loaded.generate([1, 2], 0.7), trained.generate([1, 2], 0.7)):
        assert np.array_equal(got, expected)


def test_unusable_checkpoints_raise_checkpoint_error(trained, tmp_path) -> None:
    foreign = save_tensors(tmp_path / "foreign.safetensors", {"x": torch.zeros(2)}, {FORMAT_KEY: "translator-1"})
    path = trained.save(tmp_path / "g.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-100])
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (safe_open is not a dict)
        metadata = dict(handle.metadata())
    metadata["config"] = replace(TINY, channel_max=16).to_json()
    other = save_tensors(tmp_path / "other.safetensors", tensors, metadata)
    for bad in (foreign, truncated, other, tmp_path / "missing.safetensors"):
        with pytest.raises(CheckpointError) as error:
            StyleGAN2Model.load(bad)
        assert "\n" not in str(error.value)
    assert metadata[FORMAT_KEY] == FORMAT_VALUE


@pytest.mark.parametrize("change, message", [
    (lambda i, l: (i[:0], l[:0]), "no training images"),
    (lambda i, l: (i[:, :, :, :8], l[:, :, :8]), "16 x 16"),
    (lambda i, l: (i[:, :1], l), "channels"),
    (lambda i, l: (i[0], l), "(N, C, H, W)"),
    (lambda i, l: (i, l[:, :8]), "labels must have shape"),
    (lambda i, l: (i, np.where(l == 2, 3, l)), "labels must be in [0, 3)"),
    (lambda i, l: (i, l - 1), "labels must be in"),
    (lambda i, l: (i, l.astype(np.float32)), "integer"),
    (lambda i, l: (np.where(i > 500, np.nan, i), l), "non-finite"),
    (lambda i, l: (i * np.array([1, 0], np.float32)[None, :, None, None], l), "image channel 1"),
])
def test_bad_training_input_raises_value_error(change, message) -> None:
    images, labels = change(*phantoms(2))
    with pytest.raises(ValueError) as error:
        train_stylegan2(images, labels, TINY, progress=False)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_tiny_training_history_callbacks_and_flips() -> None:
    images, labels = phantoms(6, seed=3)
    config = replace(TINY, iterations=4, mixing_probability=1.0)
    seen, samples = [], []
    model = train_stylegan2(images, labels, config, seed=2, progress=False,
                            callback=lambda i, losses: seen.append(i), sample_every=2,
                            sample_callback=lambda i, m: samples.append((i, m.generate([0])[0].shape)))
    assert seen == [1, 2, 3, 4] and samples == [(2, (1, 2, 16, 16)), (4, (1, 2, 16, 16))]
    assert set(model.history) == {"D", "G", "D_real", "D_fake", "R1", "path_length_penalty", "path_length_mean"}
    assert all(len(values) == 4 and np.isfinite(values).all() for values in model.history.values())
    assert model.history["path_length_mean"][-1] > 0
    assert train_stylegan2(images, labels, config, seed=2, progress=False).history == model.history  # sampling is
    # outside the training's random streams
    rng = np.random.default_rng(0)
    normalised = np.stack([images[:, 0] / 1000, images[:, 1] / 1000], 1).astype(np.float32)
    batch = sample_batch(normalised, labels, replace(config, batch_size=32), rng, torch.device("cpu")).numpy()
    originals = {normalised[i].tobytes(): labels[i] for i in range(6)}
    flipped = {normalised[i, ..., ::-1].copy().tobytes(): labels[i, :, ::-1] for i in range(6)}
    kinds = [bytes(sample[:2].tobytes()) in originals for sample in batch]
    assert 0 < sum(kinds) < 32  # both flipped and unflipped samples
    for sample, original in zip(batch, kinds):
        label = (originals if original else flipped)[sample[:2].tobytes()]
        assert np.array_equal(sample[2:].argmax(0), label) and np.allclose(sample[2:].sum(0), 1)


def test_config_validation_presets_and_json() -> None:
    for name, config in PRESETS.items():
        assert StyleGAN2Config.from_json(config.to_json()) == config, name
    assert PRESETS["paper"].resolution == 256 and PRESETS["paper"].image_channels + PRESETS["paper"].num_classes == 8
    assert [PRESETS["paper"].channels(r) for r in (4, 64, 128, 256)] == [512, 512, 256, 128]
    lr, betas = PRESETS["paper"].adam_settings(16)
    assert lr == pytest.approx(0.002 * 16 / 17) and betas == (0.0, pytest.approx(0.99 ** (16 / 17)))
    for bad in ({"resolution": 48}, {"resolution": 4}, {"num_classes": 1}, {"batch_size": 0},
                {"mixing_probability": 1.5}, {"channel_base": 8, "resolution": 16}, {"ema_rampup": 0.0}):
        with pytest.raises(ValueError):
            StyleGAN2Config(**bad)
    with pytest.raises(ValueError):
        StyleGAN2Config.from_json(json.dumps({"resolution": 64, "bogus": 1}))
