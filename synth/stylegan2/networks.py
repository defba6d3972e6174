"""StyleGAN2 networks (Karras et al. 2020, config E/F: skip generator, residual discriminator) whose output is the
joint tensor of Son et al.: C image channels and K segmentation probabilities, judged together by the discriminator.

Every layer uses the equalized learning rate (weights drawn from N(0, 1), scaled at run time by He's constant);
activations are LeakyReLU(0.2) x sqrt(2). Resampling uses the [1, 3, 3, 1] FIR filter: the generator upsamples with
it before its 3x3 modulated convolution (StyleGAN2 uses a transposed convolution followed by the filter; both are the
same linear operator up to the border handling and a flip of the learnt kernel), the discriminator filters before
its stride-2 convolutions, as StyleGAN2.

Output choice: image channels are linear (no tanh), as StyleGAN2's ToRGB; the real images are in [-1, 1]. The
segmentation is a 1x1 convolution of all C + K output maps followed by a softmax over its K logits (Son et al.'s
"1x1 convolution and softmax layer" on the 8-channel output).
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

NOISE_MODES: tuple[str, ...] = ("random", "const", "none")
#: Decay of the tracked average w (the truncation centre), StyleGAN2's dlatent_avg_beta.
W_AVG_BETA = 0.995


def leaky_relu(x: torch.Tensor) -> torch.Tensor:
    """LeakyReLU(0.2) with gain sqrt(2), which keeps the activations' second moment (StyleGAN2's fused_lrelu)."""
    return F.leaky_relu(x, 0.2) * math.sqrt(2.0)


def fir_kernel() -> torch.Tensor:
    """The separable [1, 3, 3, 1] low-pass filter (4 x 4, sum 1) used for anti-aliased resampling."""
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    kernel = taps[:, None] * taps[None, :]
    return kernel / kernel.sum()


def upsample_2x(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, 2H, 2W): zero insertion + the FIR filter x 4 (keeps the mean), per channel."""
    channels = x.shape[1]
    weight = (kernel * 4).expand(channels, 1, *kernel.shape)
    return F.conv_transpose2d(x, weight, stride=2, padding=1, groups=channels)


def blur(x: torch.Tensor, kernel: torch.Tensor, padding: tuple[int, int]) -> torch.Tensor:
    """The FIR filter applied per channel after zero-padding (before, after) on both axes."""
    channels = x.shape[1]
    x = F.pad(x, (padding[0], padding[1], padding[0], padding[1]))
    return F.conv2d(x, kernel.expand(channels, 1, *kernel.shape), groups=channels)


