"""Naive tumour intensity rescaling copies (GBA paper eq. 5): the simplest renderer and the baseline of GBA."""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from nnunet_gen.augment.naive_rescale import DEFAULT_ALPHAS, naive_rescale_variants
from nnunet_gen.io.manifest import NAIVE_GENERATOR
from nnunet_gen.io.raw_dataset import Case
from nnunet_gen.render.dataset import Renderer, SkipCase, Variant


def naive_renderer(alphas: Sequence[float] = DEFAULT_ALPHAS, labels: Sequence[int] = (1,)) -> Renderer:
    """K copies per case, copy k with the tumour intensities multiplied by ``alphas[k]`` (GBA paper eq. 5)."""
    variants = naive_rescale_variants(alphas, labels)

    def render(case: Case) -> Iterable[Variant]:
        if not variants[0].mask(case.label).any():
            raise SkipCase(f"no voxels with labels {list(labels)}")
        for k, op in enumerate(variants):
            images = np.stack([op(channel, case.label) for channel in case.images])
            yield Variant(f"naive{k:02d}", images, case.label, NAIVE_GENERATOR,
                          {"alpha": op.alpha, "labels": list(op.labels)})
    return render
