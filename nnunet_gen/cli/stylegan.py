"""``nnunet-gen`` commands of the joint image + label StyleGAN2 (Son et al.) and of generative-model evaluation.

    nnunet-gen stylegan train -d 500 -o g.safetensors --preset cpu [--iters N] [--sample-every 500]
    nnunet-gen render stylegan -d 500 -o 501 --checkpoint g.safetensors --num 300 [--truncation 0.7] [--with-real]
    nnunet-gen gen-eval -d 500 --checkpoint g.safetensors --num 200 -o eval/ [--segmenter 502 -tr T -c 2d -f 0]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from nnunet_gen.cli.common import (add_device, add_render_target, add_threads, apply_threads, device, fold,
                                   target_name)
from nnunet_gen.errors import DataError


def stylegan_config(args):
    from dataclasses import replace

    from nnunet_gen.io.raw_dataset import RawDataset
    from synth.stylegan2 import PRESETS
    raw = RawDataset.find(args.d)
    overrides = {"image_channels": raw.num_channels, "num_classes": len(raw.labels)}
    if args.iters is not None:
        overrides["iterations"] = args.iters
    if args.resolution is not None:
        overrides["resolution"] = args.resolution
    try:
        return replace(PRESETS[args.preset], **overrides)
    except ValueError as error:
        raise DataError("stylegan train", str(error)) from None


def cmd_stylegan_train(args) -> None:
    from nnunet_gen.generators.stylegan import train_stylegan_on_dataset
    config = stylegan_config(args)
    apply_threads(args)
    model = train_stylegan_on_dataset(args.d, args.o, config, args.seed, device(args), args.sample_every,
                                      min_foreground=args.min_foreground)
    last = {name: values[-1] for name, values in model.history.items()}
    print(f"{args.o}: {config.resolution}x{config.resolution}, {config.iterations} iterations; final losses "
          f"{', '.join(f'{k} {v:.3f}' for k, v in last.items())}")


def cmd_render_stylegan(args) -> None:
    from nnunet_gen.render.stylegan import render_stylegan
    if args.num < 1:
        raise DataError("--num", f"must be >= 1, got {args.num}")
    apply_threads(args)
    seeds = range(args.seed, args.seed + args.num)
    manifest = render_stylegan(args.checkpoint, args.o, target_name(args, "StyleGAN"), list(seeds), args.truncation,
                               args.d if args.with_real else None, device(args), overwrite=args.overwrite)
    print(f"{len(manifest.of_kind('synthetic'))} fake cases, {len(manifest.base_cases())} real")


def cmd_gen_eval(args) -> None:
    from nnunet_gen.evaluation.generative import Segmenter, evaluate_generator
    from nnunet_gen.run.nnunet import NnUNetBackend
    apply_threads(args)
    segmenter = None
    if args.segmenter is not None:
        if args.tr is None:
            raise DataError("--segmenter", "needs -tr (the segmenter's trainer)")
        segmenter = Segmenter(args.segmenter, NnUNetBackend(args.tr, args.c, args.p, args.f, device(args), 1))
    print(evaluate_generator(args.d, args.checkpoint, args.num, Path(args.o), args.seed, args.truncation, segmenter,
                             device(args), args.feature_iters).read_text())


def register(sub: argparse._SubParsersAction, render: argparse._SubParsersAction) -> None:
    stylegan = sub.add_parser("stylegan", help="joint image + label StyleGAN2 (Son et al.)").add_subparsers(
        dest="stylegan_command", required=True)
    s = stylegan.add_parser("train", help="train on every channel + the labels of a raw dataset's axial slices")
    s.add_argument("-d", required=True, help="labelled dataset ID or name (all channels are used)")
    s.add_argument("-o", required=True, help="checkpoint (.safetensors)")
    s.add_argument("--preset", choices=["cpu", "paper"], default="cpu", help="cpu: 64x64; paper: 256x256")
    s.add_argument("--iters", type=int, help="training iterations (default: the preset's)")
    s.add_argument("--resolution", type=int, help="slice size (power of 2; default: the preset's)")
    s.add_argument("--min-foreground", type=float, default=0.0,
                   help="train only on slices with at least this fraction of labelled voxels")
    s.add_argument("--sample-every", type=int, help="write a sample grid PNG every N iterations")
    s.add_argument("--seed", type=int, default=0)
    add_device(s)
    add_threads(s)
    s.set_defaults(func=cmd_stylegan_train)

    s = render.add_parser("stylegan", help="fake cases (images + argmax labels), one per latent seed")
    add_render_target(s, "'StyleGAN'")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--num", type=int, required=True, help="fake cases; latent seeds --seed .. --seed + num - 1")
    s.add_argument("--seed", type=int, default=0, help="first latent seed")
    s.add_argument("--truncation", type=float, default=1.0, help="truncation psi in [0, 1]")
    s.add_argument("--with-real", action="store_true", help="copy the real labelled cases of -d too")
    add_device(s)
    add_threads(s)
    s.set_defaults(func=cmd_render_stylegan)

    s = sub.add_parser("gen-eval", help="FID (own feature network), bMMD2, MS-SSIM diversity, memorisation and "
                                        "label consistency of a StyleGAN2 against a dataset's real slices")
    s.add_argument("-d", required=True, help="the real dataset")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--num", type=int, default=200, help="fake slices to evaluate")
    s.add_argument("-o", required=True, help="output folder (CSV, JSON, Markdown, PNG)")
    s.add_argument("--seed", type=int, default=1_000_000, help="first latent seed of the evaluated fakes")
    s.add_argument("--truncation", type=float, default=1.0)
    s.add_argument("--feature-iters", type=int, default=500, help="training iterations of the FID feature network")
    s.add_argument("--segmenter", help="dataset of an nnU-Net trained on real data (label consistency)")
    s.add_argument("-tr", help="the segmenter's trainer")
    s.add_argument("-c", default="2d")
    s.add_argument("-p", default="nnUNetPlans")
    s.add_argument("-f", type=fold, nargs="+", default=[0], help="the segmenter's folds (or 'all')")
    add_device(s)
    add_threads(s)
    s.set_defaults(func=cmd_gen_eval)
