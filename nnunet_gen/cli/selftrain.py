"""``nnunet-gen selftrain`` and ``nnunet-gen predict`` (fold ensemble + largest component).

Stock equivalents of ``nnunet-gen predict -d D -tr T -f 0 1 2 3 4 -i IN -o OUT --largest-component``::

    nnUNetv2_predict -i IN -o RAW -d D -c 3d_fullres -tr T -f 0 1 2 3 4
    # several trainers: add --save_probabilities to each prediction, then
    nnUNetv2_ensemble -i RAW_T1 RAW_T2 -o ENSEMBLE
    # largest component per label: nnunetv2.postprocessing.remove_connected_components
    #   .remove_all_but_largest_component_from_segmentation (what --largest-component applies)
"""
from __future__ import annotations

import argparse
from pathlib import Path

from nnunet_gen.cli.common import add_device, device, training_environment
from nnunet_gen.errors import DataError


def cmd_selftrain(args) -> None:
    from nnunet_gen.io.raw_dataset import RawDataset
    from nnunet_gen.run.executors import make_executor
    from nnunet_gen.run.nnunet import NnUNetBackend
    from nnunet_gen.selftrain import SelfTrainConfig, SelfTraining
    from nnunet_gen.selftrain.pool import UNLABELLED_DEFAULT

    labelled = RawDataset.find(args.d)
    unlabelled = Path(args.unlabelled) if args.unlabelled else labelled.folder / UNLABELLED_DEFAULT
    config = SelfTrainConfig(
        labelled=labelled.name, unlabelled=str(unlabelled.resolve()), output_id_base=args.o, trainer=args.tr,
        configuration=args.c, plans=args.p, folds=tuple(args.f), iterations=args.iterations, epsilon=args.epsilon,
        val_images=str(Path(args.val_images).resolve()) if args.val_images else None,
        val_labels=str(Path(args.val_labels).resolve()) if args.val_labels else None,
        confidence=args.confidence, min_size=args.min_size, max_size=args.max_size, size_z=args.size_z,
        pseudo_mass=args.pseudo_mass, calibrate_threshold=args.calibrate_threshold,
        size_from_source=args.size_from_source, dice_floor=args.dice_floor,
        reference_labels=str(Path(args.reference_labels).resolve()) if args.reference_labels else None)
    if args.pseudo_mass is not None:
        _require_selftrain_trainer(args.tr)
    backend = NnUNetBackend(args.tr, args.c, args.p, args.f, device(args), args.np,
                            training_environment(device(args)))
    run = SelfTraining(config, backend, workdir=Path(args.workdir) if args.workdir else None)
    run.executor = make_executor(args.executor, args.workers, run.workdir / "submitit", args.slurm_partition,
                                 args.slurm_timeout_min)
    run.run()
    print((run.workdir / "selftrain_report.md").read_text())


def _require_selftrain_trainer(name: str) -> None:
    """--pseudo-mass only acts through nnUNetTrainerSelfTrain; refuse other trainers rather than ignore it."""
    import nnunet_gen.training.selftrain as module
    if not isinstance(getattr(module, name, None), type):
        raise DataError("--pseudo-mass", f"trainer {name} does not read the real:pseudo weight; use "
                                         f"nnUNetTrainerSelfTrain or a schedule variant (e.g. "
                                         f"nnUNetTrainerSelfTrain_5epochs)")


def cmd_predict(args) -> None:
    from nnunet_gen.inference import predict_with_postprocessing
    print(predict_with_postprocessing(args.d, args.tr, args.f, Path(args.i), Path(args.o), args.c, args.p,
                                      device(args), args.largest_component, args.np))


