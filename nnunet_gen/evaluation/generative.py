"""``nnunet-gen gen-eval``: quality of a joint image + label StyleGAN2 against the real slices it was trained on.

Metrics (``synth.gen_metrics``; the 3D-StyleGAN and "Evaluating GAN metrics" papers of the DALI 2021 proceedings):

* FID with our own feature network (``FeatureNetwork``: 4 conv blocks + global pooling, trained here on the real
  slices to predict rotations and per-class presence/area; no Inception weights can be downloaded). The fakes are 2D
  axial slices, so FID is reported for the axial plane only;
* bMMD2 (batch-wise squared MMD, dot-product kernel on flattened images, unbiased estimator);
* MS-SSIM diversity: mean MS-SSIM of random fake pairs (lower = more diverse) next to the same for real pairs;
* memorisation: every fake's most similar real slice (MS-SSIM) next to every real slice's most similar other real;
* label consistency (with ``segmenter``): Dice between an nnU-Net trained on real data, applied to the fakes, and
  the generated labels; next to it the same segmenter's Dice on (up to ``num``) real training slices against their
  real labels, the agreement a fake would reach if its label fitted its image as well as a real one (optimistic when
  the segmenter was trained on those slices). Both as the mean over all slices and over the slices with foreground.

Writes ``gen_eval.{md,json,csv,png}`` into the output folder.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from nnunet_gen.errors import DataError
from nnunet_gen.evaluation.reports import csv_text
from nnunet_gen.generators.stylegan import load_stylegan, training_slices
from nnunet_gen.io.files import write_text
from nnunet_gen.io.images import Geometry, read_image, write_image
from synth.gen_metrics import (batch_mmd2, fid, label_consistency_dice, ms_ssim_diversity, nearest_real_neighbours,
                               train_feature_extractor)

if TYPE_CHECKING:
    from nnunet_gen.run.nnunet import NnUNetBackend



def generate(model, seeds: list[int], truncation: float, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    images, labels = zip(*(model.generate(seeds[i:i + batch_size], truncation)
                           for i in range(0, len(seeds), batch_size)))
    return np.concatenate(images), np.concatenate(labels)


class Segmenter(NamedTuple):
    """A trained nnU-Net used to check generated labels: its dataset and the stock commands of its model."""
    dataset: str | int
    backend: NnUNetBackend

    def describe(self) -> str:
        b = self.backend
        return f"{self.dataset} {b.trainer} {b.configuration} {b.plans} folds {list(b.folds)}"


def segment_slices(images: np.ndarray, spacing_zyx: list[float], segmenter: Segmenter) -> np.ndarray:
    """The segmenter's labels of (N, C, R, R) slices (written as one-slice volumes, predicted by its fold ensemble)."""
    from nnunet_gen.io.raw_dataset import RawDataset
    geometry = Geometry.axis_aligned(spacing_zyx)
    with tempfile.TemporaryDirectory() as folder:
        inputs, outputs = Path(folder) / "images", Path(folder) / "predictions"
        for k, image in enumerate(images):
            for c, channel in enumerate(image):
                write_image(channel[None].astype(np.float32), geometry, inputs / f"slice_{k:06d}_{c:04d}.nii.gz")
        segmenter.backend.predict(RawDataset.find(segmenter.dataset).name, inputs, outputs, False,
                                  Path(folder) / "predict.log")
        return np.stack([read_image(outputs / f"slice_{k:06d}.nii.gz")[0][0] for k in range(len(images))])


