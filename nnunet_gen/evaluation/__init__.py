"""Challenge-style evaluation as in the MICCAI CrossMoDA challenge and the GBA paper (Sallé et al., section 4.1 and
Table 3): per-case Dice/ASSD/HD95 (:mod:`~nnunet_gen.evaluation.metrics`), summaries and the rank table
(:mod:`~nnunet_gen.evaluation.summary`), reports on disk (:mod:`~nnunet_gen.evaluation.reports`)."""
