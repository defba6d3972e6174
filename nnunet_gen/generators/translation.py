"""Unpaired source -> target modality translation (GBA paper, section 3.2) trained on axial slices of raw-dataset
cases: which slices, training with provenance and loss curves next to the checkpoint, loading with one-line errors.

The source slices come from the labelled cases (``imagesTr``), the target slices from unlabelled target-modality
images (default: the dataset's ``imagesUnlabelledTr``). ``source_cases``/``target_cases`` (shell patterns) restrict
training to one centre, as the paper does: a translation trained across centres learns no meaningful mapping.
"""
from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_gen.errors import DataError
from nnunet_gen.io.files import write_text
from nnunet_gen.io.images import read_image
from nnunet_gen.io.raw_dataset import RawDataset
from synth.checkpoint import CheckpointError
from synth.translation import TranslationConfig, Translator, train_translator

UNLABELLED_FOLDER = "imagesUnlabelledTr"


def informative_slices(volume: np.ndarray) -> list[np.ndarray]:
    """Axial slices that are not constant (empty background slices teach a translation nothing)."""
    return [s for s in volume if float(s.max()) > float(s.min())]


def _select(case_ids: Sequence[str], patterns: Sequence[str] | None) -> list[str]:
    if not patterns:
        return list(case_ids)
    return [c for c in case_ids if any(fnmatch.fnmatchcase(c, p) for p in patterns)]


def target_image_files(folder: Path, file_ending: str, patterns: Sequence[str] | None = None) -> dict[str, Path]:
    """Case ID -> channel-0 image of a folder of target-modality images, filtered by ``patterns``."""
    if not folder.is_dir():
        raise DataError(str(folder), "target image folder not found (missing target pool)")
    suffix = "_0000" + file_ending
    files = {p.name[:-len(suffix)]: p for p in sorted(folder.iterdir())
             if p.name.endswith(suffix) and not p.name.startswith(".")}
    return {c: files[c] for c in _select(sorted(files), patterns)}


def training_slices(dataset: str | int, target_folder: Path | None = None,
                    source_cases: Sequence[str] | None = None,
                    target_cases: Sequence[str] | None = None) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
    """Source slices (labelled cases, channel 0), target slices (target images) and what they came from."""
    raw = RawDataset.find(dataset)
    if raw.num_channels != 1:
        raise DataError(raw.name, f"translation takes single-channel datasets, this one has {raw.num_channels}")
    sources = _select(raw.manifest().base_cases() or raw.case_ids(), source_cases)
    if not sources:
        raise DataError(raw.name, f"no labelled source case matches {list(source_cases or [])}")
    folder = Path(target_folder) if target_folder else raw.folder / UNLABELLED_FOLDER
    targets = target_image_files(folder, raw.file_ending, target_cases)
    if not targets:
        raise DataError(str(folder), f"no target image{' matches ' + str(list(target_cases)) if target_cases else ''}"
                                     f" (missing target pool)")
    source_slices = [s for c in sources for s in informative_slices(raw.read_case(c, labels_subfolder=None).images[0])]
    target_slices = [s for c, path in targets.items()
                     for s in informative_slices(read_image(path, f"case {c}")[0].astype(np.float32))]
    return source_slices, target_slices, {"dataset": raw.name, "source_cases": sources,
                                          "target_folder": str(folder.resolve()), "target_cases": sorted(targets)}


def train_translation(dataset: str | int, output: str | Path, config: TranslationConfig,
                      target_folder: Path | None = None, source_cases: Sequence[str] | None = None,
                      target_cases: Sequence[str] | None = None, seed: int = 0, device: str = "cpu",
                      progress: bool = True) -> Translator:
    """Train a translator, save it at ``output`` (safetensors), its provenance at ``<output>.json`` and its loss
    curves at ``<output>_losses.png``."""
    source, target, provenance = training_slices(dataset, target_folder, source_cases, target_cases)
    try:
        translator = train_translator(source, target, config, seed=seed, device=device, progress=progress)
    except ValueError as error:
        raise DataError(f"translate train ({provenance['dataset']})", str(error).splitlines()[0]) from None
    path = translator.save(output)
    write_text(Path(f"{path}.json"), json.dumps({**provenance, "seed": seed, "config": config.to_json(),
                                                 "source_slices": len(source), "target_slices": len(target)},
                                                indent=1))
    loss_curves(translator.history, Path(f"{Path(path).with_suffix('')}_losses.png"),
                f"{config.method} on {provenance['dataset']}, seed {seed}")
    return translator


def loss_curves(history: dict[str, list[float]], path: Path, title: str) -> Path:
    """Every loss (not the learning rate) against the iteration, smoothed with a moving mean of ~2% of the run."""
    from nnunet_gen.qc.figures import line_plot
    series = {}
    for name, values in history.items():
        if name == "lr":
            continue
        window = max(1, len(values) // 50)
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        series[name] = (list(range(window, len(values) + 1)), smooth.tolist())
    return line_plot(series, path, "iteration", "loss", title)


def load_translator(path: str | Path, device: str = "cpu") -> Translator:
    """:meth:`Translator.load` with every unusable file (missing, truncated, foreign) as a one-line error."""
    try:
        return Translator.load(path, device)
    except (CheckpointError, ValueError, KeyError) as error:
        raise DataError(str(path), f"cannot load translation checkpoint ({str(error).splitlines()[0]})") from None
