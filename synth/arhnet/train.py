"""Training of ARHNet and of the learned baselines of its Table 1 / Table 3 with one loop (paper sections 2.1, 3.1.2).

Each iteration draws ``batch_size`` random patches around lesions from the (already [0, 1]-scaled) training cases,
perturbs their foreground on the fly with eq. 1, and runs one discriminator step (hinge loss, AdamW lr 5e-5) and one
generator step (``lambda_rec L_rec + lambda_btv L_btv + lambda_adv L_adv``, eq. 6, AdamW lr 1e-4). Terms whose weight
is 0 are skipped, and no discriminator is built when ``lambda_adv`` is 0 (the "UNet" baseline).

Model selection (``HarmonizerConfig.validation_fraction`` > 0 or explicit ``validation_cases``): fixed validation
patches with seeded eq. 1 perturbations are drawn once from cases never trained on; the generator's mean validation
fPSNR (capped at 60 dB, :mod:`synth.arhnet.metrics`) is measured every ``validation_interval`` iterations, the best
state is kept and returned, and training stops early after ``patience`` evaluations without improvement. Both
learning rates follow ``lr_schedule`` (:func:`learning_rate_factor`).
"""
from __future__ import annotations

import math
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
from synth.arhnet.metrics import foreground_psnr
from synth.arhnet.networks import PatchDiscriminator, apply_difference_map
from synth.arhnet.patches import crop_patch, random_lesion_patch_origin
from synth.arhnet.perturbation import (
    IntensityScaling,
    RandomForegroundIntensityPerturbation,
)

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


#: Random streams of one seed independent of the training patches' ``default_rng(seed)``: the validation split and
#: the validation patches.
_SPLIT_STREAM, _VALIDATION_STREAM = 1, 2

Patches = tuple[np.ndarray, np.ndarray, np.ndarray]


def sample_patches(cases: Sequence[ScaledCase], config: HarmonizerConfig, rng: np.random.Generator,
                   count: int) -> Patches:
    """(real I, perturbed I~, mask M), each (count, 1, X, Y, Z) float32: random lesion patches of random cases,
    each perturbed with eq. 1."""
    perturbation = RandomForegroundIntensityPerturbation(config.alpha_range, config.lambda_range)
    real, perturbed, masks = [], [], []
    for _ in range(count):
        case = cases[int(rng.integers(len(cases)))]
        origin = random_lesion_patch_origin(case.mask, config.patch_size, rng)
        image_patch = crop_patch(case.image, origin, config.patch_size)
        mask_patch = crop_patch(case.mask, origin, config.patch_size)
        real.append(image_patch)
        perturbed.append(perturbation(image_patch, mask_patch, rng)[0])
        masks.append(mask_patch)
    return tuple(np.stack(batch)[:, None].astype(np.float32) for batch in (real, perturbed, masks))  # type: ignore


