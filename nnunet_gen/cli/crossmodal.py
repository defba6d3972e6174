"""``nnunet-gen`` commands of the cross-modal front end (GBA paper, sections 3.2 and 4.2.2) and the whole pipeline.

    nnunet-gen crop -d 600 -o 601 --size 0 64 64 --spacing 1 1 1
    nnunet-gen translate train -d 601 -o translator.safetensors --method cyclegan --preset cpu --runs 3
    nnunet-gen render translate -d 601 -o 602 --translator translator_seed0.safetensors ... --deconvolve 1.0
    nnunet-gen paste-back -d 601 --images-folder imagesTs -i PREDICTIONS -o ORIGINAL_SPACE
    nnunet-gen crossmoda -d 600 -o 610 -tr nnUNetTrainer --size 0 64 64 --augment gba --val-folder imagesVal
"""
from __future__ import annotations

import argparse
from pathlib import Path

from nnunet_gen.cli.common import (
    add_device,
    add_render_target,
    add_threads,
    apply_threads,
    device,
    target_name,
    training_environment,
)
from nnunet_gen.errors import DataError


def cmd_crop(args) -> None:
    from nnunet_gen.convert.crop import crop_dataset
    print(crop_dataset(args.d, args.o, target_name(args, "Crop"), args.size, args.spacing, args.overwrite))


def cmd_paste_back(args) -> None:
    from nnunet_gen.convert.crop import paste_back_folder
    cases = paste_back_folder(args.d, args.images_folder, Path(args.i), Path(args.o))
    print(f"{len(cases)} prediction(s) pasted back into {args.o}")


def run_checkpoints(output: str, runs: int, seed: int) -> list[tuple[int, Path]]:
    """(seed, checkpoint path) of each run: ``output`` itself for one run, ``<stem>_seed<S>.safetensors`` for
    several."""
    path = Path(output)
    if runs == 1:
        return [(seed, path)]
    stem = path.name[:-len(".safetensors")] if path.name.endswith(".safetensors") else path.name
    return [(seed + k, path.with_name(f"{stem}_seed{seed + k}.safetensors")) for k in range(runs)]


def translation_config(args):
    from dataclasses import replace

    from synth.translation import PRESETS
    overrides = {"method": args.method}
    if args.translation_iters is not None:
        overrides["iterations"] = args.translation_iters
    try:
        return replace(PRESETS[args.preset], **overrides)
    except ValueError as error:
        raise DataError("translate train", str(error)) from None


def cmd_translate_train(args) -> None:
    from nnunet_gen.generators.translation import train_translation
    if args.runs < 1:
        raise DataError("--runs", f"must be >= 1, got {args.runs}")
    config = translation_config(args)
    apply_threads(args)
    for seed, path in run_checkpoints(args.o, args.runs, args.seed):
        translator = train_translation(args.d, path, config, Path(args.target_images) if args.target_images else None,
                                       args.source_cases, args.target_cases, seed, device(args))
        last = {name: values[-1] for name, values in translator.history.items()}
        print(f"{path}: {config.method}, seed {seed}, final losses "
              f"{', '.join(f'{k} {v:.3f}' for k, v in last.items())}")


def cmd_render_translate(args) -> None:
    from nnunet_gen.render.translate import Deconvolution, render_translated
    deconvolution = None
    if args.deconvolve is not None:
        deconvolution = Deconvolution(args.deconvolve, args.vc_iterations, args.vc_relaxation)
    apply_threads(args)
    manifest = render_translated(args.d, args.o, target_name(args, "Pseudo"), args.translator, args.target_modality,
                                 deconvolution, device(args), args.overwrite)
    print(f"{len(manifest.cases)} translated cases from {len(args.translator)} run(s)")


