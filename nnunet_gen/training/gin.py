"""``nnUNetTrainerGIN``: Global Intensity Non-linear augmentation (GIN) of Ouyang et al., "Causality-inspired
single-source domain generalization for medical image segmentation", IEEE TMI 2022, on the fly.

After nnU-Net's spatial transform (and its dummy-2D block, see :func:`nnunet_gen.augment.transforms.
insert_after_spatial`), a patch goes through a freshly drawn random shallow conv net with probability
``gin_probability`` (:class:`~nnunet_gen.augment.gin.GINTransform`, CPU, inside the augmentation workers); nnU-Net's
own intensity augmentations follow. GIN only: the paper's IPA and consistency loss are not implemented.

Default probability 0.5, not the paper's 1: the paper trains on GIN images only (three GIN copies of every image per
batch, reference ``models/exp_trainer.py``), and its mixing ``a * gin(x) + (1 - a) * x`` with ``a ~ U(0, 1)`` seldom
restores the original appearance: before the Frobenius rescaling the random net's output has about 10x the input's
norm (median over draws, up to ~10^3), so ``gin(x)`` dominates for most ``a``. nnU-Net also predicts source-domain
images (its own validation, in-domain test sets), so half the patches keep their original appearance (our choice;
the benchmarks in the README measure the trainer with it). Set ``gin_probability = 1`` in a subclass for the paper's setting.
"""
from __future__ import annotations

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_gen.augment.gin import GINTransform
from nnunet_gen.augment.transforms import insert_after_spatial
from nnunet_gen.training.schedules import add_schedule_variants


class nnUNetTrainerGIN(nnUNetTrainer):
    """nnUNetTrainer + on-the-fly GIN after the spatial transform (module docstring).

    Class attributes (override in a subclass to configure):
        gin_probability: chance that a patch is transformed (default 0.5, module docstring; the paper: 1).
        gin_layers, gin_kernel_pool, gin_interm_channels: the random network; the paper's 4 layers, kernel size per
            layer from {1, 3}, 2 intermediate channels.
    """

    gin_probability: float = 0.5
    gin_layers: int = 4
    gin_kernel_pool: tuple[int, ...] = (1, 3)
    gin_interm_channels: int = 2

    def get_training_transforms(self, *args, **kwargs):
        transforms = nnUNetTrainer.get_training_transforms(*args, **kwargs)
        gin = GINTransform(self.gin_probability, self.gin_layers, self.gin_kernel_pool, self.gin_interm_channels)
        self.print_to_log_file(f"GIN augmentation after the spatial transform: {gin!r}")
        return insert_after_spatial(transforms, gin)


__all__ = add_schedule_variants(globals(), nnUNetTrainerGIN)
