"""A trained source -> target translator: the generator G_s->t (the only network the GBA paper uses at inference,
its eq. 4), the per-domain intensity ranges and safe checkpoints (safetensors; config, ranges and seed as JSON in the
metadata, the per-iteration loss history as float64 tensors so long trainings do not overflow the header)."""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
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
from synth.translation.config import TranslationConfig
from synth.translation.networks import ResnetGenerator

FORMAT_KEY, FORMAT_VALUE = "nnunet_gen_format", "translator-1"
#: Percentiles of a domain's nonzero voxels mapped to -1 and 1.
PERCENTILES = (0.5, 99.5)
#: At most about this many nonzero voxels (every k-th one of each slice) are used to fit a range.
MAX_FIT_VALUES = 10_000_000


@dataclass(frozen=True)
class IntensityRange:
    """A domain's robust intensity range [low, high], mapped affinely to [-1, 1] (values outside are clipped)."""

    low: float
    high: float

    @classmethod
    def fit(cls, slices: Sequence[np.ndarray]) -> IntensityRange:
        """[p0.5, p99.5] of the nonzero voxels of all ``slices``; ValueError when they are all zero or constant."""
        count = sum(int(np.count_nonzero(s)) for s in slices)
        if count == 0:
            raise ValueError("a domain has no nonzero voxels")
        stride = -(-count // MAX_FIT_VALUES)
        values = np.concatenate([np.asarray(s, dtype=np.float64)[np.asarray(s) != 0][::stride] for s in slices])
        low, high = (float(v) for v in np.percentile(values, PERCENTILES))
        if not high > low:
            raise ValueError(f"a domain's nonzero intensities are constant ({low}); cannot normalise it")
        return cls(low, high)

    def normalise(self, array: np.ndarray) -> np.ndarray:
        """Float32 in [-1, 1]."""
        scaled = (np.asarray(array, dtype=np.float64) - self.low) / (self.high - self.low) * 2.0 - 1.0
        return np.clip(scaled, -1.0, 1.0).astype(np.float32)

    def denormalise(self, array: np.ndarray) -> np.ndarray:
        """Float32 in the domain's intensity units."""
        return ((np.asarray(array, dtype=np.float64) + 1.0) / 2.0 * (self.high - self.low) + self.low).astype(
            np.float32)


def pad_to_multiple(slices: np.ndarray, multiple: int) -> np.ndarray:
    """Reflect-pad (N, H, W) at the bottom / right to sides divisible by ``multiple`` and at least ``2 * multiple``
    (the generator's residual blocks reflect-pad their input by one pixel)."""
    pads = [max(-side % multiple, 2 * multiple - side) for side in slices.shape[1:]]
    return np.pad(slices, ((0, 0), (0, pads[0]), (0, pads[1])), mode="reflect") if any(pads) else slices


class Translator:
    """Translates single-channel 2D slices from the source to the target domain, in the target's intensity units.

    Build it with :func:`synth.translation.train.train_translator` or :meth:`load`. ``history`` holds every training
    loss (and the learning rate) per iteration.
    """

    def __init__(self, generator: ResnetGenerator, config: TranslationConfig, source_range: IntensityRange,
                 target_range: IntensityRange, history: dict[str, list[float]] | None = None,
                 seed: int | None = None) -> None:
        self.generator = generator.eval().requires_grad_(False)
        self.config = config
        self.source_range = source_range
        self.target_range = target_range
        self.history = history or {}
        self.seed = seed

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @torch.no_grad()
    def translate_slices(self, slices: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """(N, H, W) source slices (any H, W) -> (N, H, W) float32 target-domain slices; source voxels that are exactly
        0 (background) stay 0."""
        slices = np.asarray(slices)
        if slices.ndim != 3:
            raise ValueError(f"translate_slices expects (N, H, W) slices, got shape {slices.shape}")
        if not np.isfinite(slices).all():
            raise ValueError("translate_slices expects finite values")
        height, width = slices.shape[1:]
        outputs = []
        for start in range(0, len(slices), int(batch_size)):
            batch = pad_to_multiple(self.source_range.normalise(slices[start:start + batch_size]),
                                    self.config.size_multiple)
            output = self.generator(torch.from_numpy(batch)[:, None].to(self.device))
            outputs.append(output[:, 0, :height, :width].float().cpu().numpy())
        if not outputs:
            return np.zeros(slices.shape, dtype=np.float32)
        translated = self.target_range.denormalise(np.concatenate(outputs))
        translated[slices == 0] = 0.0  # exact zeros are background (padding, skull-stripped), as in IntensityRange.fit
        return translated

    def translate_volume(self, volume: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """(Z, Y, X) source volume -> (Z, Y, X) float32, translated axial slice by axial slice."""
        volume = np.asarray(volume)
        if volume.ndim != 3:
            raise ValueError(f"translate_volume expects a (Z, Y, X) volume, got shape {volume.shape}")
        return self.translate_slices(volume, batch_size)

    def save(self, path: str | os.PathLike) -> Path:
        """Write one safetensors file atomically (:func:`synth.checkpoint.save_tensors`)."""
        metadata = {FORMAT_KEY: FORMAT_VALUE, "config": self.config.to_json(),
                    "source_range": json.dumps(asdict(self.source_range)),
                    "target_range": json.dumps(asdict(self.target_range)), "seed": json.dumps(self.seed)}
        return save_tensors(path, generator_tensors(self.generator, self.history), metadata)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> Translator:
        """Load a :meth:`save` checkpoint; any other or damaged file raises :class:`CheckpointError`."""
        tensors, metadata = load_tensors(path, FORMAT_KEY, FORMAT_VALUE)
        with architecture_check(path, "translator"):
            config = TranslationConfig.from_json(metadata["config"])
            ranges = [IntensityRange(**json.loads(metadata[key])) for key in ("source_range", "target_range")]
            generator = load_generator_weights(ResnetGenerator(1, 1, config.generator_features,
                                                               config.residual_blocks, config.downsamplings), tensors)
            seed = json.loads(metadata["seed"])
        return cls(generator.to(device), config, ranges[0], ranges[1], history_of(tensors), seed)
