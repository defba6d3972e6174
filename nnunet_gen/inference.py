"""Prediction as a challenge submission needs it: the fold ensemble of stock ``nnUNetv2_predict``, then the largest
connected component of each label (nnunetv2's own postprocessing function)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_gen.io.images import read_image, write_image
from nnunet_gen.io.raw_dataset import RawDataset
from nnunet_gen.run.nnunet import NnUNetBackend


def largest_component_per_label(segmentation: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Keep the largest connected component of each foreground label (nnU-Net's own postprocessing function)."""
    from nnunetv2.postprocessing.remove_connected_components import remove_all_but_largest_component_from_segmentation
    for label in labels:
        if np.any(segmentation == label):
            segmentation = remove_all_but_largest_component_from_segmentation(segmentation, label)
    return segmentation


def predict_with_postprocessing(dataset: str, trainer: str, folds: Sequence[int], images: Path, out: Path,
                                configuration: str = "3d_fullres", plans: str = "nnUNetPlans", device: str = "cuda",
                                largest_component: bool = True, num_processes: int = 2) -> Path:
    """``nnunet-gen predict``: fold-ensemble ``nnUNetv2_predict``, then the largest component per label.

    Stock equivalent: ``nnUNetv2_predict -i IN -o RAW -d D -c C -tr T -f 0 1 2 3 4`` then
    ``nnunet-gen``'s largest-component step (nnU-Net's ``remove_all_but_largest_component_from_segmentation``); to
    ensemble several trainers, predict each with ``--save_probabilities`` and run
    ``nnUNetv2_ensemble -i RAW_T1 RAW_T2 -o ENS`` before the postprocessing.
    """
    raw_dataset = RawDataset.find(dataset)
    backend = NnUNetBackend(trainer, configuration, plans, folds, device, num_processes)
    raw = out.with_name(out.name + "_raw") if largest_component else out
    log = out.with_name(out.name + "_predict.log")
    backend.predict(raw_dataset.name, images, raw, False, log)
    if largest_component:
        labels = sorted(v for k, v in raw_dataset.labels.items() if v != 0 and k != "ignore")
        keep_largest_components(raw, out, labels, raw_dataset.file_ending)
    return out


def keep_largest_components(predictions: Path, out: Path, labels: Sequence[int], file_ending: str) -> Path:
    """:func:`largest_component_per_label` of every ``*<file_ending>`` segmentation in ``predictions``, into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(predictions.iterdir()):
        if path.name.endswith(file_ending) and not path.name.startswith("."):
            segmentation, geometry = read_image(path)
            write_image(largest_component_per_label(segmentation, labels).astype(segmentation.dtype), geometry,
                        out / path.name)
    return out
