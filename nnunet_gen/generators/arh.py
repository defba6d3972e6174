"""ARHNet harmonisers (Huo et al. 2023) trained and evaluated on a raw dataset's lesions.

* Training and evaluation use the real labelled cases that have lesion voxels (``labels``), one image channel, each
  image min-max scaled to [0, 1] (the paper's first step; images already in [0, 1] are kept as they are). The
  cases are split once into training and held-out patient groups (:func:`holdout_split`, seeded), so evaluation is
  on patients the harmoniser never saw; :func:`train_on_dataset` records its split next to the checkpoint
  (``<ckpt>.json``) and evaluation refuses a checkpoint trained on any evaluated case.
* With ``validation_fraction`` > 0 in the config, that fraction of the *training* patient groups is held out again
  for model selection (:func:`train_selected`): the generator with the best validation fPSNR is kept, and
  :func:`train_on_dataset` writes the validation curve as ``<ckpt stem>_validation.png`` next to the checkpoint.
* :func:`evaluate_on_dataset` writes the paper's Table 1 / Table 3 (MAE, fMAE, PSNR, fPSNR on held-out perturbed
  lesions) and a Fig. 3 style PNG.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from nnunet_gen.errors import DataError
from nnunet_gen.io.files import write_text
from nnunet_gen.io.images import read_image
from nnunet_gen.io.raw_dataset import RawDataset
from synth.arhnet import (
    METHODS,
    TABLE1_METHODS,
    TABLE3_METHODS,
    Harmonizer,
    HarmonizerConfig,
    derive_tissue_mask,
    harmonize_volume,
    load_harmonizer,
    save_harmonizer,
    train_harmonizer,
)
from synth.arhnet.config import preset_config
from synth.arhnet.perturbation import IntensityScaling
from synth.checkpoint import CheckpointError

#: Learned rows of the paper's Table 1, then its Table 3 ablations (ARHNet itself is in Table 1).
TABLE1_LEARNED = tuple(m for m in TABLE1_METHODS if METHODS[m].learned)
TABLE3_LEARNED = tuple(m for m in TABLE3_METHODS if m not in TABLE1_LEARNED)


@dataclass(frozen=True)
class LesionCase:
    """One real case ready for ARHNet: a [0, 1] image channel, its lesion mask and its tissue mask."""

    case_id: str
    image: np.ndarray
    mask: np.ndarray
    tissue: np.ndarray

    def as_tuple(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``(image, lesion mask, tissue mask)`` case format of ``synth.arhnet``."""
        return self.image, self.mask, self.tissue


def real_case_groups(dataset: RawDataset) -> dict[str, str]:
    """Real labelled case -> patient group (from the manifest; each case its own patient without one)."""
    manifest = dataset.manifest()
    return {c: manifest.cases[c].group if c in manifest.cases else c for c in dataset.case_ids()
            if c not in manifest.cases or manifest.cases[c].is_base}


def has_lesion(dataset: RawDataset, case_id: str, labels: Sequence[int]) -> bool:
    label, _ = read_image(dataset.label_file(case_id), where=f"case {case_id}")
    return bool(np.isin(label, list(labels)).any())


def lesion_case_groups(dataset: RawDataset, labels: Sequence[int]) -> dict[str, str]:
    """Real labelled cases with at least one voxel of ``labels`` -> their patient group (empty masks are left out)."""
    return {c: g for c, g in real_case_groups(dataset).items() if has_lesion(dataset, c, labels)}


def holdout_split(case_groups: dict[str, str], holdout_fraction: float,
                  seed: int = 0) -> tuple[list[str], list[str]]:
    """(training cases, held-out cases): ``round(fraction * groups)`` (at least 1) patient groups, drawn with
    ``seed``, are held out; ``holdout_fraction`` 0 keeps every case for training."""
    if not 0.0 <= holdout_fraction < 1.0:
        raise DataError("--holdout", f"must be in [0, 1), got {holdout_fraction}")
    groups = sorted(set(case_groups.values()))
    if not groups:
        raise DataError("dataset", "no real labelled case has lesion voxels: nothing to train or evaluate on")
    n_held_out = 0 if holdout_fraction == 0 else max(1, round(holdout_fraction * len(groups)))
    if n_held_out >= len(groups):
        raise DataError("--holdout", f"{len(groups)} patient group(s) with lesions cannot be split into training "
                                     f"and {n_held_out} held-out group(s)")
    held_out_groups = set(np.random.default_rng(seed).permutation(groups)[:n_held_out].tolist())
    train = sorted(c for c, g in case_groups.items() if g not in held_out_groups)
    held_out = sorted(c for c, g in case_groups.items() if g in held_out_groups)
    return train, held_out


