"""``nnunet-gen`` commands of Generative Blending Augmentation (GBA paper, sections 3.3 and 4.2.1).

    nnunet-gen singan train -d 501 --case hrT2_001 --images-folder imagesTs -o singan.safetensors
    nnunet-gen render gba -d 501 -o 503 --singan singan.safetensors [--rules paper] [--no-blend]
    nnunet-gen tumour-distribution -d 503 --images TARGET_IMAGES --pseudo-labels PSEUDO -o dist/ --propose-alphas 3
    nnunet-gen qc gba -d 503 -o qc.png --cases 3
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
    nested_subparsers,
    target_name,
)
from nnunet_gen.errors import DataError


def cmd_singan_train(args) -> None:
    from nnunet_gen.generators.singan import SINGAN_PRESETS, train_singan_on_case
    from synth.singan import SinGANConfig
    try:
        config = SinGANConfig(scale_factor=args.scale_factor, min_size=args.min_size, max_size=args.max_size,
                              iterations_per_scale=SINGAN_PRESETS[args.preset] if args.iters is None else args.iters)
    except ValueError as error:
        raise DataError("singan train", str(error)) from None
    apply_threads(args)
    singan = train_singan_on_case(args.d, args.case, args.o, args.images_folder, args.channel, args.slice, config,
                                  args.seed, device(args))
    print(f"{args.o}: {singan.num_scales} scales {singan.scale_shapes[0]}..{singan.scale_shapes[-1]}, trained on "
          f"{args.case}; reconstruction RMSE per scale {', '.join(f'{r:.3f}' for r in singan.reconstruction_rmse)}")


def cmd_render_gba(args) -> None:
    from nnunet_gen.io.files import sha256_of_file
    from nnunet_gen.render.dataset import render_dataset
    from nnunet_gen.render.gba import gba_renderer

    blend = not args.no_blend
    for path in args.singan or []:
        if not Path(path).is_file():
            raise DataError(str(path), "SinGAN checkpoint not found")
    apply_threads(args)
    renderer = gba_renderer(args.singan, args.labels, args.alphas, args.scales, args.samples, args.rules,
                            args.dilation, args.sigma, args.seed, blend, args.channel, device=device(args),
                            keep_contrast=args.keep_contrast, min_contrast=args.min_contrast)
    job = {"command": "render gba", "singan": args.singan,
           "singan_sha256": [sha256_of_file(path) for path in args.singan or []], "labels": args.labels,
           "alphas": args.alphas, "scales": args.scales, "samples": args.samples, "rules": args.rules,
           "dilation": args.dilation, "sigma": args.sigma, "seed": args.seed, "blend": blend, "channel": args.channel,
           "keep_contrast": args.keep_contrast, "min_contrast": args.min_contrast}
    name = target_name(args, "GBA" if blend else "GBANoBlend")
    manifest = render_dataset(args.d, args.o, name, renderer, job, args.overwrite, desc="render gba",
                              labels=args.labels)
    print(f"{len(manifest.cases)} cases ({len(manifest.of_kind('synthetic'))} synthetic), "
          f"{len(manifest.skipped)} skipped")


def cmd_tumour_distribution(args) -> None:
    from nnunet_gen.qc.tumour_distribution import propose_alphas, tumour_distributions, write_distribution_report

    sets = tumour_distributions(args.d, args.images, args.pseudo_labels, args.labels, args.channel)
    proposal = None
    if args.propose_alphas:
        if "target" not in sets:
            raise DataError("--propose-alphas", "needs the target set (--images and --pseudo-labels)")
        proposal = propose_alphas(sets["source"], sets["target"], args.propose_alphas)
    png, json_path = write_distribution_report(sets, args.o, proposal)
    for name, measurements in sets.items():
        print(f"{name}: {len(measurements)} tumours")
    if proposal is not None:
        print(f"proposed --alphas {' '.join(f'{a:g}' for a in proposal['alphas'])} (target coverage "
              f"{proposal['coverage_before']:.0%} -> {proposal['coverage_predicted_after']:.0%} predicted)")
    print(png)
    print(json_path)


def cmd_qc_gba(args) -> None:
    from nnunet_gen.qc.gba import qc_montage
    if (args.target_image is None) != (args.target_label is None):
        raise DataError("qc gba", "--target-image and --target-label go together")
    target = (args.target_image, args.target_label) if args.target_image else None
    print(qc_montage(args.d, args.o, args.cases, args.variants, target))


def register(sub: argparse._SubParsersAction, render: argparse._SubParsersAction) -> None:
    from nnunet_gen.generators.singan import IMAGE_FOLDERS
    singan = nested_subparsers(sub, "singan", "SinGAN for Generative Blending Augmentation")
    s = singan.add_parser("train", help="train a SinGAN on ONE axial slice of a target-modality image")
    s.add_argument("-d", required=True, help="dataset ID or name")
    s.add_argument("--case", required=True, help="case ID")
    s.add_argument("--images-folder", default="imagesTr", choices=IMAGE_FOLDERS)
    s.add_argument("--channel", type=int, default=0, help="channel (modality) index")
    s.add_argument("--slice", type=int, help="axial slice index (default: the one with most foreground intensity)")
    s.add_argument("-o", required=True, help="output .safetensors checkpoint")
    s.add_argument("--scale-factor", type=float, default=0.75)
    s.add_argument("--min-size", type=int, default=25)
    s.add_argument("--max-size", type=int, default=250)
    s.add_argument("--preset", choices=["paper", "fast"], default="paper",
                   help="iterations per scale: paper 2000 (SinGAN's default), fast 200 (README 'SinGAN budget')")
    s.add_argument("--iters", type=int, help="iterations per scale (overrides --preset)")
    s.add_argument("--seed", type=int, default=0)
    add_device(s)
    add_threads(s)
    s.set_defaults(func=cmd_singan_train)

    s = render.add_parser("gba", help="Generative Blending Augmentation (GBA paper section 3.3)")
    add_render_target(s, "'GBA'")
    s.add_argument("--singan", nargs="+",
                   help="SinGAN checkpoint(s) (.safetensors); several: each copy uses one of them (e.g. SinGANs of "
                        "several target slices); optional with --no-blend --rules fixed")
    s.add_argument("--labels", type=int, nargs="+", default=[1], help="label values whose intensities are altered")
    s.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.8, 1.5], help="--rules fixed: alphas")
    s.add_argument("--scales", type=int, nargs="+", default=[3, 4],
                   help="--rules fixed: numbers of finest generators retained (start scale = num_scales - value)")
    s.add_argument("--samples", type=int, default=1, help="--rules fixed: noise samples per alpha and scale")
    s.add_argument("--rules", choices=["fixed", "paper"], default="fixed",
                   help="paper: per-case alphas by tumour volume/std (section 4.2.1, 18 renders per selected case)")
    s.add_argument("--dilation", type=int, default=7, help="in-plane mask dilation radius in px (eq. 7)")
    s.add_argument("--sigma", type=float, default=5.0, help="in-plane Gaussian sigma of the mask in px (eq. 7)")
    s.add_argument("--no-blend", action="store_true", help="naive rescaling through the same code path")
    s.add_argument("--keep-contrast", action="store_true",
                   help="re-impose the naive copy's tumour/surround contrast after blending (the SinGAN otherwise "
                        "pulls the tumour back toward its surroundings; not in the paper)")
    s.add_argument("--min-contrast", type=float, default=0.0,
                   help="drop copies whose tumour/surround contrast is within this of 1 (invisible tumour, label "
                        "noise); 0 keeps every copy (paper)")
    s.add_argument("--channel", type=int, default=0, help="channel the SinGAN was trained on")
    s.add_argument("--seed", type=int, default=0)
    add_device(s)
    add_threads(s)
    s.set_defaults(func=cmd_render_gba)

    s = sub.add_parser("tumour-distribution", help="tumour mean intensity / volume per set (GBA paper Fig. 7)")
    s.add_argument("-d", required=True, help="dataset (a rendered one also shows its augmented copies)")
    s.add_argument("--images", help="target-modality images folder (<case>_0000.nii.gz)")
    s.add_argument("--pseudo-labels", help="(pseudo-)labels of those images (<case>.nii.gz)")
    s.add_argument("--labels", type=int, nargs="+", default=[1])
    s.add_argument("--channel", type=int, default=0)
    s.add_argument("--propose-alphas", type=int, metavar="K", help="propose K alphas covering the target set")
    s.add_argument("-o", required=True, help="output folder (tumour_distribution.png / .json)")
    s.set_defaults(func=cmd_tumour_distribution)

    qc = nested_subparsers(sub, "qc", "quality-control figures")
    s = qc.add_parser("gba", help="original / naive / GBA slices through the tumour")
    s.add_argument("-d", required=True, help="GBA-rendered dataset")
    s.add_argument("-o", required=True, help="output PNG")
    s.add_argument("--cases", type=int, default=3)
    s.add_argument("--variants", type=int, default=2, help="GBA copies shown per case")
    s.add_argument("--target-image", help="a real target-modality image shown next to each row (realism check)")
    s.add_argument("--target-label", help="its tumour label or pseudo-label")
    s.set_defaults(func=cmd_qc_gba)