def cmd_crossmoda(args) -> None:
    from nnunet_gen.crossmoda import CrossModa, CrossModaConfig
    from nnunet_gen.io.raw_dataset import RawDataset
    from nnunet_gen.run.executors import make_executor
    from nnunet_gen.run.nnunet import NnUNetBackend

    config = CrossModaConfig(
        dataset=RawDataset.find(args.d).name, output_id_base=args.o, trainer=args.tr, crop_size=tuple(args.size),
        spacing=tuple(args.spacing) if args.spacing else None, translation=args.method, preset=args.preset,
        translation_iterations=args.translation_iters, runs=args.runs, seed=args.seed,
        source_cases=tuple(args.source_cases or ()), target_cases=tuple(args.target_cases or ()),
        deconvolution_sigma_mm=args.deconvolve, deconvolution_iterations=args.vc_iterations,
        deconvolution_relaxation=args.vc_relaxation, augment=args.augment, alphas=tuple(args.alphas),
        singan_iterations=args.singan_iters, singan_min_size=args.singan_min_size, gba_scales=tuple(args.scales),
        keep_contrast=args.keep_contrast, configuration=args.c, plans=args.p,
        folds=tuple(args.f), iterations=args.iterations, epsilon=args.epsilon, dice_floor=args.dice_floor,
        val_folder=args.val_folder, test_folder=args.test_folder)
    apply_threads(args)
    backend = NnUNetBackend(args.tr, args.c, args.p, args.f, device(args), args.np,
                            training_environment(device(args)))
    run = CrossModa(config, backend, workdir=Path(args.workdir) if args.workdir else None, device=device(args),
                    overwrite=args.overwrite)
    run.executor = make_executor(args.executor, args.workers, run.workdir / "submitit", args.slurm_partition,
                                 args.slurm_timeout_min)
    print(run.run().read_text())


def _translation_arguments(parser: argparse.ArgumentParser, iterations_flag: str) -> None:
    parser.add_argument("--method", choices=["cyclegan", "cut"], default="cyclegan",
                        help="CycleGAN (Zhu et al. 2017, the paper's) or CUT (Park et al. 2020, one generator)")
    parser.add_argument("--preset", choices=["cpu", "paper"], default="cpu", help="network size and budget")
    parser.add_argument(iterations_flag, dest="translation_iters", type=int,
                        help="training iterations (default: the preset's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source-cases", nargs="+", metavar="PATTERN",
                        help="labelled cases to train on (shell patterns, e.g. 'ldn_*': one centre, as the paper)")
    parser.add_argument("--target-cases", nargs="+", metavar="PATTERN", help="target images to train on")


def _deconvolution_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--deconvolve", type=float, metavar="SIGMA_MM",
                        help="Van Cittert deconvolution with a Gaussian PSF of this scale (mm)")
    parser.add_argument("--vc-iterations", type=int, default=10, help="Van Cittert iterations")
    parser.add_argument("--vc-relaxation", type=float, default=1.0, help="Van Cittert relaxation factor (0, 2]")


