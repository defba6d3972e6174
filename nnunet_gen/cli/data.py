"""``nnunet-gen`` commands of the data stages: ``ext-trainer``, ``phantom``, ``phantom-crossmodal``,
``phantom-multisite``, ``convert``, ``render naive``, ``preprocess``, ``derive-plans``, ``splits``."""
from __future__ import annotations

import argparse

from nnunet_gen.cli.common import add_render_target, parse_label_names, read_json_file, target_name
from nnunet_gen.errors import DataError


def cmd_ext_trainer(args) -> None:
    from nnunet_gen.run.nnunet import trainer_folder
    print(f"export nnUNet_extTrainer={trainer_folder()}")


def cmd_phantom(args) -> None:
    from nnunet_gen.convert.phantom import write_phantom_dataset
    print(write_phantom_dataset(args.d, args.name, args.cases_a, args.cases_b, args.seed, tuple(args.shape),
                                tuple(args.spacing), args.overwrite, args.target_centre))


def cmd_phantom_multisite(args) -> None:
    from nnunet_gen.convert.multisite_phantom import write_multisite_phantom
    print(write_multisite_phantom(args.d, args.name, args.train, args.test, args.seed, tuple(args.shape),
                                  args.seen, args.unseen, args.overwrite))


def cmd_phantom_crossmodal(args) -> None:
    from nnunet_gen.convert.crossmodal_phantom import write_crossmodal_phantom
    print(write_crossmodal_phantom(args.d, args.name, args.source, args.target, args.test, args.seed,
                                   tuple(args.shape), args.source_centre, args.overwrite))


def cmd_convert_folders(args) -> None:
    from nnunet_gen.convert.folders import convert_folders
    groups = read_json_file(args.groups, "--groups") if args.groups else None
    print(convert_folders(args.images, args.labels, args.d, args.name, args.channels,
                          parse_label_names(args.labels_map), groups, args.allow_empty_labels, args.overwrite))


def cmd_convert_crossmoda(args) -> None:
    from nnunet_gen.convert.folders import convert_crossmoda
    print(convert_crossmoda(args.i, args.d, args.name, args.source_modality, args.target_modality,
                            allow_empty_labels=args.allow_empty_labels, overwrite=args.overwrite))


def cmd_render_naive(args) -> None:
    from nnunet_gen.render.dataset import render_dataset
    from nnunet_gen.render.naive import naive_renderer
    if any(a <= 0 for a in args.alphas):
        raise DataError("--alphas", f"alpha must be > 0, got {args.alphas}")
    job = {"command": "render naive", "alphas": args.alphas, "labels": args.labels}
    manifest = render_dataset(args.d, args.o, target_name(args, "Naive"), naive_renderer(args.alphas, args.labels),
                              job, args.overwrite, desc="render naive", labels=args.labels)
    print(f"{len(manifest.cases)} cases ({len(manifest.of_kind('synthetic'))} synthetic), "
          f"{len(manifest.skipped)} skipped")


def cmd_preprocess(args) -> None:
    from nnunet_gen.preprocess import plan_and_preprocess
    print(plan_and_preprocess(args.d, args.c, args.np, args.plans, args.source, not args.replan))


def cmd_derive_plans(args) -> None:
    from nnunet_gen.preprocess import derive_plans
    print(derive_plans(args.d, args.p, args.features_base, args.features_max, args.source_plans, args.c))


def cmd_splits(args) -> None:
    from nnunet_gen.io.raw_dataset import RawDataset, nnunet_dir
    from nnunet_gen.io.splits import checked_splits, write_splits
    raw = RawDataset.find(args.d)
    print(write_splits(nnunet_dir("nnUNet_preprocessed") / raw.name, checked_splits(raw.manifest())))


