"""SinGAN for Generative Blending Augmentation, trained on ONE axial slice of a target-modality case (GBA paper,
section 3.3): which slice, training with provenance next to the checkpoint, and loading with one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nnunet_gen.errors import DataError
from nnunet_gen.io.files import write_text
from nnunet_gen.io.raw_dataset import RawDataset
from synth.checkpoint import CheckpointError
from synth.singan import SinGAN, SinGANConfig, train_singan

#: Raw-dataset folders a training slice may come from.
IMAGE_FOLDERS = ("imagesTr", "imagesTs", "imagesUnlabelledTr")

#: Iterations per scale of the ``singan train --preset`` budgets. ``paper``: the SinGAN paper's 2000 (the GBA paper
#: trains with SinGAN's defaults; ~24 CPU-minutes for one 64x56 slice on one thread). ``fast``: 200, measured by
#: ``benchmarks/bench_singan.py`` (README, "SinGAN budget"): on a 32x32 phantom slice the finest-scale
#: reconstruction RMSE falls 0.042 -> 0.028 -> 0.025 at 50 -> 100 -> 200 iterations and changes little beyond,
#: at a tenth of the paper's time.
SINGAN_PRESETS = {"paper": 2000, "fast": 200}


def brightest_slice(volume: np.ndarray) -> int:
    """Axial slice with the most foreground intensity: largest sum of ``volume - volume.min()`` (brain-rich slice)."""
    return int(np.argmax((volume - volume.min()).reshape(volume.shape[0], -1).sum(1)))


def load_singan(path: str | Path, device: str = "cpu") -> SinGAN:
    """:meth:`SinGAN.load` with every unusable file (missing, truncated, foreign) as a one-line :class:`DataError`."""
    try:
        return SinGAN.load(path, device)
    except (CheckpointError, ValueError, KeyError) as error:
        raise DataError(str(path), f"cannot load SinGAN checkpoint ({str(error).splitlines()[0]})") from None


def train_singan_on_case(dataset: str | int, case_id: str, output: str | Path, images_folder: str = "imagesTr",
                         channel: int = 0, slice_index: int | None = None, config: SinGANConfig = SinGANConfig(),
                         seed: int = 0, device: str = "cpu", progress: bool = True) -> SinGAN:
    """Train a SinGAN on one axial slice of ``case_id`` (default: :func:`brightest_slice`), save it at ``output``
    (safetensors) and the slice's provenance at ``<output>.json``."""
    raw = RawDataset.find(dataset)
    if images_folder not in IMAGE_FOLDERS:
        raise DataError("--images-folder", f"expected one of {IMAGE_FOLDERS}, got '{images_folder}'")
    if case_id not in raw.case_ids(images_folder):
        raise DataError(f"case {case_id}", f"not found in {raw.name}/{images_folder}")
    if not 0 <= channel < raw.num_channels:
        raise DataError("--channel", f"dataset {raw.name} has channels 0..{raw.num_channels - 1}")
    volume = raw.read_case(case_id, images_folder, labels_subfolder=None).images[channel]
    z = brightest_slice(volume) if slice_index is None else slice_index
    if not 0 <= z < volume.shape[0]:
        raise DataError(f"case {case_id}", f"--slice {z} outside [0, {volume.shape[0] - 1}]")
    try:
        singan = train_singan(volume[z], config, seed=seed, device=device, progress=progress)
    except ValueError as error:
        raise DataError(f"case {case_id} slice {z}", str(error).splitlines()[0]) from None
    path = singan.save(output)
    source = {"dataset": raw.name, "case": case_id, "images_folder": images_folder, "channel": channel, "slice": z}
    write_text(Path(f"{path}.json"), json.dumps({"training_slice": source, "scale_shapes": singan.scale_shapes,
                                                 "reconstruction_rmse": singan.reconstruction_rmse}, indent=1))
    return singan
