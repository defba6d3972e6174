"""GBA rendering into a new raw dataset (Sallé et al., section 3.3 eqs. 5-7, parameters of section 4.2.1).

:func:`gba_renderer` plugs :class:`~nnunet_gen.augment.gba.GenerativeBlending` into :func:`nnunet_gen.render.render_dataset`:
each real case gets one synthetic copy per selected parameter set, with provenance (generator ``gba``, the
:meth:`GenerativeBlending.parameters` dict plus the selection ``group`` and the in-plane ``window``, the render seed
and the SinGAN checkpoint's SHA-256). ``blend=False`` renders the naive rescaling through the same code path, so
``render gba --no-blend`` and ``render naive`` give identical images for the same alphas.

Parameter selection (``rules``):
* ``paper``: :func:`nnunet_gen.augment.gba.select_gba_parameters` (per-case alpha set from tumour volume and intensity std,
  each alpha at every injection scale, several samples: 18 renders per selected patient); cases matching no rule
  are skipped with a note in the manifest.
* ``fixed``: every case gets every ``alphas`` x ``generators_retained`` x ``samples`` combination.
Injection scales are given as the number of finest generators retained (the paper's wording, section 4.2.1):
``start_scale = num_scales - retained``.

Contrast (issue 14): every copy's record holds ``contrast`` = the :func:`~nnunet_gen.augment.gba.tumour_contrast`
of the original, the naive copy and the written copy. ``keep_contrast`` re-imposes the naive copy's contrast after
blending (not in the paper); ``min_contrast`` drops copies whose tumour is invisible by its mean
(``|contrast - 1| < min_contrast``): they would keep the label on a tumour that is not there (label noise). Dropped
copies are listed in the manifest's ``skipped`` with their contrast. Both are off by default (the paper's behaviour).

Several SinGANs (``singan_paths`` with more than one checkpoint, e.g. trained on several target slices or cases): a
single SinGAN learns the texture of one slice; with several, copy ``k`` of a case is blended with SinGAN
``derived_seed(render seed, k) % n`` (recorded as ``singan_index`` with that checkpoint's SHA-256), so the copies see
the texture of several target images. They must have the same number of scales (the injection scales are given as
a number of retained generators).

Multi-channel datasets: GBA is applied to the SinGAN's modality ``channel``; other channels are copied unchanged.
"""
from __future__ import annotations

import zlib
from typing import Iterable, Sequence

import numpy as np

from nnunet_gen.augment.gba import (
    GBASelectionRules,
    GenerativeBlending,
    blend_in_window,
    blending_margin,
    derived_seed,
    parameter_grid,
    select_gba_parameters,
    singan_window,
    tumour_contrast,
)
from nnunet_gen.augment.naive_rescale import DEFAULT_ALPHAS
from nnunet_gen.errors import DataError
from nnunet_gen.generators.singan import load_singan
from nnunet_gen.io.files import sha256_of_file
from nnunet_gen.io.manifest import GBA_GENERATOR
from nnunet_gen.io.raw_dataset import Case
from nnunet_gen.render.dataset import Renderer, SkipCase, Variant

RULES = ("paper", "fixed")


def case_seed(seed: int, case_id: str) -> int:
    """Seed of one case's renders: independent of the order in which cases are rendered (resumable)."""
    return derived_seed(seed, zlib.crc32(case_id.encode()))


def fixed_parameters(alphas: Sequence[float], generators_retained: Sequence[int], samples: int, num_scales: int,
                     seed: int, labels: Sequence[int], dilation_radius: int, sigma: float, blend: bool
                     ) -> list[dict]:
    """``--rules fixed``: :func:`~nnunet_gen.augment.gba.parameter_grid` of every case; with ``blend=False`` scales
    and samples would give identical images (naive rescaling has no SinGAN and no noise), so one render per alpha."""
    if blend:
        try:
            return parameter_grid(alphas, generators_retained, samples, num_scales, seed, labels, dilation_radius,
                                  sigma, "fixed")
        except ValueError as error:
            raise DataError("--scales", str(error)) from None
    return [{**GenerativeBlending(float(alpha), 0, tuple(labels), dilation_radius, sigma, derived_seed(seed, index),
                                  blend=False).parameters(), "group": "fixed"} for index, alpha in enumerate(alphas)]


