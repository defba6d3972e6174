"""Quality metrics of generative models on arrays (issue 16): fidelity, diversity, memorisation, label consistency.

* FID (Heusel et al. 2017): the Fréchet distance ``|mu_r - mu_f|^2 + tr(S_r + S_f - 2 (S_r S_f)^(1/2))`` of Gaussians
  fitted to features of real and generated 2D images; the features come from
  :class:`synth.gen_metrics.features.FeatureExtractor`, a CNN trained on the real slices (no Inception weights here),
  as Tronchin et al. (DGM4MICCAI 2021) do with their own CNN. For volumes, 3D-StyleGAN (Hong et al., DGM4MICCAI 2021)
  reports one FID per plane on the MIDDLE axial, coronal and sagittal slices: :func:`per_plane_slices`.
* bMMD^2 (Kwon et al. 2019, Volokitin et al. 2020, used by 3D-StyleGAN): squared MMD (Gretton et al. 2012) between a
  batch of real and a batch of generated images with the dot product of the flattened images as the kernel, averaged
  over random batches; :func:`batch_mmd2`.
* MS-SSIM (Wang et al. 2003) and diversity (Odena et al. 2017, 3D-StyleGAN): mean MS-SSIM of random pairs of
  generated images, lower = more diverse, next to the same on real pairs; :func:`ms_ssim_diversity`.
* Memorisation (Tronchin et al.): for every generated image the maximum MS-SSIM over the real images ("S_R"), next to
  the real-vs-other-real maxima ("R_R"); :func:`nearest_real_neighbours`.
* Label consistency of joint image + label generators (such as Son et al.'s StyleGAN2 for multi-contrast MR and
  segmentation maps, who validate by training a U-Net on the fakes): Dice between a segmenter's prediction on a
  generated image and the label generated with it; :func:`label_consistency_dice`.

Every random choice comes from ``numpy.random.default_rng(seed)``; inputs are validated with one-line ValueErrors.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy.ndimage import correlate1d

from synth.gen_metrics.features import FeatureExtractor

PLANES = ("axial", "coronal", "sagittal")
#: Axis of an (N, C, Z, Y, X) array fixed by each plane: axial -> (Y, X), coronal -> (Z, X), sagittal -> (Z, Y).
PLANE_AXES = {"axial": 2, "coronal": 3, "sagittal": 4}
KERNELS = ("linear", "gaussian")
#: Wang et al. 2003: 5 scales, Gaussian window 11 / sigma 1.5, K1 = 0.01, K2 = 0.03.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW, SIGMA, K1, K2 = 11, 1.5, 0.01, 0.03
#: Pairwise MS-SSIM is computed in chunks of about this many values per array.
_CHUNK_VALUES = 1 << 21


def _feature_set(features: np.ndarray, name: str) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"{name} must be an (N, D) array with N >= 2, got shape {features.shape}")
    if not np.isfinite(features).all():
        raise ValueError(f"{name} has non-finite values")
    return features


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two (N, D) feature sets (the FID formula).

    ``scipy.linalg.sqrtm`` of ``S_a S_b``; when that is not finite (singular covariances, N < D) both covariances
    get 1e-6 on the diagonal, as in the reference implementation; the imaginary round-off is dropped and the result
    clipped at 0.
    """
    a, b = _feature_set(features_a, "features_a"), _feature_set(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets differ in dimension: {a.shape[1]} vs {b.shape[1]}")
    shift = a.mean(axis=0) - b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():
        offset = np.eye(len(cov_a)) * 1e-6
        root = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    value = shift @ shift + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root).real
    return max(float(value), 0.0)


def fid(real: np.ndarray, fake: np.ndarray, extractor: FeatureExtractor, batch_size: int = 64) -> float:
    """FID between (N, C, H, W) real and generated 2D images in the ``extractor``'s feature space."""
    return frechet_distance(extractor.features(real, batch_size), extractor.features(fake, batch_size))


