"""Training of unpaired source -> target slice translation with CycleGAN (Zhu et al. 2017) or CUT (Park et al. 2020).

Each domain's slices are normalised to [-1, 1] with the robust range of its own nonzero voxels
(:class:`synth.translation.model.IntensityRange`); the translator maps outputs back to the TARGET domain's range, in
float. Every iteration draws ``batch_size`` random slices from each domain independently (unpaired), takes a random
crop of ``crop_size`` (slices smaller than the crop are reflect-padded; ``crop_size`` None uses the whole slice,
reflect-padded to a multiple of ``2**downsamplings``) and flips each horizontally with probability 0.5, the only
augmentation.

* CycleGAN: generators G_AB (source -> target, kept) and G_BA, discriminators D_A and D_B. Generator step first:
  LSGAN terms, cycle L1 x ``lambda_cycle`` both ways and identity L1 x ``lambda_cycle * lambda_identity``; then the
  discriminator step on fakes drawn through the image pools (loss halved, as the reference).
* CUT: one generator G, one discriminator D and the MLP heads. Discriminator step first, then G and the heads:
  LSGAN + ``lambda_nce`` x PatchNCE(real_A, G(real_A)) averaged over ``nce_layers``, averaged with the identity
  PatchNCE(real_B, G(real_B)) when ``nce_identity``.

Adam (lr, betas (beta1, beta2)) for every network; the learning rate follows :func:`learning_rate_factor`. Runs are
deterministic for a seed on the CPU: weights come from the seeded torch RNG (the global state is restored
afterwards), batches from ``numpy.random.default_rng(seed)``, the pools and the NCE locations from their own seeded
streams. On CUDA, cuDNN kernels may still make runs differ slightly.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from synth.translation.config import TranslationConfig
from synth.translation.losses import ImagePool, l1_loss, lsgan_loss, patch_nce_loss
from synth.translation.model import IntensityRange, Translator
from synth.translation.networks import (
    PatchDiscriminator,
    PatchSampleMLP,
    ResnetGenerator,
    init_weights,
)

Slices = Sequence[np.ndarray] | np.ndarray
#: Seed streams of one seed besides the batch sampler's ``default_rng(seed)``.
_POOL_A_STREAM, _POOL_B_STREAM = 1, 2


def learning_rate_factor(config: TranslationConfig, iteration: int) -> float:
    """Multiplier of the learning rate at ``iteration`` (0-based): 1 for the first ``iterations - decay`` iterations
    (``decay = round(decay_fraction * iterations)``), then ``1 - k / (decay + 1)`` at the k-th decay iteration,
    i.e. ``1 / (decay + 1)`` at the last one (the reference's linear policy)."""
    decay = round(config.decay_fraction * config.iterations)
    return 1.0 - max(0, iteration + 1 - (config.iterations - decay)) / (decay + 1)


def _prepare_domain(slices: Slices, name: str, config: TranslationConfig) -> tuple[list[np.ndarray],
                                                                                  IntensityRange]:
    """Validated, normalised float32 slices of one domain and its intensity range."""
    if isinstance(slices, np.ndarray) and slices.ndim != 3:
        raise ValueError(f"{name} slices must be an (N, H, W) array or a sequence of 2D arrays, got {slices.shape}")
    arrays = [np.asarray(s) for s in slices]
    if not arrays:
        raise ValueError(f"no {name} slices")
    for index, array in enumerate(arrays):
        if array.ndim != 2:
            raise ValueError(f"{name} slice {index} is not 2D (shape {array.shape})")
        if min(array.shape) < config.minimum_slice_size:
            raise ValueError(f"{name} slice {index} of shape {array.shape} is smaller than "
                             f"{config.minimum_slice_size} = 4 * 2**downsamplings")
        if not np.isfinite(array).all():
            raise ValueError(f"{name} slice {index} has non-finite values")
    intensity_range = IntensityRange.fit(arrays)
    return [intensity_range.normalise(a) for a in arrays], intensity_range


def _training_size(slices: Sequence[np.ndarray], config: TranslationConfig) -> tuple[int, int]:
    """(h, w) of the training crops: ``crop_size``, or the largest slice rounded up to a valid size."""
    if config.crop_size is not None:
        return config.crop_size, config.crop_size
    multiple = config.size_multiple
    return tuple(max(config.minimum_training_size, -(-max(s.shape[axis] for s in slices) // multiple) * multiple)
                 for axis in (0, 1))  # type: ignore[return-value]


def sample_batch(slices: Sequence[np.ndarray], size: tuple[int, int], count: int,
                 rng: np.random.Generator) -> np.ndarray:
    """(count, 1, h, w) float32: random slices, reflect-padded (centred) to at least ``size``, randomly cropped to
    ``size`` and flipped left-right with probability 0.5."""
    batch = []
    for _ in range(count):
        image = slices[int(rng.integers(len(slices)))]
        pads = [(max(0, target - side) // 2, max(0, target - side) - max(0, target - side) // 2)
                for side, target in zip(image.shape, size)]
        image = np.pad(image, pads, mode="reflect")
        top, left = (int(rng.integers(side - target + 1)) for side, target in zip(image.shape, size))
        crop = image[top:top + size[0], left:left + size[1]]
        batch.append(crop[:, ::-1] if rng.random() < 0.5 else crop)
    return np.ascontiguousarray(np.stack(batch)[:, None], dtype=np.float32)


def _adam(modules: Sequence[nn.Module], config: TranslationConfig) -> torch.optim.Adam:
    parameters = [p for module in modules for p in module.parameters()]
    return torch.optim.Adam(parameters, lr=config.lr, betas=(config.beta1, config.beta2))


def _build(config: TranslationConfig, seed: int) -> dict[str, nn.Module]:
    """The method's untrained networks, initialised from ``seed`` (CycleGAN: N(0, 0.02); CUT: Xavier, gain 0.02)."""
    scheme = "normal" if config.method == "cyclegan" else "xavier"

    def generator() -> ResnetGenerator:
        return ResnetGenerator(1, 1, config.generator_features, config.residual_blocks, config.downsamplings)

    def discriminator() -> PatchDiscriminator:
        return PatchDiscriminator(1, config.discriminator_features, config.discriminator_layers)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if config.method == "cyclegan":
            nets = {"G_AB": generator(), "G_BA": generator(), "D_A": discriminator(), "D_B": discriminator()}
        else:
            nets = {"G": generator(), "D": discriminator()}
            nets["F"] = PatchSampleMLP([nets["G"].encoder_channels[i] for i in config.nce_layers],
                                       config.projection_features)
        return {name: init_weights(net, scheme) for name, net in nets.items()}


def _cyclegan_step(nets: dict[str, nn.Module], optimizers: Sequence[torch.optim.Optimizer],
                   pools: Sequence[ImagePool], real_a: torch.Tensor, real_b: torch.Tensor,
                   config: TranslationConfig) -> dict[str, torch.Tensor]:
    """One CycleGAN iteration: generators, then discriminators; returns the (weighted) loss terms."""
    g_ab, g_ba, d_a, d_b = nets["G_AB"], nets["G_BA"], nets["D_A"], nets["D_B"]
    fake_b, fake_a = g_ab(real_a), g_ba(real_b)
    d_a.requires_grad_(False)
    d_b.requires_grad_(False)
    losses = {"G_AB": lsgan_loss(d_b(fake_b), True), "G_BA": lsgan_loss(d_a(fake_a), True),
              "cycle_A": config.lambda_cycle * l1_loss(g_ba(fake_b), real_a),
              "cycle_B": config.lambda_cycle * l1_loss(g_ab(fake_a), real_b)}
    if config.lambda_identity > 0:
        weight = config.lambda_cycle * config.lambda_identity
        losses["identity_A"] = weight * l1_loss(g_ba(real_a), real_a)
        losses["identity_B"] = weight * l1_loss(g_ab(real_b), real_b)
    losses["G"] = sum(losses.values())
    optimizers[0].zero_grad(set_to_none=True)
    losses["G"].backward()
    optimizers[0].step()
    d_a.requires_grad_(True)
    d_b.requires_grad_(True)
    losses["D_A"] = 0.5 * (lsgan_loss(d_a(real_a), True) + lsgan_loss(d_a(pools[0].query(fake_a.detach())), False))
    losses["D_B"] = 0.5 * (lsgan_loss(d_b(real_b), True) + lsgan_loss(d_b(pools[1].query(fake_b.detach())), False))
    optimizers[1].zero_grad(set_to_none=True)
    (losses["D_A"] + losses["D_B"]).backward()
    optimizers[1].step()
    return losses


def _nce(generator: ResnetGenerator, heads: PatchSampleMLP, source: torch.Tensor, output: torch.Tensor,
         config: TranslationConfig, patch_rng: torch.Generator) -> torch.Tensor:
    """``lambda_nce`` x PatchNCE between the encodings of ``output`` (queries) and ``source`` (keys), mean over
    ``nce_layers``."""
    keys, locations = heads(generator.encode(source, config.nce_layers), config.nce_patches, generator=patch_rng)
    queries, _ = heads(generator.encode(output, config.nce_layers), config.nce_patches, locations)
    total = sum(patch_nce_loss(q, k, config.nce_temperature) for q, k in zip(queries, keys))
    return config.lambda_nce * total / len(config.nce_layers)


def _cut_step(nets: dict[str, nn.Module], optimizers: Sequence[torch.optim.Optimizer], real_a: torch.Tensor,
              real_b: torch.Tensor, config: TranslationConfig, patch_rng: torch.Generator) -> dict[str, torch.Tensor]:
    """One CUT iteration: discriminator, then generator and MLP heads; returns the loss terms."""
    generator, discriminator, heads = nets["G"], nets["D"], nets["F"]
    fake_b = generator(real_a)
    losses = {"D": 0.5 * (lsgan_loss(discriminator(fake_b.detach()), False)
                          + lsgan_loss(discriminator(real_b), True))}
    optimizers[1].zero_grad(set_to_none=True)
    losses["D"].backward()
    optimizers[1].step()
    discriminator.requires_grad_(False)
    losses["G_GAN"] = lsgan_loss(discriminator(fake_b), True)
    losses["NCE"] = _nce(generator, heads, real_a, fake_b, config, patch_rng)
    nce = losses["NCE"]
    if config.nce_identity:
        losses["NCE_identity"] = _nce(generator, heads, real_b, generator(real_b), config, patch_rng)
        nce = 0.5 * (nce + losses["NCE_identity"])
    losses["G"] = losses["G_GAN"] + nce
    optimizers[0].zero_grad(set_to_none=True)
    losses["G"].backward()
    optimizers[0].step()
    discriminator.requires_grad_(True)
    return losses


def train_translator(source_slices: Slices, target_slices: Slices, config: TranslationConfig = TranslationConfig(),
                     seed: int = 0, device: str | torch.device = "cpu", progress: bool = True,
                     callback: Callable[[int, dict[str, float]], None] | None = None) -> Translator:
    """Train ``config.method`` on unpaired 2D slices ((N, H, W) arrays or sequences of 2D arrays) of the source (A)
    and target (B) domains; returns the source -> target :class:`Translator`.

    ``callback(iteration, losses)`` is called after every iteration (1-based count, the values recorded in the
    history). Bad input (empty domain, non-2D or non-finite slices, slices under ``4 * 2**downsamplings`` pixels, an
    all-zero or constant domain) raises ValueError.
    """
    real_slices, ranges = zip(*(_prepare_domain(s, name, config)
                                for s, name in ((source_slices, "source"), (target_slices, "target"))))
    sizes = [_training_size(s, config) for s in real_slices]
    device = torch.device(device)
    nets = {name: net.to(device).train() for name, net in _build(config, seed).items()}
    if config.method == "cyclegan":
        optimizers = [_adam([nets["G_AB"], nets["G_BA"]], config), _adam([nets["D_A"], nets["D_B"]], config)]
    else:
        optimizers = [_adam([nets["G"], nets["F"]], config), _adam([nets["D"]], config)]
    pools = [ImagePool(config.pool_size, np.random.default_rng([seed, stream]))
             for stream in (_POOL_A_STREAM, _POOL_B_STREAM)]
    patch_rng = torch.Generator().manual_seed(int(seed))
    rng = np.random.default_rng(seed)
    history: dict[str, list[float]] = {}
    bar = tqdm(range(config.iterations), desc=f"train {config.method}", disable=not progress)
    for iteration in bar:
        lr = config.lr * learning_rate_factor(config, iteration)
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
        real_a, real_b = (torch.from_numpy(sample_batch(s, size, config.batch_size, rng)).to(device)
                          for s, size in zip(real_slices, sizes))
        if config.method == "cyclegan":
            terms = _cyclegan_step(nets, optimizers, pools, real_a, real_b, config)
        else:
            terms = _cut_step(nets, optimizers, real_a, real_b, config, patch_rng)
        losses = {name: float(value.detach()) for name, value in terms.items()}
        losses["lr"] = lr
        for name, value in losses.items():
            history.setdefault(name, []).append(value)
        if progress:
            bar.set_postfix({name: f"{value:.3f}" for name, value in losses.items() if name != "lr"}, refresh=False)
        if callback is not None:
            callback(iteration + 1, losses)
    generator = nets["G_AB" if config.method == "cyclegan" else "G"]
    return Translator(generator, config, ranges[0], ranges[1], history, int(seed))
