"""``nnUNetTrainerNaiveRescale``: the GBA paper's naive tumour intensity rescaling, on the fly.

After nnU-Net's spatial transform, with probability ``p`` a patch's tumour voxels are rescaled by an alpha drawn from
``naive_alphas`` (default {0.5, 0.8, 1.5}, GBA paper section 3.3/4.2.1) *in raw intensity units*, using the case's
normalisation statistics (see ``nnunet_gen.augment.intensity``): the result equals preprocessing an offline rescaled copy
(``nnunet-gen render naive``) up to interpolation at the tumour border.
"""
from __future__ import annotations

import json
from pathlib import Path

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from tqdm import tqdm

from nnunet_gen.augment.intensity import ChannelStats, case_channel_stats
from nnunet_gen.augment.naive_rescale import DEFAULT_ALPHAS
from nnunet_gen.augment.transforms import (
    CaseContext,
    CaseContextDataset,
    RandomNaiveRescaleTransform,
    insert_after_spatial,
)
from nnunet_gen.io.files import write_text
from nnunet_gen.io.raw_dataset import RawDataset, nnunet_dir
from nnunet_gen.training.schedules import add_schedule_variants

STATS_FILE = "nnunet_gen_intensity_stats.json"


class nnUNetTrainerNaiveRescale(nnUNetTrainer):
    """nnUNetTrainer + on-the-fly naive tumour rescaling right after the spatial transform.

    Class attributes (override in a subclass to configure):
        naive_alphas: raw-intensity factors (GBA paper default {0.5, 0.8, 1.5}).
        naive_labels: labels whose voxels are rescaled (CrossMoDA: the tumour only).
        naive_probability: chance that a patch is rescaled; None = K/(K+1), the mix of the offline dataset with the
            original plus K copies sampled uniformly.
        naive_continuous: draw alpha from [min, max] of ``naive_alphas`` instead of the set itself.
    """

    naive_alphas: tuple[float, ...] = DEFAULT_ALPHAS
    naive_labels: tuple[int, ...] = (1,)
    naive_probability: float | None = None
    naive_continuous: bool = False

    def _case_stats(self) -> dict[str, list[ChannelStats]]:
        """Per-case statistics from the raw dataset, cached next to the preprocessed data."""
        cm = self.configuration_manager
        key = {"labels": list(self.naive_labels), "schemes": list(cm.normalization_schemes),
               "use_mask_for_norm": list(cm.use_mask_for_norm)}
        cache = Path(self.preprocessed_dataset_folder_base) / STATS_FILE
        cached = json.loads(cache.read_text()) if cache.is_file() else {}
        if cached.get("key") != key:
            cached = {"key": key, "cases": {}}
        raw = RawDataset(nnunet_dir("nnUNet_raw") / self.plans_manager.dataset_name)
        missing = [c for c in raw.case_ids() if c not in cached["cases"]]
        for case_id in tqdm(missing, desc="tumour intensity statistics", disable=not missing):
            case = raw.read_case(case_id)
            stats = case_channel_stats(case.images, case.label, cm.normalization_schemes, cm.use_mask_for_norm,
                                       self.plans_manager.foreground_intensity_properties_per_channel,
                                       self.naive_labels)
            cached["cases"][case_id] = [s.to_json() for s in stats]
        if missing:
            write_text(cache, json.dumps(cached))
        return {c: [ChannelStats.from_json(s) for s in v] for c, v in cached["cases"].items()}

    def _shared_case_context(self) -> CaseContext:
        """One context shared by the training dataset wrapper and the transform (built on first use)."""
        if getattr(self, "_case_context", None) is None:
            self._case_context = CaseContext(self._case_stats())
        return self._case_context

    def get_tr_and_val_datasets(self):
        dataset_tr, dataset_val = super().get_tr_and_val_datasets()
        return CaseContextDataset(dataset_tr, self._shared_case_context()), dataset_val

    def get_training_transforms(self, *args, **kwargs):
        transforms = nnUNetTrainer.get_training_transforms(*args, **kwargs)
        k = len(self.naive_alphas)
        p = self.naive_probability if self.naive_probability is not None else k / (k + 1)
        rescale = RandomNaiveRescaleTransform(self.naive_alphas, self.naive_labels,
                                              self.configuration_manager.use_mask_for_norm,
                                              self._shared_case_context(), p, self.naive_continuous)
        return insert_after_spatial(transforms, rescale)


class nnUNetTrainerNaiveRescaleContinuous(nnUNetTrainerNaiveRescale):
    """nnUNetTrainerNaiveRescale with alpha drawn from the interval [0.5, 1.5] (the paper's extreme alphas) instead of
    the set {0.5, 0.8, 1.5}: the simplest alternative to a fixed alpha list a user would try."""

    naive_continuous = True


__all__ = add_schedule_variants(globals(), nnUNetTrainerNaiveRescale, nnUNetTrainerNaiveRescaleContinuous)
