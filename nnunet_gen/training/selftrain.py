"""``nnUNetTrainerSelfTrain``: nnU-Net on a dataset of real (and synthetic) cases plus pseudo-labelled target cases.

The GBA paper (section 3.4) mixes the labelled training set and the pseudo-labelled real target images uniformly;
that is the default here (``pseudo_mass`` None). The FS-Net result (DGM4MICCAI 2021) is that unweighted mixing of
auxiliary data costs Dice, so a real:pseudo weight is offered: pseudo-labelled cases together get the sampling
probability ``pseudo_mass`` and all other cases share ``1 - pseudo_mass`` uniformly (real and synthetic cases keep
their uniform mix among themselves). ``nnunet-gen selftrain --pseudo-mass w`` writes ``w`` to
``nnunet_gen_sampling.json`` in the preprocessed dataset folder, which overrides the class attribute, so one trainer
name serves every weight. Grouped splits and the leak check come from :class:`nnUNetTrainerSyntheticData`; voxels
marked with the dataset.json ``ignore`` label (low-confidence pseudo-label voxels) are left out of the loss by
nnU-Net itself.
"""
from __future__ import annotations

from nnunet_gen.io.manifest import Manifest
from nnunet_gen.preprocess import read_sampling_config
from nnunet_gen.training.schedules import add_schedule_variants
from nnunet_gen.training.synthetic_data import nnUNetTrainerSyntheticData


def pseudo_sampling_mass(manifest: Manifest, pseudo_mass: float) -> dict[str, float]:
    """Kind -> mass: ``pseudo_mass`` for pseudo-labelled cases, the rest split over the other kinds by case count."""
    if not 0.0 < pseudo_mass < 1.0:
        raise ValueError(f"pseudo_mass must be in (0, 1), got {pseudo_mass}")
    counts: dict[str, int] = {}
    for record in manifest.cases.values():
        counts[record.kind] = counts.get(record.kind, 0) + 1
    others = sum(n for kind, n in counts.items() if kind != "pseudo_labelled")
    mass = {kind: (1.0 - pseudo_mass) * n / others for kind, n in counts.items() if kind != "pseudo_labelled"}
    mass["pseudo_labelled"] = pseudo_mass
    return mass


class nnUNetTrainerSelfTrain(nnUNetTrainerSyntheticData):
    """nnUNetTrainerSyntheticData with a real:pseudo sampling weight (see module docstring).

    Class attribute ``pseudo_mass``: total sampling probability of the pseudo-labelled cases, None = uniform over
    all cases (GBA paper). ``nnunet_gen_sampling.json`` next to the preprocessed data overrides it.
    """

    pseudo_mass: float | None = None

    def configured_pseudo_mass(self) -> float | None:
        configured = read_sampling_config(self.preprocessed_dataset_folder_base)
        return self.pseudo_mass if configured is None else configured

    def get_dataloaders(self):
        pseudo_mass = self.configured_pseudo_mass()
        manifest = self.provenance()
        if pseudo_mass is not None and manifest is not None and manifest.of_kind("pseudo_labelled"):
            self.sampling_mass = pseudo_sampling_mass(manifest, pseudo_mass)
        return super().get_dataloaders()


__all__ = add_schedule_variants(globals(), nnUNetTrainerSelfTrain)
