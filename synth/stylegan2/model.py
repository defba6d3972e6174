"""A trained joint image + segmentation StyleGAN2: the EMA generator (the one StyleGAN2 evaluates and renders with),
the per-channel intensity ranges that map its [-1, 1] images back to real units, the loss history and safe
checkpoints (safetensors; config, ranges and seed as JSON metadata, history as float64 tensors).

Only the generator is saved: rendering never needs the discriminator, so training cannot be resumed from a file.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from synth.checkpoint import (
    architecture_check,
    generator_tensors,
    history_of,
    load_generator_weights,
    load_tensors,
    save_tensors,
)
from synth.stylegan2.config import StyleGAN2Config
from synth.stylegan2.networks import Generator
from synth.translation.model import IntensityRange

FORMAT_KEY, FORMAT_VALUE = "nnunet_gen_format", "stylegan2-joint-1"


def build_generator(config: StyleGAN2Config) -> Generator:
    """An untrained generator of ``config`` (weights from the current torch RNG)."""
    return Generator(config.resolution, config.image_channels, config.num_classes, config.latent_dim,
                     config.style_dim, config.mapping_layers, config.channel_base, config.channel_max)


class StyleGAN2Model:
    """Generates (images, label map) pairs, each a deterministic function of its latent seed.

    Build it with :func:`synth.stylegan2.train.train_stylegan2` or :meth:`load`. ``ranges[c]`` maps image channel c
    between real units and [-1, 1]; ``history`` holds the training losses per iteration.
    """

    def __init__(self, generator: Generator, config: StyleGAN2Config, ranges: Sequence[IntensityRange],
                 history: dict[str, list[float]] | None = None, seed: int | None = None) -> None:
        if len(ranges) != config.image_channels:
            raise ValueError(f"{len(ranges)} intensity ranges for {config.image_channels} image channels")
        self.generator = generator.eval().requires_grad_(False)
        self.config = config
        self.ranges = list(ranges)
        self.history = history or {}
        self.seed = seed

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def latent(self, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The (1, latent_dim) z and the per-layer noise maps of a latent seed, drawn on the CPU from
        ``torch.Generator().manual_seed(seed)`` (so they do not depend on the device or on other samples)."""
        rng = torch.Generator().manual_seed(int(seed))
        z = torch.randn(1, self.generator.latent_dim, generator=rng)
        noise = [torch.randn(1, 1, side, side, generator=rng) for side in self.generator.noise_resolutions]
        return z, noise

    @torch.no_grad()
    def render(self, seeds: Sequence[int], truncation_psi: float = 1.0, noise_mode: str = "random") -> np.ndarray:
        """(N, C + K, R, R) float32 raw generator output: images in [-1, 1] units, segmentation probabilities.
        Samples are rendered one at a time, so a seed's output is bit-identical whatever else is rendered with it.
        ``noise_mode`` "random" uses the seed's noise maps, "const" the generator's fixed ones, "none" none."""
        outputs = []
        for seed in seeds:
            z, noise = self.latent(seed)
            explicit = [n.to(self.device) for n in noise] if noise_mode == "random" else None
            output = self.generator(z.to(self.device), truncation_psi=truncation_psi, noise_mode=noise_mode,
                                    noise=explicit)
            outputs.append(output.float().cpu().numpy())
        shape = (0, self.config.image_channels + self.config.num_classes, self.config.resolution,
                 self.config.resolution)
        return np.concatenate(outputs) if outputs else np.zeros(shape, dtype=np.float32)

    def generate(self, seeds: Sequence[int], truncation_psi: float = 1.0,
                 noise_mode: str = "random") -> tuple[np.ndarray, np.ndarray]:
        """(images (N, C, R, R) float32 in each channel's real units, labels (N, R, R) uint8: the argmax of the
        segmentation probabilities). Images are not clipped; see :meth:`render` for the arguments."""
        output = self.render(seeds, truncation_psi, noise_mode)
        channels = self.config.image_channels
        images = np.stack([r.denormalise(output[:, c]) for c, r in enumerate(self.ranges)], axis=1) \
            if len(output) else output[:, :channels]
        return images.astype(np.float32), output[:, channels:].argmax(1).astype(np.uint8)

    def sample_grid(self, seeds: Sequence[int], truncation_psi: float = 1.0) -> np.ndarray:
        """(N * R, (C + 1) * R) uint8 grey image for a PNG: one row per seed, the C image channels ([-1, 1] shown as
        [0, 255], clipped) then the label map (class k shown as k * 255 // (K - 1))."""
        output = self.render(seeds, truncation_psi)
        channels = self.config.image_channels
        images = np.clip((output[:, :channels] + 1.0) * 127.5, 0, 255)
        labels = output[:, channels:].argmax(1) * (255 // (self.config.num_classes - 1))
        tiles = np.concatenate([images, labels[:, None]], axis=1).astype(np.uint8)  # (N, C + 1, R, R)
        side = self.config.resolution
        return tiles.transpose(0, 2, 1, 3).reshape(len(tiles) * side, (channels + 1) * side)

    def save(self, path: str | os.PathLike) -> Path:
        """Write one safetensors file atomically (:func:`synth.checkpoint.save_tensors`)."""
        metadata = {FORMAT_KEY: FORMAT_VALUE, "config": self.config.to_json(),
                    "ranges": json.dumps([asdict(r) for r in self.ranges]), "seed": json.dumps(self.seed)}
        return save_tensors(path, generator_tensors(self.generator, self.history), metadata)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> StyleGAN2Model:
        """Load a :meth:`save` checkpoint; any other, damaged or inconsistent file raises :class:`CheckpointError`."""
        tensors, metadata = load_tensors(path, FORMAT_KEY, FORMAT_VALUE)
        with architecture_check(path, "StyleGAN2"):
            config = StyleGAN2Config.from_json(metadata["config"])
            ranges = [IntensityRange(**r) for r in json.loads(metadata["ranges"])]
            with torch.random.fork_rng(devices=[]):  # the untrained weights are overwritten: keep the caller's RNG
                generator = load_generator_weights(build_generator(config), tensors)
            model = cls(generator.to(device), config, ranges, seed=json.loads(metadata["seed"]))
        model.history = history_of(tensors)
        return model