def register(sub: argparse._SubParsersAction, render: argparse._SubParsersAction) -> None:
    s = sub.add_parser("crop", help="resample to one spacing and crop around the brain centre (every folder)")
    s.add_argument("-d", required=True, help="source dataset ID or name")
    s.add_argument("-o", type=int, required=True, help="new dataset ID")
    s.add_argument("--name", help="new dataset name (default: source name + 'Crop')")
    s.add_argument("--size", type=int, nargs=3, required=True, metavar=("Z", "Y", "X"),
                   help="crop size in voxels of the resampled grid (0: whole axis)")
    s.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"), help="resample to this spacing (mm)")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_crop)

    s = sub.add_parser("paste-back", help="put predictions made on a cropped dataset into the original geometry")
    s.add_argument("-d", required=True, help="the cropped dataset")
    s.add_argument("--images-folder", default="imagesTs", help="folder the predicted images came from")
    s.add_argument("-i", required=True, help="predictions on the crops")
    s.add_argument("-o", required=True, help="output folder")
    s.set_defaults(func=cmd_paste_back)

    translate = sub.add_parser("translate", help="unpaired source -> target modality translation").add_subparsers(
        dest="translate_command", required=True)
    s = translate.add_parser("train", help="train CycleGAN or CUT on axial slices")
    s.add_argument("-d", required=True, help="dataset: labelled source cases + imagesUnlabelledTr target images")
    s.add_argument("-o", required=True, help="checkpoint (.safetensors); with --runs N, <stem>_seed<S>.safetensors")
    s.add_argument("--target-images", help="target images folder (default: the dataset's imagesUnlabelledTr)")
    s.add_argument("--runs", type=int, default=1, help="independent trainings, seeds seed..seed+N-1")
    _translation_arguments(s, "--iters")
    add_device(s)
    add_threads(s)
    s.set_defaults(func=cmd_translate_train)

    s = render.add_parser("translate", help="pseudo-target dataset: labelled cases translated, labels copied")
    add_render_target(s, "'Pseudo'")
    s.add_argument("--translator", nargs="+", required=True, help="checkpoints, one per run")
    s.add_argument("--target-modality", help="channel name (default: dataset.json unlabelled_modality)")
    _deconvolution_arguments(s)
    add_device(s)
    add_threads(s)
    s.set_defaults(func=cmd_render_translate)

    s = sub.add_parser("crossmoda", help="the whole cross-modal pipeline: crop, translate, augment, self-train, "
                                         "predict, paste back, evaluate (resumable)")
    s.add_argument("-d", required=True, help="labelled source cases, imagesUnlabelledTr target pool, test folder")
    s.add_argument("-o", type=int, required=True, help="first new dataset ID (uses IDs o .. o+2+iterations)")
    s.add_argument("-tr", required=True, help="nnU-Net trainer of every segmentation stage")
    s.add_argument("-c", default="3d_fullres")
    s.add_argument("-p", default="nnUNetPlans")
    s.add_argument("-f", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    s.add_argument("--size", type=int, nargs=3, default=[0, 0, 0], metavar=("Z", "Y", "X"), help="crop size")
    s.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"))
    _translation_arguments(s, "--translation-iters")
    s.add_argument("--runs", type=int, default=1, help="translation runs pooled into the pseudo-target dataset")
    _deconvolution_arguments(s)
    s.add_argument("--augment", choices=["none", "naive", "gba"], default="gba")
    s.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.8, 1.5])
    s.add_argument("--singan-iters", type=int, default=200, help="SinGAN iterations per scale (200: 'fast')")
    s.add_argument("--singan-min-size", type=int, default=25, help="SinGAN coarsest scale (px; SinGAN paper: 25)")
    s.add_argument("--scales", type=int, nargs="+", default=[3, 4], help="GBA: finest SinGAN generators retained")
    s.add_argument("--keep-contrast", action="store_true", help="GBA keeps the contrast alpha asks for")
    s.add_argument("--iterations", type=int, default=3, help="self-training iterations (paper: 3)")
    s.add_argument("--epsilon", type=float, default=0.01)
    s.add_argument("--dice-floor", type=float, help="stop after the first stage below this validation Dice")
    s.add_argument("--val-folder", help="labelled target validation images folder of -d (e.g. imagesVal)")
    s.add_argument("--test-folder", default="imagesTs", help="target images to predict (labels: evaluation)")
    s.add_argument("--executor", choices=["local", "parallel", "slurm"], default="local")
    s.add_argument("--workers", type=int)
    s.add_argument("--slurm-partition")
    s.add_argument("--slurm-timeout-min", type=int, default=24 * 60)
    s.add_argument("-np", type=int, default=2)
    s.add_argument("--workdir", help="state and reports (default: nnUNet_results/crossmoda_<ID>_<TR>)")
    s.add_argument("--overwrite", action="store_true", help="replace existing datasets of the run's names")
    add_device(s)
    add_threads(s)
    s.set_defaults(func=cmd_crossmoda)