def gba_renderer(singan_paths: Sequence[str] | None, labels: Sequence[int] = (1,),
                 alphas: Sequence[float] = DEFAULT_ALPHAS,
                 generators_retained: Sequence[int] = (3, 4), samples: int = 1, rules: str = "fixed",
                 dilation_radius: int = 7, sigma: float = 5.0, seed: int = 0, blend: bool = True, channel: int = 0,
                 selection_rules: GBASelectionRules = GBASelectionRules(), device: str = "cpu",
                 keep_contrast: bool = False, min_contrast: float = 0.0) -> Renderer:
    """A :data:`~nnunet_gen.render.Renderer` of GBA copies (see the module docstring for ``rules``, windows and
    several SinGANs).

    Bad parameters (alpha <= 0, unknown rules, missing SinGAN, unusable scales) raise a one-line DataError before
    anything is written.
    """
    if rules not in RULES:
        raise DataError("--rules", f"expected one of {RULES}, got '{rules}'")
    bad = [a for a in alphas if not a > 0]
    if bad:
        raise DataError("--alphas", f"alpha must be > 0 (GBA eq. 5), got {bad}")
    if samples < 1:
        raise DataError("--samples", f"must be >= 1, got {samples}")
    if dilation_radius < 0 or sigma < 0:
        raise DataError("--dilation/--sigma", "must be >= 0")
    if not 0 <= min_contrast < 1:
        raise DataError("--min-contrast", f"must be in [0, 1), got {min_contrast}")
    labels = tuple(int(v) for v in labels)
    singans, shas = [], []
    if blend or rules == "paper":
        if not singan_paths:
            raise DataError("--singan", "a SinGAN checkpoint is required (train one with `nnunet-gen singan train`)")
        singans = [load_singan(path, device) for path in singan_paths]
        shas = [sha256_of_file(path) for path in singan_paths]
        scales = {singan.num_scales for singan in singans}
        if len(scales) > 1:
            raise DataError("--singan", f"the SinGANs have different numbers of scales {sorted(scales)}; train them "
                                        f"with the same --min-size/--max-size/--scale-factor")
    num_scales = singans[0].num_scales if singans else 0
    if rules == "fixed":  # validate scales once, before any case is read
        fixed_parameters(alphas[:1], generators_retained, 1, num_scales, 0, labels, dilation_radius, sigma, blend)

    def render(case: Case) -> Iterable[Variant]:
        where = f"case {case.case_id}"
        image = case.images[channel]
        tumour = np.isin(case.label, labels)
        if not tumour.any():
            raise SkipCase(f"no voxels with labels {list(labels)}")
        if blend:
            for singan in singans:  # refuse before rendering any copy
                singan_window(tumour, singan.training_shape, blending_margin(dilation_radius, sigma), where)
        seed_of_case = case_seed(seed, case.case_id)
        if rules == "paper":
            renders = select_gba_parameters(image, case.label, case.geometry.spacing_zyx, num_scales, seed_of_case,
                                            selection_rules, labels=labels, dilation_radius=dilation_radius,
                                            sigma=sigma)
            if not blend:  # naive copies: one per alpha (scales and samples would repeat the same image)
                by_alpha = {r["alpha"]: {**r, "blend": False} for r in reversed(renders)}
                renders = [by_alpha[a] for a in dict.fromkeys(r["alpha"] for r in renders)]
            if not renders:
                raise SkipCase("no section-4.2.1 selection rule applies (tumour volume/intensity std)")
        else:
            renders = fixed_parameters(alphas, generators_retained, samples, num_scales, seed_of_case, labels,
                                       dilation_radius, sigma, blend)
        for k, params in enumerate(renders):
            params = {**params, "keep_contrast": bool(keep_contrast and blend)}
            index = derived_seed(seed_of_case, k) % len(singans) if blend else None
            if index is not None and len(singans) > 1:
                params["singan_index"] = index
            transform = GenerativeBlending.from_parameters(params)
            blended, window = blend_in_window(transform, image, case.label,
                                              singans[index] if index is not None else None, where)
            images = case.images.astype(np.float32, copy=True)
            images[channel] = blended
            contrast = {"original": tumour_contrast(image, tumour),
                        "naive": tumour_contrast(transform.with_blend(False)(image, case.label), tumour),
                        "output": tumour_contrast(blended, tumour)}
            record = {**params, "channel": channel, "window": window.to_json() if window else None,
                      "contrast": {name: round(value, 4) for name, value in contrast.items()}}
            invisible = abs(contrast["output"] - 1.0) < min_contrast
            yield Variant(f"gba{k:02d}", images, case.label, GBA_GENERATOR, record, params["seed"],
                          shas[index] if index is not None else None,
                          dropped=f"tumour invisible: contrast {contrast['output']:.3f} (|contrast - 1| < "
                                  f"--min-contrast {min_contrast:g})" if invisible else None)

    return render
