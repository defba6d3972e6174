"""``nnunet-gen arhnet train|eval`` and ``nnunet-gen render arh`` (ARHNet, Huo et al. 2023; see
:mod:`nnunet_gen.generators.arh` and :mod:`nnunet_gen.render.arh`).

``--preset cpu|paper`` sets a training budget (``synth.arhnet.config.PRESETS``; explicit flags override it); with
validation (``--val-fraction`` or a preset) ``arhnet train`` prints each validation fPSNR as it is measured, then the
curve and the kept iteration, and writes the curve as a PNG next to the checkpoint."""
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
)
from nnunet_gen.errors import DataError
from nnunet_gen.generators.arh import TABLE1_LEARNED, TABLE3_LEARNED

SCALING_NOTE = ("note: images not in [0, 1] are min-max scaled to [0, 1] per case (ARHNet works on [0, 1] images); "
                "rendered composites are mapped back to the source's intensity units")


def _training_options(args) -> dict:
    """The budget flags the user gave (None: taken from ``--preset`` or the config defaults)."""
    return {"iterations": args.iterations, "batch_size": args.batch_size, "base_channels": args.base_channels,
            "depth": args.depth, "lr_schedule": args.lr_schedule, "validation_fraction": args.val_fraction,
            "validation_interval": args.val_interval, "patience": args.patience}


def cmd_arhnet_train(args) -> None:
    from nnunet_gen.generators.arh import (
        make_config,
        train_on_dataset,
        validation_curve_path,
    )
    config = make_config(args.method, args.patch_size, args.preset, **_training_options(args))
    apply_threads(args)
    print(SCALING_NOTE)
    harmonizer = train_on_dataset(args.d, args.o, config, args.labels, args.channel, args.holdout, args.seed,
                                  device(args))
    last = harmonizer.training_log[-1] if harmonizer.training_log else {}
    print(f"saved {args.method} to {args.o} ({len(harmonizer.training_log)} iterations; last losses {last})")
    record = harmonizer.validation
    if record:
        print("validation curve (iteration: fPSNR dB): " +
              ", ".join(f"{p['iteration']}: {p['fPSNR']:.2f}" for p in record["curve"]))
        print(f"kept iteration {record['best_iteration']} (validation fPSNR {record['best_fPSNR']:.2f} dB; composite "
              f"{record['composite_fPSNR']:.2f} dB{'; stopped early' if record['stopped_early'] else ''}); "
              f"curve: {validation_curve_path(args.o)}")


def cmd_arhnet_eval(args) -> None:
    from nnunet_gen.generators.arh import (
        evaluate_on_dataset,
        open_checkpoint,
        train_methods,
    )
    from synth.arhnet import format_metric_table
    from synth.arhnet.config import PRESETS
    if not args.checkpoints and not args.train_all:
        raise DataError("arhnet eval", "give --checkpoints or --train-all")
    apply_threads(args)
    print(SCALING_NOTE)
    output = Path(args.o)
    harmonizers, checkpoints = {}, {}
    patch_size = args.patch_size
    for path in args.checkpoints or []:
        harmonizer = open_checkpoint(path, device(args), patch_size)
        patch_size = patch_size or list(harmonizer.config.patch_size)
        name = harmonizer.method if harmonizer.method not in harmonizers else f"{harmonizer.method}:{Path(path).stem}"
        harmonizers[name], checkpoints[name] = harmonizer, str(path)
    patch_size = patch_size or list(PRESETS[args.preset]["patch_size"] if args.preset else (64, 64, 64))
    if args.train_all:
        methods = TABLE1_LEARNED + (TABLE3_LEARNED if args.table3 else ())
        trained, paths = train_methods(args.d, methods, patch_size, _training_options(args), output, args.labels,
                                       args.channel, args.holdout, args.seed, device(args), args.preset)
        harmonizers.update(trained)
        checkpoints.update(paths)
    details = {"training": {**_training_options(args), "preset": args.preset, "train_all": args.train_all}} \
        if args.train_all else {}
    table = evaluate_on_dataset(args.d, harmonizers, output, patch_size, args.labels, args.channel, args.holdout,
                                args.seed, checkpoints, details)
    print(format_metric_table(table))
    print(f"wrote {output / 'harmonization_table.csv'}, .json and {output / 'harmonization_fig3.png'}")


def cmd_render_arh(args) -> None:
    from nnunet_gen.render.arh import render_arh_dataset
    if args.no_harmonize == (args.checkpoint is not None):
        raise DataError("render arh", "give exactly one of --checkpoint and --no-harmonize")
    suffix = "ARH" if args.checkpoint else ("CopyPaste" if args.composite == "copypaste" else "CarveMix")
    if args.checkpoint:
        print(SCALING_NOTE)
    manifest = render_arh_dataset(args.d, args.o, target_name(args, suffix), args.checkpoint, args.num,
                                  args.composite, args.labels, args.seed, args.overwrite, device(args))
    print(f"{len(manifest.cases)} cases ({len(manifest.of_kind('synthetic'))} composites), "
          f"{len(manifest.skipped)} recipient(s) skipped: {manifest.skipped or ''}")


