"""batchgeneratorsv2 transforms that nnunet_gen inserts into nnU-Net's training pipeline.

nnU-Net 2.8's ``nnUNetDataLoader.generate_train_batch`` loads one case and runs the transforms on it before it
loads the next; :class:`CaseContextDataset` wraps the training dataset so that each ``load_case`` publishes the
case's constants in a :class:`CaseContext` the transforms read. Both live in the same data-loader object, so this
holds in forked augmentation workers too.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform

from nnunet_gen.augment.gba import GenerativeBlending, blend_in_window
from nnunet_gen.augment.intensity import ChannelStats, rescale_normalised
from nnunet_gen.errors import DataError
from synth.singan import SinGAN

logger = logging.getLogger(__name__)


def insert_after_spatial(transforms: ComposeTransforms, transform: BasicTransform) -> ComposeTransforms:
    """Insert ``transform`` right after nnU-Net's ``SpatialTransform``: patches then have their final size and
    position, and the intensity augmentations that follow still see the result. When nnU-Net wraps the spatial
    transform in its dummy-2D block (anisotropic 3D patches), the insertion goes after the closing
    ``Convert2DTo3DTransform``: inside the block the patch is laid out (C * X, Y, Z), so channels and slices mix."""
    index = next(i for i, t in enumerate(transforms.transforms) if isinstance(t, SpatialTransform)) + 1
    if index < len(transforms.transforms) and isinstance(transforms.transforms[index], Convert2DTo3DTransform):
        index += 1
    transforms.transforms.insert(index, transform)
    return transforms


class CaseContext:
    """Per-case constants (``values[case_id]``) and the case being augmented right now (``current``)."""

    def __init__(self, values: dict[str, object]):
        self.values = values
        self.current: str | None = None

    def current_value(self):
        if self.current is None:
            raise RuntimeError("no case loaded yet: the transform must run inside nnUNetDataLoader")
        return self.values[self.current]


class CaseContextDataset:
    """Wraps an nnU-Net dataset; ``load_case`` records the case ID in ``context`` and delegates."""

    def __init__(self, dataset, context: CaseContext):
        self.dataset = dataset
        self.context = context

    def load_case(self, identifier: str):
        self.context.current = identifier
        return self.dataset.load_case(identifier)

    def __getattr__(self, name: str):
        if name in ("dataset", "context"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


class NaiveRescaleTransform(BasicTransform):
    """Deterministic naive tumour rescaling of a normalised patch, equal to GBA paper eq. 5 in raw units.

    Parameters:
        alpha: raw-intensity factor for the tumour voxels (> 0).
        labels: label values that are rescaled.
        use_mask_for_norm: per channel, whether nnU-Net normalised only the nonzero region (seg >= 0).
    Per-case statistics come in ``stats`` (one :class:`ChannelStats` per channel), see ``nnunet_gen.augment.intensity``.
    """

    def __init__(self, alpha: float, labels: Sequence[int], use_mask_for_norm: Sequence[bool]):
        super().__init__()
        self.alpha = float(alpha)
        self.labels = tuple(int(v) for v in labels)
        self.use_mask_for_norm = tuple(bool(v) for v in use_mask_for_norm)

    def get_parameters(self, **data_dict) -> dict:
        seg = data_dict["segmentation"][0]
        return {"tumour": torch.isin(seg, torch.tensor(self.labels, dtype=seg.dtype)), "region": seg >= 0,
                "stats": data_dict["stats"], "alpha": self.alpha}

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        if params["alpha"] is None:
            return img
        out = torch.empty_like(img)
        for c in range(img.shape[0]):
            region = params["region"] if self.use_mask_for_norm[c] else None
            out[c] = rescale_normalised(img[c], params["tumour"], region, params["stats"][c], params["alpha"])
        return out

    def _apply_to_segmentation(self, segmentation: torch.Tensor, **params) -> torch.Tensor:
        return segmentation


class RandomNaiveRescaleTransform(NaiveRescaleTransform):
    """With probability ``p`` draw alpha and apply :class:`NaiveRescaleTransform`.

    Alpha is drawn uniformly from the set ``alphas`` (the GBA paper's discrete values) or, with ``continuous``, from
    the interval ``[min(alphas), max(alphas)]``. The case's statistics come from ``context`` (see
    :class:`CaseContextDataset`). Default ``p`` in the trainer is K/(K+1) for K alphas: the mix of a dataset holding
    the original plus K rescaled copies, sampled uniformly.
    """

    def __init__(self, alphas: Sequence[float], labels: Sequence[int], use_mask_for_norm: Sequence[bool],
                 context: CaseContext, p: float, continuous: bool = False):
        super().__init__(alphas[0], labels, use_mask_for_norm)
        if any(a <= 0 for a in alphas):
            raise ValueError(f"alphas must be > 0, got {list(alphas)}")
        self.alphas = tuple(float(a) for a in alphas)
        self.context = context
        self.p = p
        self.continuous = continuous

    def sample_alpha(self) -> float | None:
        if np.random.uniform() >= self.p:
            return None
        if self.continuous:
            return float(np.random.uniform(min(self.alphas), max(self.alphas)))
        return self.alphas[np.random.randint(len(self.alphas))]

    def get_parameters(self, **data_dict) -> dict:
        stats: list[ChannelStats] = self.context.current_value()
        params = super().get_parameters(**data_dict, stats=stats)
        params["alpha"] = self.sample_alpha()
        return params


class GBAPatchTransform(BasicTransform):
    """With probability ``p``, GBA on the tumour slices of a normalised patch, in raw units (module docstring).

    Parameters:
        singan: the SinGAN (CPU); its training slice size is matched with :func:`nnunet_gen.augment.gba.
            blend_in_window` (patches whose tumour and blending margin do not fit are left unchanged).
        alphas, generators_retained: drawn uniformly per patch (start scale = num_scales - retained).
        labels, dilation_radius, sigma: as :class:`~nnunet_gen.augment.gba.GenerativeBlending`.
        channel: the SinGAN's modality; other channels are unchanged.
        use_mask_for_norm: per channel, whether nnU-Net normalised only the nonzero region (seg >= 0).
        context: per-case :class:`ChannelStats`, see :class:`~nnunet_gen.augment.transforms.CaseContextDataset`.
        axial_axis: the patch axis holding the raw volume's axial (Z) axis (plans' ``transpose_forward``).
        keep_contrast: re-impose the naive copy's tumour/surround contrast after blending
            (:class:`~nnunet_gen.augment.gba.GenerativeBlending`).
    """

    def __init__(self, singan: SinGAN, alphas: Sequence[float], generators_retained: Sequence[int],
                 labels: Sequence[int], dilation_radius: int, sigma: float, channel: int,
                 use_mask_for_norm: Sequence[bool], context: CaseContext, p: float, axial_axis: int = 0,
                 keep_contrast: bool = False):
        super().__init__()
        if any(not a > 0 for a in alphas):
            raise ValueError(f"alphas must be > 0, got {list(alphas)}")
        start_scales = [singan.num_scales - int(r) for r in generators_retained]
        if any(not 1 <= s < singan.num_scales for s in start_scales):
            raise ValueError(f"generators_retained {list(generators_retained)} impossible for a "
                             f"{singan.num_scales}-scale SinGAN (allowed 1..{singan.num_scales - 1})")
        self.singan = singan
        self.alphas = tuple(float(a) for a in alphas)
        self.start_scales = tuple(start_scales)
        self.labels = tuple(int(v) for v in labels)
        self.dilation_radius, self.sigma, self.channel = int(dilation_radius), float(sigma), int(channel)
        self.use_mask_for_norm = tuple(bool(v) for v in use_mask_for_norm)
        self.context, self.p, self.axial_axis = context, float(p), int(axial_axis)
        self.keep_contrast = bool(keep_contrast)

    def get_parameters(self, **data_dict) -> dict:
        if np.random.uniform() >= self.p:
            return {"transform": None}
        transform = GenerativeBlending(self.alphas[np.random.randint(len(self.alphas))],
                                       self.start_scales[np.random.randint(len(self.start_scales))], self.labels,
                                       self.dilation_radius, self.sigma, int(np.random.randint(2 ** 31 - 1)),
                                       keep_contrast=self.keep_contrast)
        stats: list[ChannelStats] = self.context.current_value()
        return {"transform": transform, "stats": stats[self.channel], "label": data_dict["segmentation"][0]}

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        transform: GenerativeBlending | None = params["transform"]
        if transform is None:
            return img
        stats: ChannelStats = params["stats"]
        seg = params["label"]
        normalised = img[self.channel]
        std = max(stats.std, 1e-8)
        raw = normalised.double() * std + stats.mean if stats.scheme != "NoNormalization" else normalised.double()
        volume = np.moveaxis(raw.numpy(), self.axial_axis, 0)
        label = np.moveaxis(seg.numpy(), self.axial_axis, 0)
        try:
            blended, _ = blend_in_window(transform, volume, label, self.singan, where="patch")
        except DataError as reason:
            logger.debug("GBA skipped for this patch: %s", reason)
            return img
        blended = torch.from_numpy(np.moveaxis(blended, 0, self.axial_axis).astype(np.float32))
        # Back to the case's old normalisation, then re-normalise with the statistics after alpha (eq. 5) through the
        # same code as the naive transform (an empty rescaling mask: only the normalisation change is applied).
        old_normalised = (blended - stats.mean) / std if stats.scheme != "NoNormalization" else blended
        region = seg >= 0
        renormalised = rescale_normalised(old_normalised, torch.zeros_like(region), None, stats, transform.alpha)
        out = img.clone()
        out[self.channel] = torch.where(region, renormalised, normalised) if self.use_mask_for_norm[self.channel] \
            else renormalised
        return out

    def _apply_to_segmentation(self, segmentation: torch.Tensor, **params) -> torch.Tensor:
        return segmentation
