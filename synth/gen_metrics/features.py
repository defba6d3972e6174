"""A small 2D CNN feature extractor for FID on medical slices, trained here on REAL slices only.

The Inception V3 network of the FID (Heusel et al. 2017) is trained on natural photographs and cannot be downloaded
here; like Tronchin et al. ("Evaluating GANs in Medical Imaging", DGM4MICCAI 2021), who replace it with a CNN trained
on the medical data, the features come from a network trained on the real slices themselves.

Network (:class:`FeatureNetwork`): 4 blocks of [3x3 conv, LeakyReLU(0.2), 3x3 conv with stride 2, LeakyReLU(0.2)]
with ``width, 2 width, 4 width, 8 width`` channels, then global average pooling -> ``D = 8 * width`` features (128
by default). No normalisation layers, so global brightness and contrast stay visible to the features; inputs are
standardised with the per-channel mean / std of the real training slices, stored with the weights. Any H, W >= 1.

Proxy task (needs no labels beyond the segmentations the data already has):

* rotation prediction (Gidaris et al. 2018): every training slice is shown at 0, 90, 180 and 270 degrees and a
  linear head predicts which (4-way cross-entropy); it needs global structure and orientation, and no labels;
* when ``labels`` are given, for every foreground class k = 1..K of the slice's segmentation, a linear head predicts
  whether k is present (BCE) and the square root of its area fraction (BCE on a soft target; the root spreads small
  lesions), both invariant to the rotation.

Adam (lr 1e-3), random batches; deterministic for a seed on the CPU (weights from the seeded torch RNG with the
global state restored, batches from ``numpy.random.default_rng(seed)``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from synth.checkpoint import CheckpointError, load_tensors, save_tensors

FORMAT_KEY, FORMAT_VALUE = "nnunet_gen_format", "gen-metrics-features-1"
ROTATIONS = 4


class FeatureNetwork(nn.Module):
    """4 conv blocks -> global average pool -> ``8 * width`` features, plus the proxy-task heads."""

    def __init__(self, in_channels: int, width: int = 16, label_classes: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for block in range(4):
            out = width * 2 ** block
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.LeakyReLU(0.2),
                       nn.Conv2d(out, out, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            channels = out
        self.trunk = nn.Sequential(*layers)
        self.register_buffer("mean", torch.zeros(in_channels))
        self.register_buffer("std", torch.ones(in_channels))
        self.rotation_head = nn.Linear(channels, ROTATIONS)
        self.label_head = nn.Linear(channels, 2 * label_classes) if label_classes else None
        self.in_channels, self.width, self.label_classes, self.dim = in_channels, width, label_classes, channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in the data's intensity units -> (B, D) features."""
        standardised = (images - self.mean[:, None, None]) / self.std[:, None, None]
        return self.trunk(standardised).mean(dim=(2, 3))


def _images(images: np.ndarray, in_channels: int | None = None) -> np.ndarray:
    """Validated float32 (N, C, H, W) (an (N, H, W) array gets C = 1)."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a non-empty (N, C, H, W) or (N, H, W) array, got shape {images.shape}")
    if in_channels is not None and images.shape[1] != in_channels:
        raise ValueError(f"images have {images.shape[1]} channels, the extractor expects {in_channels}")
    if not np.isfinite(images).all():
        raise ValueError("images have non-finite values")
    return images.astype(np.float32)


class FeatureExtractor:
    """A trained :class:`FeatureNetwork`; :meth:`features` gives the D-dim embedding used by the FID."""

    def __init__(self, network: FeatureNetwork, seed: int | None = None,
                 history: list[float] | None = None) -> None:
        self.network = network.eval().requires_grad_(False)
        self.seed = seed
        self.history = history or []

    @property
    def dim(self) -> int:
        return self.network.dim

    @property
    def device(self) -> torch.device:
        return self.network.mean.device

    @torch.no_grad()
    def features(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, C, H, W) or (N, H, W) images -> (N, D) float64 features."""
        images = _images(images, self.network.in_channels)
        chunks = [self.network(torch.from_numpy(images[start:start + batch_size]).to(self.device))
                  for start in range(0, len(images), int(batch_size))]
        return torch.cat(chunks).double().cpu().numpy()

    def save(self, path: str | os.PathLike) -> Path:
        """One safetensors file (weights, normalisation, loss history; config and seed in the metadata)."""
        tensors = {f"network.{name}": value for name, value in self.network.state_dict().items()}
        tensors["history"] = torch.tensor(self.history, dtype=torch.float64)
        config = {"in_channels": self.network.in_channels, "width": self.network.width,
                  "label_classes": self.network.label_classes}
        return save_tensors(path, tensors, {FORMAT_KEY: FORMAT_VALUE, "config": json.dumps(config),
                                            "seed": json.dumps(self.seed)})

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> FeatureExtractor:
        """Load a :meth:`save` file; any other or damaged file raises :class:`CheckpointError`."""
        tensors, metadata = load_tensors(path, FORMAT_KEY, FORMAT_VALUE)
        try:
            network = FeatureNetwork(**json.loads(metadata["config"]))
            network.load_state_dict({name[len("network."):]: value for name, value in tensors.items()
                                     if name.startswith("network.")}, strict=True)
            seed, history = json.loads(metadata["seed"]), tensors["history"].tolist()
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            reason = " ".join(str(error).split())[:300] or type(error).__name__
            raise CheckpointError(f"{path}: feature extractor checkpoint does not match its architecture "
                                  f"({reason})") from None
        return cls(network.to(device), seed, history)


