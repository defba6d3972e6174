"""The whole cross-modal pipeline of the GBA paper as one resumable run (``nnunet-gen crossmoda``).

Labelled source-modality cases (e.g. ceT1) + unlabelled target-modality images (e.g. hrT2) -> a segmenter of the
target modality: crop -> translate -> (naive or GBA augmentation) -> 5-fold nnU-Net -> self-training on the real
target images -> fold ensemble + largest component on the test images -> paste back -> evaluation.
"""
from nnunet_gen.crossmoda.pipeline import CrossModa, CrossModaConfig, FailureCase

__all__ = ["CrossModa", "CrossModaConfig", "FailureCase"]
