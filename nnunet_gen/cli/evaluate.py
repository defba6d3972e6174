"""``nnunet-gen evaluate`` (per-case Dice/ASSD/HD95 + challenge summary) and ``nnunet-gen rank`` (CrossMoDA rank
table across methods). Every prediction is read and checked before any report is written."""
from __future__ import annotations

import argparse
from pathlib import Path

from nnunet_gen.cli.common import add_device, fold
from nnunet_gen.errors import DataError


def _evaluation_labels(labels: list[int] | None, reference: Path) -> list[int]:
    from nnunet_gen.evaluation.metrics import labels_from_dataset_json
    if labels:
        return labels
    dataset_json = reference.parent / "dataset.json"
    if not dataset_json.is_file():
        raise DataError(str(reference), "no dataset.json next to the reference folder; give the labels with -l")
    return labels_from_dataset_json(dataset_json)


def _evaluate(pred: Path, ref: Path, labels: list[int], args) -> list[dict]:
    from nnunet_gen.evaluation.metrics import evaluate_folders
    for folder in (pred, ref):
        if not folder.is_dir():
            raise DataError(str(folder), "folder not found")
    try:
        return evaluate_folders(pred, ref, labels, args.file_ending, args.np, args.allow_missing, args.empty_penalty)
    except DataError:
        raise
    except ValueError as error:
        raise DataError(str(pred), " ".join(str(error).split())) from None


def cmd_evaluate(args) -> None:
    from nnunet_gen.evaluation.reports import write_reports
    from nnunet_gen.evaluation.summary import summarize, summary_markdown
    ref = Path(args.r)
    rows = _evaluate(Path(args.p), ref, _evaluation_labels(args.l, ref), args)
    summary = summarize(rows)
    paths = write_reports(rows, args.o, summary)
    print(summary_markdown(summary))
    print("\n".join(str(p) for p in paths.values()))


def cmd_rank(args) -> None:
    from nnunet_gen.evaluation.reports import write_ranking, write_reports
    from nnunet_gen.evaluation.summary import rank_methods, ranking_markdown
    ref = Path(args.r)
    labels = _evaluation_labels(args.l, ref)
    folders = {}
    for entry in args.p:
        name, sep, folder = entry.partition("=")
        if not sep or not name or not folder:
            raise DataError("-p", f"expected name=FOLDER, got '{entry}'")
        if name in folders:
            raise DataError("-p", f"method name '{name}' given twice")
        folders[name] = Path(folder)
    rows_by_method = {name: _evaluate(folder, ref, labels, args) for name, folder in folders.items()}
    try:
        ranking = rank_methods(rows_by_method)
    except ValueError as error:
        raise DataError("rank", str(error)) from None
    for name, rows in rows_by_method.items():  # only once every method was read and ranked
        write_reports(rows, Path(args.o) / name, name="evaluation")
    write_ranking(ranking, args.o)
    print(ranking_markdown(ranking))


def cmd_evaluate_normalisation(args) -> None:
    from nnunet_gen.cli.common import device
    from nnunet_gen.evaluation.normalisation import evaluate_normalisation, normalisation_markdown
    results = evaluate_normalisation(args.d, args.tr, args.f, args.o, args.c, args.p, args.chk, args.subset, args.bins,
                                     args.channel, device(args))
    print(normalisation_markdown(results))


def _add_evaluation_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("-r", required=True, help="reference label folder")
    s.add_argument("-l", type=int, nargs="+", help="labels (default: dataset.json next to the reference folder)")
    s.add_argument("-o", required=True, help="output folder")
    s.add_argument("--file-ending", default=".nii.gz")
    s.add_argument("--allow-missing", action="store_true", help="score missing predictions as empty")
    s.add_argument("--empty-penalty", type=float, help="ASSD/HD95 (mm) for an empty mask; default: image diagonal "
                                                       "(CrossMoDA: 350)")
    s.add_argument("-np", type=int, default=2, help="processes")


def register(sub: argparse._SubParsersAction, render: argparse._SubParsersAction) -> None:
    s = sub.add_parser("evaluate", help="Dice/ASSD/HD95 per case + challenge summary (CSV, JSON, Markdown, PNG)")
    s.add_argument("-p", required=True, help="prediction folder")
    _add_evaluation_options(s)
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("rank", help="CrossMoDA rank table across prediction folders")
    s.add_argument("-p", nargs="+", required=True, help="name=PREDICTION_FOLDER, one per method")
    _add_evaluation_options(s)
    s.set_defaults(func=cmd_rank)

    s = sub.add_parser("evaluate-normalisation", help="per-site intensity histograms and mean pairwise JSD before/"
                                                      "after an adversarial-normalisation trainer's normaliser G")
    s.add_argument("-d", required=True, help="dataset ID or name")
    s.add_argument("-tr", required=True, help="trainer, e.g. nnUNetTrainerAdvNorm")
    s.add_argument("-f", type=fold, default=0, help="fold (or 'all')")
    s.add_argument("-c", default="3d_fullres", help="configuration")
    s.add_argument("-p", default="nnUNetPlans", help="plans identifier")
    s.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint file name")
    s.add_argument("-o", required=True, help="output folder")
    s.add_argument("--subset", choices=("val", "all"), default="val",
                   help="the fold's validation cases (the paper's choice) or every preprocessed case")
    s.add_argument("--bins", type=int, default=100, help="histogram bins")
    s.add_argument("--channel", type=int, default=0, help="image channel")
    add_device(s)
    s.set_defaults(func=cmd_evaluate_normalisation)
