"""Configuration of the joint image + segmentation StyleGAN2 (Son et al., ISMRM 2022, on StyleGAN2: Karras et al.,
CVPR 2020, "Analyzing and Improving the Image Quality of StyleGAN").

Son et al. keep "all other settings, including optimizers, losses, training settings, and other hyperparameters"
of StyleGAN2 and add horizontal flips; so the defaults are StyleGAN2's config F at 256 x 256: skip generator,
residual discriminator, 512-dimensional z and w, an 8-layer mapping network (lr multiplier 0.01), feature maps
``min(channel_base // resolution, channel_max)`` with ``channel_base`` 32768 and ``channel_max`` 512 (512 channels up
to 64 x 64, 256 at 128, 128 at 256), non-saturating logistic loss, style mixing with probability 0.9, lazy R1
(gamma 10, every 16 minibatches), lazy path-length regularisation (weight 2, every 4 minibatches, decay 0.01, half
the batch), Adam lr 0.002 betas (0, 0.99) corrected for the lazy intervals (lr * c, beta ** c with
c = interval / (interval + 1)), an EMA generator with a half-life of 10k images, batch 32 and 25M images
(781250 iterations). The generator outputs ``image_channels + num_classes`` maps (Son et al.: 8 = 4 contrasts + 4
classes) followed by a 1x1 convolution + softmax segmentation head.
"""
from __future__ import annotations

from dataclasses import dataclass

from synth.checkpoint import JsonConfig


@dataclass(frozen=True)
class StyleGAN2Config(JsonConfig):
    """Everything that defines the generator, the discriminator and their training (defaults: see module docstring).

    ``ema_rampup`` (None in StyleGAN2) caps the EMA half-life at ``ema_rampup`` x the images seen so far, as
    StyleGAN2-ADA's small-budget configuration does, so short runs are not dominated by the initial weights.
    """

    resolution: int = 256
    image_channels: int = 4
    num_classes: int = 4
    latent_dim: int = 512
    style_dim: int = 512
    mapping_layers: int = 8
    channel_base: int = 32768
    channel_max: int = 512
    mixing_probability: float = 0.9
    r1_gamma: float = 10.0
    r1_interval: int = 16
    path_length_weight: float = 2.0
    path_length_interval: int = 4
    path_length_decay: float = 0.01
    path_length_batch_shrink: int = 2
    ema_half_life_images: float = 10_000.0
    ema_rampup: float | None = None
    lr: float = 0.002
    beta1: float = 0.0
    beta2: float = 0.99
    batch_size: int = 32
    iterations: int = 781_250
    flip: bool = True

    def __post_init__(self) -> None:
        if self.resolution < 8 or self.resolution & (self.resolution - 1):
            raise ValueError(f"resolution must be a power of 2 >= 8, got {self.resolution}")
        if not 2 <= self.num_classes <= 256:
            raise ValueError(f"num_classes (background included) must be in [2, 256], got {self.num_classes}")
        positive = ("image_channels", "latent_dim", "style_dim", "mapping_layers", "channel_max", "r1_interval",
                    "path_length_interval", "path_length_batch_shrink", "batch_size", "iterations")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.channel_base < self.resolution:
            raise ValueError(f"channel_base {self.channel_base} must be >= resolution {self.resolution}")
        if not 0.0 <= self.mixing_probability <= 1.0 or not 0.0 <= self.path_length_decay <= 1.0:
            raise ValueError("mixing_probability and path_length_decay must be in [0, 1]")
        if min(self.r1_gamma, self.path_length_weight) < 0:
            raise ValueError("r1_gamma and path_length_weight must be >= 0")
        if self.lr <= 0 or not 0.0 <= self.beta1 < 1.0 or not 0.0 <= self.beta2 < 1.0:
            raise ValueError("lr must be > 0, beta1 and beta2 in [0, 1)")
        if self.ema_half_life_images <= 0 or (self.ema_rampup is not None and self.ema_rampup <= 0):
            raise ValueError("ema_half_life_images and ema_rampup must be > 0")

    def channels(self, resolution: int) -> int:
        """Feature maps of the generator / discriminator layers working at ``resolution``."""
        return min(self.channel_base // resolution, self.channel_max)

    def adam_settings(self, interval: int) -> tuple[float, tuple[float, float]]:
        """(lr, betas) of a network regularised lazily every ``interval`` minibatches (StyleGAN2 appendix B: the
        regulariser's step is folded in, so lr and betas are rescaled by c = interval / (interval + 1))."""
        c = interval / (interval + 1)
        return self.lr * c, (self.beta1 ** c, self.beta2 ** c)



#: Budget presets, to use as they are or with ``dataclasses.replace(PRESETS[name], image_channels=..., ...)``.
#:
#: * ``paper``: Son et al. / StyleGAN2 config F at 256 x 256, 4 contrasts (T1, T1-CE, T2, FLAIR) + 4 classes
#:   (background, necrosis / non-enhancing tumour, edema, enhancing tumour), batch 32, 25M images. A GPU budget.
#: * ``cpu``: 64 x 64, 64-dimensional z and w, feature maps min(1024 // res, 64) (64 up to 16 x 16, 32 at 32, 16 at
#:   64), batch 8, 2000 iterations; R1 gamma 0.1 and an EMA half-life of 2500 images with ramp-up 0.05 (StyleGAN2-ADA's
#:   "auto" heuristics: gamma = 2e-4 * res^2 / batch, half-life = batch * 10k / 32). 0.30M generator parameters
#:   (paper: 30.0M). Measured: 0.57 s per iteration on one thread of the shared 2-core CPU (the other core busy;
#:   mean of 16 iterations including the lazy regularisation steps), about 19 min per run. A smoke-scale budget, not
#:   StyleGAN2 quality (not measured here).
PRESETS: dict[str, StyleGAN2Config] = {
    "paper": StyleGAN2Config(),
    "cpu": StyleGAN2Config(resolution=64, latent_dim=64, style_dim=64, channel_base=1024, channel_max=64,
                           r1_gamma=0.1, ema_half_life_images=2500.0, ema_rampup=0.05, batch_size=8,
                           iterations=2000),
}
