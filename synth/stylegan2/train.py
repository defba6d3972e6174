"""Training of the joint image + segmentation StyleGAN2 (Son et al. 2022 on StyleGAN2, Karras et al. 2020).

Data: (N, C, R, R) images and (N, R, R) integer label maps. Each image channel is mapped to [-1, 1] with the robust
range [p0.5, p99.5] of its nonzero voxels (values outside are clipped; :class:`synth.translation.model.IntensityRange`)
and the ranges are stored so generated images come back in real units (float). Labels become one-hot maps, so the
discriminator sees the joint (C + K)-channel tensor for real data and images + softmax probabilities for fakes.
Batches are drawn uniformly with replacement; each sample is flipped left-right with probability 0.5 when
``config.flip`` (images and labels together), the only augmentation, as Son et al.

One iteration, as StyleGAN2 (and rosinality/stylegan2-pytorch): a discriminator step on the logistic loss; every
``r1_interval`` iterations an extra discriminator step on ``r1_gamma / 2 * R1 * r1_interval``; a generator step on
the non-saturating loss; every ``path_length_interval`` iterations an extra generator step on
``path_length_weight * path_length_interval * penalty`` with ``batch_size // path_length_batch_shrink`` samples; then
the EMA generator update. Latents are mixed (two z, a random crossover layer) with ``mixing_probability``. Adam's lr
and betas are corrected for the lazy intervals (:meth:`StyleGAN2Config.adam_settings`).

Runs are deterministic for a seed on the CPU: weights, latents, crossovers and noise come from the torch RNG seeded
with ``seed`` (the caller's RNG state is restored afterwards), batches and flips from
``numpy.random.default_rng(seed)``. On CUDA, cuDNN kernels may still make runs differ slightly.
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from synth.stylegan2.config import StyleGAN2Config
from synth.stylegan2.losses import (
    discriminator_loss,
    generator_loss,
    path_length_penalty,
    r1_penalty,
)
from synth.stylegan2.model import StyleGAN2Model, build_generator
from synth.stylegan2.networks import Discriminator, Generator
from synth.translation.model import IntensityRange


def prepare_data(images: np.ndarray, labels: np.ndarray,
                 config: StyleGAN2Config) -> tuple[np.ndarray, np.ndarray, list[IntensityRange]]:
    """Validated training data: (N, C, R, R) float32 images in [-1, 1], (N, R, R) int64 labels and the per-channel
    intensity ranges. Every problem raises a one-line ValueError."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4:
        raise ValueError(f"images must be an (N, C, H, W) array, got shape {images.shape}")
    count, channels, height, width = images.shape
    if count == 0:
        raise ValueError("no training images (N = 0)")
    if channels != config.image_channels:
        raise ValueError(f"images have {channels} channels, config.image_channels is {config.image_channels}")
    if height != width or height != config.resolution:
        raise ValueError(f"images must be {config.resolution} x {config.resolution} (config.resolution; resize or "
                         f"pad them first), got {height} x {width}")
    if labels.shape != (count, height, width):
        raise ValueError(f"labels must have shape {(count, height, width)} (N, H, W), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer array, got dtype {labels.dtype}")
    if not np.isfinite(images).all():
        raise ValueError("images have non-finite values (NaN or infinity)")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= config.num_classes:
        raise ValueError(f"labels must be in [0, {config.num_classes}) (config.num_classes), found [{low}, {high}]")
    ranges = []
    for channel in range(channels):
        try:
            ranges.append(IntensityRange.fit(images[:, channel]))
        except ValueError as error:
            raise ValueError(f"image channel {channel}: {error}") from None
    normalised = np.stack([r.normalise(images[:, c]) for c, r in enumerate(ranges)], axis=1)
    return normalised, labels.astype(np.int64), ranges


def sample_batch(images: np.ndarray, labels: np.ndarray, config: StyleGAN2Config, rng: np.random.Generator,
                 device: torch.device) -> torch.Tensor:
    """The joint real (B, C + K, R, R) tensor of ``batch_size`` random samples (images, one-hot labels), each
    flipped left-right with probability 0.5 when ``config.flip``."""
    index = rng.integers(len(images), size=config.batch_size)
    batch_images, batch_labels = images[index], labels[index]
    if config.flip:
        flip = rng.random(config.batch_size) < 0.5
        batch_images[flip], batch_labels[flip] = batch_images[flip, ..., ::-1], batch_labels[flip, ..., ::-1]
    one_hot = F.one_hot(torch.from_numpy(batch_labels).to(device), config.num_classes).permute(0, 3, 1, 2)
    return torch.cat([torch.from_numpy(batch_images).to(device), one_hot.float()], dim=1)


def mixing_latents(batch: int, config: StyleGAN2Config, device: torch.device) -> list[torch.Tensor]:
    """One batch of z ~ N(0, I), or two with probability ``mixing_probability`` (style mixing regularisation),
    drawn with the CPU torch RNG."""
    count = 2 if float(torch.rand(())) < config.mixing_probability else 1
    return [torch.randn(batch, config.latent_dim).to(device) for _ in range(count)]


