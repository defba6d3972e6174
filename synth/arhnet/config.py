"""Configuration of ARHNet and of the harmonisation baselines of its Table 1 and Table 3.

One :class:`HarmonizerConfig` names a method; :data:`METHODS` maps every method name to what it is made of
(learned or not, which normalisation the generator's decoder uses, which losses are switched on). The loss weights
of the learned methods are the paper's eq. 6 weights (100 rec / 10 btv / 1 adv) with the terms a baseline does not
use set to 0 (ARHNet paper, section 3.2.1: "UNet" = L_rec only, "Hinge-GAN" = L_adv only, "UNet-GAN" and "RainNet" =
L_rec + L_adv; section 3.2.3: ARHNet with the ARH module replaced by BN, IN or RAIN keeps all three losses).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from synth.checkpoint import JsonConfig

#: Normalisations the generator's decoder can use in place of the ARH module (paper Table 3).
DECODER_NORMALIZATIONS: tuple[str, ...] = ("arh", "rain", "bn", "in")


@dataclass(frozen=True)
class MethodSpec:
    """What one harmonisation method is made of.

    ``learned`` False means a non-learned method (``decoder_normalization`` and the weights are then unused).
    """

    learned: bool
    decoder_normalization: str = "in"
    rec_weight: float = 0.0
    btv_weight: float = 0.0
    adv_weight: float = 0.0
    description: str = ""


#: Every method of the paper's Table 1 and Table 3, by name.
METHODS: dict[str, MethodSpec] = {
    "composite": MethodSpec(False, description="identity: the perturbed/composite image itself"),
    "hm": MethodSpec(False, description="histogram matching of the foreground to its surrounding tissue"),
    "unet": MethodSpec(True, "in", 100.0, 0.0, 0.0, "UNet, reconstruction L1 only"),
    "hinge_gan": MethodSpec(True, "in", 0.0, 0.0, 1.0, "UNet generator, hinge adversarial loss only"),
    "unet_gan": MethodSpec(True, "in", 100.0, 0.0, 1.0, "UNet generator, L1 + hinge adversarial loss"),
    "rainnet": MethodSpec(True, "rain", 100.0, 0.0, 1.0, "generator with RAIN modules, L1 + adversarial loss"),
    "arhnet": MethodSpec(True, "arh", 100.0, 10.0, 1.0, "ARHNet: ARH modules, L1 + boundary TV + adversarial"),
    "arhnet_bn": MethodSpec(True, "bn", 100.0, 10.0, 1.0, "ARHNet with ARH replaced by BatchNorm (Table 3)"),
    "arhnet_in": MethodSpec(True, "in", 100.0, 10.0, 1.0, "ARHNet with ARH replaced by InstanceNorm (Table 3)"),
    "arhnet_rain": MethodSpec(True, "rain", 100.0, 10.0, 1.0, "ARHNet with ARH replaced by RAIN (Table 3)"),
}

#: Learning-rate schedules: "constant" (the paper's AdamW learning rates throughout) or "cosine" (half a cosine from
#: the configured rate down to ``lr_min_fraction`` x that rate at the last iteration, for both networks).
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")

#: Rows of the paper's Table 1 and Table 3, in the paper's order.
TABLE1_METHODS: tuple[str, ...] = ("composite", "hm", "unet", "hinge_gan", "unet_gan", "rainnet", "arhnet")
TABLE3_METHODS: tuple[str, ...] = ("arhnet_bn", "arhnet_in", "arhnet_rain", "arhnet")


@dataclass(frozen=True)
class HarmonizerConfig(JsonConfig):
    """Everything that defines one harmoniser and its training (paper section 3.1.2 defaults unless noted).

    Deviations from the paper, for CPU budgets: ``batch_size`` 2 (paper 16), training length counted in
    ``iterations`` (paper: 200 epochs), ``base_channels`` 16 (the paper does not give the width).
    ``loss_weights`` overrides the method's (rec, btv, adv) weights when given.

    Model selection (not in the paper, off by default so the defaults train as the paper does):
    ``validation_fraction`` > 0 holds that fraction of the training cases (at least one) out of training; from them
    ``validation_patches_per_case`` lesion patches with eq. 1 perturbations are drawn once (seeded). Every
    ``validation_interval`` iterations (and after the last) the generator's mean validation fPSNR is measured; the
    generator state with the best one is returned, and training stops after ``patience`` evaluations without
    improvement (0: never early). ``lr_schedule`` is one of :data:`LR_SCHEDULES`.
    """

    method: str = "arhnet"
    patch_size: tuple[int, int, int] = (64, 64, 64)
    base_channels: int = 16
    depth: int = 4
    arh_kernel_size: int = 3
    discriminator_channels: int = 16
    discriminator_depth: int = 3
    batch_size: int = 2
    iterations: int = 2000
    generator_lr: float = 1e-4
    discriminator_lr: float = 5e-5
    weight_decay: float = 1e-2
    alpha_range: tuple[float, float] = (-0.3, 0.3)
    lambda_range: tuple[float, float] = (-0.3, 0.3)
    loss_weights: tuple[float, float, float] | None = None
    hm_shell_radius: int = 3
    lr_schedule: str = "constant"
    lr_min_fraction: float = 0.01
    validation_fraction: float = 0.0
    validation_patches_per_case: int = 4
    validation_interval: int = 100
    patience: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {sorted(METHODS)}")
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError(f"patch_size must be three positive ints, got {self.patch_size}")
        if self.spec.learned:
            factor = 2 ** (self.depth - 1)
            if any(p % factor for p in self.patch_size):
                raise ValueError(f"patch_size {self.patch_size} must be divisible by 2**(depth-1) = {factor}")
            if self.discriminator_depth < 1 or any(p < 2 ** self.discriminator_depth for p in self.patch_size):
                raise ValueError(f"patch_size {self.patch_size} too small for discriminator_depth "
                                 f"{self.discriminator_depth}")
        for name in ("alpha_range", "lambda_range"):
            low, high = getattr(self, name)
            if not low <= high:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {(low, high)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; choose one of {list(LR_SCHEDULES)}")
        if not 0.0 <= self.lr_min_fraction <= 1.0:
            raise ValueError(f"lr_min_fraction must be in [0, 1], got {self.lr_min_fraction}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if self.validation_interval < 1 or self.validation_patches_per_case < 1 or self.patience < 0:
            raise ValueError("validation_interval and validation_patches_per_case must be >= 1, patience >= 0")

    @property
    def spec(self) -> MethodSpec:
        return METHODS[self.method]

    @property
    def weights(self) -> tuple[float, float, float]:
        """(lambda_rec, lambda_btv, lambda_adv) of eq. 6 for this method."""
        if self.loss_weights is not None:
            return tuple(float(w) for w in self.loss_weights)  # type: ignore[return-value]
        return self.spec.rec_weight, self.spec.btv_weight, self.spec.adv_weight



#: Budget presets (``HarmonizerConfig`` fields; explicit settings override them). Both select the generator by
#: validation fPSNR (20% of the training cases, checked every ``validation_interval`` iterations).
#:
#: * ``cpu``: 32^3 patches, base 8 channels, depth 3, batch 4, 1000 iterations, learning rates 10x the paper's with
#:   a cosine decay. Measured on one thread of the project's shared 2-core CPU: about 1.2 s per iteration in a
#:   short run at 32^3 (a whole 1000-iteration run was not timed); ``benchmarks/bench_arh_anatomy.py`` uses it with
#:   24^3 patches (2 mm voxels) and 800 iterations: 262-379 s per training. Torch's default of 2 threads was 10x
#:   slower there while other jobs ran.
#: * ``paper``: the paper's stated settings (64^3 patches, batch 16, AdamW 1e-4 / 5e-5 held constant, depth 4,
#:   base 16) for 20000 iterations with validation every 500 and patience 10; a GPU budget (hours on a CPU).
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {"patch_size": (32, 32, 32), "base_channels": 8, "depth": 3, "discriminator_channels": 8,
            "batch_size": 4, "iterations": 1000, "generator_lr": 1e-3, "discriminator_lr": 5e-4,
            "lr_schedule": "cosine", "validation_fraction": 0.2, "validation_interval": 50, "patience": 6},
    "paper": {"patch_size": (64, 64, 64), "base_channels": 16, "depth": 4, "discriminator_channels": 16,
              "batch_size": 16, "iterations": 20000, "generator_lr": 1e-4, "discriminator_lr": 5e-5,
              "lr_schedule": "constant", "validation_fraction": 0.2, "validation_interval": 500, "patience": 10},
}


def preset_config(preset: str | None, method: str = "arhnet", **overrides: Any) -> HarmonizerConfig:
    """The config of ``preset`` (None: the plain defaults) for ``method``, with ``overrides`` (None values ignored)."""
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    values = {**(PRESETS[preset] if preset else {}), **{k: v for k, v in overrides.items() if v is not None}}
    return HarmonizerConfig(method=method, **values)
