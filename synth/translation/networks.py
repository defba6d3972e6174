"""Networks of CycleGAN (Zhu et al. 2017) and CUT (Park et al. 2020): the ResNet generator, the PatchGAN
discriminator and CUT's patch-sampling MLP projection heads. Single-channel 2D images in [-1, 1]."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def init_weights(module: nn.Module, scheme: str = "normal", gain: float = 0.02) -> nn.Module:
    """Initialise every conv / linear weight with N(0, gain) ("normal", CycleGAN) or Xavier-normal with ``gain``
    ("xavier", CUT); biases to 0. Returns ``module``."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if scheme == "normal":
                nn.init.normal_(layer.weight, 0.0, gain)
            elif scheme == "xavier":
                nn.init.xavier_normal_(layer.weight, gain=gain)
            else:
                raise ValueError(f"unknown init scheme {scheme!r}")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module


def _norm(channels: int) -> nn.InstanceNorm2d:
    """Instance norm without affine parameters or running statistics (the references' "instance" norm)."""
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class ResidualBlock(nn.Module):
    """x + (reflect-pad, 3x3 conv, IN, ReLU, reflect-pad, 3x3 conv, IN)(x)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(channels),
                                  nn.ReLU(True), nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3),
                                  _norm(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CycleGAN's ResNet generator as one flat layer sequence (so CUT can tap encoder layers by index).

    Layers: [0] reflect-pad 3, [1] 7x7 conv, [2] IN, [3] ReLU; per downsampling: 3x3 stride-2 conv, IN, ReLU
    (channels doubling); one layer per residual block; then per upsampling a transposed 3x3 stride-2 conv, IN, ReLU;
    reflect-pad 3, 7x7 conv, tanh. Inputs need sides divisible by ``2**downsamplings``.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, features: int = 64, residual_blocks: int = 9,
                 downsamplings: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, features, 7), _norm(features),
                                   nn.ReLU(True)]
        channels = [in_channels, features, features, features]
        width = features
        for _ in range(downsamplings):
            layers += [nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), _norm(2 * width), nn.ReLU(True)]
            width *= 2
            channels += [width] * 3
        layers += [ResidualBlock(width) for _ in range(residual_blocks)]
        channels += [width] * residual_blocks
        #: Output channels of each encoder layer (the layers CUT may tap).
        self.encoder_channels = channels
        for _ in range(downsamplings):
            layers += [nn.ConvTranspose2d(width, width // 2, 3, stride=2, padding=1, output_padding=1),
                       _norm(width // 2), nn.ReLU(True)]
            width //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def encode(self, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Outputs of the encoder layers ``layers`` (indices into the sequence, see class docstring), in that order;
        only the layers up to the deepest requested one are run."""
        if not layers or max(layers) >= len(self.encoder_channels) or min(layers) < 0:
            raise ValueError(f"encoder layers must be in [0, {len(self.encoder_channels) - 1}], got {list(layers)}")
        outputs: dict[int, torch.Tensor] = {}
        for index, layer in enumerate(self.model[:max(layers) + 1]):
            x = layer(x)
            if index in layers:
                outputs[index] = x
        return [outputs[index] for index in layers]


class PatchDiscriminator(nn.Module):
    """PatchGAN: a 4x4 stride-2 conv + LeakyReLU 0.2, ``n_layers - 1`` more stride-2 convs with IN (filters doubling,
    at most 8x), one stride-1 conv with IN, and a stride-1 conv to one score per patch (no activation: least-squares
    GAN). ``n_layers`` 3 judges 70 x 70 patches (:func:`receptive_field`)."""

    def __init__(self, in_channels: int = 1, features: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, features, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        width = features
        for index in range(1, n_layers + 1):
            out = features * min(2 ** index, 8)
            stride = 2 if index < n_layers else 1
            layers += [nn.Conv2d(width, out, 4, stride=stride, padding=1), _norm(out), nn.LeakyReLU(0.2, True)]
            width = out
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def receptive_field(module: nn.Module) -> int:
    """Receptive field in input pixels of one output of a plain stack of convolutions (e.g. the PatchGAN)."""
    field, jump = 1, 1
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            field += (layer.kernel_size[0] - 1) * layer.dilation[0] * jump
            jump *= layer.stride[0]
    return field


class PatchSampleMLP(nn.Module):
    """CUT's projection heads H_l: per tapped encoder layer a 2-layer MLP (Linear, ReLU, Linear) applied to the
    features at sampled spatial locations, L2-normalised. Query and key features use the same locations."""

    def __init__(self, in_channels: Sequence[int], features: int = 256) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Sequential(nn.Linear(c, features), nn.ReLU(), nn.Linear(features, features))
                                   for c in in_channels)

    def forward(self, feature_maps: Sequence[torch.Tensor], patches: int,
                locations: Sequence[torch.Tensor] | None = None,
                generator: torch.Generator | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(projections (B, P, F) per layer, the flat locations used). Without ``locations``, ``min(patches, H*W)``
        distinct locations per layer are drawn with ``generator`` (the same for every image of the batch)."""
        projections, used = [], []
        for index, (feature, head) in enumerate(zip(feature_maps, self.heads)):
            flat = feature.flatten(2).transpose(1, 2)  # (B, H*W, C)
            if locations is None:
                chosen = torch.randperm(flat.shape[1], generator=generator)[:patches].to(flat.device)
            else:
                chosen = locations[index]
            projections.append(nn.functional.normalize(head(flat[:, chosen]), dim=-1))
            used.append(chosen)
        return projections, used
