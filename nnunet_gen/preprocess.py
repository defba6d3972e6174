"""Planning and preprocessing with nnU-Net's own API, keeping a rendered dataset on its source's plans.

Left alone, nnU-Net re-plans a bigger rendered dataset (more cases can raise the batch size; README, "Safety
guarantees"), which confounds every comparison with the baseline. A dataset whose manifest names a source therefore gets the
source's plans through nnU-Net's plan transfer (``move_plans_between_datasets``) before preprocessing. Every
dataset then gets patient-grouped ``splits_final.json`` (``nnunet_gen.io.splits``).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Sequence

from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments, preprocess
from nnunetv2.experiment_planning.plans_for_pretraining.move_plans_between_datasets import move_plans_between_datasets

from nnunet_gen.errors import DataError
from nnunet_gen.io.files import write_text
from nnunet_gen.io.raw_dataset import RawDataset, nnunet_dir
from nnunet_gen.io.splits import has_folds, write_grouped_splits

#: Real:pseudo sampling weight of a self-training dataset, read by ``nnUNetTrainerSelfTrain``.
SAMPLING_FILE = "nnunet_gen_sampling.json"


def plan_and_preprocess(dataset: str | int, configurations: Sequence[str] = ("3d_fullres",),
                        num_processes: int = 2, plans_identifier: str = "nnUNetPlans",
                        source: str | int | None = None, use_source_plans: bool = True) -> Path:
    """Fingerprint, plan (or take the source's plans), preprocess and write grouped splits (when the dataset has at
    least 5 patient groups). Returns the folder."""
    raw = RawDataset.find(dataset)
    manifest = raw.manifest()
    source = source if source is not None else manifest.source_dataset
    preprocessed = nnunet_dir("nnUNet_preprocessed") / raw.name
    extract_fingerprints([raw.dataset_id], num_processes=num_processes, check_dataset_integrity=False,
                         clean=True, verbose=False)
    if source is not None and use_source_plans:
        src = RawDataset.find(source)
        if not (nnunet_dir("nnUNet_preprocessed") / src.name / f"{plans_identifier}.json").is_file():
            raise DataError(src.name, f"source dataset has no {plans_identifier}.json; plan and preprocess it "
                                      f"first (nnunet-gen preprocess -d {src.dataset_id})")
        move_plans_between_datasets(src.name, raw.name, plans_identifier, plans_identifier)
        shutil.copyfile(raw.folder / "dataset.json", preprocessed / "dataset.json")
    else:
        plan_experiments([raw.dataset_id])
    preprocess([raw.dataset_id], plans_identifier, tuple(configurations), [num_processes] * len(configurations),
               verbose=False)
    if write_grouped_splits(preprocessed, manifest) is None:  # e.g. fakes only; trainers with copies refuse folds
        print(f"{raw.name}: fewer than 5 patient groups, no splits_final.json written (train with fold 'all')")
    return preprocessed


def derive_plans(dataset: str | int, target_plans: str, base_features: int, max_features: int,
                 source_plans: str = "nnUNetPlans", configuration: str = "3d_fullres") -> Path:
    """Copy ``source_plans`` to ``target_plans`` with a narrower network (same preprocessing, same patch/batch).

    Stage i gets ``min(base_features * 2**i, max_features)`` features (nnU-Net's default is 32 doubling to 320).
    For CPU budgets: a small network lets an experiment afford the iterations it needs, and is fair as long as
    every compared arm trains with the same plans (``-p target_plans``). The data identifier is kept, so the
    preprocessed data of ``source_plans`` is reused as is.
    """
    raw = RawDataset.find(dataset)
    folder = nnunet_dir("nnUNet_preprocessed") / raw.name
    source_file = folder / f"{source_plans}.json"
    if not source_file.is_file():
        raise DataError(raw.name, f"no {source_plans}.json; run nnunet-gen preprocess -d {raw.dataset_id} first")
    plans = json.loads(source_file.read_text())
    arch = plans["configurations"][configuration]["architecture"]["arch_kwargs"]
    if not 0 < base_features <= max_features:
        raise DataError(raw.name, f"need 0 < base_features <= max_features, got {base_features}, {max_features}")
    arch["features_per_stage"] = [min(base_features * 2 ** i, max_features) for i in range(arch["n_stages"])]
    plans["plans_name"] = target_plans
    target = folder / f"{target_plans}.json"
    write_text(target, json.dumps(plans, indent=1))
    return target


def is_preprocessed(dataset: str | int, plans_identifier: str = "nnUNetPlans",
                    configuration: str = "3d_fullres") -> bool:
    """True when the plans, the grouped splits (of a dataset with enough patients for folds) and the preprocessed
    data of ``configuration`` exist.

    ``splits_final.json`` alone proves nothing: it is written as soon as a dataset is published.
    """
    raw = RawDataset.find(dataset)
    pre = nnunet_dir("nnUNet_preprocessed") / raw.name
    plans_file = pre / f"{plans_identifier}.json"
    if not plans_file.is_file() or (has_folds(raw.manifest()) and not (pre / "splits_final.json").is_file()):
        return False
    config = json.loads(plans_file.read_text())["configurations"].get(configuration)
    return config is not None and any((pre / config["data_identifier"]).glob("*"))


def write_sampling_config(preprocessed_dataset_folder: str | Path, pseudo_mass: float | None) -> None:
    """Record (or, for None, remove) the real:pseudo weight that ``nnUNetTrainerSelfTrain`` reads."""
    path = Path(preprocessed_dataset_folder) / SAMPLING_FILE
    if pseudo_mass is None:
        path.unlink(missing_ok=True)
    else:
        write_text(path, json.dumps({"pseudo_mass": pseudo_mass}))


def read_sampling_config(preprocessed_dataset_folder: str | Path) -> float | None:
    """The weight written by :func:`write_sampling_config`, or None."""
    path = Path(preprocessed_dataset_folder) / SAMPLING_FILE
    return json.loads(path.read_text())["pseudo_mass"] if path.is_file() else None