def _common(s: argparse.ArgumentParser) -> None:
    s.add_argument("-d", required=True, help="dataset ID or name")
    s.add_argument("--labels", type=int, nargs="+", default=[1], help="label values forming the lesion")
    s.add_argument("--channel", type=int, default=0, help="image channel the harmoniser works on")
    s.add_argument("--holdout", type=float, default=0.2,
                   help="fraction of patient groups held out from training for evaluation (0: train on all)")
    s.add_argument("--seed", type=int, default=0, help="seed of the split, the training and the perturbations")
    add_device(s)


PRESET_HELP = ("budget preset; explicit flags override it. cpu: 32^3 patches, base 8, depth 3, batch 4, "
               "1000 iterations, learning rates 10x the paper's with cosine decay, validation every 50 iterations, "
               "patience 6 (ARHNet: about 1.2 s/iteration measured in a short 32^3 run with --threads 1 on the "
               "shared 2-core CPU; 262-379 s per 800-iteration training at 24^3); "
               "paper: the paper's 64^3, batch 16, depth 4, base "
               "16, AdamW 1e-4/5e-5 constant, 20000 iterations, validation every 500, patience 10 (a GPU budget). "
               "Without a preset: 64^3, batch 2, base 16, depth 4, 2000 iterations, paper learning rates, no "
               "validation")


def _training(s: argparse.ArgumentParser) -> None:
    from synth.arhnet.config import LR_SCHEDULES, PRESETS
    s.add_argument("--preset", choices=sorted(PRESETS), help=PRESET_HELP)
    s.add_argument("--iterations", type=int, help="training iterations (default 2000)")
    s.add_argument("--patch-size", type=int, nargs=3, metavar=("X", "Y", "Z"), help="default 64 64 64")
    s.add_argument("--batch-size", type=int, help="default 2 (paper: 16)")
    s.add_argument("--base-channels", type=int, help="default 16")
    s.add_argument("--depth", type=int, help="generator levels (patch divisible by 2**(depth-1)); default 4")
    s.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                   help="constant (paper; default) or cosine: both learning rates decay along half a cosine to "
                        "1%% of their value at the last iteration")
    s.add_argument("--val-fraction", type=float,
                   help="fraction of the training patient groups held out for model selection: the generator with "
                        "the best validation fPSNR (fixed seeded eq. 1 patches) is saved and its curve written next "
                        "to it (model.safetensors -> model_validation.png; default 0: none)")
    s.add_argument("--val-interval", type=int, help="iterations between validation evaluations (default 100)")
    s.add_argument("--patience", type=int,
                   help="stop after this many validation evaluations without improvement (default 0: never)")
    add_threads(s)


def register(sub: argparse._SubParsersAction, render: argparse._SubParsersAction) -> None:
    from synth.arhnet import METHODS
    arh = sub.add_parser("arhnet", help="ARHNet lesion harmoniser: train, evaluate (Table 1/3, Fig. 3)")
    arh_sub = arh.add_subparsers(dest="arhnet_command", required=True)

    s = arh_sub.add_parser("train", help="train a harmoniser on the dataset's lesions (eq. 1 perturbations)")
    _common(s)
    s.add_argument("-o", required=True, help="output checkpoint (.safetensors); the split goes to <o>.json")
    s.add_argument("--method", default="arhnet", choices=sorted(METHODS))
    _training(s)
    s.set_defaults(func=cmd_arhnet_train)

    s = arh_sub.add_parser("eval", help="Table 1/3 on held-out perturbed cases: prints it, writes CSV/JSON/PNG")
    _common(s)
    s.add_argument("-o", required=True, help="output folder")
    s.add_argument("--checkpoints", nargs="+", help="trained harmonisers (Composite and HM rows are added)")
    s.add_argument("--train-all", action="store_true", help="train every learned Table 1 method first")
    s.add_argument("--table3", action="store_true", help="with --train-all: also the BN/IN/RAIN ablations")
    _training(s)
    s.set_defaults(func=cmd_arhnet_eval)

    s = render.add_parser("arh", help="Copy-Paste/CarveMix lesion composites harmonised by ARHNet")
    add_render_target(s, "ARH / CopyPaste / CarveMix")
    s.add_argument("--checkpoint", help="ARHNet checkpoint from `nnunet-gen arhnet train`")
    s.add_argument("--no-harmonize", action="store_true", help="plain composites (the baseline arm)")
    s.add_argument("--num", type=int, default=200, help="number of composites (paper: 200)")
    s.add_argument("--composite", default="copypaste", choices=["copypaste", "carvemix"])
    s.add_argument("--labels", type=int, nargs="+", default=[1], help="label values forming the lesion")
    s.add_argument("--seed", type=int, default=0)
    add_device(s)
    s.set_defaults(func=cmd_render_arh)
