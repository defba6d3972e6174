"""The adversarial-normalisation paper's evaluation (Delisle et al., ISBI 2020, section 3.4): how similar the sites'
intensity histograms are before and after the normaliser G.

For each case of a fold's validation set (the paper's choice) or of the whole dataset, the preprocessed image
(nnU-Net's z-scored volume, the input G sees) and G's output on the whole volume are histogrammed over the voxels inside
nnU-Net's nonzero mask, pooled per site; the score is the mean Jensen-Shannon divergence (base 2, in [0, 1]) over all
site pairs, before and after G. Lower after = G made the sites more alike. G is read from the trained composed
network through nnU-Net's own predictor loading path, so the checkpoint is loaded exactly as ``nnUNetv2_predict``
loads it. Writes ``normalisation.json``, ``normalisation.md``, ``histograms.png`` (per-site histograms before/after)
and ``montage.png`` (one case before/after G).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from nnunet_gen.errors import DataError
from nnunet_gen.io.files import write_text
from nnunet_gen.io.raw_dataset import nnunet_dir, resolve_dataset_name
from nnunet_gen.io.sites import case_sites
from nnunet_gen.qc.figures import new_figure, save_png, slice_montage, tumour_slice
from synth.advnorm import ComposedNetwork, mean_pairwise_jsd, site_histograms

#: Histogram range: these percentiles of all voxels pooled (per set, before or after), so outliers do not squash it.
RANGE_PERCENTILES = (0.5, 99.5)


def load_normaliser(model_folder: Path, fold: int | str, checkpoint: str, device: str):
    """G of a trained composed network (nnU-Net's predictor builds and loads it), and the predictor."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunet_gen.run.nnunet import trainer_folder
    if not (model_folder / f"fold_{fold}" / checkpoint).is_file():
        raise DataError(str(model_folder / f"fold_{fold}" / checkpoint), "checkpoint not found")
    os.environ.setdefault("nnUNet_extTrainer", str(trainer_folder()))
    predictor = nnUNetPredictor(device=torch.device(device), verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_folder), (fold,), checkpoint)
    if not isinstance(predictor.network, ComposedNetwork):
        raise DataError(str(model_folder), "not trained with an adversarial-normalisation trainer (no normaliser G)")
    return predictor.network.normaliser.to(device).eval(), predictor


def _evaluation_cases(preprocessed: Path, folder: Path, fold: int | str, subset: str) -> list[str]:
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    cases = sorted(infer_dataset_class(str(folder)).get_identifiers(str(folder)))
    if subset == "all":
        return cases
    splits = preprocessed / "splits_final.json"
    if fold == "all" or not splits.is_file():
        raise DataError(str(splits), f"no validation set for fold {fold}; use --subset all")
    return sorted(json.loads(splits.read_text())[int(fold)]["val"])


def _histogram_figure(results: dict, histograms: dict, path: Path) -> Path:
    figure = new_figure(10.0, 3.6)
    for k, name in enumerate(("before", "after")):
        axes = figure.add_subplot(1, 2, k + 1)
        low, high = results[name]["range"]
        for site, h in histograms[name].items():
            edges = np.linspace(low, high, len(h) + 1)
            axes.stairs(h, edges, label=f"site {site}")
        axes.set_title(f"{name} G: mean pairwise JSD {results[name]['mean_pairwise_jsd']:.4f}", fontsize=9)
        axes.set_xlabel("intensity (z-scored)")
        axes.set_ylabel("fraction of voxels")
        axes.legend(fontsize=7)
    return save_png(figure, path)


def evaluate_normalisation(dataset: str | int, trainer: str, fold: int | str, out: str | Path,
                           configuration: str = "3d_fullres", plans: str = "nnUNetPlans",
                           checkpoint: str = "checkpoint_final.pth", subset: str = "val", bins: int = 100,
                           channel: int = 0, device: str = "cpu") -> dict:
    """Per-site histograms and mean pairwise JSD before/after G (module docstring); returns the JSON report."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    name = resolve_dataset_name(dataset)
    model_folder = nnunet_dir("nnUNet_results") / name / f"{trainer}__{plans}__{configuration}"
    normaliser, predictor = load_normaliser(model_folder, fold, checkpoint, device)
    preprocessed = nnunet_dir("nnUNet_preprocessed") / name
    folder = preprocessed / predictor.configuration_manager.data_identifier
    if not folder.is_dir():
        raise DataError(str(folder), "preprocessed data not found (run nnUNetv2_plan_and_preprocess)")
    cases = _evaluation_cases(preprocessed, folder, fold, subset)
    sites = case_sites(name, cases)
    data = infer_dataset_class(str(folder))(str(folder), cases)

    values: dict[str, dict[str, list[np.ndarray]]] = {"before": {}, "after": {}}
    montage = None
    for case in cases:
        image, seg, _, _ = data.load_case(case)
        image, mask = np.asarray(image, dtype=np.float32), np.asarray(seg[0]) >= 0
        if not 0 <= channel < image.shape[0]:
            raise DataError(f"case {case}", f"channel {channel} not in its {image.shape[0]} channels")
        with torch.no_grad():
            normalised = normaliser(torch.from_numpy(image[None]).to(device))[0, channel].cpu().numpy()
        values["before"].setdefault(sites[case], []).append(image[channel][mask])
        values["after"].setdefault(sites[case], []).append(normalised[mask])
        if montage is None:
            label = np.asarray(seg[0]) > 0
            z = tumour_slice(label)
            montage = (case, image[channel][z], normalised[z], label[z])

    results: dict = {"dataset": name, "trainer": trainer, "fold": fold, "checkpoint": checkpoint, "subset": subset,
                     "channel": channel, "bins": bins,
                     "cases_per_site": {s: len(v) for s, v in sorted(values["before"].items())}}
    histograms = {}
    for key, by_site in values.items():
        pooled = np.concatenate([v for volumes in by_site.values() for v in volumes])
        value_range = tuple(float(p) for p in np.percentile(pooled, RANGE_PERCENTILES))
        histograms[key] = site_histograms(by_site, bins, value_range)
        mean, pairs = mean_pairwise_jsd(histograms[key])
        results[key] = {"range": list(value_range), "mean_pairwise_jsd": mean, "pairwise_jsd": pairs}

    out = Path(out)
    _histogram_figure(results, histograms, out / "histograms.png")
    case, before, after, label = montage
    slice_montage([[(f"{case} before G", before, label), (f"{case} after G", after, label)],
                   [("after - before", after - before, None)]], out / "montage.png",
                  f"{trainer} fold {fold}: normaliser G")
    write_text(out / "normalisation.json", json.dumps(results, indent=1))
    write_text(out / "normalisation.md", normalisation_markdown(results))
    return results


def normalisation_markdown(results: dict) -> str:
    """The report as a Markdown table (mean and pairwise JSD before/after G)."""
    pairs = list(results["before"]["pairwise_jsd"])
    lines = [f"# Normalisation: {results['dataset']}, {results['trainer']} fold {results['fold']}", "",
             (f"{results['subset']} cases per site: {results['cases_per_site']}; {results['bins']} bins; "
              "Jensen-Shannon divergence base 2 (0 = identical histograms, 1 = disjoint)"), "",
             "| | mean pairwise JSD | " + " | ".join(pairs) + " |", "|---|---|" + "---|" * len(pairs)]
    for key in ("before", "after"):
        r = results[key]
        lines.append(f"| {key} G | {r['mean_pairwise_jsd']:.4f} | "
                     + " | ".join(f"{r['pairwise_jsd'][p]:.4f}" for p in pairs) + " |")
    return "\n".join(lines) + "\n"
