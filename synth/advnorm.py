"""Adversarial normalisation of Delisle et al., "Adversarial Normalization for Multi Domain Image Segmentation",
ISBI 2020 (arXiv 1912.00993): the networks, the losses and the normalisation metric, on torch tensors.

A normaliser G maps an image x to a normalised image G(x) in image space; the segmenter S (nnU-Net's network) segments
G(x). A discriminator D classifies images into K + 1 classes: the K source sites for raw images x and an extra
"generated" class (index K) for normalised images G(x). Eq. (1) of the paper:
``min_{G,S} max_D  L_seg(S(G(x)), y) - lambda * [CE(D(x), z) + CE(D(G(x)), K)]``: D learns to tell the sites and the
generated images apart, G and S minimise the segmentation loss while G maximises D's loss on its outputs
(the minimax form of Eq. (1), not the non-saturating GAN variant). G is first pre-trained with an MSE
reconstruction loss so that G(x) stays close to x.

Choices (the paper gives no architecture details beyond "3-D U-Net" and "3-D ResNet" discriminator):
* :class:`NormaliserUNet`: a small 3D U-Net with a residual output ``x + f(x)`` whose last convolution starts at zero,
  so an untrained G is exactly the identity (the paper's MSE warm-up then starts at its optimum and keeps G near it;
  a random G would add noise that blurs the histograms and lowers the JSD by itself); no normalisation layers, so
  G is a fixed function of its receptive field and whole-volume, tiled and patch-wise application agree away from
  borders. Down-sampling by stride-2 convolutions, up-sampling by trilinear interpolation to the skip's size, so
  any input size works.
* :class:`SiteDiscriminator`: a strided 3D CNN (instance norm, LeakyReLU, global average pooling), not a ResNet-18.
* Kaiming initialisation for G and D, as in the paper, except G's zero output layer.
* :func:`jensen_shannon_divergence` is base 2, in [0, 1]; the paper's Table 2 values (3.5) use an unstated
  definition and are not comparable.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NEGATIVE_SLOPE = 0.01


def _kaiming(module: nn.Module) -> None:
    """Kaiming-normal weights and zero biases for every convolution and linear layer (the paper's initialisation)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=NEGATIVE_SLOPE)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _block(in_channels: int, out_channels: int, stride: int = 1, norm: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv3d(in_channels, out_channels, 3, stride, 1)]
    if norm:
        layers.append(nn.InstanceNorm3d(out_channels, affine=True))
    return nn.Sequential(*layers, nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True))


class NormaliserUNet(nn.Module):
    """G: 3D U-Net (C -> C channels, same size), ``G(x) = x + f(x)`` (module docstring)."""

    def __init__(self, channels: int, features: Sequence[int] = (8, 16, 32)):
        super().__init__()
        self.encoders = nn.ModuleList()
        previous = channels
        for level, f in enumerate(features):
            self.encoders.append(nn.Sequential(_block(previous, f, stride=1 if level == 0 else 2), _block(f, f)))
            previous = f
        self.decoders = nn.ModuleList(
            nn.Sequential(_block(features[level + 1] + features[level], features[level]),
                          _block(features[level], features[level]))
            for level in reversed(range(len(features) - 1)))
        self.output = nn.Conv3d(features[0], channels, 1)
        _kaiming(self)
        nn.init.zeros_(self.output.weight)  # G starts as the identity (module docstring)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for encoder in self.encoders:
            h = encoder(h)
            skips.append(h)
        for decoder, skip in zip(self.decoders, reversed(skips[:-1])):
            h = F.interpolate(h, size=skip.shape[2:], mode="trilinear", align_corners=False)
            h = decoder(torch.cat([h, skip], 1))
        return x + self.output(h)


class SiteDiscriminator(nn.Module):
    """D: image -> K + 1 logits, classes 0..K-1 = the source sites, class K = "generated" (:attr:`fake_class`)."""

    def __init__(self, num_sites: int, channels: int, features: Sequence[int] = (16, 32, 64)):
        super().__init__()
        if num_sites < 2:
            raise ValueError(f"adversarial normalisation needs at least 2 sites, got {num_sites}")
        self.fake_class = num_sites
        blocks, previous = [], channels
        for level, f in enumerate(features):
            blocks.append(_block(previous, f, stride=1 if level == 0 else 2, norm=True))
            previous = f
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(previous, num_sites + 1)
        _kaiming(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3, 4)))


class ComposedNetwork(nn.Module):
    """S(G(x)): the module nnU-Net trains, saves and predicts with; ``decoder`` is the segmenter's, so nnU-Net's
    ``network.decoder.deep_supervision`` switch reaches S."""

    def __init__(self, normaliser: nn.Module, segmenter: nn.Module):
        super().__init__()
        self.normaliser = normaliser
        self.segmenter = segmenter

    @property
    def decoder(self) -> nn.Module:
        return self.segmenter.decoder

    def forward(self, x: torch.Tensor):
        return self.segmenter(self.normaliser(x))


def reconstruction_loss(normalised: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """G's warm-up loss: MSE between G(x) and x."""
    return F.mse_loss(normalised, image)


def discriminator_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eqs. (3)-(4): -log p_D(label | image), averaged over the batch (label = site, or K for generated images)."""
    return F.cross_entropy(logits.float(), labels)


def generator_segmenter_loss(segmentation_loss: torch.Tensor, fake_loss: torch.Tensor,
                             adversarial_weight: float) -> torch.Tensor:
    """The G/S side of Eq. (1): ``L_seg - lambda * CE(D(G(x)), K)`` (the real-image term does not depend on G, S)."""
    return segmentation_loss - adversarial_weight * fake_loss


def jensen_shannon_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """JSD of two histograms (normalised here), base 2, in [0, 1]; 0 log 0 = 0."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.sum() <= 0 or q.sum() <= 0 or (p < 0).any() or (q < 0).any():
        raise ValueError("histograms must have the same shape, non-negative entries and a positive sum")
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nonzero = a > 0
        return float(np.sum(a[nonzero] * np.log2(a[nonzero] / m[nonzero])))

    return float(np.clip((kl(p) + kl(q)) / 2, 0.0, 1.0))


def site_histograms(volumes_by_site: Mapping[str, Sequence[np.ndarray]], bins: int,
                    value_range: tuple[float, float]) -> dict[str, np.ndarray]:
    """Per site, the normalised histogram of all its voxels pooled (values outside ``value_range`` go to the edge
    bins, so every voxel counts)."""
    low, high = value_range
    histograms = {}
    for site, volumes in volumes_by_site.items():
        values = np.clip(np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in volumes]), low, high)
        counts, _ = np.histogram(values, bins=bins, range=(low, high))
        histograms[site] = counts / counts.sum()
    return histograms


def mean_pairwise_jsd(histograms: Mapping[str, np.ndarray]) -> tuple[float, dict[str, float]]:
    """Mean JSD over all site pairs, and the JSD of each pair (``"A vs B"``)."""
    sites = sorted(histograms)
    pairs = {f"{a} vs {b}": jensen_shannon_divergence(histograms[a], histograms[b])
             for i, a in enumerate(sites) for b in sites[i + 1:]}
    if not pairs:
        raise ValueError("need at least 2 sites for a pairwise JSD")
    return float(np.mean(list(pairs.values()))), pairs
