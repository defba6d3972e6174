"""Patient-grouped 5-fold splits (``splits_final.json``) that never leak copies of a validation patient.

Without ``splits_final.json`` nnU-Net splits ALL case IDs 5-fold, so synthetic copies of a validation patient end
up in training. Here the folds are drawn over patient groups of the real cases with nnU-Net's own
``generate_crossval_split`` (same seed), so a dataset whose cases are all their own group gets exactly nnU-Net's
default split, and a rendered dataset gets the same validation cases as its source. Validation lists hold base
cases only (real, or translated into a pseudo-target modality: every run of a subject in one fold); a synthetic copy trains only in folds where its patient trains; cases of groups without any real
labelled case (e.g. pseudo-labelled target images) train in every fold.

A case made from several patients (an ARHNet Copy-Paste composite: a donor's lesion in a recipient) belongs to its
recipient's ``group`` and lists the other patients in ``params["linked_groups"]``; it trains only in folds where
none of its groups validates.
"""
from __future__ import annotations

import json
from pathlib import Path

from nnunetv2.utilities.crossval_split import generate_crossval_split

from nnunet_gen.errors import DataError
from nnunet_gen.io.files import write_text
from nnunet_gen.io.manifest import CaseRecord, Manifest

NNUNET_SPLIT_SEED = 12345
#: ``CaseRecord.params`` key listing further patient groups a synthetic case was made from.
LINKED_GROUPS_KEY = "linked_groups"


def case_groups(record: CaseRecord) -> set[str]:
    """Every patient group a case carries information of: its own and its ``linked_groups``."""
    return {record.group, *record.params.get(LINKED_GROUPS_KEY, ())}


def patient_groups(manifest: Manifest) -> list[str]:
    """The groups of the real (or translated) labelled cases, over which the folds are drawn."""
    return sorted({r.group for r in manifest.cases.values() if r.is_base})


def has_folds(manifest: Manifest, n_splits: int = 5) -> bool:
    """Whether the dataset has enough patient groups for grouped cross-validation (else: train fold ``all``)."""
    return len(patient_groups(manifest)) >= n_splits


def grouped_splits(manifest: Manifest, n_splits: int = 5, seed: int = NNUNET_SPLIT_SEED) -> list[dict]:
    """nnU-Net-style list of ``{"train": [...], "val": [...]}`` grouped by ``CaseRecord.group``."""
    real_groups = patient_groups(manifest)
    if len(real_groups) < n_splits:
        raise DataError("splits", f"{len(real_groups)} patient groups with real (or translated) labelled cases; "
                                  f"{n_splits} folds need at least {n_splits}")
    splits = []
    for fold in generate_crossval_split(real_groups, seed=seed, n_splits=n_splits):
        val_groups = set(fold["val"])
        val = sorted(c for c, r in manifest.cases.items() if r.is_base and r.group in val_groups)
        train = sorted(c for c, r in manifest.cases.items() if not case_groups(r) & val_groups)
        splits.append({"train": train, "val": val})
    return splits


def check_no_leak(manifest: Manifest, splits: list[dict]) -> None:
    """Raise if any fold validates on a non-real case or trains on a case of a validation patient."""
    for i, fold in enumerate(splits):
        val_groups = {manifest.cases[c].group for c in fold["val"]}
        if any(not manifest.cases[c].is_base for c in fold["val"]):
            raise DataError(f"fold {i}", "a synthetic or pseudo-labelled case is in validation")
        leaked = sorted(c for c in fold["train"] if case_groups(manifest.cases[c]) & val_groups)
        if leaked:
            raise DataError(f"fold {i}", f"cases of validation patients in training: {leaked[:3]}")


def write_splits(preprocessed_dataset_folder: str | Path, splits: list[dict]) -> Path:
    """Atomically write ``splits_final.json`` where nnU-Net reads it."""
    path = Path(preprocessed_dataset_folder) / "splits_final.json"
    write_text(path, json.dumps(splits, indent=1))
    return path


def checked_splits(manifest: Manifest) -> list[dict]:
    """:func:`grouped_splits` that passed :func:`check_no_leak` (raises with fewer than 5 patient groups)."""
    splits = grouped_splits(manifest)
    check_no_leak(manifest, splits)
    return splits


def write_grouped_splits(preprocessed_dataset_folder: str | Path, manifest: Manifest) -> Path | None:
    """:func:`checked_splits` as ``splits_final.json`` when the dataset :func:`has_folds`; None (nothing written)
    when it has too few patients, which train with fold ``all``."""
    return write_splits(preprocessed_dataset_folder, checked_splits(manifest)) if has_folds(manifest) else None
