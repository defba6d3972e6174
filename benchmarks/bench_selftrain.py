"""Centre-B Dice per self-training iteration on the two-centre phantom, and the orchestration overhead.

Labelled set: centre-A phantom cases (bright tumours). Unlabelled pool: the centre-B images (dark tumours,
``imagesTs``), scored against ``labelsTs`` after every iteration (the pool's pseudo-labels are the predictions
being improved, as in the CrossMoDA setting of the GBA paper). Each arm runs ``nnunet_gen.selftrain.loop`` with the stock
nnU-Net subprocesses (``--device cpu`` by default; ``--device cuda --executor parallel`` trains the folds at once on a
GPU machine), ``epsilon = 0`` so that every iteration runs. Overhead = (run time - time inside
nnU-Net training/prediction/preprocessing) / run time, from the run's state file.

CPU budget flags: ``--folds``, ``--schedule`` (trainer schedule suffix), ``--iterations``, ``--base-features``
(a narrower network through ``nnunet_gen.preprocess.derive_plans``, the same for every arm), phantom size. The script
holds ``/tmp/nnunet_gen_cpu.lock`` while it runs. Outputs under ``benchmarks/output/selftrain/``.

Pseudo-label variants (``--calibrations``): ``none`` is the paper (argmax pseudo-labels); ``dice``/``volume``/``prior``
are the calibrated foreground thresholds of ``nnunet-gen selftrain --calibrate-threshold``. All variants of an arm
share the arm's iteration-0 models (same nnUNet_results), so each variant's iteration-1 Dice is compared with the
same iteration 0. Every iteration also prints the pool's pseudo-label volume against labelsTs (ratio) and the
labelled cases' mean volume. Repeats are separate ``--workdir`` s (nnU-Net CPU training is not seeded);
``--aggregate DIR ...`` summarises them (mean and standard deviation of the iteration-0 -> 1 Dice change).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_selftrain.py --arms baseline --folds 0 --iterations 1
    PYTHONPATH=. .venv/bin/python benchmarks/bench_selftrain.py --arms naive --folds 0 --iterations 1 \
        --schedule 1epoch --base-features 16 --calibrations none prior volume --workdir benchmarks/output/st_r1
    PYTHONPATH=. .venv/bin/python benchmarks/bench_selftrain.py --aggregate benchmarks/output/st_r* \
        --out benchmarks/results/selftrain_calibration
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import time
from pathlib import Path

ARMS = {"baseline": "nnUNetTrainerSelfTrain", "naive": "nnUNetTrainerNaiveRescale"}
CALIBRATIONS = ("none", "dice", "volume", "prior")
LABELLED_ID = 931
PLANS = "nnUNetPlansSelfTrainBench"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=["baseline"])
    p.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--iterations", type=int, default=1)
    p.add_argument("--schedule", default="demo", help="trainer schedule suffix (smoke, demo, 5epochs, ...)")
    p.add_argument("--base-features", type=int, default=8, help="features of the first stage (nnU-Net: 32)")
    p.add_argument("--cases-a", type=int, default=10)
    p.add_argument("--cases-b", type=int, default=6)
    p.add_argument("--shape", type=int, nargs=3, default=[24, 32, 32])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads of each nnU-Net process")
    p.add_argument("--workdir", default="benchmarks/output/selftrain")
    p.add_argument("--confidence", type=float,
                   help="pseudo-label voxels whose ensemble probability is below this become the ignore label")
    p.add_argument("--calibrations", nargs="+", choices=CALIBRATIONS, default=["none"],
                   help="pseudo-label foreground threshold per variant: none (argmax, the paper) or a "
                        "--calibrate-threshold mode")
    p.add_argument("--size-from-source", type=float, metavar="SLACK",
                   help="drop pseudo-labels outside the labelled volume range [min / SLACK, max * SLACK]")
    p.add_argument("--aggregate", nargs="+", metavar="WORKDIR",
                   help="only summarise the bench_selftrain.json of these finished runs (no training)")
    p.add_argument("--out", default="benchmarks/results/selftrain_calibration",
                   help="--aggregate: output path without suffix (.md and .json are written)")
    p.add_argument("--device", default="cpu", help="nnU-Net training and prediction: cpu or cuda")
    p.add_argument("--executor", choices=["local", "parallel"], default="local",
                   help="parallel: --workers folds train at once (they share the GPUs)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--n-proc-da", type=int, default=0, help="nnUNet_n_proc_DA of each training")
    p.add_argument("--lock", default="/tmp/nnunet_gen_cpu.lock")
    return p.parse_args()


def aggregate(workdirs: list[str], out: Path) -> None:
    """Per arm and variant over repeated runs: iteration-0 and -1 Dice, their change, pseudo/reference volume
    ratio per iteration; mean, sample standard deviation, and every run's value."""
    import numpy as np
    from nnunet_gen.io.files import write_text
    runs = {workdir: json.loads((Path(workdir) / "bench_selftrain.json").read_text()) for workdir in workdirs}
    series: dict[tuple[str, str], dict[str, list[float]]] = {}
    for data in runs.values():
        rows = {(r["arm"], r["calibration"], r["iteration"]): r for r in data["results"]
                if r["iteration"] != "overhead"}
        for arm, calibration, k in rows:
            if k != 1 or (arm, calibration, 0) not in rows:
                continue
            first, second = rows[(arm, calibration, 0)], rows[(arm, calibration, 1)]
            values = series.setdefault((arm, calibration), {})
            for key, value in {"dice_0": first["centreB_dice_ensemble"], "dice_1": second["centreB_dice_ensemble"],
                               "change": second["centreB_dice_ensemble"] - first["centreB_dice_ensemble"],
                               "pseudo_dice_0": first["centreB_dice_largest_component"],
                               "ratio_0": first["volume_ratio_mean"], "ratio_1": second["volume_ratio_mean"],
                               "threshold_0": first["threshold"]}.items():
                values.setdefault(key, []).append(value)

    def cell(values: list[float | None]) -> str:
        present = [v for v in values if v is not None]
        if not present:
            return "-"
        spread = f" +- {np.std(present, ddof=1):.3f}" if len(present) > 1 else ""
        return f"{np.mean(present):.3f}{spread} ({', '.join(f'{v:.3f}' for v in present)})"

    keys = ("dice_0", "dice_1", "change", "pseudo_dice_0", "ratio_0", "ratio_1", "threshold_0")
    lines = [f"Self-training, iteration 0 -> 1, {len(runs)} run(s): mean +- sample standard deviation (per run)", "",
             "| arm | pseudo-labels | n | " + " | ".join(keys) + " |", "|---|---|---|" + "---|" * len(keys)]
    for (arm, calibration), values in sorted(series.items()):
        lines.append(f"| {arm} | {calibration} | {len(values['change'])} | "
                     + " | ".join(cell(values[k]) for k in keys) + " |")
    lines += ["", "dice_k: centre-B Dice of the iteration-k fold ensemble (labelsTs); pseudo_dice_0: Dice of the "
                  "iteration-0 pseudo-labels; ratio_k: mean pseudo-label / reference foreground volume of "
                  "iteration k's pseudo-labels; threshold_0: calibrated foreground threshold (none: argmax).",
              "", "Runs: " + ", ".join(workdirs)]
    text = "\n".join(lines) + "\n"
    write_text(out.with_suffix(".md"), text)
    write_text(out.with_suffix(".json"), json.dumps(
        {"runs": workdirs, "series": {f"{arm}/{calibration}": values for (arm, calibration), values
                                      in sorted(series.items())}}, indent=1))
    print(text)


