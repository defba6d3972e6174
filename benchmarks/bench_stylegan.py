"""Son et al.'s settings in direction: does a joint image + label StyleGAN2 help a data-poor nnU-Net?

Data per seed (its own nnUNet_raw/preprocessed/results under ``--workdir``), ``--cases`` labelled training cases and
``--test`` held-out cases of ``--shape`` voxels, T1 + T2 of the same anatomy (tissue ordering inverted between the
contrasts, enhancing homogeneous T1 and heterogeneous T2 tumours):

* ``--data phantom``: the cross-modal phantom's subjects (``nnunet_gen.convert.crossmodal_phantom``), one per case;
* ``--data anatomy``: real anatomy (``benchmarks/anatomy/crossmodal.py``, ``two_contrast_case``): training cases are
  crops of the four training subjects in turn (real T1, T2 from their tissue maps), held-out cases crops of the
  ``itk`` subject, never trained on; 2 mm voxels.

A StyleGAN2
(``cpu`` preset, ``--iters``) is trained on the training slices whose tumour covers at least ``--min-foreground`` of
the slice (the paper's BraTS slices all show tumour; the phantom's tumours are ~1% of a slice and absent from most
slices, and a generator trained on every slice draws no tumour at the CPU budget); every arm trains stock
``nnUNetv2_train 2d all`` with the real dataset's plans and one schedule, and is scored by Dice on the held-out
cases (3D volumes, slice-wise). Percentages count 2D slices against the real training set's slices (R):

* 100% R: the real volumes;  * 100% F: as many fake slices as R has;  * 100% F + 100% R;  * 300% F + 100% R;
* 300% A + 100% R: three flipped copies (x, y, both) of every real case (the paper's flip-augmentation control).

Also ``gen-eval`` of the generator (FID with our feature network, bMMD2, MS-SSIM diversity, memorisation, and label
consistency: the 100% R arm's nnU-Net applied to the fakes against their generated labels, next to the same on real
training slices).
Resumable; holds /tmp/nnunet_gen_cpu.lock; writes benchmarks/output/bench_stylegan[_anatomy].{md,json}.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_stylegan.py --seeds 0 1 2
    PYTHONPATH=. .venv/bin/python benchmarks/bench_stylegan.py --data anatomy --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from seed_workdir import arm_backend, enter_seed_workdir, mean_dice, mean_std, run_seeds_locked, train_and_predict

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "benchmarks" / "output"
REAL, FAKE, FAKE_REAL, FAKE3_REAL, FLIP_REAL = 960, 961, 962, 963, 964


def case_source(seed: int, args) -> tuple[Callable[[int, bool], tuple[np.ndarray, np.ndarray]], float]:
    """(``make(k, train)`` -> ((2, Z, Y, X) T1 + T2, label) of case ``k``, voxel spacing in mm) of ``args.data``."""
    shape = tuple(args.shape)
    if args.data == "phantom":
        from nnunet_gen.convert.crossmodal_phantom import crossmodal_case

        def phantom(k: int, train: bool) -> tuple[np.ndarray, np.ndarray]:
            (t1, label), (t2, _) = (crossmodal_case(seed * 100003 + k, m, "A", shape) for m in ("T1", "T2"))
            return np.stack([t1, t2]), label
        return phantom, 1.0
    sys.path.insert(0, str(REPO))
    from benchmarks.anatomy.crossmodal import (SOURCE_SUBJECTS, TARGET_SUBJECTS, TEST_SUBJECTS, load_subjects,
                                               two_contrast_case)
    from benchmarks.anatomy.shift import SPACING_MM
    training = (*SOURCE_SUBJECTS, *TARGET_SUBJECTS)
    subjects = load_subjects((*training, *TEST_SUBJECTS))
    return (lambda k, train: two_contrast_case(subjects[training[k % len(training)] if train else TEST_SUBJECTS[0]],
                                               seed * 1_000_003 + k, shape)), SPACING_MM


def write_two_contrast(seed: int, args) -> None:
    from nnunet_gen.io.images import Geometry
    from nnunet_gen.io.manifest import Manifest
    from nnunet_gen.io.writer import DatasetWriter
    make_case, spacing = case_source(seed, args)
    geometry = Geometry.isotropic(spacing)
    plan = [(f"train_{k:03d}", "imagesTr", "labelsTr") for k in range(args.cases)]
    plan += [(f"test_{k:03d}", "imagesTs", "labelsTs") for k in range(args.test)]
    with DatasetWriter(REAL, "TwoContrast", {0: "T1", 1: "T2"}, {"background": 0, "tumour": 1},
                       {"command": "bench_stylegan", "data": args.data, "seed": seed, "shape": args.shape}) as writer:
        for k, (case, images, labels) in enumerate(plan):
            writer.write_case(case, *make_case(k, images == "imagesTr"), geometry, images, labels)
        writer.finalize(Manifest.for_real_cases([c for c, i, _ in plan if i == "imagesTr"]))


def write_flipped(source: Path) -> None:
    """``300% A + 100% R``: the real cases and their x-, y- and xy-flipped copies."""
    from nnunet_gen.io.manifest import CaseRecord, Manifest
    from nnunet_gen.io.raw_dataset import RawDataset
    from nnunet_gen.io.writer import DatasetWriter
    raw = RawDataset(source)
    manifest = raw.manifest()
    out = Manifest(source_dataset=raw.name, command="bench_stylegan flips")
    with DatasetWriter(FLIP_REAL, "TwoContrastFlips", raw.dataset_json["channel_names"], raw.labels,
                       {"command": "flips"}) as writer:
        for case in raw.case_ids():
            data = raw.read_case(case)
            out.add(manifest.cases[case])
            writer.write_case(case, data.images, data.label, data.geometry)
            for name, axes in (("flipx", (-1,)), ("flipy", (-2,)), ("flipxy", (-2, -1))):
                out.add(CaseRecord(f"{case}_{name}", "synthetic", case, manifest.cases[case].group, "flip",
                                   {"axes": list(axes)}))
                writer.write_case(f"{case}_{name}", np.flip(data.images, axes).copy(),
                                  np.flip(data.label, axes).copy(), data.geometry)
        writer.finalize(out)


def run_seed(seed: int, args) -> tuple[dict[str, float], dict]:
    from dataclasses import replace

    from nnunet_gen.evaluation.generative import Segmenter, evaluate_generator
    from nnunet_gen.generators.stylegan import train_stylegan_on_dataset
    from nnunet_gen.io.images import read_image
    from nnunet_gen.preprocess import is_preprocessed, plan_and_preprocess
    from nnunet_gen.render.stylegan import render_stylegan
    from synth.stylegan2 import PRESETS

    workdir, log, _ = enter_seed_workdir(args.workdir, seed, OUTPUT / f"{args.stem}_seed{seed}.log")
    raw = workdir / "nnUNet_raw"
    source = raw / f"Dataset{REAL}_TwoContrast"
    if not source.is_dir():
        write_two_contrast(seed, args)
    checkpoint = workdir / "stylegan.safetensors"
    if not checkpoint.is_file():
        config = replace(PRESETS["cpu"], image_channels=2, num_classes=2, iterations=args.iters)
        started = time.time()
        train_stylegan_on_dataset(REAL, checkpoint, config, seed, sample_every=max(1, args.iters // 4),
                                  progress=False, min_foreground=args.min_foreground)
        (workdir / "stylegan_seconds.txt").write_text(f"{time.time() - started:.1f}")
    real_slices = args.cases * args.shape[0]
    renders = {FAKE: ("TwoContrastF100", real_slices, False), FAKE_REAL: ("TwoContrastF100R", real_slices, True),
               FAKE3_REAL: ("TwoContrastF300R", 3 * real_slices, True)}
    for dataset, (name, count, with_real) in renders.items():
        if not (raw / f"Dataset{dataset}_{name}").is_dir():
            render_stylegan(checkpoint, dataset, name, list(range(count)), 1.0, REAL if with_real else None)
    if not (raw / f"Dataset{FLIP_REAL}_TwoContrastFlips").is_dir():
        write_flipped(source)
    fake_labels = sorted((raw / f"Dataset{FAKE}_TwoContrastF100" / "labelsTr").glob("*.nii.gz"))
    if not any(read_image(path)[0].any() for path in fake_labels):
        raise SystemExit(f"seed {seed}: no generated label has a foreground voxel ({len(fake_labels)} fakes of "
                         f"{checkpoint}); the 100% F arm cannot be planned: train the generator longer (--iters)")
    arms = {"100% R": REAL, "100% F": FAKE, "100% F + 100% R": FAKE_REAL, "300% F + 100% R": FAKE3_REAL,
            "300% A (flips) + 100% R": FLIP_REAL}
    backend = arm_backend(f"nnUNetTrainer_{args.schedule}", configuration="2d")
    scores = {}
    for arm, dataset in arms.items():
        if not is_preprocessed(dataset, configuration="2d"):
            plan_and_preprocess(dataset, ("2d",), 1, use_source_plans=dataset != REAL)
        name = next(p.name for p in raw.iterdir() if p.name.startswith(f"Dataset{dataset}_"))
        out = train_and_predict(backend, name, source / "imagesTs", workdir / "predictions" / name, log)
        scores[arm] = mean_dice(out, source / "labelsTs")
    quality_dir = workdir / "gen_eval"
    report = quality_dir / "gen_eval.json"
    if not report.is_file() or "label_consistency_dice" not in json.loads(report.read_text()):
        real_only = Segmenter(REAL, backend)  # the 100% R arm: an nnU-Net trained on the real cases only
        evaluate_generator(REAL, checkpoint, min(200, real_slices), quality_dir, segmenter=real_only)
    quality = json.loads(report.read_text())
    quality["train_seconds"] = float((workdir / "stylegan_seconds.txt").read_text())
    return scores, quality


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["phantom", "anatomy"], default="phantom")
    parser.add_argument("--schedule", default="demo", help="nnU-Net schedule of every arm (demo: 8 x 50 it)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--cases", type=int, default=4, help="labelled training cases (data-poor)")
    parser.add_argument("--test", type=int, default=6, help="held-out test cases")
    parser.add_argument("--shape", type=int, nargs=3, default=[16, 48, 48], help="voxels per case (z, y, x)")
    parser.add_argument("--iters", type=int, default=2000, help="StyleGAN2 iterations (cpu preset: 2000)")
    parser.add_argument("--min-foreground", type=float, default=0.002,
                        help="train the generator on slices with at least this tumour fraction (0: every slice)")
    parser.add_argument("--workdir")
    args = parser.parse_args()
    args.stem = "bench_stylegan" + ("" if args.data == "phantom" else "_anatomy")
    args.workdir = args.workdir or str(OUTPUT / f"{args.stem}_work")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    start = time.time()
    results = run_seeds_locked(args.seeds, run_seed, args)
    arms = list(results[args.seeds[0]][0])
    lines = [f"two-contrast {args.data}, {args.cases} training cases of {args.shape} voxels, StyleGAN2 cpu preset "
             f"{args.iters} iterations on slices with >= {args.min_foreground} tumour, nnU-Net 2d _{args.schedule} "
             f"fold all, seeds {args.seeds}, {time.time() - start:.0f} s", "",
             "| training set | held-out Dice (mean +- std over seeds) | per seed |", "|---|---|---|"]
    for arm in arms:
        values = [results[s][0][arm] for s in args.seeds]
        lines.append(f"| {arm} | {mean_std(values)} | {', '.join(f'{v:.3f}' for v in values)} |")
    keys = ("fid_axial", "bmmd2", "ms_ssim_fake_pairs", "ms_ssim_real_pairs", "nearest_real_ms_ssim_mean",
            "real_to_real_nearest_ms_ssim_mean", "label_consistency_dice", "label_consistency_dice_foreground",
            "label_consistency_foreground_fraction", "label_consistency_real_dice",
            "label_consistency_real_dice_foreground", "label_consistency_real_foreground_fraction", "train_seconds")
    lines += ["", "| generator metric | mean +- std over seeds |", "|---|---|"]
    lines += [f"| {k} | {mean_std([results[s][1][k] for s in args.seeds])} |" for k in keys]
    table = "\n".join(lines)
    print(table)
    (OUTPUT / f"{args.stem}.md").write_text(table + "\n")
    (OUTPUT / f"{args.stem}.json").write_text(json.dumps(
        {"command": " ".join(sys.argv), "args": vars(args), "dice": {str(s): r[0] for s, r in results.items()},
         "generator": {str(s): r[1] for s, r in results.items()}}, indent=1))


if __name__ == "__main__":
    main()
