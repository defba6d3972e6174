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

    PYTHONPATH=. .venv/bin/python benchmarks/bench_selftrain.py --arms baseline --folds 0 --iterations 1
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import time
from pathlib import Path

ARMS = {"baseline": "nnUNetTrainerSelfTrain", "naive": "nnUNetTrainerNaiveRescale"}
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
    p.add_argument("--device", default="cpu", help="nnU-Net training and prediction: cpu or cuda")
    p.add_argument("--executor", choices=["local", "parallel"], default="local",
                   help="parallel: --workers folds train at once (they share the GPUs)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--n-proc-da", type=int, default=0, help="nnUNet_n_proc_DA of each training")
    p.add_argument("--lock", default="/tmp/nnunet_gen_cpu.lock")
    return p.parse_args()


def main() -> None:
    args = parse_args()
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
        for index, arm in enumerate(args.arms):
            trainer = f"{ARMS[arm]}_{args.schedule}"
            config = SelfTrainConfig(labelled=labelled.name, unlabelled=str(labelled / "imagesTs"),
                                     output_id_base=940 + 10 * index, trainer=trainer, plans=PLANS,
                                     folds=tuple(args.folds), iterations=args.iterations, epsilon=0.0,
                                     confidence=args.confidence)
            backend = NnUNetBackend(trainer, plans=PLANS, folds=args.folds, device=args.device, num_processes=1,
                                    train_env={"nnUNet_n_proc_DA": str(args.n_proc_da)})
            executor = (ParallelExecutor(args.workers) if args.executor == "parallel"
                        else SequentialExecutor())
            run = SelfTraining(config, backend, executor, workdir=workdir / f"run_{arm}")
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
                results.append({"arm": arm, "trainer": trainer, "iteration": k,
                                "centreB_dice_ensemble": scores["predictions"],
                                "centreB_dice_largest_component": scores["pseudo_labels"]})
            overhead = (timing["total_seconds"] - timing["nnunet_seconds"]) / timing["total_seconds"]
            results.append({"arm": arm, "trainer": trainer, "iteration": "overhead",
                            "run_seconds_this_call": wall, "total_seconds": timing["total_seconds"],
                            "nnunet_seconds": timing["nnunet_seconds"], "orchestration_fraction": overhead})

    lines = [f"Self-training on the two-centre phantom: {args.cases_a} centre-A labelled, {args.cases_b} centre-B "
             f"unlabelled (scored with labelsTs), shape {args.shape}, folds {args.folds}, schedule "
             f"{args.schedule}, base features {args.base_features}, {args.threads} thread(s), device {args.device}, "
             f"executor {args.executor} ({args.workers} worker(s)), confidence filter {args.confidence}", "",
             "| arm | iteration | centre-B Dice (fold ensemble) | centre-B Dice (largest component) |",
             "|---|---|---|---|"]
    for r in results:
        if r["iteration"] != "overhead":
            lines.append(f"| {r['arm']} | {r['iteration']} | {r['centreB_dice_ensemble']:.3f} | "
                         f"{r['centreB_dice_largest_component']:.3f} |")
    lines += ["", "| arm | run time (s) | nnU-Net time (s) | orchestration fraction |", "|---|---|---|---|"]
    for r in results:
        if r["iteration"] == "overhead":
            lines.append(f"| {r['arm']} | {r['total_seconds']:.0f} | {r['nnunet_seconds']:.0f} | "
                         f"{100 * r['orchestration_fraction']:.2f}% |")
    text = "\n".join(lines) + "\n"
    write_text(workdir / "bench_selftrain.md", text)
    write_text(workdir / "bench_selftrain.json", json.dumps({"args": vars(args), "results": results}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