def main() -> None:
    args = parse_args()
    if args.aggregate:
        aggregate(args.aggregate, Path(args.out))
        return
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for variable, value in {"nnUNet_raw": workdir / "nnUNet_raw", "nnUNet_preprocessed": workdir / "nnUNet_pre",
                            "nnUNet_results": workdir / "nnUNet_results"}.items():
        os.environ[variable] = str(value)
    os.environ.update({"nnUNet_compile": "f", "nnUNet_def_n_proc": "1", "OMP_NUM_THREADS": str(args.threads),
                       "MKL_NUM_THREADS": str(args.threads)})
    import torch
    torch.set_num_threads(args.threads)

    from nnunet_gen.convert.phantom import write_phantom_dataset
    from nnunet_gen.evaluation.metrics import evaluate_folders
    from nnunet_gen.evaluation.summary import summarize
    from nnunet_gen.io.files import write_text
    from nnunet_gen.preprocess import derive_plans, plan_and_preprocess
    from nnunet_gen.run.executors import ParallelExecutor, SequentialExecutor
    from nnunet_gen.run.nnunet import NnUNetBackend
    from nnunet_gen.selftrain import SelfTrainConfig, SelfTraining

    with open(args.lock, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        labelled = workdir / "nnUNet_raw" / f"Dataset{LABELLED_ID}_BenchST"
        if not labelled.is_dir():
            write_phantom_dataset(LABELLED_ID, "BenchST", args.cases_a, args.cases_b, args.seed, tuple(args.shape))
        if not (workdir / "nnUNet_pre" / labelled.name / f"{PLANS}.json").is_file():
            plan_and_preprocess(LABELLED_ID, num_processes=1)
            derive_plans(LABELLED_ID, PLANS, args.base_features, 8 * args.base_features)

        results = []
        variants = [(arm, calibration) for arm in args.arms for calibration in args.calibrations]
        for index, (arm, calibration) in enumerate(variants):
            trainer = f"{ARMS[arm]}_{args.schedule}"
            config = SelfTrainConfig(labelled=labelled.name, unlabelled=str(labelled / "imagesTs"),
                                     output_id_base=940 + 10 * index, trainer=trainer, plans=PLANS,
                                     folds=tuple(args.folds), iterations=args.iterations, epsilon=0.0,
                                     confidence=args.confidence, size_from_source=args.size_from_source,
                                     calibrate_threshold=None if calibration == "none" else calibration,
                                     reference_labels=str(labelled / "labelsTs"))
            backend = NnUNetBackend(trainer, plans=PLANS, folds=args.folds, device=args.device, num_processes=1,
                                    train_env={"nnUNet_n_proc_DA": str(args.n_proc_da)})
            executor = (ParallelExecutor(args.workers) if args.executor == "parallel"
                        else SequentialExecutor())
            name = arm if calibration == "none" else f"{arm}_{calibration}"
            run = SelfTraining(config, backend, executor, workdir=workdir / f"run_{name}")
            start = time.perf_counter()
            run.run()
            wall = time.perf_counter() - start
            timing = run.state.data["timing"]
            for k in sorted(map(int, run.state.data["iterations"])):
                scores = {}
                for folder in ("predictions", "pseudo_labels"):
                    rows = evaluate_folders(run.iteration_dir(k) / folder, labelled / "labelsTs", [1],
                                            num_processes=1, allow_missing=True)
                    scores[folder] = summarize(rows)["1"]["Dice"]["mean"]
                values = run.state.iteration(k)
                results.append({"arm": arm, "calibration": calibration, "trainer": trainer, "iteration": k,
                                "centreB_dice_ensemble": scores["predictions"],
                                "centreB_dice_largest_component": scores["pseudo_labels"],
                                "threshold": values.get("threshold"), "n_dropped": values.get("n_dropped"),
                                "source_volume_mean": values.get("source_volume_mean"),
                                "pseudo_volume_mean": values.get("pseudo_volume_mean"),
                                "reference_volume_mean": values.get("reference_volume_mean"),
                                "volume_ratio_mean": values.get("volume_ratio_mean"),
                                "volumes": values.get("volumes")})
            overhead = (timing["total_seconds"] - timing["nnunet_seconds"]) / timing["total_seconds"]
            results.append({"arm": arm, "calibration": calibration, "trainer": trainer, "iteration": "overhead",
                            "run_seconds_this_call": wall, "total_seconds": timing["total_seconds"],
                            "nnunet_seconds": timing["nnunet_seconds"], "orchestration_fraction": overhead})

    lines = [f"Self-training on the two-centre phantom: {args.cases_a} centre-A labelled, {args.cases_b} centre-B "
             f"unlabelled (scored with labelsTs), shape {args.shape}, folds {args.folds}, schedule "
             f"{args.schedule}, base features {args.base_features}, {args.threads} thread(s), device {args.device}, "
             f"executor {args.executor} ({args.workers} worker(s)), confidence filter {args.confidence}, size from "
             f"source {args.size_from_source}", "",
             "| arm | pseudo-labels | iteration | centre-B Dice (fold ensemble) | centre-B Dice (pseudo-labels) | "
             "threshold | pseudo-label volume (mm3) | reference volume (mm3) | ratio | labelled mean volume (mm3) |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def number(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    for r in results:
        if r["iteration"] != "overhead":
            lines.append(f"| {r['arm']} | {r['calibration']} | {r['iteration']} | {r['centreB_dice_ensemble']:.3f} | "
                         f"{r['centreB_dice_largest_component']:.3f} | {number(r['threshold'], 2)} | "
                         f"{number(r['pseudo_volume_mean'], 0)} | {number(r['reference_volume_mean'], 0)} | "
                         f"{number(r['volume_ratio_mean'], 3)} | {number(r['source_volume_mean'], 0)} |")
    lines += ["", "Pseudo-label / reference volume per case and iteration:", "",
              "| arm | pseudo-labels | iteration | case | pseudo-label (mm3) | reference (mm3) | ratio |",
              "|---|---|---|---|---|---|---|"]
    for r in results:
        for case, v in sorted((r.get("volumes") or {}).items()):
            lines.append(f"| {r['arm']} | {r['calibration']} | {r['iteration']} | {case} | "
                         f"{number(v['pseudo_mm3'], 0)} | {number(v['reference_mm3'], 0)} | {number(v['ratio'], 3)} |")
    lines += ["", "| arm | pseudo-labels | run time (s) | nnU-Net time (s) | orchestration fraction |",
              "|---|---|---|---|---|"]
    for r in results:
        if r["iteration"] == "overhead":
            lines.append(f"| {r['arm']} | {r['calibration']} | {r['total_seconds']:.0f} | {r['nnunet_seconds']:.0f} "
                         f"| {100 * r['orchestration_fraction']:.2f}% |")
    text = "\n".join(lines) + "\n"
    write_text(workdir / "bench_selftrain.md", text)
    write_text(workdir / "bench_selftrain.json", json.dumps({"args": vars(args), "results": results}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
