"""GIN (Ouyang et al., IEEE TMI 2022, :mod:`synth.gin`) as a batchgeneratorsv2 transform for nnU-Net's training
pipeline.

Patches arrive z-score normalised per case; GIN keeps a patch's Frobenius norm, so its root mean square stays that of
the patch (about 1), though not its mean (the random biases shift it). nnU-Net's intensity augmentations run after it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform

from synth.gin import GlobalIntensityNonlinear, RandomGlobalIntensityNonlinear


class GINTransform(BasicTransform):
    """With probability ``p``, GIN on the image (all channels through one network); the segmentation is unchanged.

    The GIN draw (kernel sizes, mixing weight, weight seed) is made in ``get_parameters`` from numpy's global RNG, as
    nnU-Net's other transforms do, so a seeded ``np.random`` reproduces the output.

    Parameters:
        p: chance that a patch is transformed.
        n_layers, kernel_pool, interm_channels: the GIN network (:class:`synth.gin.RandomGlobalIntensityNonlinear`).
    """

    def __init__(self, p: float, n_layers: int = 4, kernel_pool: Sequence[int] = (1, 3), interm_channels: int = 2):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = float(p)
        self.random_gin = RandomGlobalIntensityNonlinear(int(n_layers), tuple(int(k) for k in kernel_pool),
                                                         int(interm_channels))

    def get_parameters(self, **data_dict) -> dict:
        return {"gin": self.random_gin.sample() if np.random.uniform() < self.p else None}

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        gin: GlobalIntensityNonlinear | None = params["gin"]
        return img if gin is None else gin(img)

    def _apply_to_segmentation(self, segmentation: torch.Tensor, **params) -> torch.Tensor:
        return segmentation
