"""Joint generation of multi-contrast MR slices and their segmentation map with one StyleGAN2 (Son et al., ISMRM
2022; StyleGAN2: Karras et al., CVPR 2020). Works on arrays; pure numpy / torch."""
from synth.stylegan2.config import PRESETS, StyleGAN2Config
from synth.stylegan2.losses import (
    discriminator_loss,
    generator_loss,
    path_length_penalty,
    r1_penalty,
)
from synth.stylegan2.model import (
    FORMAT_KEY,
    FORMAT_VALUE,
    StyleGAN2Model,
    build_generator,
)
from synth.stylegan2.networks import (
    NOISE_MODES,
    Discriminator,
    EqualizedConv2d,
    EqualizedLinear,
    Generator,
    MappingNetwork,
    ModulatedConv2d,
    NoiseInjection,
    StyledConv,
    ToOutput,
    minibatch_stddev,
)
from synth.stylegan2.train import prepare_data, train_stylegan2

__all__ = [
    "FORMAT_KEY",
    "FORMAT_VALUE",
    "NOISE_MODES",
    "PRESETS",
    "Discriminator",
    "EqualizedConv2d",
    "EqualizedLinear",
    "Generator",
    "MappingNetwork",
    "ModulatedConv2d",
    "NoiseInjection",
    "StyleGAN2Config",
    "StyleGAN2Model",
    "StyledConv",
    "ToOutput",
    "build_generator",
    "discriminator_loss",
    "generator_loss",
    "minibatch_stddev",
    "path_length_penalty",
    "prepare_data",
    "r1_penalty",
    "train_stylegan2",
]
