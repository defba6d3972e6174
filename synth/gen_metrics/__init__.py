"""Quality metrics of generative models on arrays (issue 16): FID with a CNN trained on the real slices (per plane
for volumes), bMMD^2, MS-SSIM diversity, nearest real neighbours and label-consistency Dice. Pure numpy / scipy /
torch; no downloaded weights."""
from synth.gen_metrics.features import FeatureExtractor, FeatureNetwork, train_feature_extractor
from synth.gen_metrics.metrics import (
    KERNELS,
    MS_SSIM_WEIGHTS,
    PLANES,
    Diversity,
    NearestNeighbours,
    batch_mmd2,
    fid,
    frechet_distance,
    label_consistency_dice,
    ms_ssim,
    ms_ssim_diversity,
    ms_ssim_setup,
    nearest_real_neighbours,
    per_plane_slices,
)

__all__ = [
    "KERNELS",
    "MS_SSIM_WEIGHTS",
    "PLANES",
    "Diversity",
    "FeatureExtractor",
    "FeatureNetwork",
    "NearestNeighbours",
    "batch_mmd2",
    "fid",
    "frechet_distance",
    "label_consistency_dice",
    "ms_ssim",
    "ms_ssim_diversity",
    "ms_ssim_setup",
    "nearest_real_neighbours",
    "per_plane_slices",
    "train_feature_extractor",
]