def _label_targets(labels: np.ndarray, label_classes: int) -> np.ndarray:
    """(N, 2K) float32: presence of classes 1..K, then the square roots of their area fractions."""
    flat = labels.reshape(len(labels), -1)
    fractions = np.stack([(flat == k).mean(axis=1) for k in range(1, label_classes + 1)], axis=1)
    return np.concatenate([fractions > 0, np.sqrt(fractions)], axis=1).astype(np.float32)


def train_feature_extractor(images: np.ndarray, labels: np.ndarray | None = None, seed: int = 0,
                            iterations: int = 500, device: str | torch.device = "cpu", width: int = 16,
                            batch_size: int = 32, lr: float = 1e-3) -> FeatureExtractor:
    """Train :class:`FeatureNetwork` on real (N, C, H, W) slices (rotation prediction, plus presence / area
    fraction of every foreground class of the (N, H, W) integer ``labels`` when given); see the module docstring."""
    images = _images(images)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (images.shape[0], *images.shape[2:]):
            raise ValueError(f"labels must have shape {(images.shape[0], *images.shape[2:])}, got {labels.shape}")
        if not np.isfinite(labels).all() or labels.min() < 0 or not np.array_equal(labels, np.round(labels)):
            raise ValueError("labels must be non-negative integers")
    if iterations < 1 or batch_size < 1 or width < 1:
        raise ValueError(f"iterations, batch_size and width must be >= 1, got {iterations}, {batch_size}, {width}")
    label_classes = int(labels.max()) if labels is not None else 0
    targets = torch.from_numpy(_label_targets(labels, label_classes)) if label_classes else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        network = FeatureNetwork(images.shape[1], width, label_classes)
    std = images.std(axis=(0, 2, 3))
    network.mean.copy_(torch.from_numpy(images.mean(axis=(0, 2, 3))))
    network.std.copy_(torch.from_numpy(np.where(std > 0, std, 1.0)))
    network.to(device).train()
    optimiser = torch.optim.Adam(network.parameters(), lr=lr)
    rng, data, history = np.random.default_rng(seed), torch.from_numpy(images), []
    for _ in range(int(iterations)):
        index = torch.from_numpy(rng.choice(len(images), size=min(batch_size, len(images)), replace=False))
        batch, loss = data[index].to(device), torch.zeros((), device=device)
        for k in range(ROTATIONS):
            features = network(torch.rot90(batch, k, dims=(2, 3)))
            rotation = torch.full((len(batch),), k, dtype=torch.long, device=device)
            loss = loss + F.cross_entropy(network.rotation_head(features), rotation) / ROTATIONS
            if targets is not None:
                predicted = network.label_head(features)
                loss = loss + F.binary_cross_entropy_with_logits(predicted, targets[index].to(device)) / ROTATIONS
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        history.append(float(loss.detach()))
    return FeatureExtractor(network, int(seed), history)