def register(sub: argparse._SubParsersAction, render: argparse._SubParsersAction) -> None:
    s = sub.add_parser("ext-trainer", help="print the nnUNet_extTrainer value (set it for train AND predict)")
    s.set_defaults(func=cmd_ext_trainer)

    s = sub.add_parser("phantom", help="write the seeded two-centre phantom raw dataset")
    s.add_argument("-d", type=int, required=True, help="dataset ID")
    s.add_argument("--name", default="Phantom")
    s.add_argument("--cases-a", type=int, default=10, help="labelled centre-A training cases")
    s.add_argument("--cases-b", type=int, default=6, help="target-centre cases (imagesTs/labelsTs)")
    s.add_argument("--target-centre", choices=["B", "C"], default="B",
                   help="B: dark tumours; C: dark tumours with a heterogeneous texture (texture shift)")
    s.add_argument("--shape", type=int, nargs=3, default=[32, 48, 48], metavar=("Z", "Y", "X"))
    s.add_argument("--spacing", type=float, nargs=3, default=[1.0, 1.0, 1.0], metavar=("Z", "Y", "X"))
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_phantom)

    s = sub.add_parser("phantom-crossmodal", help="write the seeded cross-modal phantom: labelled T1, unlabelled T2, "
                                                  "T2 test set, paired T2 of the T1 subjects (imagesTrTarget)")
    s.add_argument("-d", type=int, required=True, help="dataset ID")
    s.add_argument("--name", default="PhantomCrossModal")
    s.add_argument("--source", type=int, default=10, help="labelled T1 subjects (imagesTr/labelsTr)")
    s.add_argument("--target", type=int, default=10,
                   help="unlabelled T2 subjects, centres A and B (imagesUnlabelledTr)")
    s.add_argument("--test", type=int, default=6, help="labelled T2 test subjects, centres A and B (imagesTs/labelsTs)")
    s.add_argument("--source-centre", choices=["A", "B"], default="A")
    s.add_argument("--shape", type=int, nargs=3, default=[32, 48, 48], metavar=("Z", "Y", "X"))
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_phantom_crossmodal)

    s = sub.add_parser("phantom-multisite", help="write the seeded multi-site phantom: training sites with their own "
                                                 "T1 contrast and acquisition, held-out cases per site and an unseen "
                                                 "site (imagesTs<site>/labelsTs<site>)")
    s.add_argument("-d", type=int, required=True, help="dataset ID")
    s.add_argument("--name", default="PhantomMultiSite")
    s.add_argument("--train", type=int, default=6, help="labelled training subjects per seen site")
    s.add_argument("--test", type=int, default=4, help="held-out subjects per site (seen and unseen)")
    s.add_argument("--seen", nargs="+", default=["A", "B", "C"], choices=["A", "B", "C", "D"])
    s.add_argument("--unseen", nargs="*", default=["D"], choices=["A", "B", "C", "D"])
    s.add_argument("--shape", type=int, nargs=3, default=[32, 48, 48], metavar=("Z", "Y", "X"))
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_phantom_multisite)

    convert = sub.add_parser("convert", help="convert data into an nnU-Net raw dataset").add_subparsers(
        dest="layout", required=True)
    s = convert.add_parser("folders", help="folder of images + folder of labels (any SimpleITK format)")
    s.add_argument("--images", required=True)
    s.add_argument("--labels", required=True)
    s.add_argument("-d", type=int, required=True, help="new dataset ID")
    s.add_argument("--name", required=True)
    s.add_argument("--channels", nargs="+", help="channel names; images are <case>_<channel>.<ext>")
    s.add_argument("--labels-map", nargs="+", help="label names, e.g. background=0 tumour=1 (consecutive values)")
    s.add_argument("--groups", help="JSON file: an object mapping case -> patient, for grouped splits")
    s.add_argument("--allow-empty-labels", action="store_true")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_convert_folders)
    s = convert.add_parser("crossmoda", help="CrossMoDA folder: <case>_ceT1 + <case>_Label, unlabelled <case>_hrT2")
    s.add_argument("-i", required=True, help="input folder")
    s.add_argument("-d", type=int, required=True)
    s.add_argument("--name", default="CrossMoDA")
    s.add_argument("--source-modality", default="ceT1")
    s.add_argument("--target-modality", default="hrT2")
    s.add_argument("--allow-empty-labels", action="store_true")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_convert_crossmoda)

    s = render.add_parser("naive", help="naive tumour intensity rescaling (GBA paper eq. 5)")
    add_render_target(s, "'Naive'")
    s.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.8, 1.5])
    s.add_argument("--labels", type=int, nargs="+", default=[1], help="label values to rescale")
    s.set_defaults(func=cmd_render_naive)

    s = sub.add_parser("preprocess", help="plan (or take the source's plans), preprocess, write grouped splits")
    s.add_argument("-d", required=True)
    s.add_argument("-c", nargs="+", default=["3d_fullres"])
    s.add_argument("-np", type=int, default=2)
    s.add_argument("--plans", default="nnUNetPlans")
    s.add_argument("--source", help="dataset whose plans to use (default: the manifest's source)")
    s.add_argument("--replan", action="store_true", help="plan this dataset itself even if it has a source")
    s.set_defaults(func=cmd_preprocess)

    s = sub.add_parser("derive-plans", help="copy plans with a narrower network (train/predict with -p NAME)")
    s.add_argument("-d", required=True)
    s.add_argument("-p", required=True, help="new plans identifier, e.g. nnUNetPlansSmall")
    s.add_argument("--features-base", type=int, default=16)
    s.add_argument("--features-max", type=int, default=128)
    s.add_argument("--source-plans", default="nnUNetPlans")
    s.add_argument("-c", default="3d_fullres")
    s.set_defaults(func=cmd_derive_plans)

    s = sub.add_parser("splits", help="(re)write patient-grouped splits_final.json")
    s.add_argument("-d", required=True)
    s.set_defaults(func=cmd_splits)
