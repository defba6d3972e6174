"""SinGAN: a multi-scale 2D GAN learnt from ONE grayscale image (Shaham et al., ICCV 2019), float end to end.

Used by Generative Blending Augmentation (GBA, Sallé et al., section 3.3, eq. 6) to harmonise contrast-altered tumour
slices with a real target-modality MR slice. A pyramid of generator/critic pairs is trained coarse to fine; scale 0
is the coarsest, scale N = ``num_scales - 1`` the finest. Generator n is residual:
``x_n = G_n(amp_n * z_n + up(x_{n-1})) + up(x_{n-1})`` (paper notation counts the other way; only the order matters).

Defaults follow the SinGAN paper / reference code: 5 conv layers (3x3, BatchNorm, LeakyReLU 0.2) per network, PatchGAN
critic (receptive field 11 px, no final activation), WGAN-GP critic (penalty weight 0.1), reconstruction loss weight 10
with a fixed noise map z* at the coarsest scale and zero noise at finer scales, noise amplitude at finer scales =
0.1 x RMSE(real_n, up(reconstruction_{n-1})), 32 filters doubling every 4 scales up to 128 (a scale warm-starts from
the previous one when the width is unchanged), Adam lr 5e-4 betas (0.5, 0.999), 3 critic and 3 generator steps per
iteration, lr x0.1 at 80 % of the iterations, scale factor 0.75, min size 25, max size 250, 2000 iterations per scale.
The number of scales and the fitted scale factor are derived from the image size as in the reference code.

Choices and deviations (on purpose):
* Generator output is tanh-free: the last conv of the residual branch is linear. Inputs are mapped to [-1, 1] with the
  training image's min/max (affine stored in the checkpoint) and outputs are mapped back, so results come back in the
  input's intensity units; brightened tumours (alpha > 1) may leave [-1, 1] and are not clipped.
* Convolutions use 'same' zero padding per layer instead of padding the input once by 5 px.
* The gradient penalty keeps the reference formulation (norm over the channel axis, i.e. per pixel, mean over pixels),
  with which the 0.1 weight was tuned.
* BatchNorm always normalises with the statistics of the current (single-image) batch, in training and inference
  (``track_running_stats=False``), so a frozen generator computes exactly what it was trained to compute. The reference
  freezes generators in eval mode with running averages that mix random and reconstruction passes, which degraded
  frozen generators on short budgets (numbers in the README). Every generator call therefore takes a batch of one
  image.

Known defects of the public reference implementation that this module avoids:
* it quantises every pyramid resize through uint8 (256 grey levels); here all resizes are float
  ``torch.nn.functional.interpolate`` (bicubic, antialiased when downsampling);
* it crashes on single-channel input; here images are single-channel by design;
* on modern PyTorch it raises an in-place gradient error because the fake from the critic loop is reused after
  ``optimizerG.step()``; here the fake is regenerated inside the generator loop. (The widely posted workaround of
  ``fake.detach_()`` silently removes the adversarial gradient, leaving only the reconstruction loss.)
* its mask handling divides by the mask maximum and yields NaN for an empty mask; the GBA weighting mask
  (``nnunet_gen.augment.gba``) is never normalised by its maximum, and an empty mask returns the input unchanged.

Checkpoints are one safetensors file (generators incl. BatchNorm statistics, the fixed noise z*) whose header metadata
holds a JSON description (config, training image shape, intensity affine, scale shapes, noise amplitudes). The critics
are not saved: inference never needs them.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from synth.checkpoint import CheckpointError, load_tensors, save_tensors

CHECKPOINT_FORMAT_VERSION = 1
_METADATA_KEY = "singan"


@dataclass(frozen=True)
class SinGANConfig:
    """Training hyper-parameters; defaults are the SinGAN paper's (see module docstring)."""

    scale_factor: float = 0.75
    min_size: int = 25
    max_size: int = 250
    iterations_per_scale: int = 2000
    critic_steps: int = 3
    generator_steps: int = 3
    learning_rate: float = 5e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lr_decay_at_fraction: float = 0.8
    lr_decay_factor: float = 0.1
    gradient_penalty_weight: float = 0.1
    reconstruction_weight: float = 10.0
    base_noise_amplitude: float = 0.1
    base_filters: int = 32
    max_filters: int = 128
    filters_double_every: int = 4
    num_layers: int = 5
    kernel_size: int = 3

    def __post_init__(self) -> None:
        if not 0.0 < self.scale_factor < 1.0:
            raise ValueError(f"scale_factor must be in (0, 1), got {self.scale_factor}")
        if not 0 < self.min_size <= self.max_size:
            raise ValueError(f"need 0 < min_size <= max_size, got {self.min_size}, {self.max_size}")
        if self.num_layers < 2 or self.kernel_size % 2 == 0:
            raise ValueError("num_layers must be >= 2 and kernel_size odd")
        if self.iterations_per_scale < 1 or self.critic_steps < 1 or self.generator_steps < 1:
            raise ValueError("iterations_per_scale, critic_steps and generator_steps must be >= 1")

    def filters_at_scale(self, scale: int) -> int:
        """Conv width at ``scale`` (0 = coarsest): doubles every ``filters_double_every`` scales, capped."""
        return min(self.base_filters * 2 ** (scale // self.filters_double_every), self.max_filters)


def _ceil(value: float) -> int:
    """Ceiling that ignores floating-point noise (e.g. 25.000000001 -> 25)."""
    return math.ceil(value - 1e-6)


def pyramid_shapes(image_shape: tuple[int, int], config: SinGANConfig) -> list[tuple[int, int]]:
    """Shapes of the SinGAN pyramid, coarsest first, derived as in the reference code.

    The image is first shrunk so its long side is at most ``max_size``; the number of scales comes from
    ``scale_factor`` and ``min_size``; the scale factor is then re-fitted so the coarsest short side is ``min_size``.
    """
    height, width = (int(s) for s in image_shape)
    short_side, long_side = min(height, width), max(height, width)
    if short_side <= config.min_size:
        raise ValueError(f"image shape {image_shape} has a side <= min_size={config.min_size}: nothing to pyramid")
    log_factor = math.log(config.scale_factor)
    num_scales = _ceil(math.log(config.min_size / short_side) / log_factor) + 1
    scales_above_max = _ceil(math.log(min(config.max_size, long_side) / long_side) / log_factor)
    stop_scale = num_scales - scales_above_max
    finest_scale = min(config.max_size / long_side, 1.0)
    finest = (_ceil(height * finest_scale), _ceil(width * finest_scale))
    fitted_factor = (config.min_size / min(finest)) ** (1.0 / stop_scale)
    shapes = []
    for level in range(stop_scale + 1):
        factor = fitted_factor ** (stop_scale - level)
        shapes.append((_ceil(finest[0] * factor), _ceil(finest[1] * factor)))
    return shapes


def resize(image: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Float bicubic resize of a (B, C, H, W) tensor, antialiased when shrinking (no uint8 round trip)."""
    shape = (int(shape[0]), int(shape[1]))
    if tuple(image.shape[-2:]) == shape:
        return image
    return F.interpolate(image, size=shape, mode="bicubic", align_corners=False, antialias=True)


def image_pyramid(image2d: np.ndarray, config: SinGANConfig) -> list[np.ndarray]:
    """Float pyramid (coarsest first) of a 2D image, in the image's own units; what training sees (after scaling)."""
    tensor = torch.as_tensor(np.asarray(image2d, dtype=np.float32))[None, None]
    shapes = pyramid_shapes(tensor.shape[-2:], config)
    finest = resize(tensor, shapes[-1])
    return [resize(finest, shape)[0, 0].numpy() for shape in shapes]


def _conv_block(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
                         nn.BatchNorm2d(out_channels, track_running_stats=False), nn.LeakyReLU(0.2))


def _five_layer_net(filters: int, config: SinGANConfig) -> nn.Sequential:
    """Head conv block, ``num_layers - 2`` body blocks, linear tail conv to one channel (SinGAN's layout)."""
    layers = [_conv_block(1, filters, config.kernel_size)]
    layers += [_conv_block(filters, filters, config.kernel_size) for _ in range(config.num_layers - 2)]
    layers.append(nn.Conv2d(filters, 1, config.kernel_size, padding=config.kernel_size // 2))
    net = nn.Sequential(*layers)
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, 0.0, 0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)
    return net


class ResidualGenerator(nn.Module):
    """G_n: returns ``net(noisy_input) + previous`` (tanh-free residual branch, see module docstring)."""

    def __init__(self, filters: int, config: SinGANConfig) -> None:
        super().__init__()
        self.net = _five_layer_net(filters, config)

    def forward(self, noisy_input: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        return self.net(noisy_input) + previous


class PatchCritic(nn.Module):
    """PatchGAN WGAN critic: one unbounded score per pixel (no final activation)."""

    def __init__(self, filters: int, config: SinGANConfig) -> None:
        super().__init__()
        self.net = _five_layer_net(filters, config)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)


def _noise(shape: Sequence[int], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Standard normal (1, 1, H, W) noise drawn on the CPU generator, so a seed gives the same noise on any device."""
    return torch.randn((1, 1, int(shape[0]), int(shape[1])), generator=generator).to(device)


def _gradient_penalty(critic: PatchCritic, real: torch.Tensor, fake: torch.Tensor, weight: float,
                      generator: torch.Generator) -> torch.Tensor:
    """WGAN-GP term in the reference's per-pixel form (norm over channels, mean over pixels)."""
    mix = torch.rand(1, generator=generator).item()
    interpolate = (mix * real + (1.0 - mix) * fake).requires_grad_(True)
    scores = critic(interpolate)
    gradients = torch.autograd.grad(scores.sum(), interpolate, create_graph=True)[0]
    return weight * ((gradients.norm(2, dim=1) - 1.0) ** 2).mean()


class SinGAN:
    """A trained SinGAN pyramid (generators only) plus everything needed to map intensities back.

    Build it with :func:`train_singan` or :meth:`load`. All outputs are float32 numpy arrays of the training image's
    shape, in its intensity units.
    """

    def __init__(self, generators: Sequence[ResidualGenerator], fixed_noise: torch.Tensor,
                 noise_amplitudes: Sequence[float], scale_shapes: Sequence[tuple[int, int]],
                 training_shape: tuple[int, int], intensity_center: float, intensity_half_range: float,
                 reconstruction_rmse: Sequence[float], config: SinGANConfig, seed: int) -> None:
        if not len(generators) == len(noise_amplitudes) == len(scale_shapes) == len(reconstruction_rmse):
            raise ValueError("one generator, noise amplitude, shape and RMSE per scale are required")
        self.generators = list(generators)
        for generator in self.generators:
            generator.eval().requires_grad_(False)
        self.fixed_noise = fixed_noise
        self.noise_amplitudes = [float(a) for a in noise_amplitudes]
        self.scale_shapes = [(int(h), int(w)) for h, w in scale_shapes]
        self.training_shape = (int(training_shape[0]), int(training_shape[1]))
        self.intensity_center = float(intensity_center)
        self.intensity_half_range = float(intensity_half_range)
        #: RMSE of the reconstruction at each scale vs. the real pyramid level, in normalised [-1, 1] units.
        self.reconstruction_rmse = [float(r) for r in reconstruction_rmse]
        self.config = config
        self.seed = int(seed)

    @property
    def num_scales(self) -> int:
        return len(self.generators)

    @property
    def device(self) -> torch.device:
        return self.fixed_noise.device

    def check_slice_shape(self, shape: Sequence[int]) -> None:
        """Raise ValueError unless ``shape`` is the 2D shape of the training slice."""
        if tuple(int(s) for s in shape) != self.training_shape:
            raise ValueError(f"this SinGAN was trained on {self.training_shape} slices; got a slice of shape "
                             f"{tuple(shape)}. Crop/resample the volume to the training slice size first.")

    # intensity mapping ---------------------------------------------------------------------------------------------
    def _to_normalised(self, image2d: np.ndarray) -> torch.Tensor:
        array = np.asarray(image2d, dtype=np.float64)
        normalised = (array - self.intensity_center) / self.intensity_half_range
        return torch.as_tensor(normalised, dtype=torch.float32, device=self.device)[None, None]

    def _to_intensity(self, normalised: torch.Tensor) -> np.ndarray:
        at_training_shape = resize(normalised, self.training_shape)
        array = at_training_shape[:, 0].detach().cpu().numpy().astype(np.float64)
        return (array * self.intensity_half_range + self.intensity_center).astype(np.float32)

    # generation ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _run_from(self, start_scale: int, previous: torch.Tensor, noise_generator: torch.Generator | None,
                  stop_scale: int | None = None) -> torch.Tensor:
        """Run generators ``start_scale..stop_scale`` (default: the finest) starting from ``previous``.

        With ``noise_generator=None`` the reconstruction noise is used (z* at scale 0, zero at finer scales).
        """
        stop_scale = self.num_scales - 1 if stop_scale is None else stop_scale
        for scale in range(start_scale, stop_scale + 1):
            shape = self.scale_shapes[scale]
            previous = resize(previous, shape)
            if noise_generator is None:
                noise = self.fixed_noise if scale == 0 else torch.zeros_like(previous)
            else:
                noise = _noise(shape, noise_generator, self.device)
            previous = self.generators[scale](self.noise_amplitudes[scale] * noise + previous, previous)
        return previous

    def sample(self, n: int, seed: int) -> np.ndarray:
        """``n`` unconditional samples (n, H, W) generated from pure noise at the coarsest scale."""
        noise_generator = torch.Generator().manual_seed(int(seed))
        start = torch.zeros((1, 1, *self.scale_shapes[0]), device=self.device)
        samples = [self._to_intensity(self._run_from(0, start, noise_generator))[0] for _ in range(int(n))]
        return np.stack(samples) if samples else np.zeros((0, *self.training_shape), dtype=np.float32)

    def reconstruct(self, scale: int | None = None) -> np.ndarray:
        """Reconstruction of the training image from z* through generators ``0..scale`` (default: all), resized to
        the training shape (H, W): coarser scales give blurrier reconstructions."""
        scale = self.num_scales - 1 if scale is None else int(scale)
        if not 0 <= scale < self.num_scales:
            raise ValueError(f"scale must be in [0, {self.num_scales - 1}], got {scale}")
        start = torch.zeros((1, 1, *self.scale_shapes[0]), device=self.device)
        return self._to_intensity(self._run_from(0, start, None, scale))[0]

    def harmonize(self, image2d: np.ndarray, start_scale: int, seed: int) -> np.ndarray:
        """Harmonisation injection (SinGAN; GBA eq. 6): return the slice re-rendered by generators ``start_scale..N``.

        The slice (training shape, input intensity units) is downsampled to scale ``start_scale - 1`` and upsampled
        once to scale ``start_scale`` (as the reference harmonisation does), then generators ``start_scale`` to the
        finest run with their own noise amplitudes. ``start_scale`` is in ``[1, num_scales - 1]``: a smaller value
        uses more generators and blends more strongly (``num_scales - start_scale`` generators are used).
        """
        self.check_slice_shape(np.shape(image2d))
        if not 1 <= int(start_scale) < self.num_scales:
            raise ValueError(f"start_scale must be in [1, {self.num_scales - 1}], got {start_scale}")
        start_scale = int(start_scale)
        image = self._to_normalised(image2d)
        if not torch.isfinite(image).all():
            raise ValueError("harmonize() needs a finite image")
        finest = resize(image, self.scale_shapes[-1])
        coarse = resize(finest, self.scale_shapes[start_scale - 1])
        injected = resize(coarse, self.scale_shapes[start_scale])
        noise_generator = torch.Generator().manual_seed(int(seed))
        return self._to_intensity(self._run_from(start_scale, injected, noise_generator))[0]

    # persistence ---------------------------------------------------------------------------------------------------
    def _metadata(self) -> dict:
        return {
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "config": dataclasses.asdict(self.config),
            "seed": self.seed,
            "training_shape": list(self.training_shape),
            "scale_shapes": [list(s) for s in self.scale_shapes],
            "filters": [self.config.filters_at_scale(s) for s in range(self.num_scales)],
            "noise_amplitudes": self.noise_amplitudes,
            "reconstruction_rmse": self.reconstruction_rmse,
            "intensity_center": self.intensity_center,
            "intensity_half_range": self.intensity_half_range,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write one safetensors file atomically (:func:`synth.checkpoint.save_tensors`)."""
        tensors = {"fixed_noise": self.fixed_noise}
        for scale, generator in enumerate(self.generators):
            for name, value in generator.state_dict().items():
                tensors[f"generator.{scale}.{name}"] = value
        return save_tensors(path, tensors, {_METADATA_KEY: json.dumps(self._metadata())})

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
             expected_shape: Sequence[int] | None = None) -> "SinGAN":
        """Load a checkpoint written by :meth:`save`. Unusable files raise :class:`~synth.checkpoint.CheckpointError`;
        a SinGAN of another slice shape than ``expected_shape`` raises ValueError."""
        tensors, header = load_tensors(path, _METADATA_KEY)
        meta = json.loads(header[_METADATA_KEY])
        if meta.get("format_version") != CHECKPOINT_FORMAT_VERSION:
            raise CheckpointError(f"{path}: unsupported SinGAN checkpoint version {meta.get('format_version')}")
        config = SinGANConfig(**meta["config"])
        device = torch.device(device)
        generators = []
        for scale, filters in enumerate(meta["filters"]):
            prefix = f"generator.{scale}."
            generator = ResidualGenerator(int(filters), config)
            generator.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)},
                                      strict=True)
            generators.append(generator.to(device))
        model = cls(generators, tensors["fixed_noise"].to(device), meta["noise_amplitudes"],
                    [tuple(s) for s in meta["scale_shapes"]], tuple(meta["training_shape"]),
                    meta["intensity_center"], meta["intensity_half_range"], meta["reconstruction_rmse"],
                    config, meta["seed"])
        if expected_shape is not None:
            model.check_slice_shape(expected_shape)
        return model


def train_singan(image2d: np.ndarray, config: SinGANConfig = SinGANConfig(), seed: int = 0,
                 device: str | torch.device = "cpu", progress: bool = True) -> SinGAN:
    """Train a SinGAN on one 2D float image (e.g. a target-modality MR slice), coarse to fine.

    Weights are initialised from ``seed`` on the CPU (global RNG state is restored afterwards) and all noise comes from
    a CPU generator seeded with ``seed``; on CUDA, cuDNN kernels may still make runs differ slightly.
    """
    image = np.asarray(image2d, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"train_singan expects a 2D image, got shape {image.shape}")
    if not np.isfinite(image).all():
        raise ValueError("train_singan expects a finite image")
    low, high = float(image.min()), float(image.max())
    if high <= low:
        raise ValueError("train_singan expects a non-constant image")
    center, half_range = (high + low) / 2.0, (high - low) / 2.0
    device = torch.device(device)
    shapes = pyramid_shapes(image.shape, config)
    normalised = torch.as_tensor((image - center) / half_range, dtype=torch.float32)[None, None]
    finest = resize(normalised, shapes[-1])
    reals = [resize(finest, shape).to(device) for shape in shapes]
    noise_generator = torch.Generator().manual_seed(int(seed))
    fixed_noise = _noise(shapes[0], noise_generator, device)

    generators: list[ResidualGenerator] = []
    amplitudes: list[float] = []
    rmses: list[float] = []
    reconstruction = torch.zeros((1, 1, *shapes[0]), device=device)
    previous_nets: tuple[ResidualGenerator, PatchCritic] | None = None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for scale, (shape, real) in enumerate(zip(shapes, reals)):
            filters = config.filters_at_scale(scale)
            generator, critic = ResidualGenerator(filters, config), PatchCritic(filters, config)
            if previous_nets is not None and filters == config.filters_at_scale(scale - 1):
                generator.load_state_dict(previous_nets[0].state_dict())
                critic.load_state_dict(previous_nets[1].state_dict())
            generator.to(device)
            critic.to(device)
            if scale == 0:
                previous_reconstruction = torch.zeros_like(real)
                reconstruction_noise = fixed_noise
                amplitude = 1.0
            else:
                previous_reconstruction = resize(reconstruction, shape)
                reconstruction_noise = torch.zeros_like(real)
                rmse = torch.sqrt(F.mse_loss(previous_reconstruction, real)).item()
                amplitude = config.base_noise_amplitude * rmse
            _train_scale(scale, generator, critic, real, previous_reconstruction, reconstruction_noise, amplitude,
                         generators, amplitudes, shapes, config, noise_generator, device, progress)
            generator.eval().requires_grad_(False)
            with torch.no_grad():
                reconstruction = generator(amplitude * reconstruction_noise + previous_reconstruction,
                                           previous_reconstruction)
                rmses.append(torch.sqrt(F.mse_loss(reconstruction, real)).item())
            generators.append(generator)
            amplitudes.append(amplitude)
            previous_nets = (generator, critic)
    return SinGAN(generators, fixed_noise, amplitudes, shapes, image.shape, center, half_range, rmses, config, seed)


@torch.no_grad()
def _random_previous(generators: Sequence[ResidualGenerator], amplitudes: Sequence[float],
                     shapes: Sequence[tuple[int, int]], scale: int, noise_generator: torch.Generator,
                     device: torch.device) -> torch.Tensor:
    """up(x_{scale-1}) for a random sample through the frozen coarser generators (zeros at scale 0)."""
    previous = torch.zeros((1, 1, *shapes[0]), device=device)
    for level in range(scale):
        previous = resize(previous, shapes[level])
        noise = _noise(shapes[level], noise_generator, device)
        previous = generators[level](amplitudes[level] * noise + previous, previous)
    return resize(previous, shapes[scale])


def _train_scale(scale: int, generator: ResidualGenerator, critic: PatchCritic, real: torch.Tensor,
                 previous_reconstruction: torch.Tensor, reconstruction_noise: torch.Tensor, amplitude: float,
                 frozen_generators: Sequence[ResidualGenerator], frozen_amplitudes: Sequence[float],
                 shapes: Sequence[tuple[int, int]], config: SinGANConfig, noise_generator: torch.Generator,
                 device: torch.device, progress: bool) -> None:
    """One SinGAN scale: WGAN-GP critic steps, then generator steps (adversarial + 10 x reconstruction MSE)."""
    betas = (config.beta1, config.beta2)
    generator_optimizer = torch.optim.Adam(generator.parameters(), lr=config.learning_rate, betas=betas)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=config.learning_rate, betas=betas)
    milestone = [max(1, round(config.lr_decay_at_fraction * config.iterations_per_scale))]
    schedulers = [torch.optim.lr_scheduler.MultiStepLR(opt, milestone, gamma=config.lr_decay_factor)
                  for opt in (generator_optimizer, critic_optimizer)]
    shape = shapes[scale]
    reconstruction_input = amplitude * reconstruction_noise + previous_reconstruction
    iterations = tqdm(range(config.iterations_per_scale), desc=f"SinGAN scale {scale + 1}/{len(shapes)} {shape}",
                      disable=not progress, leave=False)
    for _ in iterations:
        critic.requires_grad_(True)
        for _ in range(config.critic_steps):
            previous = _random_previous(frozen_generators, frozen_amplitudes, shapes, scale, noise_generator, device)
            noisy_input = amplitude * _noise(shape, noise_generator, device) + previous
            with torch.no_grad():
                fake = generator(noisy_input, previous)
            critic_optimizer.zero_grad(set_to_none=True)
            critic_loss = (-critic(real).mean() + critic(fake).mean()
                           + _gradient_penalty(critic, real, fake, config.gradient_penalty_weight, noise_generator))
            critic_loss.backward()
            critic_optimizer.step()
        critic.requires_grad_(False)
        for _ in range(config.generator_steps):
            generator_optimizer.zero_grad(set_to_none=True)
            fake = generator(noisy_input, previous)  # regenerated after every G step (avoids the in-place error)
            reconstruction = generator(reconstruction_input, previous_reconstruction)
            generator_loss = (-critic(fake).mean()
                              + config.reconstruction_weight * F.mse_loss(reconstruction, real))
            generator_loss.backward()
            generator_optimizer.step()
        for scheduler in schedulers:
            scheduler.step()
        if progress:
            iterations.set_postfix(critic=f"{critic_loss.item():.3f}", generator=f"{generator_loss.item():.3f}",
                                   refresh=False)
