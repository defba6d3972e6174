"""Harmoniser objects, whole-volume harmonisation and safe checkpoints (safetensors + JSON config in its metadata).

Whole volumes are harmonised in windows of the trained patch size placed around the lesions (one window centred on
each connected component of the mask, a half-overlapping grid of windows for components larger than a window; see
:func:`synth.arhnet.patches.lesion_window_origins`), not on the whole padded volume: the ARH and RAIN modules use
statistics of the whole window's background, so windows the size of the training patches keep them comparable to
training. Predictions of overlapping windows are averaged; voxels outside the mask are never changed.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from synth.arhnet.config import HarmonizerConfig
from synth.arhnet.histogram_matching import histogram_match_foreground
from synth.arhnet.networks import HarmonizationGenerator, apply_difference_map
from synth.arhnet.patches import crop_patch, lesion_window_origins, window_slices
from synth.arhnet.perturbation import IntensityScaling
from synth.checkpoint import load_tensors, save_tensors

CHECKPOINT_FORMAT = "synth.arhnet.harmonizer/1"


@dataclass
class Harmonizer:
    """A harmonisation method ready to apply: its config and, for learned methods, the trained generator.

    ``validation`` is empty without model selection; otherwise it holds the validation curve (iteration, fPSNR,
    generator learning rate), the composite's validation fPSNR, the best iteration (whose state ``generator``
    holds) and whether training stopped early (:func:`synth.arhnet.train.train_harmonizer`).
    """

    config: HarmonizerConfig
    generator: HarmonizationGenerator | None = None
    training_log: list[dict[str, float]] = field(default_factory=list)
    validation: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.config.spec.learned and self.generator is None:
            raise ValueError(f"method {self.config.method!r} is learned and needs a generator")

    @property
    def method(self) -> str:
        return self.config.method


def build_generator(config: HarmonizerConfig) -> HarmonizationGenerator:
    """The generator a config describes (untrained)."""
    return HarmonizationGenerator(in_channels=2, base_channels=config.base_channels, depth=config.depth,
                                  decoder_normalization=config.spec.decoder_normalization,
                                  arh_kernel_size=config.arh_kernel_size)


def _generator_device(generator: HarmonizationGenerator) -> torch.device:
    return next(generator.parameters()).device


@torch.no_grad()
def _harmonize_with_generator(generator: HarmonizationGenerator, image: np.ndarray, mask: np.ndarray,
                              patch_size: tuple[int, int, int]) -> np.ndarray:
    device = _generator_device(generator)
    was_training = generator.training
    generator.eval()
    difference_sum = np.zeros(image.shape, dtype=np.float64)
    window_count = np.zeros(image.shape, dtype=np.float64)
    for origin in lesion_window_origins(mask, patch_size):
        image_patch = torch.from_numpy(crop_patch(image, origin, patch_size)).to(device)[None, None]
        mask_patch = torch.from_numpy(crop_patch(mask, origin, patch_size)).to(device)[None, None]
        difference = generator(image_patch, mask_patch)[0, 0].double().cpu().numpy()
        volume_box, patch_box = window_slices(origin, patch_size, image.shape)
        difference_sum[volume_box] += difference[patch_box]
        window_count[volume_box] += 1.0
    generator.train(was_training)
    mean_difference = np.where(window_count > 0, difference_sum / np.maximum(window_count, 1.0), 0.0)
    return apply_difference_map(torch.from_numpy(image), torch.from_numpy(mask),
                                torch.from_numpy(mean_difference.astype(np.float32))).numpy()


def harmonize_volume(harmonizer: Harmonizer, image: np.ndarray, mask: np.ndarray,
                     tissue_mask: np.ndarray | None = None, scaling: IntensityScaling | None = None) -> np.ndarray:
    """Harmonise the foreground ``mask`` of a 3D ``image`` (e.g. a Copy-Paste composite and its pasted mask).

    ``scaling`` maps the image to [0, 1] for the harmoniser; by default it is fitted to the image (identity when
    already in [0, 1], min-max with a warning otherwise) and inverted on the output, so the result is in the input's
    intensity units. ``tissue_mask`` is only used by histogram matching. An empty mask returns the image unchanged.
    The output is not clipped.
    """
    if image.ndim != 3 or image.shape != mask.shape:
        raise ValueError(f"image {image.shape} and mask {mask.shape} must be 3D arrays of the same shape")
    foreground = (mask > 0).astype(np.float32)
    if not foreground.any():
        return np.array(image, dtype=np.float32, copy=True)
    scaling = IntensityScaling.fit(image) if scaling is None else scaling
    scaled = scaling.apply(image)
    if harmonizer.method == "composite":
        harmonized = scaled
    elif harmonizer.method == "hm":
        harmonized = histogram_match_foreground(scaled, foreground, tissue_mask, harmonizer.config.hm_shell_radius)
    else:
        harmonized = _harmonize_with_generator(harmonizer.generator, scaled, foreground,
                                               harmonizer.config.patch_size)
    return scaling.invert(harmonized)


def save_harmonizer(harmonizer: Harmonizer, path: str | os.PathLike) -> Path:
    """Save the generator weights (safetensors, written atomically) with the JSON config, training log and
    validation record in the file's metadata."""
    tensors = {} if harmonizer.generator is None else harmonizer.generator.state_dict()
    metadata = {"format": CHECKPOINT_FORMAT, "config": harmonizer.config.to_json(),
                "training_log": json.dumps(harmonizer.training_log), "validation": json.dumps(harmonizer.validation)}
    return save_tensors(path, tensors, metadata)


def load_harmonizer(path: str | os.PathLike, device: str | torch.device = "cpu",
                    patch_size: tuple[int, int, int] | None = None) -> Harmonizer:
    """Load a :func:`save_harmonizer` checkpoint (unusable files: :class:`~synth.checkpoint.CheckpointError`); refuse
    it (ValueError) when it was trained for another ``patch_size``."""
    state, metadata = load_tensors(path, "format", CHECKPOINT_FORMAT)
    config = HarmonizerConfig.from_json(metadata["config"])
    if patch_size is not None and tuple(patch_size) != tuple(config.patch_size):
        raise ValueError(f"checkpoint {path} was trained for patch size {tuple(config.patch_size)}, not "
                         f"{tuple(patch_size)}; retrain or use a matching checkpoint")
    generator = None
    if config.spec.learned:
        generator = build_generator(config)
        generator.load_state_dict(state, strict=True)
        generator.to(device).eval()
    return Harmonizer(config, generator, json.loads(metadata.get("training_log", "[]")),
                      json.loads(metadata.get("validation", "{}")))
