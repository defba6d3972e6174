"""Cross-modal segmentation (GBA paper's CrossMoDA setting): labelled T1, unlabelled T2, segment T2.

Data per seed (its own nnUNet_raw/preprocessed/results under ``--workdir``): the cross-modal phantom
(``nnunet-gen phantom-crossmodal``: T1 with bright enhancing tumours and T2 with inverted tissue ordering and
heterogeneous tumours, two centres per modality) or ``--data anatomy`` (``benchmarks/anatomy/crossmodal.py``: real
T1 anatomy, a T2-like contrast from tissue maps, a held-out test subject). The same stages as ``nnunet-gen
crossmoda`` (library calls, artefacts shared between arms), every nnU-Net arm with the same plans (the pseudo-target
dataset's own plans narrowed to ``--features``; the source-only arm its own, same width), the same schedule and fold:

* source only: ``nnUNetTrainer_<schedule>`` on the labelled T1 cases (no translation),
* per translation method (CycleGAN, CUT; ``--methods``) trained with seed = the phantom seed:
  - translated: ``nnUNetTrainer_<schedule>`` on the pseudo-target dataset,
  - + naive: ``nnUNetTrainerGBA_<schedule>`` on naive copies of the pseudo-target cases (``render gba --no-blend``),
  - + GBA: ``nnUNetTrainerGBA_<schedule>`` on GBA copies (a SinGAN trained on one real unlabelled T2 slice),
  - + GBA + self-training (CycleGAN only): one ``nnunet-gen selftrain`` iteration on the real unlabelled T2 pool,
    iteration 0 being the GBA arm's model.

Scores: Dice on the labelled T2 test cases (``nnUNetv2_predict --disable_tta``, largest component), and the
translation quality of every pseudo-target case against the paired true T2 of the same subject (MAE, PSNR, SSIM
on the reference's robust [0, 1] range). Resumable; holds /tmp/nnunet_gen_cpu.lock; writes
benchmarks/output/bench_crossmodal[_anatomy].{md,json}.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_crossmodal.py --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from seed_workdir import arm_backend, enter_seed_workdir, mean_dice, mean_std, run_seeds_locked, train_and_predict

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "benchmarks" / "output"
PLANS = "nnUNetPlansSmall"
SOURCE = 940
METHOD_IDS = {"cyclegan": 941, "cut": 945}  # pseudo-target; +1 naive, +2 GBA
SELFTRAIN_BASE = 950


def write_data(seed: int, args) -> None:
    if args.data == "phantom":
        from nnunet_gen.convert.crossmodal_phantom import write_crossmodal_phantom
        write_crossmodal_phantom(SOURCE, "XM", args.cases, args.pool, args.test, seed, tuple(args.shape))
    else:
        sys.path.insert(0, str(REPO / "benchmarks" / "anatomy"))
        from crossmodal import SOURCE_SUBJECTS, TARGET_SUBJECTS, TEST_SUBJECTS, build_dataset, load_subjects
        build_dataset(load_subjects((*SOURCE_SUBJECTS, *TARGET_SUBJECTS, *TEST_SUBJECTS)), SOURCE, "XM", seed)


def run_seed(seed: int, args) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    from dataclasses import replace

    from nnunet_gen.evaluation.translation import translation_quality
    from nnunet_gen.generators.singan import train_singan_on_case
    from nnunet_gen.generators.translation import UNLABELLED_FOLDER, train_translation
    from nnunet_gen.inference import keep_largest_components
    from nnunet_gen.preprocess import derive_plans, is_preprocessed, plan_and_preprocess
    from nnunet_gen.render.dataset import render_dataset
    from nnunet_gen.render.gba import gba_renderer
    from nnunet_gen.render.translate import render_translated
    from nnunet_gen.selftrain import SelfTrainConfig, SelfTraining
    from synth.singan import SinGANConfig
    from synth.translation import PRESETS

    workdir, log, _ = enter_seed_workdir(args.workdir, seed, OUTPUT / f"{args.stem}_seed{seed}.log")
    raw = workdir / "nnUNet_raw"
    source = raw / "Dataset940_XM"
    if not source.is_dir():
        write_data(seed, args)

    def planned(dataset: int, own: bool) -> None:
        if not is_preprocessed(dataset):
            plan_and_preprocess(dataset, num_processes=1, use_source_plans=not own)
        derive_plans(dataset, PLANS, args.features[0], args.features[1])

    def dice(dataset: str, trainer: str) -> float:
        out = workdir / "predictions" / f"{dataset}_{trainer}"
        raw_predictions = train_and_predict(arm_backend(trainer, PLANS, fold=0, threads=args.threads), dataset,
                                            source / "imagesTs", out / "raw", log)
        if not (out / "done").is_file():
            keep_largest_components(raw_predictions, out / "final", [1], ".nii.gz")
            (out / "done").write_text("")
        return mean_dice(out / "final", source / "labelsTs")

    scores, quality = {}, {}
    planned(SOURCE, own=True)
    scores["source only"] = dice("Dataset940_XM", f"nnUNetTrainer_{args.schedule}")
    singan = workdir / "singan.safetensors"
    pool = sorted(p.name[:-len("_0000.nii.gz")] for p in (source / UNLABELLED_FOLDER).glob("*_0000.nii.gz"))
    if not singan.is_file():
        train_singan_on_case(SOURCE, pool[0], singan, UNLABELLED_FOLDER, config=SinGANConfig(
            min_size=args.singan_min_size, max_size=max(args.shape[1:]), iterations_per_scale=args.singan_iters),
            seed=seed, progress=False)
    for method in args.methods:
        base = METHOD_IDS[method]
        names = {base: f"Dataset{base:03d}_XM{method}", base + 1: f"Dataset{base + 1:03d}_XM{method}Naive",
                 base + 2: f"Dataset{base + 2:03d}_XM{method}GBA"}
        checkpoint = workdir / f"{method}.safetensors"
        if not checkpoint.is_file():
            config = replace(PRESETS["cpu"], method=method,
                             **({"iterations": args.translation_iters} if args.translation_iters else {}))
            started = time.time()
            train_translation(SOURCE, checkpoint, config, seed=seed, progress=False)
            (workdir / f"{method}_seconds.txt").write_text(f"{time.time() - started:.1f}")
        if not (raw / names[base]).is_dir():
            render_translated(SOURCE, base, names[base].split("_", 1)[1], [checkpoint])
        rows = translation_quality(base, source / "imagesTrTarget")
        quality[method] = {k: statistics.mean(r[k] for r in rows) for k in ("MAE", "PSNR", "SSIM")}
        quality[method]["train_seconds"] = float((workdir / f"{method}_seconds.txt").read_text())
        planned(base, own=True)
        labels = [1]
        job = {"command": "bench_crossmodal", "seed": seed}
        if not (raw / names[base + 1]).is_dir():
            render_dataset(base, base + 1, names[base + 1].split("_", 1)[1],
                           gba_renderer(None, labels, args.alphas, args.scales, seed=seed, blend=False),
                           {**job, "arm": "naive"}, labels=labels)
        if not (raw / names[base + 2]).is_dir():
            render_dataset(base, base + 2, names[base + 2].split("_", 1)[1],
                           gba_renderer([str(singan)], labels, args.alphas, args.scales, seed=seed,
                                        dilation_radius=args.dilation, sigma=args.sigma),
                           {**job, "arm": "gba"}, labels=labels)
        planned(base + 1, own=False)
        planned(base + 2, own=False)
        scores[f"{method}: translated"] = dice(names[base], f"nnUNetTrainer_{args.schedule}")
        scores[f"{method}: + naive"] = dice(names[base + 1], f"nnUNetTrainerGBA_{args.schedule}")
        scores[f"{method}: + GBA"] = dice(names[base + 2], f"nnUNetTrainerGBA_{args.schedule}")
        if method == "cyclegan" and args.selftrain:
            trainer = f"nnUNetTrainerGBA_{args.schedule}"
            config = SelfTrainConfig(labelled=names[base + 2], unlabelled=str(source / UNLABELLED_FOLDER),
                                     output_id_base=SELFTRAIN_BASE, trainer=trainer, plans=PLANS, folds=(0,),
                                     iterations=1)
            run = SelfTraining(config, arm_backend(trainer, PLANS, fold=0, threads=args.threads),
                               workdir=workdir / "selftrain", log=lambda message: None)
            run.run()
            scores[f"{method}: + GBA + self-training"] = dice(run.dataset_name(1), trainer)
    return scores, quality


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["phantom", "anatomy"], default="phantom")
    parser.add_argument("--schedule", default="demo", help="nnU-Net schedule of every arm (demo: 8 x 50 it)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", choices=list(METHOD_IDS), default=list(METHOD_IDS))
    parser.add_argument("--cases", type=int, default=10, help="phantom: labelled T1 cases")
    parser.add_argument("--pool", type=int, default=6, help="phantom: unlabelled T2 cases")
    parser.add_argument("--test", type=int, default=6, help="phantom: labelled T2 test cases")
    parser.add_argument("--shape", type=int, nargs=3, default=[24, 32, 32])
    parser.add_argument("--features", type=int, nargs=2, default=[16, 128], help="network width: base, max")
    parser.add_argument("--translation-iters", type=int, help="default: the cpu preset's")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.8, 1.5])
    parser.add_argument("--scales", type=int, nargs="+", default=[3])
    parser.add_argument("--dilation", type=int, default=3, help="eq. 7 dilation (px; small phantom slices)")
    parser.add_argument("--sigma", type=float, default=2.0, help="eq. 7 sigma (px)")
    parser.add_argument("--singan-iters", type=int, default=200)
    parser.add_argument("--singan-min-size", type=int, default=10)
    parser.add_argument("--no-selftrain", dest="selftrain", action="store_false")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir")
    args = parser.parse_args()
    args.stem = "bench_crossmodal" + ("" if args.data == "phantom" else "_anatomy")
    args.workdir = args.workdir or str(OUTPUT / f"{args.stem}_work")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    start = time.time()
    results = run_seeds_locked(args.seeds, run_seed, args)
    arms = list(results[args.seeds[0]][0])
    lines = [f"{args.data}, schedule _{args.schedule}, fold 0, plans {PLANS} {args.features}, seeds {args.seeds}, "
             f"{time.time() - start:.0f} s", "", "| arm | T2 test Dice (mean +- std over seeds) | per seed |",
             "|---|---|---|"]
    for arm in arms:
        values = [results[s][0][arm] for s in args.seeds]
        lines.append(f"| {arm} | {mean_std(values)} | {', '.join(f'{v:.3f}' for v in values)} |")
    lines += ["", "| translation | MAE | PSNR (dB) | SSIM | training s |", "|---|---|---|---|---|"]
    for method in args.methods:
        cells = [mean_std([results[s][1][method][k] for s in args.seeds])
                 for k in ("MAE", "PSNR", "SSIM", "train_seconds")]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    (OUTPUT / f"{args.stem}.md").write_text(table + "\n")
    (OUTPUT / f"{args.stem}.json").write_text(json.dumps(
        {"command": " ".join(sys.argv), "args": vars(args),
         "dice": {str(s): r[0] for s, r in results.items()},
         "translation_quality": {str(s): r[1] for s, r in results.items()}}, indent=1))


if __name__ == "__main__":
    main()
