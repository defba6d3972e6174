"""Unpaired 2D image-to-image translation (CycleGAN, Zhu et al. 2017; CUT, Park et al. 2020) of axial slices, as in
the GBA paper's ceT1 -> hrT2 stage, and Van Cittert deconvolution of the blurred outputs. Pure numpy / scipy / torch."""
from synth.translation.config import METHODS, PRESETS, TranslationConfig
from synth.translation.deconvolution import van_cittert
from synth.translation.losses import ImagePool, l1_loss, lsgan_loss, patch_nce_loss
from synth.translation.model import IntensityRange, Translator
from synth.translation.networks import (
    PatchDiscriminator,
    PatchSampleMLP,
    ResnetGenerator,
    receptive_field,
)
from synth.translation.train import learning_rate_factor, train_translator

__all__ = [
    "METHODS",
    "PRESETS",
    "ImagePool",
    "IntensityRange",
    "PatchDiscriminator",
    "PatchSampleMLP",
    "ResnetGenerator",
    "TranslationConfig",
    "Translator",
    "l1_loss",
    "learning_rate_factor",
    "lsgan_loss",
    "patch_nce_loss",
    "receptive_field",
    "train_translator",
    "van_cittert",
]
