"""Shared base of every trainer that learns from synthetic or pseudo-labelled cases (GBA, ARH, self-training).

Two guarantees, from the dataset's provenance manifest:
- grouped splits: training refuses to start on a dataset with synthetic/pseudo-labelled cases unless
  ``splits_final.json`` exists (nnU-Net would otherwise split all IDs and leak copies of validation patients), and
  checks that the fold validates on real cases only and trains on no copy of a validation patient;
- sampling: ``sampling_mass`` gives each kind of case (real, synthetic, pseudo_labelled) a total probability of
  being drawn for a patch, spread uniformly within the kind. None = uniform over all cases, as in the GBA paper; the
  FS-Net result (DGM4MICCAI 2021) is why a weighted real:auxiliary mix is offered.
nnU-Net 2.8 has no hook for per-case sampling probabilities, so ``get_dataloaders`` is nnU-Net's own, with the
probabilities passed to ``nnUNetDataLoader``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA

from nnunet_gen.io.manifest import Manifest
from nnunet_gen.io.raw_dataset import nnunet_dir
from nnunet_gen.io.splits import check_no_leak


def kind_probabilities(identifiers: list[str], manifest: Manifest, mass: dict[str, float]) -> np.ndarray:
    """Per-identifier probabilities: each kind gets its share of ``mass`` (renormalised over present kinds); base
    cases (real or translated) count as ``real``."""
    kinds = ["real" if i not in manifest.cases or manifest.cases[i].is_base else manifest.cases[i].kind
             for i in identifiers]
    present = {k: kinds.count(k) for k in set(kinds)}
    missing = sorted(k for k in present if mass.get(k, 0.0) <= 0)
    if missing:
        raise ValueError(f"sampling_mass gives no probability to the {missing} cases in this training set")
    total = sum(mass[k] for k in present)
    return np.array([mass[k] / total / present[k] for k in kinds])


class nnUNetTrainerSyntheticData(nnUNetTrainer):
    """nnUNetTrainer that enforces grouped splits and samples cases by kind (see module docstring).

    Class attribute ``sampling_mass``: kind -> total sampling probability, or None for uniform over cases.
    """

    sampling_mass: dict[str, float] | None = None

    def provenance(self) -> Manifest | None:
        """The raw dataset's manifest (None for a dataset not made by nnunet_gen)."""
        return Manifest.load(nnunet_dir("nnUNet_raw") / self.plans_manager.dataset_name)

    def do_split(self):
        manifest = self.provenance()
        splits_file = Path(self.preprocessed_dataset_folder_base) / "splits_final.json"
        has_copies = manifest is not None and any(not r.is_base for r in manifest.cases.values())
        if has_copies and self.fold != "all" and not splits_file.is_file():
            raise RuntimeError(f"{splits_file} is missing: nnU-Net's default split would put synthetic copies of "
                               f"validation patients into training. Run `nnunet-gen splits -d "
                               f"{self.plans_manager.dataset_name}` first.")
        tr_keys, val_keys = super().do_split()
        if has_copies and self.fold != "all":
            check_no_leak(manifest, [{"train": list(tr_keys), "val": list(val_keys)}])
        return tr_keys, val_keys

    def sampling_probabilities(self, identifiers: list[str]) -> np.ndarray | None:
        """Per-training-case sampling probabilities (None: nnU-Net's uniform sampling); here by ``sampling_mass``."""
        manifest = self.provenance()
        if self.sampling_mass is None or manifest is None:
            return None
        self.print_to_log_file(f"sampling mass per kind: {self.sampling_mass}")
        return kind_probabilities(identifiers, manifest, self.sampling_mass)

    def get_dataloaders(self):
        """nnU-Net's loaders with :meth:`sampling_probabilities` for the training cases."""
        if self.dataset_class is None:
            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        patch_size = self.configuration_manager.patch_size
        deep_supervision_scales = self._get_deep_supervision_scales()
        rotation_for_da, do_dummy_2d, initial_patch_size, mirror_axes = \
            self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        lm = self.label_manager
        regions = lm.foreground_regions if lm.has_regions else None
        tr_transforms = self.get_training_transforms(
            patch_size, rotation_for_da, deep_supervision_scales, mirror_axes, do_dummy_2d,
            use_mask_for_norm=self.configuration_manager.use_mask_for_norm, is_cascaded=self.is_cascaded,
            foreground_labels=lm.foreground_labels, regions=regions, ignore_label=lm.ignore_label)
        val_transforms = self.get_validation_transforms(
            deep_supervision_scales, is_cascaded=self.is_cascaded, foreground_labels=lm.foreground_labels,
            regions=regions, ignore_label=lm.ignore_label)
        dataset_tr, dataset_val = self.get_tr_and_val_datasets()

        probabilities = self.sampling_probabilities(list(dataset_tr.identifiers))
        dl_tr = nnUNetDataLoader(dataset_tr, self.batch_size, initial_patch_size, patch_size, lm,
                                 oversample_foreground_percent=self.oversample_foreground_percent,
                                 sampling_probabilities=probabilities, pad_sides=None, transforms=tr_transforms,
                                 probabilistic_oversampling=self.probabilistic_oversampling)
        dl_val = nnUNetDataLoader(dataset_val, self.batch_size, patch_size, patch_size, lm,
                                  oversample_foreground_percent=self.oversample_foreground_percent,
                                  sampling_probabilities=None, pad_sides=None, transforms=val_transforms,
                                  probabilistic_oversampling=self.probabilistic_oversampling)
        n_proc = get_allowed_n_proc_DA()
        if n_proc == 0:
            gen_train, gen_val = SingleThreadedAugmenter(dl_tr, None), SingleThreadedAugmenter(dl_val, None)
        else:
            pin = self.device.type == "cuda"
            gen_train = NonDetMultiThreadedAugmenter(dl_tr, None, n_proc, max(6, n_proc // 2), None, pin, 0.002)
            gen_val = NonDetMultiThreadedAugmenter(dl_val, None, max(1, n_proc // 2), max(3, n_proc // 4), None,
                                                   pin, 0.002)
        next(gen_train)
        next(gen_val)
        return gen_train, gen_val