def split_validation(case_count: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(training, validation) case indices: ``max(1, round(fraction * case_count))`` cases drawn with ``seed`` are
    held out; ``fraction`` 0 holds out none. Needs at least one training case left."""
    if fraction <= 0:
        return list(range(case_count)), []
    n_validation = max(1, round(fraction * case_count))
    if n_validation >= case_count:
        raise ValueError(f"{case_count} case(s) cannot be split into training and {n_validation} validation case(s)")
    order = np.random.default_rng([seed, _SPLIT_STREAM]).permutation(case_count)
    return sorted(order[n_validation:].tolist()), sorted(order[:n_validation].tolist())


def make_validation_patches(cases: Sequence[ScaledCase], config: HarmonizerConfig, seed: int) -> Patches:
    """``validation_patches_per_case`` perturbed lesion patches per validation case, drawn once with ``seed``."""
    rng = np.random.default_rng([seed, _VALIDATION_STREAM])
    per_case = [sample_patches([case], config, rng, config.validation_patches_per_case) for case in cases]
    return tuple(np.concatenate(parts) for parts in zip(*per_case))  # type: ignore[return-value]


def mean_foreground_psnr(predictions: np.ndarray, patches: Patches) -> float:
    """Mean per-patch fPSNR (60 dB cap) of ``predictions`` against the real patches."""
    real, _, masks = patches
    return float(np.mean([foreground_psnr(p[0], r[0], m[0]) for p, r, m in zip(predictions, real, masks)]))


@torch.no_grad()
def validation_fpsnr(generator: torch.nn.Module, patches: Patches, batch_size: int) -> float:
    """Mean validation fPSNR of ``generator`` (evaluated in eval mode, then put back in training mode)."""
    device = next(generator.parameters()).device
    generator.eval()
    outputs = []
    for start in range(0, len(patches[0]), batch_size):
        perturbed, mask = (torch.from_numpy(a[start:start + batch_size]).to(device) for a in patches[1:])
        outputs.append(apply_difference_map(perturbed, mask, generator(perturbed, mask)).cpu().numpy())
    generator.train()
    return mean_foreground_psnr(np.concatenate(outputs), patches)


def learning_rate_factor(config: HarmonizerConfig, iteration: int) -> float:
    """Multiplier of both learning rates at ``iteration`` (0-based): 1 for "constant"; for "cosine",
    ``f + (1 - f) * (1 + cos(pi * iteration / (iterations - 1))) / 2`` with ``f = lr_min_fraction`` (1 at the first
    iteration, ``f`` at the last)."""
    if config.lr_schedule == "constant" or config.iterations <= 1:
        return 1.0
    progress = min(iteration, config.iterations - 1) / (config.iterations - 1)
    return config.lr_min_fraction + (1.0 - config.lr_min_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))


def train_harmonizer(cases: Sequence[Case], config: HarmonizerConfig, seed: int = 0,
                     device: str | torch.device = "cpu", progress: bool = True,
                     validation_cases: Sequence[Case] | None = None) -> Harmonizer:
    """Train the method ``config.method`` on ``cases``; non-learned methods are returned as they are.

    Validation (module docstring) uses ``validation_cases`` when given, else ``config.validation_fraction`` of
    ``cases`` (:func:`split_validation`); without either the last state is returned. With ``progress`` each
    validation score is printed as it is measured. Deterministic for a seed on a given device (torch's global RNG
    is seeded for weight initialisation).
    """
    if not config.spec.learned:
        return Harmonizer(config)
    if not cases:
        raise ValueError("no training cases")
    validation: dict = {}
    if validation_cases is None and config.validation_fraction > 0:
        train_indices, validation_indices = split_validation(len(cases), config.validation_fraction, seed)
        validation_cases = [cases[i] for i in validation_indices]
        cases = [cases[i] for i in train_indices]
        validation["validation_case_indices"] = validation_indices
    scaled = scale_cases(cases)
    validation_patches = make_validation_patches(scale_cases(validation_cases), config, seed) \
        if validation_cases else None
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    device = torch.device(device)
    rec_weight, btv_weight, adv_weight = config.weights
    generator = build_generator(config).to(device).train()
    generator_optimizer = torch.optim.AdamW(generator.parameters(), lr=config.generator_lr,
                                            weight_decay=config.weight_decay)
    optimizers = [(generator_optimizer, config.generator_lr)]
    discriminator = None
    if adv_weight > 0:
        discriminator = PatchDiscriminator(3, config.discriminator_channels, config.discriminator_depth).to(device)
        discriminator_optimizer = torch.optim.AdamW(discriminator.parameters(), lr=config.discriminator_lr,
                                                    weight_decay=config.weight_decay)
        optimizers.append((discriminator_optimizer, config.discriminator_lr))
    if validation_patches is not None:
        validation.update(composite_fPSNR=mean_foreground_psnr(validation_patches[1], validation_patches),
                          patches=len(validation_patches[0]), curve=[], best_iteration=0, best_fPSNR=-math.inf,
                          stopped_early=False)
    best_state: dict[str, torch.Tensor] | None = None
    evaluations_since_best = 0
    log: list[dict[str, float]] = []
    bar = tqdm(range(config.iterations), desc=f"train {config.method}", disable=not progress)
    for iteration in bar:
        factor = learning_rate_factor(config, iteration)
        for optimizer, base_lr in optimizers:
            for group in optimizer.param_groups:
                group["lr"] = base_lr * factor
        real, perturbed, mask = (torch.from_numpy(array).to(device)
                                 for array in sample_patches(scaled, config, rng, config.batch_size))
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
        done = iteration + 1
        if validation_patches is None or (done % config.validation_interval and done != config.iterations):
            continue
        score = validation_fpsnr(generator, validation_patches, config.batch_size)
        validation["curve"].append({"iteration": done, "fPSNR": score, "generator_lr": config.generator_lr * factor})
        evaluations_since_best += 1
        if score > validation["best_fPSNR"]:
            validation.update(best_iteration=done, best_fPSNR=score)
            best_state = {name: value.detach().clone() for name, value in generator.state_dict().items()}
            evaluations_since_best = 0
        if progress:
            tqdm.write(f"iteration {done}: validation fPSNR {score:.2f} dB (best {validation['best_fPSNR']:.2f} at "
                       f"{validation['best_iteration']}; composite {validation['composite_fPSNR']:.2f}), "
                       f"lr {config.generator_lr * factor:.3g}")
        if config.patience and evaluations_since_best >= config.patience:
            validation["stopped_early"] = done < config.iterations
            break
    if best_state is not None:
        generator.load_state_dict(best_state)
    generator.eval()
    return Harmonizer(config, generator, log, validation)
