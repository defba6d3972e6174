"""Iterative pseudo-label self-training with nnU-Net fold ensembles (GBA paper, Sallé et al., sections 3.4, 4.2.3).

Iteration 0 trains the folds on the labelled dataset; the fold ensemble (``nnUNetv2_predict -f 0 1 2 3 4``)
predicts the unlabelled target images; the largest connected component of each label is kept (nnU-Net's
``remove_all_but_largest_component_from_segmentation``); a NEW raw dataset = labelled cases + pseudo-labelled target
cases is written (manifest kind ``pseudo_labelled``, one group per target case, so grouped splits train on them in
every fold and never validate on them), preprocessed on the labelled dataset's plans, and retrained. Each iteration
replaces the pseudo-labels; earlier datasets and results stay. The paper ran 3 such iterations (20 folds in all).

Stopping: after ``iterations`` self-training iterations, or when the mean Dice on the labelled validation set (if
given) changes by less than ``epsilon`` between iterations (the paper's rule), or when consecutive pseudo-label
sets agree (mean Dice > 1 - epsilon). The paper's epsilon is not given in our text; 0.01 is our default.

Quality controls (off by default, as in the paper):
- confidence: voxels whose ensemble max softmax probability is below ``confidence`` get the ignore label
  (dataset.json ``"ignore"`` = max label + 1), which nnU-Net leaves out of the loss;
- size outliers: a case is dropped when its pseudo-label foreground volume (mm^3, all labels, after the largest
  component) is outside [``min_size``, ``max_size``], or when its robust z-score
  ``0.6745 * |v - median(v)| / MAD(v)`` over the pool exceeds ``size_z`` (Iglewicz-Hoaglin; 3.5 is the usual cut);
- size consistency with the source: ``size_from_source`` = s narrows [``min_size``, ``max_size``] to the labelled
  cases' foreground volume range [min / s, max * s];
- calibrated foreground threshold ``calibrate_threshold`` (``dice``, ``volume`` on the labelled fold-validation
  probabilities, or ``prior`` on the pool's volume), against ensembles that under-segment the target: see
  :mod:`nnunet_gen.selftrain.calibration`;
- real:pseudo sampling weight ``pseudo_mass`` (needs a trainer derived from ``nnUNetTrainerSelfTrain``).

Diagnostics: every iteration records each pool case's pseudo-label foreground volume, the labelled cases' mean
volume, and, with ``reference_labels`` (the pool's labels, e.g. ``labelsTs`` when scoring), the reference volume and
the ratio pseudo / reference, in the state file and ``selftrain_report.{md,json}``.

Resumable: ``selftrain_state.json`` (atomic writes) records each finished step; a rerun of the same command skips
them. ``iterations`` and ``epsilon`` are not part of the run's identity, so a rerun with more iterations continues.
"""

from nnunet_gen.selftrain.config import SelfTrainConfig
from nnunet_gen.selftrain.loop import SelfTraining

__all__ = ["SelfTrainConfig", "SelfTraining"]
