"""Losses of CycleGAN (Zhu et al. 2017) and CUT (Park et al. 2020), and CycleGAN's image history pool."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def lsgan_loss(prediction: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss (Mao et al. 2017, the references' default): mean squared distance of the patch scores to
    1 (``real``) or 0 (fake)."""
    return F.mse_loss(prediction, torch.full_like(prediction, 1.0 if real else 0.0))


def l1_loss(image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference: CycleGAN's cycle-consistency and identity losses."""
    return F.l1_loss(image, reference)


def patch_nce_loss(query: torch.Tensor, key: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """PatchNCE (CUT eq. 2-3): InfoNCE per sampled location, mean over locations and images.

    ``query`` and ``key`` are (B, P, F) L2-normalised projections of the same P locations (query: the output image,
    key: the input image). For location i the positive is key i, the negatives are the other P - 1 keys of the same
    image; logits are dot products / ``temperature``. Keys are detached (as the reference): gradients flow through
    the query only.
    """
    key = key.detach()
    positives = (query * key).sum(-1, keepdim=True)  # (B, P, 1)
    negatives = torch.bmm(query, key.transpose(1, 2))  # (B, P, P), the diagonal is the positive
    eye = torch.eye(query.shape[1], dtype=torch.bool, device=query.device)[None]
    negatives = negatives.masked_fill(eye, float("-inf"))
    logits = torch.cat([positives, negatives], dim=-1).flatten(0, 1) / temperature
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device))


class ImagePool:
    """CycleGAN's history of generated images (Shrivastava et al. 2017): the discriminator sees, per image, either
    the new fake or (with probability 0.5 once ``size`` images are stored) a stored older fake, which the new one
    replaces. ``size`` 0 disables the pool. Random choices come from the given numpy Generator (deterministic)."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size = int(size)
        self.rng = rng
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) for the discriminator, same shape as ``images`` (which are stored detached)."""
        if self.size == 0:
            return images
        returned = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                returned.append(image)
            elif self.rng.random() < 0.5:
                index = int(self.rng.integers(self.size))
                returned.append(self.images[index])
                self.images[index] = image.clone()
            else:
                returned.append(image)
        return torch.stack(returned)