def load_lesion_cases(dataset: RawDataset, case_ids: Iterable[str], labels: Sequence[int],
                      channel: int = 0) -> list[LesionCase]:
    """Read ``case_ids``: channel ``channel`` min-max scaled to [0, 1] (kept when already in [0, 1]), lesion mask =
    voxels of ``labels``, tissue mask = voxels above the image minimum."""
    if not 0 <= channel < dataset.num_channels:
        raise DataError("--channel", f"dataset {dataset.name} has channels 0..{dataset.num_channels - 1}")
    cases = []
    for case_id in case_ids:
        case = dataset.read_case(case_id)
        image = case.images[channel]
        if not np.isfinite(image).all():
            raise DataError(f"case {case_id}", "image contains NaN or infinite values")
        mask = np.isin(case.label, list(labels))
        if not mask.any():
            raise DataError(f"case {case_id}", f"no voxel with labels {list(labels)} (empty lesion mask)")
        cases.append(LesionCase(case_id, IntensityScaling.fit(image, warn=False).apply(image),
                                mask.astype(np.uint8), derive_tissue_mask(image)))
    return cases


def provenance_path(checkpoint: str | Path) -> Path:
    """The JSON written next to a checkpoint by :func:`train_on_dataset` (dataset and training cases)."""
    return Path(f"{checkpoint}.json")


def open_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    patch_size: Sequence[int] | None = None) -> Harmonizer:
    """:func:`synth.arhnet.load_harmonizer` with every failure as one-line :class:`DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "checkpoint file not found")
    try:
        return load_harmonizer(path, device, None if patch_size is None else tuple(patch_size))
    except (CheckpointError, ValueError, KeyError) as error:
        raise DataError(str(path), str(error).splitlines()[0] if str(error) else type(error).__name__) from None


def make_config(method: str, patch_size: Sequence[int] | None, preset: str | None = None,
                **training) -> HarmonizerConfig:
    """A :class:`HarmonizerConfig` of ``preset`` (``synth.arhnet.config.PRESETS``; None: the plain defaults) with
    ``patch_size`` and ``training`` fields overriding it (None values ignored); invalid values as :class:`DataError`."""
    patch = None if patch_size is None else tuple(int(p) for p in patch_size)
    try:
        return preset_config(preset, method, patch_size=patch, **training)
    except ValueError as error:
        raise DataError(f"method {method}", str(error)) from None


def validation_curve_path(checkpoint: str | Path) -> Path:
    """The validation-curve PNG written next to a checkpoint by :func:`train_on_dataset`."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.name.split('.')[0]}_validation.png")


def validation_curve_figure(harmonizer: Harmonizer, path: str | Path) -> Path:
    """Validation fPSNR against iterations, the composite's fPSNR as reference, a star at the kept state."""
    from nnunet_gen.qc.figures import line_plot
    record = harmonizer.validation
    curve = record["curve"]
    return line_plot({f"{harmonizer.method} (validation)": ([p["iteration"] for p in curve],
                                                            [p["fPSNR"] for p in curve])},
                     path, "iteration", "validation fPSNR (dB, cap 60)",
                     f"{harmonizer.method}: {record['patches']} validation patches, kept iteration "
                     f"{record['best_iteration']}", {"composite (no harmonisation)": record["composite_fPSNR"]},
                     (record["best_iteration"], record["best_fPSNR"]))