@torch.no_grad()
def update_ema(ema: Generator, generator: Generator, config: StyleGAN2Config, images_seen: int) -> None:
    """ema <- beta ema + (1 - beta) generator with beta = 0.5 ** (batch / half-life in images); the half-life is
    capped at ``ema_rampup * images_seen`` when set. Buffers (w_avg, fixed noise) are copied."""
    half_life = config.ema_half_life_images
    if config.ema_rampup is not None:
        half_life = min(half_life, images_seen * config.ema_rampup)
    beta = 0.5 ** (config.batch_size / max(half_life, 1e-8))
    for averaged, current in zip(ema.parameters(), generator.parameters()):
        averaged.copy_(current.lerp(averaged, beta))
    for averaged, current in zip(ema.buffers(), generator.buffers()):
        averaged.copy_(current)


def train_stylegan2(images: np.ndarray, labels: np.ndarray, config: StyleGAN2Config = StyleGAN2Config(),
                    seed: int = 0, device: str | torch.device = "cpu", progress: bool = True,
                    callback: Callable[[int, dict[str, float]], None] | None = None,
                    sample_every: int | None = None,
                    sample_callback: Callable[[int, StyleGAN2Model], None] | None = None) -> StyleGAN2Model:
    """Train on (N, C, R, R) float images and (N, R, R) integer labels in [0, num_classes) with R =
    ``config.resolution``; returns the EMA generator as a :class:`StyleGAN2Model`.

    ``callback(iteration, losses)`` runs after every iteration (1-based, the values recorded in the history: D and G
    losses, the mean D logits on real and fake, and the latest lazily computed R1, path-length penalty and running
    path-length mean). ``sample_callback(iteration, model)`` runs every ``sample_every`` iterations with the current
    EMA generator (it does not change the training's random streams). Bad input raises a one-line ValueError.
    """
    data, targets, ranges = prepare_data(images, labels, config)
    if sample_every is not None and sample_every < 1:
        raise ValueError(f"sample_every must be >= 1, got {sample_every}")
    device = torch.device(device)
    rng = np.random.default_rng(seed)
    history: dict[str, list[float]] = {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(int(seed))
        generator = build_generator(config).to(device).train()
        discriminator = Discriminator(config.resolution, config.image_channels + config.num_classes,
                                      config.channel_base, config.channel_max).to(device).train()
        ema = copy.deepcopy(generator).eval().requires_grad_(False)
        g_lr, g_betas = config.adam_settings(config.path_length_interval)
        d_lr, d_betas = config.adam_settings(config.r1_interval)
        g_optimizer = torch.optim.Adam(generator.parameters(), lr=g_lr, betas=g_betas)
        d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=d_lr, betas=d_betas)
        mean_path_length = torch.zeros((), device=device)
        latest = {"R1": 0.0, "path_length_penalty": 0.0, "path_length_mean": 0.0}
        bar = tqdm(range(config.iterations), desc="train stylegan2", disable=not progress)
        for iteration in bar:
            real = sample_batch(data, targets, config, rng, device)
            with torch.no_grad():
                fake = generator(mixing_latents(config.batch_size, config, device))
            real_pred, fake_pred = discriminator(real), discriminator(fake)
            d_loss = discriminator_loss(real_pred, fake_pred)
            d_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            d_optimizer.step()
            if config.r1_gamma > 0 and iteration % config.r1_interval == 0:
                real_input = real.detach().requires_grad_(True)
                r1 = r1_penalty(discriminator(real_input), real_input)
                d_optimizer.zero_grad(set_to_none=True)
                (config.r1_gamma / 2 * r1 * config.r1_interval).backward()
                d_optimizer.step()
                latest["R1"] = float(r1.detach())

            discriminator.requires_grad_(False)
            fake, ws = generator(mixing_latents(config.batch_size, config, device), return_latents=True)
            g_loss = generator_loss(discriminator(fake))
            g_optimizer.zero_grad(set_to_none=True)
            g_loss.backward()
            g_optimizer.step()
            generator.update_w_avg(ws[:, 0])
            if config.path_length_weight > 0 and iteration % config.path_length_interval == 0:
                batch = max(1, config.batch_size // config.path_length_batch_shrink)
                fake, ws = generator(mixing_latents(batch, config, device), return_latents=True)
                penalty, mean_path_length, _ = path_length_penalty(fake, ws, mean_path_length,
                                                                   config.path_length_decay)
                g_optimizer.zero_grad(set_to_none=True)
                (config.path_length_weight * config.path_length_interval * penalty).backward()
                g_optimizer.step()
                latest.update(path_length_penalty=float(penalty.detach()),
                              path_length_mean=float(mean_path_length))
            discriminator.requires_grad_(True)
            update_ema(ema, generator, config, iteration * config.batch_size)

            losses = {"D": float(d_loss.detach()), "G": float(g_loss.detach()),
                      "D_real": float(real_pred.detach().mean()), "D_fake": float(fake_pred.detach().mean()),
                      **latest}
            for name, value in losses.items():
                history.setdefault(name, []).append(value)
            if progress:
                bar.set_postfix({name: f"{value:.3f}" for name, value in losses.items()}, refresh=False)
            if callback is not None:
                callback(iteration + 1, losses)
            if sample_callback is not None and sample_every and (iteration + 1) % sample_every == 0:
                sample_callback(iteration + 1, StyleGAN2Model(ema, config, ranges, history, int(seed)))
    return StyleGAN2Model(ema, config, ranges, history, int(seed))
