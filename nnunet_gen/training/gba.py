"""GBA trainers (Sallé et al., section 3.3): offline on a GBA-rendered dataset, or GBA applied on the fly.

``nnUNetTrainerGBA`` trains on a dataset written by ``nnunet-gen render gba``: grouped splits, real-only validation
and per-kind sampling come from :class:`~nnunet_gen.training.synthetic_data.nnUNetTrainerSyntheticData`; the
default samples uniformly over all cases as the paper does; ``nnUNetTrainerGBA_realhalf`` draws real and synthetic
cases 50:50.

``nnUNetTrainerGBAOnline`` trains on the source dataset itself and, right after nnU-Net's spatial transform, applies
GBA to a patch with probability ``gba_probability`` (:class:`GBAPatchTransform`, CPU, inside the augmentation
workers). GBA works on raw-like intensities, so the z-scored patch is mapped back to raw units with the case's
normalisation constants (``nnunet_gen.augment.intensity``), blended, and re-normalised with the statistics the whole case
would have after rescaling its tumour by alpha (exact for the naive part of GBA; blending only changes voxels near
the tumour border, whose effect on the case mean/std is neglected). The SinGAN checkpoint comes from the class
attribute ``singan_checkpoint`` or else the environment variable ``nnunet_gen_SINGAN`` (set it for training; it is
not needed for prediction). The SinGAN must have been trained on slices in the same raw intensity units as the
training images (the paper's pseudo-target and target images); patches are preprocessed (resampled to the plans'
spacing), so its pixel size should match the plans' in-plane spacing.
"""
from __future__ import annotations

import os

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_gen.augment.naive_rescale import DEFAULT_ALPHAS
from nnunet_gen.augment.transforms import GBAPatchTransform, insert_after_spatial
from nnunet_gen.io.files import sha256_of_file
from nnunet_gen.io.manifest import GBA_GENERATOR
from nnunet_gen.training.naive_rescale import nnUNetTrainerNaiveRescale
from nnunet_gen.training.schedules import add_schedule_variants
from nnunet_gen.training.synthetic_data import nnUNetTrainerSyntheticData
from synth.singan import SinGAN

SINGAN_ENV = "nnunet_gen_SINGAN"


class nnUNetTrainerGBA(nnUNetTrainerSyntheticData):
    """Trains on a GBA-rendered dataset (``nnunet-gen render gba``); refuses a dataset without GBA copies."""

    sampling_mass: dict[str, float] | None = None

    def do_split(self):
        manifest = self.provenance()
        if manifest is None or not manifest.has_generator(GBA_GENERATOR):
            raise RuntimeError(f"{self.plans_manager.dataset_name} has no GBA copies in its manifest: render it "
                               f"with `nnunet-gen render gba` (or train nnUNetTrainerGBAOnline on the source)")
        return super().do_split()


class nnUNetTrainerGBA_realhalf(nnUNetTrainerGBA):
    """nnUNetTrainerGBA drawing real and synthetic cases with equal total probability."""

    sampling_mass = {"real": 0.5, "synthetic": 0.5}


def resolve_singan_path(class_attribute: str | None) -> str:
    """The SinGAN checkpoint: the trainer's class attribute, else ``$nnunet_gen_SINGAN``; must exist."""
    path = class_attribute or os.environ.get(SINGAN_ENV)
    if not path:
        raise RuntimeError(f"no SinGAN checkpoint: set the {SINGAN_ENV} environment variable (or the trainer's "
                           f"singan_checkpoint attribute) to a file from `nnunet-gen singan train`")
    if not os.path.isfile(path):
        raise RuntimeError(f"SinGAN checkpoint {path} not found ({SINGAN_ENV})")
    return path


class nnUNetTrainerGBAOnline(nnUNetTrainerNaiveRescale):
    """nnUNetTrainer + on-the-fly GBA after the spatial transform (module docstring).

    Class attributes (override in a subclass to configure):
        singan_checkpoint: SinGAN file; None = ``$nnunet_gen_SINGAN``.
        gba_alphas: alphas drawn per patch (default: the naive-rescaling alphas {0.5, 0.8, 1.5}).
        gba_generators_retained: numbers of finest generators retained (paper: two scales per alpha).
        gba_dilation_radius, gba_sigma: eq. 7 mask, in px of the preprocessed patch.
        gba_channel: the SinGAN's modality channel.
        gba_probability: chance that a patch is blended; None = K/(K+1) with K = alphas x scales, the mix of an
            offline dataset holding each case plus its K fixed-rule copies, sampled uniformly.
        gba_keep_contrast: re-impose the naive copy's tumour/surround contrast after blending (not in the paper).
        naive_labels (inherited): the tumour labels whose intensities are altered.
    """

    singan_checkpoint: str | None = None
    gba_alphas: tuple[float, ...] = DEFAULT_ALPHAS
    gba_generators_retained: tuple[int, ...] = (3, 4)
    gba_dilation_radius: int = 7
    gba_sigma: float = 5.0
    gba_channel: int = 0
    gba_probability: float | None = None
    gba_keep_contrast: bool = False

    def get_training_transforms(self, *args, **kwargs):
        transforms = nnUNetTrainer.get_training_transforms(*args, **kwargs)
        path = resolve_singan_path(self.singan_checkpoint)
        singan = SinGAN.load(path, "cpu")
        self.print_to_log_file(f"GBA online: SinGAN {path} (sha256 {sha256_of_file(path)[:16]}, "
                               f"{singan.num_scales} scales, slice {singan.training_shape})")
        k = len(self.gba_alphas) * len(self.gba_generators_retained)
        p = self.gba_probability if self.gba_probability is not None else k / (k + 1)
        axial_axis = list(self.plans_manager.transpose_forward).index(0)
        gba = GBAPatchTransform(singan, self.gba_alphas, self.gba_generators_retained, self.naive_labels,
                                self.gba_dilation_radius, self.gba_sigma, self.gba_channel,
                                self.configuration_manager.use_mask_for_norm, self._shared_case_context(), p,
                                axial_axis, self.gba_keep_contrast)
        return insert_after_spatial(transforms, gba)


class nnUNetTrainerGBAOnlineKeepContrast(nnUNetTrainerGBAOnline):
    """nnUNetTrainerGBAOnline whose blended tumours keep the contrast alpha gave them (``render gba --keep-contrast``
    on the fly)."""

    gba_keep_contrast = True


__all__ = add_schedule_variants(globals(), nnUNetTrainerGBA, nnUNetTrainerGBA_realhalf, nnUNetTrainerGBAOnline,
                                nnUNetTrainerGBAOnlineKeepContrast)
