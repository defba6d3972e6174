"""Training of ARHNet and of the learned baselines of its Table 1 / Table 3 with one loop (paper sections 2.1, 3.1.2).

Each iteration draws ``batch_size`` random patches around lesions from the (already [0, 1]-scaled) training cases,
perturbs their foreground on the fly with eq. 1, and runs one discriminator step (hinge loss, AdamW lr 5e-5) and one
generator step (``lambda_rec L_rec + lambda_btv L_btv + lambda_adv L_adv``, eq. 6, AdamW lr 1e-4). Terms whose weight
is 0 are skipped, and no discriminator is built when ``lambda_adv`` is 0 (the "UNet" baseline).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from synth.arhnet.config import HarmonizerConfig
from synth.arhnet.harmonize import Harmonizer, build_generator
from synth.arhnet.losses import (
    boundary_total_variation_loss,
    discriminator_hinge_loss,
    extract_boundary,
    generator_hinge_loss,
    reconstruction_loss,
)
from synth.arhnet.networks import PatchDiscriminator, apply_difference_map
from synth.arhnet.patches import crop_patch, random_lesion_patch_origin
from synth.arhnet.perturbation import IntensityScaling, RandomForegroundIntensityPerturbation

#: A training case: (image, lesion mask) or (image, lesion mask, tissue mask), 3D arrays of one shape.
Case = Sequence[np.ndarray]


@dataclass(frozen=True)
class ScaledCase:
    """A case with its image scaled to [0, 1] (the recorded ``scaling``) and a binary float mask."""

    image: np.ndarray
    mask: np.ndarray
    scaling: IntensityScaling


def scale_cases(cases: Sequence[Case]) -> list[ScaledCase]:
    """Validate cases (3D, same shapes, non-empty lesion) and scale each image to [0, 1]."""
    scaled = []
    for index, case in enumerate(cases):
        image, mask = np.asarray(case[0]), np.asarray(case[1])
        if image.ndim != 3 or image.shape != mask.shape:
            raise ValueError(f"case {index}: image {image.shape} and mask {mask.shape} must be 3D of the same shape")
        if not (mask > 0).any():
            raise ValueError(f"case {index}: the lesion mask is empty")
        scaling = IntensityScaling.fit(image)
        scaled.append(ScaledCase(scaling.apply(image), (mask > 0).astype(np.float32), scaling))
    return scaled


def sample_training_batch(cases: Sequence[ScaledCase], config: HarmonizerConfig,
                          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(real I, perturbed I~, mask M), each (B, 1, X, Y, Z) float32: random lesion patches, eq. 1 perturbation."""
    perturbation = RandomForegroundIntensityPerturbation(config.alpha_range, config.lambda_range)
    real, perturbed, masks = [], [], []
    for _ in range(config.batch_size):
        case = cases[int(rng.integers(len(cases)))]
        origin = random_lesion_patch_origin(case.mask, config.patch_size, rng)
        image_patch = crop_patch(case.image, origin, config.patch_size)
        mask_patch = crop_patch(case.mask, origin, config.patch_size)
        real.append(image_patch)
        perturbed.append(perturbation(image_patch, mask_patch, rng)[0])
        masks.append(mask_patch)
    return tuple(np.stack(batch)[:, None].astype(np.float32) for batch in (real, perturbed, masks))  # type: ignore


def train_harmonizer(cases: Sequence[Case], config: HarmonizerConfig, seed: int = 0,
                     device: str | torch.device = "cpu", progress: bool = True) -> Harmonizer:
    """Train the method ``config.method`` on ``cases``; non-learned methods are returned as they are.

    Deterministic for a seed on a given device (torch's global RNG is seeded for weight initialisation).
    """
    if not config.spec.learned:
        return Harmonizer(config)
    if not cases:
        raise ValueError("no training cases")
    scaled = scale_cases(cases)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    device = torch.device(device)
    rec_weight, btv_weight, adv_weight = config.weights
    generator = build_generator(config).to(device).train()
    generator_optimizer = torch.optim.AdamW(generator.parameters(), lr=config.generator_lr,
                                            weight_decay=config.weight_decay)
    discriminator = None
    if adv_weight > 0:
        discriminator = PatchDiscriminator(3, config.discriminator_channels, config.discriminator_depth).to(device)
        discriminator_optimizer = torch.optim.AdamW(discriminator.parameters(), lr=config.discriminator_lr,
                                                    weight_decay=config.weight_decay)
    log: list[dict[str, float]] = []
    bar = tqdm(range(config.iterations), desc=f"train {config.method}", disable=not progress)
    for _ in bar:
        real, perturbed, mask = (torch.from_numpy(array).to(device)
                                 for array in sample_training_batch(scaled, config, rng))
        harmonized = apply_difference_map(perturbed, mask, generator(perturbed, mask))
        entry: dict[str, float] = {}
        if discriminator is not None:
            discriminator_loss = discriminator_hinge_loss(discriminator(real, perturbed, mask),
                                                          discriminator(harmonized.detach(), perturbed, mask))
            discriminator_optimizer.zero_grad(set_to_none=True)
            discriminator_loss.backward()
            discriminator_optimizer.step()
            entry["loss_d"] = float(discriminator_loss.detach())
        generator_loss = harmonized.new_zeros(())
        if rec_weight > 0:
            rec = reconstruction_loss(real, harmonized)
            generator_loss = generator_loss + rec_weight * rec
            entry["rec"] = float(rec.detach())
        if btv_weight > 0:
            btv = boundary_total_variation_loss(harmonized, extract_boundary(mask))
            generator_loss = generator_loss + btv_weight * btv
            entry["btv"] = float(btv.detach())
        if discriminator is not None:
            adv = generator_hinge_loss(discriminator(harmonized, perturbed, mask))
            generator_loss = generator_loss + adv_weight * adv
            entry["adv"] = float(adv.detach())
        generator_optimizer.zero_grad(set_to_none=True)
        generator_loss.backward()
        generator_optimizer.step()
        entry["loss_g"] = float(generator_loss.detach())
        log.append(entry)
        bar.set_postfix(loss_g=f"{entry['loss_g']:.4f}")
    generator.eval()
    return Harmonizer(config, generator, log)
