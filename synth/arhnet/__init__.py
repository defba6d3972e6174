"""ARHNet (Huo et al. 2023, "Adaptive Region Harmonization for Lesion-aware Augmentation"): lesion composites
(Copy-Paste, CarveMix), the foreground perturbation unit, the ARH-module generator and its baselines, training,
whole-volume harmonisation, checkpoints and the Table 1 / Table 3 metrics. Pure numpy / scipy / torch."""
from synth.arhnet.composite import (
                                    CarveMix,
                                    CompositeResult,
                                    CopyPaste,
                                    RandomCarveMix,
                                    RandomCopyPaste,
                                    composite_from_dict,
                                    derive_tissue_mask,
)
from synth.arhnet.config import METHODS, TABLE1_METHODS, TABLE3_METHODS, HarmonizerConfig
from synth.arhnet.evaluation import (
                                    evaluate_harmonizers,
                                    format_metric_table,
                                    make_held_out_set,
                                    run_harmonization_benchmark,
)
from synth.arhnet.harmonize import Harmonizer, harmonize_volume, load_harmonizer, save_harmonizer
from synth.arhnet.metrics import harmonization_metrics
from synth.arhnet.networks import ARHModule, HarmonizationGenerator, PatchDiscriminator, RAINModule
from synth.arhnet.perturbation import (
                                    ForegroundIntensityPerturbation,
                                    IntensityScaling,
                                    RandomForegroundIntensityPerturbation,
)
from synth.arhnet.train import train_harmonizer

__all__ = [
    "ARHModule", "CarveMix", "CompositeResult", "CopyPaste", "ForegroundIntensityPerturbation",
    "HarmonizationGenerator", "Harmonizer", "HarmonizerConfig", "IntensityScaling", "METHODS", "PatchDiscriminator",
    "RAINModule", "RandomCarveMix", "RandomCopyPaste", "RandomForegroundIntensityPerturbation", "TABLE1_METHODS",
    "TABLE3_METHODS", "composite_from_dict", "derive_tissue_mask", "evaluate_harmonizers", "format_metric_table",
    "harmonization_metrics", "harmonize_volume", "load_harmonizer", "make_held_out_set",
    "run_harmonization_benchmark", "save_harmonizer", "train_harmonizer",
]