def per_plane_slices(volumes: np.ndarray, plane: str, which: str = "middle") -> np.ndarray:
    """2D slices of (N, C, Z, Y, X) volumes in ``plane`` (see :data:`PLANE_AXES`): ``"middle"`` -> (N, C, H, W), the
    middle slice of each volume (3D-StyleGAN's per-plane FID); ``"all"`` -> (N * S, C, H, W), every slice."""
    volumes = np.asarray(volumes)
    if volumes.ndim != 5:
        raise ValueError(f"volumes must be an (N, C, Z, Y, X) array, got shape {volumes.shape}")
    if plane not in PLANE_AXES:
        raise ValueError(f"plane must be one of {PLANES}, got {plane!r}")
    axis = PLANE_AXES[plane]
    if which == "middle":
        return np.take(volumes, volumes.shape[axis] // 2, axis=axis)
    if which == "all":
        moved = np.moveaxis(volumes, axis, 1)
        return moved.reshape(-1, *moved.shape[2:])
    raise ValueError(f"which must be 'middle' or 'all', got {which!r}")


def _mmd2(x: np.ndarray, y: np.ndarray, kernel: str) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) of two (m, P) batches."""
    joint = np.concatenate([x, y])
    gram = joint @ joint.T
    if kernel == "gaussian":
        norms = np.diag(gram)
        squared = np.maximum(norms[:, None] + norms[None, :] - 2.0 * gram, 0.0)
        median = np.median(squared[np.triu_indices(len(joint), 1)])
        gram = np.exp(-squared / (median if median > 0 else 1.0))
    m, n = len(x), len(y)
    k_xx, k_yy, k_xy = gram[:m, :m], gram[m:, m:], gram[:m, m:]
    return float((k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
                 - 2.0 * k_xy.mean())


def batch_mmd2(real: np.ndarray, fake: np.ndarray, batch_size: int = 16, kernel: str = "linear",
               batches: int = 100, seed: int = 0) -> tuple[float, float]:
    """bMMD^2: (mean, std) over ``batches`` random batches (``batch_size`` real and ``batch_size`` generated images,
    drawn without replacement) of the unbiased squared MMD, on the flattened images (any shape (N, ...), 2D or 3D).

    ``kernel="linear"`` is the papers' dot product k(x, y) = <x, y> (in the images' intensity units squared, so it
    scales with the number of voxels; compare values computed on the same grid and intensity normalisation);
    ``"gaussian"`` is exp(-|x - y|^2 / median of the batch's squared distances), bounded and scale-free. The unbiased
    estimator is about 0 for two samples of one distribution and may be slightly negative.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if batch_size < 2 or batches < 1:
        raise ValueError(f"batch_size must be >= 2 and batches >= 1, got {batch_size} and {batches}")
    x, y = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    if x.ndim < 2 or x.shape[1:] != y.shape[1:]:
        raise ValueError(f"real and fake must be (N, ...) arrays of equal image shape, got {x.shape} and {y.shape}")
    if min(len(x), len(y)) < batch_size:
        raise ValueError(f"need at least batch_size={batch_size} real and fake images, got {len(x)} and {len(y)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("real and fake must be finite")
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    rng = np.random.default_rng(seed)
    values = [_mmd2(x[rng.choice(len(x), batch_size, replace=False)],
                    y[rng.choice(len(y), batch_size, replace=False)], kernel) for _ in range(int(batches))]
    return float(np.mean(values)), float(np.std(values))


def ms_ssim_setup(height: int, width: int) -> tuple[int, int]:
    """(scales, window size) of MS-SSIM for an H x W image.

    The standard 5 scales need the coarsest image (side // 16) to hold the 11-pixel window, i.e. sides >= 176. Smaller
    images use the most scales whose coarsest level still holds it (32 x 32: 2 scales, 16 x 16: 1 scale, plain SSIM),
    with the first weights renormalised to sum to 1; sides below 11 use one scale and the largest odd window that fits
    (sigma stays 1.5). Sides below 3 raise ValueError.
    """
    side = min(height, width)
    if side < 3:
        raise ValueError(f"MS-SSIM needs images of at least 3 x 3 pixels, got {height} x {width}")
    if side < WINDOW:
        return 1, side - 1 + side % 2
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and side // 2 ** scales >= WINDOW:
        scales += 1
    return scales, WINDOW


def _ms_ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> np.ndarray:
    """MS-SSIM over the last two axes of broadcastable float64 arrays (Wang et al. 2003, with the contrast-structure
    and the last scale's SSIM means clipped at 0 as in the TensorFlow implementation)."""
    scales, size = ms_ssim_setup(*a.shape[-2:])
    window = np.exp(-((np.arange(size) - (size - 1) / 2) ** 2) / (2 * SIGMA ** 2))
    window /= window.sum()
    weights = np.asarray(MS_SSIM_WEIGHTS[:scales]) / sum(MS_SSIM_WEIGHTS[:scales])
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    crop = size // 2

    def blur(x: np.ndarray) -> np.ndarray:  # Gaussian filter, 'valid' region only
        for axis in (-2, -1):
            x = correlate1d(x, window, axis=axis, mode="constant")
            x = x[..., crop:x.shape[-2] - crop, :] if axis == -2 else x[..., crop:x.shape[-1] - crop]
        return x

    result = np.ones(np.broadcast_shapes(a.shape, b.shape)[:-2])
    for scale in range(scales):
        if scale:
            a, b = (x[..., :x.shape[-2] // 2 * 2, :x.shape[-1] // 2 * 2] for x in (a, b))
            a, b = ((x[..., 0::2, 0::2] + x[..., 1::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 1::2]) / 4
                    for x in (a, b))
        mu_a, mu_b = blur(a), blur(b)
        var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
        similarity = (2 * (blur(a * b) - mu_a * mu_b) + c2) / (var_a + var_b + c2)
        if scale == scales - 1:
            similarity = similarity * (2 * mu_a * mu_b + c1) / (mu_a ** 2 + mu_b ** 2 + c1)
        result = result * np.maximum(similarity.mean(axis=(-2, -1)), 0.0) ** weights[scale]
    return result


def _data_range(data_range: float | None, *arrays: np.ndarray) -> float:
    """``data_range`` or, when None, max - min over all ``arrays`` together; must be positive."""
    value = (max(float(x.max()) for x in arrays) - min(float(x.min()) for x in arrays)
             if data_range is None else float(data_range))
    if not value > 0:
        raise ValueError(f"MS-SSIM needs a positive data range, got {value} (constant images?)")
    return value


def ms_ssim(a: np.ndarray, b: np.ndarray, data_range: float | None = None) -> float | np.ndarray:
    """MS-SSIM of two equal-shape (..., H, W) arrays over the last two axes: a float for 2D images, else an array of
    the leading shape. ``data_range`` (L in C1 = (0.01 L)^2, C2 = (0.03 L)^2) defaults to max - min of both inputs;
    pass a fixed one to compare scores across pairs. See :func:`ms_ssim_setup` for small images."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"ms_ssim expects two (..., H, W) arrays of equal shape, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("ms_ssim inputs must be finite")
    result = _ms_ssim(a, b, _data_range(data_range, a, b))
    return float(result) if a.ndim == 2 else result


def _image_set(images: np.ndarray, name: str, minimum: int = 1) -> np.ndarray:
    """Validated float64 (N, C, H, W) (an (N, H, W) array gets C = 1)."""
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.shape[0] < minimum:
        raise ValueError(f"{name} must be an (N, C, H, W) or (N, H, W) array with N >= {minimum}, "
                         f"got shape {images.shape}")
    if not np.isfinite(images).all():
        raise ValueError(f"{name} has non-finite values")
    return images


def _pair_scores(x: np.ndarray, y: np.ndarray, data_range: float) -> np.ndarray:
    """Channel-mean MS-SSIM of the pairs x[k], y[k] of two (P, C, H, W) arrays, in chunks."""
    chunk = max(1, _CHUNK_VALUES // x[0].size)
    return np.concatenate([_ms_ssim(x[s:s + chunk], y[s:s + chunk], data_range).mean(axis=-1)
                           for s in range(0, len(x), chunk)])


def _score_matrix(x: np.ndarray, y: np.ndarray, data_range: float) -> np.ndarray:
    """(Nx, Ny) channel-mean MS-SSIM of every image of x with every image of y, in chunks of x."""
    chunk = max(1, _CHUNK_VALUES // y.size)
    return np.concatenate([_ms_ssim(x[s:s + chunk, None], y[None], data_range).mean(axis=-1)
                           for s in range(0, len(x), chunk)])


@dataclass(frozen=True)
class Diversity:
    """Mean (std) MS-SSIM of random pairs of generated and of real images; lower = more diverse."""

    fake: float
    fake_std: float
    real: float
    real_std: float


def ms_ssim_diversity(fakes: np.ndarray, reals: np.ndarray, pairs: int = 1000, seed: int = 0,
                      data_range: float | None = None) -> Diversity:
    """Diversity of generated images: MS-SSIM of ``pairs`` random pairs of two different fakes (drawn with
    replacement), and the same on the reals for reference. Multi-channel images: mean over channels.
    ``data_range`` defaults to max - min over fakes and reals together, so both numbers share the constants."""
    fakes, reals = _image_set(fakes, "fakes", 2), _image_set(reals, "reals", 2)
    if fakes.shape[1:] != reals.shape[1:]:
        raise ValueError(f"fakes and reals differ in image shape: {fakes.shape[1:]} vs {reals.shape[1:]}")
    if pairs < 1:
        raise ValueError(f"pairs must be >= 1, got {pairs}")
    data_range = _data_range(data_range, fakes, reals)
    rng = np.random.default_rng(seed)
    scores = []
    for images in (fakes, reals):
        first = rng.integers(len(images), size=int(pairs))
        second = (first + rng.integers(1, len(images), size=int(pairs))) % len(images)
        scores.append(_pair_scores(images[first], images[second], data_range))
    return Diversity(float(scores[0].mean()), float(scores[0].std()), float(scores[1].mean()),
                     float(scores[1].std()))


@dataclass(frozen=True)
class NearestNeighbours:
    """For every fake the index and MS-SSIM of its most similar real (``index``, ``score``; 1 = an exact copy), and
    for every real the same over the OTHER reals (``real_index``, ``real_score``), the reference distribution."""

    index: np.ndarray
    score: np.ndarray
    real_index: np.ndarray
    real_score: np.ndarray


def nearest_real_neighbours(fakes: np.ndarray, reals: np.ndarray,
                            data_range: float | None = None) -> NearestNeighbours:
    """Memorisation check (Tronchin et al.): maximum MS-SSIM of each fake over all reals, next to each real's maximum
    over the other reals; fakes much closer to a real than reals are to each other are copies. Costs
    O(N_fake * N_real + N_real^2) MS-SSIM evaluations. ``data_range`` as in :func:`ms_ssim_diversity`."""
    fakes, reals = _image_set(fakes, "fakes"), _image_set(reals, "reals", 2)
    if fakes.shape[1:] != reals.shape[1:]:
        raise ValueError(f"fakes and reals differ in image shape: {fakes.shape[1:]} vs {reals.shape[1:]}")
    data_range = _data_range(data_range, fakes, reals)
    fake_real = _score_matrix(fakes, reals, data_range)
    real_real = _score_matrix(reals, reals, data_range)
    np.fill_diagonal(real_real, -np.inf)
    index, real_index = fake_real.argmax(axis=1), real_real.argmax(axis=1)
    return NearestNeighbours(index, fake_real[np.arange(len(fakes)), index], real_index,
                             real_real[np.arange(len(reals)), real_index])


def label_consistency_dice(predicted_labels: np.ndarray, generated_labels: np.ndarray,
                           num_classes: int) -> np.ndarray:
    """(N,) mean foreground Dice (classes 1..num_classes-1) between a segmenter's prediction on each generated image
    and the label generated with it. Classes absent from both are left out of a sample's mean; a sample with no
    foreground in either scores 1 (they agree)."""
    predicted, generated = np.asarray(predicted_labels), np.asarray(generated_labels)
    if predicted.shape != generated.shape or predicted.ndim < 2:
        raise ValueError(f"labels must be two (N, ...) arrays of equal shape, got {predicted.shape} and "
                         f"{generated.shape}")
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes}")
    for name, labels in (("predicted_labels", predicted), ("generated_labels", generated)):
        if not np.isfinite(labels).all() or not np.array_equal(labels, np.round(labels)) or labels.min() < 0 \
                or labels.max() >= num_classes:
            raise ValueError(f"{name} must be integers in [0, {num_classes})")
    predicted, generated = predicted.reshape(len(predicted), -1), generated.reshape(len(generated), -1)
    total, counted = np.zeros(len(predicted)), np.zeros(len(predicted))
    for k in range(1, int(num_classes)):
        p, g = predicted == k, generated == k
        size = p.sum(axis=1) + g.sum(axis=1)
        total += np.where(size > 0, 2.0 * (p & g).sum(axis=1) / np.maximum(size, 1), 0.0)
        counted += size > 0
    return np.where(counted > 0, total / np.maximum(counted, 1), 1.0)