def train_selected(raw: RawDataset, train_ids: Sequence[str], config: HarmonizerConfig, labels: Sequence[int],
                   channel: int, seed: int, device: str | torch.device = "cpu",
                   progress: bool = True) -> tuple[Harmonizer, list[str]]:
    """Train ``config.method`` on ``train_ids``, holding ``config.validation_fraction`` of their patient groups out
    for model selection (seeded like :func:`holdout_split`). Returns the harmoniser and the validation case IDs."""
    fit_ids, validation_ids = list(train_ids), []
    if config.spec.learned and config.validation_fraction > 0:
        groups = {c: g for c, g in lesion_case_groups(raw, labels).items() if c in set(train_ids)}
        try:
            fit_ids, validation_ids = holdout_split(groups, config.validation_fraction, seed)
        except DataError as error:
            raise DataError("--val-fraction", f"{error.problem} (training patient groups); use --val-fraction 0") \
                from None
    cases = [c.as_tuple() for c in load_lesion_cases(raw, fit_ids, labels, channel)]
    validation_cases = [c.as_tuple() for c in load_lesion_cases(raw, validation_ids, labels, channel)]
    harmonizer = train_harmonizer(cases, config, seed, device, progress, validation_cases or None)
    return harmonizer, validation_ids


def train_on_dataset(dataset: str | int, output: str | Path, config: HarmonizerConfig, labels: Sequence[int] = (1,),
                     channel: int = 0, holdout_fraction: float = 0.2, seed: int = 0,
                     device: str | torch.device = "cpu", progress: bool = True) -> Harmonizer:
    """Train ``config.method`` on the training part of ``dataset`` (:func:`train_selected`) and save it
    (safetensors, atomic) at ``output``, with the split next to it (:func:`provenance_path`) and, with validation,
    the curve (:func:`validation_curve_path`). Returns the trained harmoniser."""
    raw = RawDataset.find(dataset)
    train_ids, held_out_ids = holdout_split(lesion_case_groups(raw, labels), holdout_fraction, seed)
    harmonizer, validation_ids = train_selected(raw, train_ids, config, labels, channel, seed, device, progress)
    save_harmonizer(harmonizer, output)
    if harmonizer.validation:
        validation_curve_figure(harmonizer, validation_curve_path(output))
    write_text(provenance_path(output), json.dumps(
        {"dataset": raw.name, "labels": list(labels), "channel": channel, "holdout_fraction": holdout_fraction,
         "seed": seed, "train_cases": train_ids, "validation_cases": validation_ids, "held_out_cases": held_out_ids},
        indent=1))
    return harmonizer


def check_held_out(checkpoint: str | Path, dataset_name: str, evaluated: Sequence[str]) -> None:
    """Refuse a checkpoint whose recorded training cases (if any) include an evaluated case of this dataset."""
    record = provenance_path(checkpoint)
    if not record.is_file():
        return
    provenance = json.loads(record.read_text())
    if provenance.get("dataset") != dataset_name:
        return
    seen = sorted(set(provenance.get("train_cases", [])) & set(evaluated))
    if seen:
        raise DataError(str(checkpoint), f"was trained on evaluated case(s) {seen[:3]}; evaluate with the "
                                         f"--holdout/--seed used for training")