def consistency_summary(dice: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Mean per-slice Dice over all slices and over the slices whose ``labels`` have foreground (a slice empty in
    both scores 1 and would flatter a generator that draws no lesion)."""
    with_foreground = labels.reshape(len(labels), -1).any(axis=1)
    return {"dice": float(np.mean(dice)), "foreground_fraction": float(np.mean(with_foreground)),
            "dice_foreground": float(np.mean(dice[with_foreground])) if with_foreground.any() else float("nan")}


def evaluate_generator(dataset: str | int, checkpoint: str | Path, num: int, out: Path, seed: int = 1_000_000,
                       truncation: float = 1.0, segmenter: Segmenter | None = None, device: str = "cpu",
                       feature_iterations: int = 500) -> Path:
    """All metrics of ``num`` fakes (latent seeds seed..seed+num-1) against the dataset's real slices that the
    generator was trained on (its provenance's ``min_foreground`` selection)."""
    if num < 2:
        raise DataError("--num", f"needs at least 2 fakes, got {num}")
    model, provenance = load_stylegan(checkpoint, device)
    resolution = model.config.resolution
    reals, real_labels, _ = training_slices(dataset, resolution, provenance.get("min_foreground", 0.0))
    if reals.shape[1] != model.config.image_channels:
        raise DataError(str(dataset), f"{reals.shape[1]} channels, the generator makes {model.config.image_channels}")
    seeds = list(range(seed, seed + num))
    fakes, fake_labels = generate(model, seeds, truncation)
    extractor = train_feature_extractor(reals, real_labels, seed=0, iterations=feature_iterations, device=device)
    mmd_mean, mmd_std = batch_mmd2(reals, fakes, batch_size=min(16, num, len(reals)))
    diversity = ms_ssim_diversity(fakes, reals)
    neighbours = nearest_real_neighbours(fakes, reals)
    summary = {"dataset": provenance["dataset"], "checkpoint": str(checkpoint), "fakes": num, "real_slices": len(reals),
               "truncation_psi": truncation, "fid_axial": fid(reals, fakes, extractor), "bmmd2": mmd_mean,
               "bmmd2_std": mmd_std, "ms_ssim_fake_pairs": diversity.fake, "ms_ssim_real_pairs": diversity.real,
               "nearest_real_ms_ssim_mean": float(np.mean(neighbours.score)),
               "nearest_real_ms_ssim_max": float(np.max(neighbours.score)),
               "real_to_real_nearest_ms_ssim_mean": float(np.mean(neighbours.real_score)),
               "feature_network": f"synth.gen_metrics.FeatureNetwork, {feature_iterations} iterations on the real "
                                  f"slices (rotation + per-class presence/area)"}
    rows = [{"latent_seed": s, "nearest_real_slice": int(i), "nearest_real_ms_ssim": float(score)}
            for s, i, score in zip(seeds, neighbours.index, neighbours.score)]
    if segmenter is not None:
        reference = np.unique(np.linspace(0, len(reals) - 1, min(num, len(reals))).round().astype(int))
        predicted = segment_slices(np.concatenate([fakes, reals[reference]]), provenance["spacing_zyx"],
                                   segmenter)  # one nnUNetv2_predict for both sets
        dice = label_consistency_dice(predicted[:num], fake_labels, model.config.num_classes)
        real_dice = label_consistency_dice(predicted[num:], real_labels[reference], model.config.num_classes)
        summary["segmenter"] = segmenter.describe()
        summary.update({f"label_consistency_{k}": v for k, v in consistency_summary(dice, fake_labels).items()})
        summary.update({f"label_consistency_real_{k}": v
                        for k, v in consistency_summary(real_dice, real_labels[reference]).items()})
        summary["label_consistency_real_slices"] = len(reference)
        for row, value in zip(rows, dice):
            row["label_dice"] = float(value)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "gen_eval.json", json.dumps(summary, indent=1))
    write_text(out / "gen_eval.csv", csv_text(rows, list(rows[0])))
    _figure(neighbours.score, neighbours.real_score, out / "gen_eval.png",
            None if segmenter is None else (dice, real_dice))
    lines = ["| metric | value |", "|---|---|"] + [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
                                                    for k, v in summary.items()]
    write_text(out / "gen_eval.md", "\n".join(lines) + "\n")
    return out / "gen_eval.md"


def _figure(fake_to_real: np.ndarray, real_to_real: np.ndarray, path: Path,
            consistency: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """Memorisation: nearest-real MS-SSIM of the fakes against that of the reals (a fake far right of the reals is a
    copy); with ``consistency`` (fake, real per-slice Dice), a second panel of the segmenter's label agreement."""
    from nnunet_gen.qc.figures import new_figure, save_png
    figure = new_figure(6.0 if consistency is None else 11.0, 3.6)
    panels = [("Memorisation check", "MS-SSIM", "fake -> nearest real", "real -> nearest other real",
               fake_to_real, real_to_real)]
    if consistency is not None:
        panels.append(("Label consistency (segmenter trained on real data)", "Dice of the segmenter vs the label",
                       "fake slices vs generated labels", "real slices vs real labels", *consistency))
    bins = np.linspace(0.0, 1.0, 41)
    for k, (title, xlabel, fake_name, real_name, fake, real) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), k + 1)
        axes.hist(real, bins=bins, alpha=0.6, label=real_name)
        axes.hist(fake, bins=bins, alpha=0.6, label=fake_name)
        axes.set_xlabel(xlabel)
        axes.set_ylabel("slices")
        axes.legend(fontsize=8)
        axes.set_title(title, fontsize=10)
    return save_png(figure, path)
