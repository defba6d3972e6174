"""Global Intensity Non-linear augmentation (GIN) of Ouyang et al., "Causality-inspired single-source domain
generalization for medical image segmentation", IEEE TMI 2022, on CPU torch tensors.

GIN is a shallow convolutional network with random weights that changes an image's appearance (intensities and local
texture) but not its shapes: conv layers whose kernel size is drawn per layer from {1, 3}, 2 intermediate channels,
LeakyReLU (slope 0.01) after every layer but the last, weights and biases ~ N(0, 1) drawn afresh for every
application, no gradient. Its output is mixed with the input, ``a * gin(x) + (1 - a) * x`` with ``a ~ U(0, 1)``, and
rescaled to the input's Frobenius norm (over all channels together). The defaults (4 layers, kernels {1, 3}, 2
intermediate channels, Frobenius output norm) are those of the paper's reference code
(cheng-01037/Causality-Medical-Image-Domain-Generalization: ``configs_exp.py``, ``models/imagefilter.py``).

Choices and deviations:
* 3D images get 3D convolutions with k x k x k kernels (as the reference's ``models/imagefilter3d.py``), 2D images 2D
  ones; zero 'same' padding as the reference.
* The network maps the image's C channels (nnU-Net's modalities) to C channels; the reference feeds a grayscale slice
  replicated to 3 channels for its ImageNet encoder and outputs 3 channels.
* One draw is a value (:class:`GlobalIntensityNonlinear`): kernel sizes, ``a`` and a seed from which a
  ``torch.Generator`` draws weights and biases, so an application can be repeated;
  :class:`RandomGlobalIntensityNonlinear` samples draws.
* Only GIN: the paper's interventional pseudo-correlation augmentation (IPA) and its consistency loss are not
  implemented.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: LeakyReLU slope between layers (the reference's ``F.leaky_relu`` default)
NEGATIVE_SLOPE = 0.01


def _check_kernel_sizes(kernel_sizes: tuple[int, ...]) -> None:
    if not kernel_sizes or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
        raise ValueError(f"kernel sizes must be odd and >= 1 (at least one), got {list(kernel_sizes)}")


@dataclass(frozen=True)
class GlobalIntensityNonlinear:
    """One GIN draw; calling it applies it (module docstring).

    Parameters:
        kernel_sizes: odd kernel size of each conv layer (the layer count is their number).
        alpha: mixing weight ``a`` in [0, 1] of the network output (the input gets ``1 - a``).
        seed: seed of the ``torch.Generator`` that draws the weights and biases ~ N(0, 1).
        interm_channels: channels between layers.
    """

    kernel_sizes: tuple[int, ...]
    alpha: float
    seed: int
    interm_channels: int = 2

    def __post_init__(self):
        _check_kernel_sizes(self.kernel_sizes)
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.interm_channels < 1:
            raise ValueError(f"interm_channels must be >= 1, got {self.interm_channels}")

    @property
    def n_layers(self) -> int:
        return len(self.kernel_sizes)

    def layers(self, channels: int, spatial_dims: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(weight, bias) of each layer for a ``channels``-channel image with ``spatial_dims`` (2 or 3) axes."""
        generator = torch.Generator().manual_seed(self.seed)
        widths = [channels] + [self.interm_channels] * (self.n_layers - 1) + [channels]
        return [(torch.randn(c_out, c_in, *(k,) * spatial_dims, generator=generator),
                 torch.randn(c_out, generator=generator))
                for c_in, c_out, k in zip(widths[:-1], widths[1:], self.kernel_sizes)]

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """GIN of a (C, X, Y, Z) or (C, X, Y) float tensor: same shape, dtype and Frobenius norm."""
        if image.ndim not in (3, 4) or not image.is_floating_point():
            raise ValueError(f"expected a float (C, X, Y[, Z]) tensor, got {image.dtype} {tuple(image.shape)}")
        conv = F.conv3d if image.ndim == 4 else F.conv2d
        x = image[None].to(torch.promote_types(image.dtype, torch.float32))
        layers = self.layers(image.shape[0], image.ndim - 1)
        out = x
        for i, (weight, bias) in enumerate(layers):
            out = conv(out, weight.to(x.dtype), bias.to(x.dtype), padding=weight.shape[-1] // 2)
            if i < len(layers) - 1:
                out = F.leaky_relu(out, NEGATIVE_SLOPE)
        mixed = self.alpha * out + (1.0 - self.alpha) * x
        mixed_norm = torch.linalg.vector_norm(mixed)
        scale = torch.linalg.vector_norm(x) / mixed_norm if mixed_norm > 0 else 0.0
        return (mixed * scale)[0].to(image.dtype)


@dataclass(frozen=True)
class RandomGlobalIntensityNonlinear:
    """Draws :class:`GlobalIntensityNonlinear`: each layer's kernel size uniformly from ``kernel_pool``, ``a ~ U(0, 1)``
    and a weight seed (defaults: the paper's, module docstring)."""

    n_layers: int = 4
    kernel_pool: tuple[int, ...] = (1, 3)
    interm_channels: int = 2

    def __post_init__(self):
        if self.n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {self.n_layers}")
        _check_kernel_sizes(self.kernel_pool)

    def sample(self, rng: np.random.RandomState | None = None) -> GlobalIntensityNonlinear:
        """One draw from ``rng``; None = numpy's global RNG (what nnU-Net's transforms draw from)."""
        rng = np.random if rng is None else rng
        kernels = tuple(int(self.kernel_pool[i]) for i in rng.randint(len(self.kernel_pool), size=self.n_layers))
        return GlobalIntensityNonlinear(kernels, float(rng.uniform()), int(rng.randint(2 ** 31 - 1)),
                                        self.interm_channels)
