"""ARH trainers: nnU-Net on a dataset written by ``nnunet-gen render arh`` (real cases + Copy-Paste / CarveMix lesion
composites, harmonised by ARHNet or not), the ARHNet paper's downstream setting (Huo et al. 2023, Table 2).

Grouped splits (a composite trains only where neither its recipient nor its donor patient validates), real-only
validation and per-kind sampling come from :class:`~nnunet_gen.training.synthetic_data.nnUNetTrainerSyntheticData`.
The default samples uniformly over all cases (the paper adds its 200 composites to the training set);
``nnUNetTrainerARH_realhalf`` draws real and composite cases 50:50.
"""
from __future__ import annotations

from nnunet_gen.io.manifest import ARH_GENERATORS
from nnunet_gen.training.schedules import add_schedule_variants
from nnunet_gen.training.synthetic_data import nnUNetTrainerSyntheticData


class nnUNetTrainerARH(nnUNetTrainerSyntheticData):
    """Trains on an ARH-rendered dataset; refuses a dataset whose manifest has no ``render arh`` composites."""

    sampling_mass: dict[str, float] | None = None

    def do_split(self):
        manifest = self.provenance()
        if manifest is None or not manifest.has_generator(*ARH_GENERATORS):
            raise RuntimeError(f"{self.plans_manager.dataset_name} has no lesion composites in its manifest: "
                               f"render it with `nnunet-gen render arh` (or train nnUNetTrainer on the source)")
        return super().do_split()


class nnUNetTrainerARH_realhalf(nnUNetTrainerARH):
    """nnUNetTrainerARH drawing real and composite cases with equal total probability."""

    sampling_mass = {"real": 0.5, "synthetic": 0.5}


__all__ = add_schedule_variants(globals(), nnUNetTrainerARH, nnUNetTrainerARH_realhalf)
