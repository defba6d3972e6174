"""Seeded two-centre brain-tumour phantoms: the project's own test and demo data (nothing is downloaded).

Each case is a brain-like ellipsoid with smooth tissue texture, a bias field and noise, and one ellipsoidal tumour
(label 1) somewhere inside the brain. The two "centres" differ the way the GBA paper's CrossMoDA centres do: in
centre A the tumour is bright (hyperintense), in centre B it is dark and the global contrast and noise differ, so a
model trained on centre A alone fails on centre B, while tumour intensity rescaling (alpha < 1) covers centre B.

Centre C is centre B with a heterogeneous, coarse-grained tumour texture (cystic-looking dark and bright blobs, five
times centre B's texture amplitude): a shift in tumour *texture* that rescaling centre-A tumours (alpha) cannot
imitate but a SinGAN trained on a centre-C slice can, which is where the GBA paper expects blending to beat naive
rescaling. Centres A and B do not depend on it (same random draws, same images).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class CentreStyle:
    """Appearance of one acquisition centre (raw intensity units)."""

    brain_intensity: float
    tumour_ratio: float
    noise_std: float
    bias_strength: float
    tumour_texture: float = 0.1
    tumour_texture_sigma: float = 1.0


CENTRES: dict[str, CentreStyle] = {
    "A": CentreStyle(brain_intensity=100.0, tumour_ratio=1.5, noise_std=4.0, bias_strength=0.10),
    "B": CentreStyle(brain_intensity=90.0, tumour_ratio=0.7, noise_std=6.0, bias_strength=0.20),
    "C": CentreStyle(brain_intensity=90.0, tumour_ratio=0.7, noise_std=6.0, bias_strength=0.20,
                     tumour_texture=2.0, tumour_texture_sigma=1.0),
}


def _ellipsoid(shape: tuple[int, ...], centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return field / (np.abs(field).max() + 1e-8)


def phantom_case(seed: int, centre: str = "A", shape: tuple[int, int, int] = (32, 48, 48),
                 tumour_radius: tuple[float, float] = (3.0, 6.0)) -> tuple[np.ndarray, np.ndarray]:
    """One (image float32, label uint8) pair of ``shape`` (Z, Y, X), fully determined by ``seed`` and ``centre``."""
    style = CENTRES[centre]
    rng = np.random.default_rng(seed)
    shape_arr = np.array(shape, dtype=np.float32)
    brain_centre = shape_arr / 2 + rng.uniform(-1.5, 1.5, 3)
    brain_radii = shape_arr / 2 * rng.uniform(0.78, 0.9, 3)
    brain = _ellipsoid(shape, brain_centre, brain_radii)

    radii = rng.uniform(*tumour_radius, 3) * np.array([min(1.0, shape[0] / shape[1]), 1.0, 1.0])
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    offset = direction * rng.uniform(0.0, 0.55) * (brain_radii - radii.max())
    tumour = _ellipsoid(shape, brain_centre + offset, np.maximum(radii, 1.5)) & brain

    texture = 1.0 + 0.08 * _smooth_noise(rng, shape, 2.0)
    image = brain * style.brain_intensity * texture
    tumour_texture = 1.0 + style.tumour_texture * _smooth_noise(rng, shape, style.tumour_texture_sigma)
    tumour_texture = np.maximum(tumour_texture, 0.2)  # only centre C's strong texture reaches the floor
    image = np.where(tumour, style.brain_intensity * style.tumour_ratio * tumour_texture, image)
    image = ndimage.gaussian_filter(image, 0.6)
    bias = 1.0 + style.bias_strength * _smooth_noise(rng, shape, 8.0)
    image = image * bias + brain * rng.normal(0.0, style.noise_std, shape)
    image = np.clip(image, 0.0, None).astype(np.float32)
    return image, tumour.astype(np.uint8)


def write_phantom_dataset(dataset_id: int, name: str, cases_a: int, cases_b: int, seed: int = 0,
                          shape: tuple[int, int, int] = (32, 48, 48),
                          spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0), overwrite: bool = False,
                          target_centre: str = "B"):
    """Raw dataset: labelled centre-A cases in imagesTr/labelsTr, ``cases_b`` cases of ``target_centre`` (B, or C for
    the texture shift) in imagesTs/labelsTs, named ``phantom<centre>_NNN``."""
    if target_centre not in ("B", "C"):
        raise ValueError(f"target centre must be B or C, not {target_centre!r}")
    from tqdm import tqdm

    from nnunet_gen.io.images import Geometry
    from nnunet_gen.io.manifest import Manifest
    from nnunet_gen.io.writer import DatasetWriter

    geometry = Geometry.axis_aligned(spacing_zyx)
    job = {"command": "phantom", "cases_a": cases_a, "cases_b": cases_b, "seed": seed, "shape": list(shape),
           "spacing": list(spacing_zyx), "target_centre": target_centre}
    plan = [(f"phantomA_{i:03d}", "A", "imagesTr", "labelsTr") for i in range(cases_a)]
    plan += [(f"phantom{target_centre}_{i:03d}", target_centre, "imagesTs", "labelsTs") for i in range(cases_b)]
    with DatasetWriter(dataset_id, name, {0: "MR"}, {"background": 0, "tumour": 1}, job, overwrite=overwrite) as w:
        for k, (case_id, centre, images_dir, labels_dir) in enumerate(tqdm(plan, desc="phantom", unit="case")):
            if w.has_case(case_id, images_dir, labels_dir):
                continue
            image, label = phantom_case(seed * 100003 + k, centre, shape)
            w.write_case(case_id, image[None], label, geometry, images_dir, labels_dir)
        return w.finalize(Manifest.for_real_cases([c for c, _, d, _ in plan if d == "imagesTr"]),
                          description="nnunet_gen two-centre phantom: centre A bright tumours (train), "
                                      f"centre {target_centre} dark tumours (imagesTs/labelsTs)")