class EqualizedLinear(nn.Module):
    """Linear layer with the equalized learning rate: weight ~ N(0, 1) / lr_multiplier stored, multiplied by
    ``lr_multiplier / sqrt(in_features)`` at run time (bias by ``lr_multiplier``), so Adam's steps are equal for all
    layers and ``lr_multiplier`` < 1 slows a layer down (the mapping network's 0.01)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bias_init: float = 0.0,
                 lr_multiplier: float = 1.0, activation: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), bias_init / lr_multiplier)) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias * self.bias_gain
        out = F.linear(x, self.weight * self.weight_gain, bias)
        return leaky_relu(out) if self.activation else out


class EqualizedConv2d(nn.Module):
    """Square convolution with the equalized learning rate (run-time gain ``1 / sqrt(in * k * k)``), 'same' padding,
    or FIR filter + stride 2 with ``down``; optional bias and LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: bool = False, down: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size ** 2)
        self.activation = activation
        self.down = down
        if down:
            self.register_buffer("kernel", fir_kernel(), persistent=False)
            pad = 2 + kernel_size - 1  # filter taps - factor + conv taps - 1: output exactly half the input
            self.blur_padding = ((pad + 1) // 2, pad // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight * self.weight_gain
        if self.down:
            out = F.conv2d(blur(x, self.kernel, self.blur_padding), weight, self.bias, stride=2)
        else:
            out = F.conv2d(x, weight, self.bias, padding=self.weight.shape[-1] // 2)
        return leaky_relu(out) if self.activation else out


class MappingNetwork(nn.Module):
    """z -> w: pixel norm (z / rms(z)) then ``layers`` equalized linear layers with LeakyReLU, lr multiplier 0.01."""

    def __init__(self, latent_dim: int, style_dim: int, layers: int = 8, lr_multiplier: float = 0.01) -> None:
        super().__init__()
        widths = [latent_dim] + [style_dim] * layers
        self.layers = nn.Sequential(*(EqualizedLinear(a, b, lr_multiplier=lr_multiplier, activation=True)
                                      for a, b in itertools.pairwise(widths)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z * torch.rsqrt(z.square().mean(1, keepdim=True) + 1e-8))


class ModulatedConv2d(nn.Module):
    """StyleGAN2's weight (de)modulation (paper eq. 1-3): the style s = A(w) (an affine layer, bias 1) scales the
    input channels of the weight, w'_ijk = s_i w_ijk; demodulation divides each output channel by
    sqrt(sum_ik w'_ijk^2 + eps), replacing AdaIN's instance normalisation. Each sample has its own weights, applied in
    one grouped convolution. ``upsample`` doubles the resolution first (FIR filter)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size ** 2)
        self.affine = EqualizedLinear(style_dim, in_channels, bias_init=1.0)
        self.demodulate = demodulate
        self.upsample = upsample
        if upsample:
            self.register_buffer("kernel", fir_kernel(), persistent=False)

    def modulated_weight(self, w: torch.Tensor) -> torch.Tensor:
        """(B, out, in, k, k) weights for the styles of the (B, style_dim) latents ``w``."""
        style = self.affine(w)
        weight = self.weight[None] * self.weight_gain * style[:, None, :, None, None]
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.square().sum((2, 3, 4), keepdim=True) + 1e-8)
        return weight

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = upsample_2x(x, self.kernel)
        batch, _, height, width = x.shape
        weight = self.modulated_weight(w)
        out = F.conv2d(x.reshape(1, -1, height, width), weight.flatten(0, 1), padding=weight.shape[-1] // 2,
                       groups=batch)
        return out.reshape(batch, -1, height, width)


class NoiseInjection(nn.Module):
    """Adds per-pixel Gaussian noise times a learnt per-layer strength (initialised to 0). ``noise_mode``: "random"
    (fresh noise), "const" (a fixed noise map drawn at construction, saved with the weights) or "none"."""

    def __init__(self, resolution: int) -> None:
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(()))
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))

    def forward(self, x: torch.Tensor, noise_mode: str = "random", noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            if noise_mode == "none":
                return x
            noise = self.noise_const if noise_mode == "const" else torch.randn_like(x[:, :1])
        return x + self.strength * noise


class StyledConv(nn.Module):
    """Modulated 3x3 convolution (optionally upsampling), noise, bias and LeakyReLU: one layer of the synthesis
    network, controlled by one w."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, resolution: int,
                 upsample: bool = False) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection(resolution)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.resolution = resolution

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random",
                noise: torch.Tensor | None = None) -> torch.Tensor:
        x = self.noise(self.conv(x, w), noise_mode, noise)
        return leaky_relu(x + self.bias[None, :, None, None])


class ToOutput(nn.Module):
    """The skip architecture's ToRGB: a modulated, not demodulated 1x1 convolution to the C + K output maps, plus
    bias; the generator sums these over resolutions (upsampled)."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.conv(x, w) + self.bias[None, :, None, None]


class Generator(nn.Module):
    """Mapping network + synthesis network from a learnt 4 x 4 constant to the joint (B, C + K, R, R) output:
    channels [0, C) the images (linear), [C, C + K) the segmentation probabilities (softmax, sum 1 per pixel).

    The synthesis network has ``num_ws`` w inputs: one per styled convolution and one for the last output layer
    (each resolution's output layer shares its w with the next resolution's first convolution, as StyleGAN2).
    ``w_avg`` is the running mean of w during training, the default truncation centre.
    """

    def __init__(self, resolution: int, image_channels: int, num_classes: int, latent_dim: int = 512,
                 style_dim: int = 512, mapping_layers: int = 8, channel_base: int = 32768,
                 channel_max: int = 512) -> None:
        super().__init__()
        self.resolution, self.image_channels, self.num_classes = resolution, image_channels, num_classes
        self.latent_dim = latent_dim
        out_channels = image_channels + num_classes

        def channels(res: int) -> int:
            return min(channel_base // res, channel_max)

        self.mapping = MappingNetwork(latent_dim, style_dim, mapping_layers)
        self.constant = nn.Parameter(torch.randn(1, channels(4), 4, 4))
        self.convs = nn.ModuleList([StyledConv(channels(4), channels(4), style_dim, 4)])
        self.to_outputs = nn.ModuleList([ToOutput(channels(4), out_channels, style_dim)])
        for log2 in range(3, int(math.log2(resolution)) + 1):
            res = 2 ** log2
            self.convs.extend([StyledConv(channels(res // 2), channels(res), style_dim, res, upsample=True),
                               StyledConv(channels(res), channels(res), style_dim, res)])
            self.to_outputs.append(ToOutput(channels(res), out_channels, style_dim))
        self.segmentation_head = EqualizedConv2d(out_channels, num_classes, 1)
        self.num_ws = len(self.convs) + 1
        self.register_buffer("kernel", fir_kernel(), persistent=False)
        self.register_buffer("w_avg", torch.zeros(style_dim))

    @property
    def noise_resolutions(self) -> list[int]:
        """Side of the noise map of each styled convolution, in order (for explicit ``noise`` lists)."""
        return [conv.resolution for conv in self.convs]

    @torch.no_grad()
    def update_w_avg(self, w: torch.Tensor) -> None:
        """Move the truncation centre towards the mean of a batch of w (decay ``W_AVG_BETA``)."""
        self.w_avg.copy_(w.detach().mean(0).lerp(self.w_avg, W_AVG_BETA))

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "random",
                  noise: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        """(B, num_ws, style_dim) -> the joint (B, C + K, R, R) output."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"unknown noise_mode {noise_mode!r}; choose one of {list(NOISE_MODES)}")
        noise = list(noise) if noise is not None else [None] * len(self.convs)
        x = self.convs[0](self.constant.expand(ws.shape[0], -1, -1, -1), ws[:, 0], noise_mode, noise[0])
        output = self.to_outputs[0](x, ws[:, 1])
        for block in range(1, len(self.to_outputs)):
            for index in (2 * block - 1, 2 * block):
                x = self.convs[index](x, ws[:, index], noise_mode, noise[index])
            output = upsample_2x(output, self.kernel) + self.to_outputs[block](x, ws[:, 2 * block + 1])
        segmentation = torch.softmax(self.segmentation_head(output), dim=1)
        return torch.cat([output[:, :self.image_channels], segmentation], dim=1)

    def forward(self, latents: torch.Tensor | Sequence[torch.Tensor], input_is_w: bool = False,
                truncation_psi: float = 1.0, truncation_latent: torch.Tensor | None = None,
                noise_mode: str = "random", noise: Sequence[torch.Tensor | None] | None = None,
                crossover: int | None = None,
                return_latents: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The joint output for one latent batch (z, or w with ``input_is_w``) or two (style mixing: the first
        ``crossover`` w inputs come from the first latent, the rest from the second; ``crossover`` None draws it
        uniformly from [1, num_ws) with the torch RNG). Truncation: w <- centre + psi (w - centre), centre
        ``truncation_latent`` or ``w_avg``. ``return_latents`` also returns the (B, num_ws, style_dim) w inputs."""
        latents = [latents] if isinstance(latents, torch.Tensor) else list(latents)
        if len(latents) not in (1, 2):
            raise ValueError(f"expected one latent batch or two (style mixing), got {len(latents)}")
        styles = [latent if input_is_w else self.mapping(latent) for latent in latents]
        if truncation_psi != 1.0:
            centre = self.w_avg if truncation_latent is None else truncation_latent
            styles = [centre.lerp(style, truncation_psi) for style in styles]
        if len(styles) == 1:
            ws = styles[0][:, None].expand(-1, self.num_ws, -1)
        else:
            cut = int(torch.randint(1, self.num_ws, ()).item()) if crossover is None else int(crossover)
            if not 0 <= cut <= self.num_ws:
                raise ValueError(f"crossover must be in [0, {self.num_ws}], got {cut}")
            ws = torch.cat([styles[0][:, None].expand(-1, cut, -1),
                            styles[1][:, None].expand(-1, self.num_ws - cut, -1)], dim=1)
        output = self.synthesis(ws, noise_mode, noise)
        return (output, ws) if return_latents else output


def minibatch_stddev(x: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """Appends one feature map: the standard deviation of each feature over a group of samples, averaged over
    features and pixels (Karras et al. 2018). Groups have ``gcd(batch, group_size)`` samples."""
    batch, channels, height, width = x.shape
    group = math.gcd(batch, group_size)
    y = x.reshape(group, -1, channels, height, width)
    y = (y.var(0, unbiased=False) + 1e-8).sqrt().mean((1, 2, 3))
    y = y.reshape(-1, 1, 1, 1).repeat(group, 1, height, width)
    return torch.cat([x, y], dim=1)


class DiscriminatorBlock(nn.Module):
    """Residual block: 3x3 conv, 3x3 conv with 2x downsampling, plus a 1x1 downsampling skip, summed / sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3, activation=True)
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3, activation=True, down=True)
        self.skip = EqualizedConv2d(in_channels, out_channels, 1, bias=False, down=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.skip(x) + self.conv1(self.conv0(x))) / math.sqrt(2.0)


class Discriminator(nn.Module):
    """Residual discriminator of the joint (B, C + K, R, R) tensor (images + segmentation probabilities, one-hot for
    real data): 1x1 FromRGB, residual blocks down to 4 x 4, minibatch standard deviation, 3x3 conv, two dense layers
    to one logit per sample."""

    def __init__(self, resolution: int, in_channels: int, channel_base: int = 32768, channel_max: int = 512) -> None:
        super().__init__()

        def channels(res: int) -> int:
            return min(channel_base // res, channel_max)

        self.from_input = EqualizedConv2d(in_channels, channels(resolution), 1, activation=True)
        self.blocks = nn.Sequential(*(DiscriminatorBlock(channels(2 ** log2), channels(2 ** (log2 - 1)))
                                      for log2 in range(int(math.log2(resolution)), 2, -1)))
        self.conv = EqualizedConv2d(channels(4) + 1, channels(4), 3, activation=True)
        self.dense = EqualizedLinear(channels(4) * 16, channels(4), activation=True)
        self.out = EqualizedLinear(channels(4), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C + K, R, R) -> (B,) logits (high: real)."""
        x = self.conv(minibatch_stddev(self.blocks(self.from_input(x))))
        return self.out(self.dense(x.flatten(1))).squeeze(1)
