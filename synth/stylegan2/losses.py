"""Losses and regularisers of StyleGAN2 (Karras et al. 2020), on discriminator logits."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def generator_loss(fake_pred: torch.Tensor) -> torch.Tensor:
    """Non-saturating logistic loss (Goodfellow et al. 2014, section 3; StyleGAN2's G loss):
    mean softplus(-D(G(z))) = -log sigmoid(D(G(z)))."""
    return F.softplus(-fake_pred).mean()


def discriminator_loss(real_pred: torch.Tensor, fake_pred: torch.Tensor) -> torch.Tensor:
    """Logistic loss (Goodfellow et al. 2014, eq. 1, as -log likelihood): mean softplus(D(fake)) +
    mean softplus(-D(real))."""
    return F.softplus(fake_pred).mean() + F.softplus(-real_pred).mean()


def r1_penalty(real_pred: torch.Tensor, real_input: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018, eq. 9, without the gamma / 2 factor): mean over samples of the squared L2 norm of
    the gradient of D(x) with respect to the real input x (which must require grad). Differentiable."""
    grad, = torch.autograd.grad(real_pred.sum(), real_input, create_graph=True)
    return grad.square().flatten(1).sum(1).mean()


def path_length_penalty(fake: torch.Tensor, ws: torch.Tensor, mean_path_length: torch.Tensor | float,
                        decay: float = 0.01) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Path-length regulariser (StyleGAN2 eq. 4): E_{w, y} (||J_w^T y||_2 - a)^2 with y ~ N(0, I) / sqrt(H W) image
    noise, J_w the Jacobian of the output ``fake`` with respect to the w inputs ``ws`` (B, num_ws, style_dim; the
    norm is over style_dim, averaged over the w inputs, as the reference) and ``a`` the running mean of the path
    lengths, updated with ``decay``. Returns (penalty, the new running mean (detached), per-sample path lengths)."""
    noise = torch.randn_like(fake) / math.sqrt(fake.shape[2] * fake.shape[3])
    grad, = torch.autograd.grad((fake * noise).sum(), ws, create_graph=True)
    lengths = grad.square().sum(2).mean(1).sqrt()
    mean = torch.as_tensor(mean_path_length, dtype=lengths.dtype, device=lengths.device)
    new_mean = mean + decay * (lengths.mean() - mean)
    return (lengths - new_mean).square().mean(), new_mean.detach(), lengths