def register(sub: argparse._SubParsersAction, render: argparse._SubParsersAction) -> None:
    s = sub.add_parser("selftrain", help="iterative pseudo-label self-training with nnU-Net fold ensembles")
    s.add_argument("-d", required=True, help="labelled dataset ID or name")
    s.add_argument("--unlabelled", help="folder of unlabelled images <case>_0000.nii.gz (default: the dataset's "
                                        "imagesUnlabelledTr)")
    s.add_argument("-o", type=int, required=True, help="first new dataset ID; iteration k writes ID + k - 1")
    s.add_argument("-tr", required=True, help="trainer (every iteration); nnUNetTrainerSelfTrain[_schedule] for "
                                              "--pseudo-mass")
    s.add_argument("-c", default="3d_fullres")
    s.add_argument("-p", default="nnUNetPlans", help="plans identifier")
    s.add_argument("-f", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="folds of the ensemble")
    s.add_argument("--iterations", type=int, default=3, help="self-training iterations after iteration 0 "
                                                             "(GBA paper: 3)")
    s.add_argument("--epsilon", type=float, default=0.01, help="stop when the validation Dice changes less, or "
                                                               "pseudo-labels agree above 1 - epsilon")
    s.add_argument("--val-images", help="labelled validation images (for the Dice-change stop rule)")
    s.add_argument("--val-labels", help="labels of --val-images")
    s.add_argument("--dice-floor", type=float,
                   help="stop after the first stage when the validation Dice is below this (the GBA paper's "
                        "failure-case rule; needs --val-images/--val-labels)")
    s.add_argument("--confidence", type=float, help="voxels with max probability below this get the ignore label")
    s.add_argument("--min-size", type=float, help="drop pseudo-labels with foreground volume below (mm3)")
    s.add_argument("--max-size", type=float, help="drop pseudo-labels with foreground volume above (mm3)")
    s.add_argument("--size-z", type=float, help="drop pseudo-labels whose volume robust z-score exceeds this "
                                                "(e.g. 3.5)")
    s.add_argument("--size-from-source", type=float, metavar="SLACK",
                   help="drop pseudo-labels whose foreground volume lies outside the labelled cases' volume range "
                        "[min / SLACK, max * SLACK] (e.g. 1.5)")
    s.add_argument("--calibrate-threshold", choices=["dice", "volume", "prior"],
                   help="foreground threshold of the pseudo-labels instead of the argmax (0.5): 'dice' maximises "
                        "Dice, 'volume' matches the reference volume, both on the labelled fold-validation "
                        "probabilities (trains with --npz); 'prior' makes the pool's mean pseudo-label volume "
                        "equal the labelled cases' mean volume")
    s.add_argument("--reference-labels", help="labels of the unlabelled pool, read only to report pseudo-label / "
                                              "reference volume per case (never used for training)")
    s.add_argument("--pseudo-mass", type=float, help="total sampling probability of pseudo-labelled cases "
                                                     "(default: uniform over all cases)")
    s.add_argument("--executor", choices=["local", "parallel", "slurm"], default="local")
    s.add_argument("--workers", type=int, help="parallel: concurrent trainings (default: number of GPUs)")
    s.add_argument("--slurm-partition")
    s.add_argument("--slurm-timeout-min", type=int, default=24 * 60)
    add_device(s)
    s.add_argument("-np", type=int, default=2, help="processes for preprocessing and prediction")
    s.add_argument("--workdir", help="state, predictions and reports (default: nnUNet_results/selftrain_<ID>_<TR>)")
    s.set_defaults(func=cmd_selftrain)

    s = sub.add_parser("predict", help="fold-ensemble nnUNetv2_predict + largest component per label")
    s.add_argument("-d", required=True)
    s.add_argument("-tr", required=True)
    s.add_argument("-c", default="3d_fullres")
    s.add_argument("-p", default="nnUNetPlans")
    s.add_argument("-f", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    s.add_argument("-i", required=True, help="input images folder")
    s.add_argument("-o", required=True, help="output folder")
    s.add_argument("--largest-component", action="store_true", help="keep the largest component of each label")
    add_device(s)
    s.add_argument("-np", type=int, default=2)
    s.set_defaults(func=cmd_predict)
