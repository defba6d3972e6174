"""The joint image + label StyleGAN2 (Son et al.) trained on the axial slices of a raw dataset: every channel of the
labelled cases plus their label map, one generator.

Slices are 2D, as in the paper: each axial slice is padded to a square (with each channel's minimum, the label with
background) and resampled to the model's resolution (images linearly, labels by nearest neighbour); the in-plane
spacing of a generated slice is the original's times side / resolution, recorded next to the checkpoint so rendered
fake cases keep the real physical size. Training writes sample grids (PNG) while it runs.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage

from nnunet_gen.errors import DataError
from nnunet_gen.io.files import write_text
from nnunet_gen.io.raw_dataset import RawDataset
from synth.checkpoint import CheckpointError
from synth.stylegan2 import StyleGAN2Config, StyleGAN2Model, train_stylegan2


def square_slice(images: np.ndarray, label: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) images and (H, W) label padded to a centred square and resampled to ``resolution``."""
    side = max(images.shape[1:])
    pads = [((side - n) // 2, side - n - (side - n) // 2) for n in images.shape[1:]]
    images = np.stack([np.pad(c, pads, constant_values=float(c.min())) for c in images])
    label = np.pad(label, pads)
    zoom = resolution / side
    resized = np.stack([ndimage.zoom(c, zoom, order=1, grid_mode=True, mode="nearest") for c in images])
    labels = ndimage.zoom(label, zoom, order=0, grid_mode=True, mode="nearest")
    return resized[:, :resolution, :resolution].astype(np.float32), labels[:resolution, :resolution].astype(np.int64)


def training_slices(dataset: str | int, resolution: int, min_foreground: float = 0.0
                    ) -> tuple[np.ndarray, np.ndarray, dict]:
    """(N, C, R, R) images and (N, R, R) labels of every informative axial slice of the labelled real cases (not
    constant; with ``min_foreground`` > 0, at least that fraction of labelled voxels) and their provenance."""
    raw = RawDataset.find(dataset)
    cases = raw.manifest().base_cases() or raw.case_ids()
    images, labels, spacings, sides = [], [], [], []
    for case_id in cases:
        case = raw.read_case(case_id)
        for z in range(case.images.shape[1]):
            slice_images, slice_label = case.images[:, z], case.label[z]
            if all(float(c.max()) <= float(c.min()) for c in slice_images):
                continue
            if min_foreground > 0 and np.mean(slice_label > 0) < min_foreground:
                continue
            image, label = square_slice(slice_images, slice_label, resolution)
            images.append(image)
            labels.append(label)
        spacings.append(case.geometry.spacing_zyx)
        sides.append(max(case.images.shape[2:]))
    if not images:
        raise DataError(raw.name, "no informative labelled slice to train on")
    spacing = np.median(np.array(spacings), 0)
    in_plane = float(max(spacing[1:]) * np.median(sides) / resolution)
    provenance = {"dataset": raw.name, "cases": cases, "slices": len(images), "channel_names":
                  raw.dataset_json["channel_names"], "labels": raw.labels,
                  "spacing_zyx": [float(spacing[0]), in_plane, in_plane], "min_foreground": min_foreground}
    return np.stack(images), np.stack(labels), provenance


def sample_grid_png(model: StyleGAN2Model, path: Path, seeds: list[int]) -> Path:
    """One row per latent seed: every generated channel with the generated label's contour (red)."""
    from nnunet_gen.qc.figures import slice_montage
    images, labels = model.generate(seeds)
    rows = [[(f"seed {s} channel {c}", image[c], label > 0) for c in range(image.shape[0])]
            for s, image, label in zip(seeds, images, labels)]
    return slice_montage(rows, path, "StyleGAN2 samples (images, generated label in red)")


def train_stylegan_on_dataset(dataset: str | int, output: str | Path, config: StyleGAN2Config, seed: int = 0,
                              device: str = "cpu", sample_every: int | None = None, progress: bool = True,
                              min_foreground: float = 0.0) -> StyleGAN2Model:
    """Train on the dataset's slices; save the checkpoint at ``output``, provenance at ``<output>.json`` and sample
    grids at ``<stem>_samples_<iteration>.png`` (every ``sample_every`` iterations and at the end)."""
    images, labels, provenance = training_slices(dataset, config.resolution, min_foreground)
    if images.shape[1] != config.image_channels or len(provenance["labels"]) != config.num_classes:
        raise DataError(provenance["dataset"], f"{images.shape[1]} channels and {len(provenance['labels'])} classes, "
                                               f"the configuration has {config.image_channels} and "
                                               f"{config.num_classes}")
    stem = Path(output).with_suffix("")
    grid_seeds = list(range(4))
    sample: Callable[[int, StyleGAN2Model], None] = (
        lambda iteration, model: sample_grid_png(model, Path(f"{stem}_samples_{iteration:06d}.png"), grid_seeds))
    try:
        model = train_stylegan2(images, labels, config, seed=seed, device=device, progress=progress,
                                sample_every=sample_every, sample_callback=sample if sample_every else None)
    except ValueError as error:
        raise DataError(f"stylegan train ({provenance['dataset']})", str(error).splitlines()[0]) from None
    path = model.save(output)
    sample_grid_png(model, Path(f"{stem}_samples_final.png"), grid_seeds)
    write_text(Path(f"{path}.json"), json.dumps({**provenance, "seed": seed, "config": json.loads(config.to_json())},
                                                indent=1))
    return model


def load_stylegan(path: str | Path, device: str = "cpu") -> tuple[StyleGAN2Model, dict]:
    """The model and its training provenance (``<path>.json``), with every unusable file as a one-line error."""
    try:
        model = StyleGAN2Model.load(path, device)
    except (CheckpointError, ValueError, KeyError) as error:
        raise DataError(str(path), f"cannot load StyleGAN2 checkpoint ({str(error).splitlines()[0]})") from None
    provenance_file = Path(f"{path}.json")
    if not provenance_file.is_file():
        raise DataError(str(path), f"provenance file {provenance_file.name} missing (written by stylegan train)")
    return model, json.loads(provenance_file.read_text())