def _figure_cases(held_out: Sequence, count: int) -> list[int]:
    """Indices of up to ``count`` held-out cases, half with the most darkened and half with the most brightened
    foreground (the paper's Fig. 3 shows both)."""
    shift = [float(((c.perturbed - c.real)[c.mask > 0]).mean()) for c in held_out]
    order = np.argsort(shift)
    darkest = [int(i) for i in order[:(count + 1) // 2]]
    brightest = [int(i) for i in order[::-1] if int(i) not in darkest][:count - len(darkest)]
    return darkest + brightest


def harmonization_figure(harmonizers: dict[str, Harmonizer], held_out: Sequence, path: str | Path,
                         count: int = 4) -> Path:
    """ARHNet Fig. 3 analogue: per held-out case, the composite input, each method's output and the ground truth
    (axial slice with the most lesion voxels, lesion contour in red)."""
    from nnunet_gen.qc.figures import slice_montage, tumour_slice
    rows = []
    for index in _figure_cases(held_out, count):
        case = held_out[index]
        z = tumour_slice(case.mask)
        row = [(f"composite (a={case.perturbation.alpha:+.2f}, l={case.perturbation.lam:+.2f})", case.perturbed[z],
                case.mask[z])]
        for name, harmonizer in harmonizers.items():
            if name != "composite":
                output = harmonize_volume(harmonizer, case.perturbed, case.mask, case.tissue_mask, IntensityScaling())
                row.append((name, output[z], case.mask[z]))
        row.append(("ground truth", case.real[z], case.mask[z]))
        rows.append(row)
    slice_montage(rows, path, "ARHNet Fig. 3 style: held-out perturbed lesions (red: lesion mask)")
    return Path(path)


def write_table(table: dict[str, dict[str, float]], output_dir: str | Path, details: dict) -> tuple[Path, Path]:
    """``harmonization_table.csv`` and ``.json`` (the table plus ``details``: cases, budget, checkpoints)."""
    from synth.arhnet.metrics import METRIC_NAMES
    output_dir = Path(output_dir)
    lines = ["method," + ",".join(METRIC_NAMES)]
    lines += [f"{name}," + ",".join(f"{row[m]:.6g}" for m in METRIC_NAMES) for name, row in table.items()]
    csv_path, json_path = output_dir / "harmonization_table.csv", output_dir / "harmonization_table.json"
    write_text(csv_path, "\n".join(lines) + "\n")
    write_text(json_path, json.dumps({"table": table, **details}, indent=1))
    return csv_path, json_path


def evaluate_on_dataset(dataset: str | int, harmonizers: dict[str, Harmonizer], output_dir: str | Path,
                        patch_size: Sequence[int], labels: Sequence[int] = (1,), channel: int = 0,
                        holdout_fraction: float = 0.2, seed: int = 0, checkpoints: dict[str, str] | None = None,
                        details: dict | None = None) -> dict[str, dict[str, float]]:
    """ARHNet Table 1 / 3 on the held-out cases of ``dataset``: Composite and HM rows first, then ``harmonizers``;
    writes CSV, JSON and the Fig. 3 style PNG into ``output_dir``. ``checkpoints`` (row -> file) are checked to be
    trained on none of the evaluated cases."""
    from synth.arhnet import evaluate_harmonizers, make_held_out_set
    raw = RawDataset.find(dataset)
    _, held_out_ids = holdout_split(lesion_case_groups(raw, labels), holdout_fraction, seed)
    if not held_out_ids:
        raise DataError("--holdout", "evaluation needs held-out cases (holdout fraction > 0)")
    for checkpoint in (checkpoints or {}).values():
        check_held_out(checkpoint, raw.name, held_out_ids)
    patch = tuple(int(p) for p in patch_size)
    rows = {"composite": Harmonizer(make_config("composite", patch)), "hm": Harmonizer(make_config("hm", patch))}
    rows.update(harmonizers)
    cases = [c.as_tuple() for c in load_lesion_cases(raw, held_out_ids, labels, channel)]
    table = evaluate_harmonizers(rows, cases, patch, seed)
    output_dir = Path(output_dir)
    figure = harmonization_figure(rows, make_held_out_set(cases, patch, seed), output_dir / "harmonization_fig3.png")
    write_table(table, output_dir, {"dataset": raw.name, "held_out_cases": held_out_ids, "patch_size": list(patch),
                                    "seed": seed, "labels": list(labels), "channel": channel,
                                    "checkpoints": checkpoints or {}, "figure": figure.name, **(details or {})})
    return table


def train_methods(dataset: str | int, methods: Sequence[str], patch_size: Sequence[int], training: dict,
                  output_dir: str | Path, labels: Sequence[int] = (1,), channel: int = 0,
                  holdout_fraction: float = 0.2, seed: int = 0, device: str | torch.device = "cpu",
                  preset: str | None = None) -> tuple[dict[str, Harmonizer], dict[str, str]]:
    """Train each of ``methods`` (Table 1 / 3 rows) on the training part of ``dataset`` with the same budget
    (``preset`` and ``training``, :func:`make_config`) and model selection (:func:`train_selected`); checkpoints go
    to ``output_dir/checkpoints/<method>.safetensors``. Returns the harmonisers and their checkpoint paths."""
    raw = RawDataset.find(dataset)
    train_ids, _ = holdout_split(lesion_case_groups(raw, labels), holdout_fraction, seed)
    harmonizers, checkpoints = {}, {}
    for method in methods:
        config = make_config(method, patch_size, preset, **training)
        harmonizers[method], _ = train_selected(raw, train_ids, config, labels, channel, seed, device)
        path = Path(output_dir) / "checkpoints" / f"{method}.safetensors"
        checkpoints[method] = str(save_harmonizer(harmonizers[method], path))
    return harmonizers, checkpoints
