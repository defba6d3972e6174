"""Domain shift on the two-centre phantom: centre-B Dice of nnUNetTrainer vs naive rescaling vs GBA, same budget.

Per phantom seed (its own nnUNet_raw/preprocessed/results under ``--workdir``): centre-A labelled training cases
(bright tumours), centre-B test cases (dark tumours, other contrast and noise); a SinGAN trained on ONE centre-B
slice (the target modality, unlabelled: the paper's setting); ``render gba --no-blend`` (naive) and ``render gba``
(GBA) with the same alphas, scales and seeds; every dataset keeps the source's plans, narrowed to a small network
(``nnunet_gen.preprocess.derive_plans``, features ``--features``) so the iterations are affordable; then stock
``nnUNetv2_train -f all`` for the arms with one schedule (same iterations, same plans):

* baseline: ``nnUNetTrainer_<schedule>`` on the source,
* da5, gin: ``nnUNetTrainerDA5_<schedule>``, ``nnUNetTrainerGIN_<schedule>`` on the source,
* naive: ``nnUNetTrainerGBA_<schedule>`` on the --no-blend rendering,
* naive-continuous: ``nnUNetTrainerNaiveRescaleContinuous_<schedule>`` on the source (alpha ~ U(0.5, 1.5)),
* GBA: ``nnUNetTrainerGBA_<schedule>`` on the GBA rendering,
* GBA, contrast kept: the same on ``render gba --keep-contrast`` (the naive copy's tumour/surround contrast
  re-imposed after blending; same SinGAN, alphas, scales and seeds),
* GBA, contrast kept, 3 SinGANs: the same with SinGANs of three target cases (each copy uses one of them),

and ``nnUNetv2_predict --disable_tta`` (no test-time mirroring, every arm alike) on (1) the centre-B test cases, (2)
held-out centre-A cases (in-domain) and (3) the same held-out cases with the tumour rescaled by 0.5 (in-domain dark
tumours: shows whether the budget was long enough for the augmented appearances to be learnt at all). Prints a table of mean Dice per arm (per seed and averaged) and writes benchmarks/output/
bench_gba_domain_shift.{md,json}. Resumable (finished trainings are skipped). Holds /tmp/nnunet_gen_cpu.lock.

``--target-centre C`` tests a texture shift instead: the test centre's tumours are centre B's plus a heterogeneous
texture (``nnunet_gen.convert.phantom``), which no alpha imitates; outputs go to ``bench_gba_domain_shift_centreC*``.
``--arms`` runs a subset (baseline, da5, gin, naive, naive-continuous, gba): besides the paper's arms, the ones a user
tries first (nnU-Net's heavier ``nnUNetTrainerDA5``, the domain-generalisation ``nnUNetTrainerGIN``, naive rescaling
with a continuous alpha).

Budget: the shifted-centre Dice moves only after thousands of iterations on this phantom (measured times per schedule
are in the README's Benchmarks table). ``--schedule smoke`` only checks that the pipeline runs. ``--parallel`` (GPU
only: on CPU, nnUNetv2_train gives every training all cores) runs the seeds in separate processes and each seed's
trainings at once; ``--device cuda`` also trains and runs the SinGAN on the GPU.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_gba_domain_shift.py --schedule 20epochs --seeds 0 1 2
    PYTHONPATH=. python benchmarks/bench_gba_domain_shift.py --schedule 20epochs --seeds 0 1 2 --parallel \
        --device cuda --n-proc-da 3
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from seed_workdir import arm_backend, cpu_lock, enter_seed_workdir, mean_dice, mean_std, train_and_predict

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "benchmarks" / "output"
SOURCE, NAIVE, GBA, GBA_KEEP, GBA_MULTI = 971, 972, 973, 974, 975
PLANS = "nnUNetPlansSmall"
ARM_KEYS = {"nnUNetTrainer": "baseline", "nnUNetTrainerDA5": "da5", "GIN": "gin",
            "naive (render gba --no-blend)": "naive", "naive, continuous alpha (on the fly)": "naive-continuous",
            "GBA": "gba", "GBA, contrast kept": "gba-keep", "GBA, contrast kept, 3 SinGANs": "gba-keep-multi"}


def held_out_centre_a(folder: Path, seed: int, count: int, shape: tuple[int, int, int], factor: float) -> Path:
    """Centre-A cases not used in training, tumour intensities x ``factor`` (nnU-Net imagesTs/labelsTs layout)."""
    from nnunet_gen.augment.naive_rescale import NaiveRescale
    from nnunet_gen.convert.phantom import phantom_case
    from nnunet_gen.io.images import Geometry, write_image

    geometry = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    for k in range(count):
        case = f"heldoutA_{k:03d}"
        if (folder / "labelsTs" / f"{case}.nii.gz").is_file():
            continue
        image, label = phantom_case(10_000_019 * (seed + 1) + k, "A", shape)
        write_image(NaiveRescale(factor)(image, label), geometry, folder / "imagesTs" / f"{case}_0000.nii.gz")
        write_image(label, geometry, folder / "labelsTs" / f"{case}.nii.gz")
    return folder


def run_seed(seed: int, args) -> dict[str, dict[str, float]]:
    from nnunet_gen.cli import main as nnunet_gen
    from nnunet_gen.preprocess import derive_plans, is_preprocessed, plan_and_preprocess

    workdir, log, _ = enter_seed_workdir(args.workdir, seed, OUTPUT / f"{args.stem}_seed{seed}.log")
    raw = workdir / "nnUNet_raw"
    names = {SOURCE: "Dataset971_Shift", NAIVE: "Dataset972_ShiftNaive", GBA: "Dataset973_ShiftGBA",
             GBA_KEEP: "Dataset974_ShiftGBAKeep", GBA_MULTI: "Dataset975_ShiftGBAMulti"}
    singan = workdir / f"singan_centre{args.target_centre}.safetensors"
    more_singans = [workdir / f"singan_centre{args.target_centre}_{k:03d}.safetensors" for k in (1, 2)]
    if not (raw / names[SOURCE]).is_dir():
        assert nnunet_gen(["phantom", "-d", str(SOURCE), "--name", "Shift", "--cases-a", str(args.cases_a),
                           "--cases-b", str(args.cases_b), "--shape", *map(str, args.shape), "--seed", str(seed),
                           "--target-centre", args.target_centre]) == 0
    if not singan.is_file():
        assert nnunet_gen(["singan", "train", "-d", str(SOURCE), "--case", f"phantom{args.target_centre}_000",
                           "--images-folder", "imagesTs", "-o", str(singan), "--min-size", str(args.singan_min_size),
                           "--max-size", str(max(args.shape[1:])), "--iters", str(args.singan_iters),
                           "--seed", str(seed), "--device", args.device, "--threads", str(args.threads)]) == 0
    for k, path in enumerate(more_singans, start=1):
        if "gba-keep-multi" in args.arms and not path.is_file():
            assert nnunet_gen(["singan", "train", "-d", str(SOURCE), "--case", f"phantom{args.target_centre}_{k:03d}",
                               "--images-folder", "imagesTs", "-o", str(path), "--min-size",
                               str(args.singan_min_size), "--max-size", str(max(args.shape[1:])), "--iters",
                               str(args.singan_iters), "--seed", str(seed), "--device", args.device, "--threads",
                               str(args.threads)]) == 0
    common = ["--alphas", *map(str, args.alphas), "--seed", str(seed), "--dilation", str(args.dilation),
              "--sigma", str(args.sigma), "--threads", str(args.threads), "--device", args.device]
    if not (raw / names[NAIVE]).is_dir():
        assert nnunet_gen(["render", "gba", "-d", str(SOURCE), "-o", str(NAIVE), "--name", "ShiftNaive",
                           "--no-blend", *common]) == 0
    if not (raw / names[GBA]).is_dir():
        assert nnunet_gen(["render", "gba", "-d", str(SOURCE), "-o", str(GBA), "--name", "ShiftGBA", "--singan",
                           str(singan), "--scales", *map(str, args.scales), *common]) == 0
    if "gba-keep" in args.arms and not (raw / names[GBA_KEEP]).is_dir():
        assert nnunet_gen(["render", "gba", "-d", str(SOURCE), "-o", str(GBA_KEEP), "--name", "ShiftGBAKeep",
                           "--singan", str(singan), "--scales", *map(str, args.scales), "--keep-contrast",
                           *common]) == 0
    if "gba-keep-multi" in args.arms and not (raw / names[GBA_MULTI]).is_dir():
        assert nnunet_gen(["render", "gba", "-d", str(SOURCE), "-o", str(GBA_MULTI), "--name", "ShiftGBAMulti",
                           "--singan", str(singan), *map(str, more_singans), "--scales", *map(str, args.scales),
                           "--keep-contrast", *common]) == 0
    optional = {GBA_KEEP: "gba-keep", GBA_MULTI: "gba-keep-multi"}
    for dataset in (d for d in names if d not in optional or optional[d] in args.arms):
        preprocessed = workdir / "nnUNet_preprocessed" / names[dataset]
        if not is_preprocessed(dataset):
            plan_and_preprocess(dataset, num_processes=1)
        if not (preprocessed / f"{PLANS}.json").is_file():
            derive_plans(dataset, PLANS, args.features[0], args.features[1])
    in_domain = held_out_centre_a(workdir / "heldoutA", seed, args.cases_b, tuple(args.shape), 1.0)
    dark = held_out_centre_a(workdir / "heldoutA_dark", seed, args.cases_b, tuple(args.shape), 0.5)
    arms = {"nnUNetTrainer": (SOURCE, f"nnUNetTrainer_{args.schedule}"),
            "nnUNetTrainerDA5": (SOURCE, f"nnUNetTrainerDA5_{args.schedule}"),
            "GIN": (SOURCE, f"nnUNetTrainerGIN_{args.schedule}"),
            "naive (render gba --no-blend)": (NAIVE, f"nnUNetTrainerGBA_{args.schedule}"),
            "naive, continuous alpha (on the fly)": (SOURCE, f"nnUNetTrainerNaiveRescaleContinuous_{args.schedule}"),
            "GBA": (GBA, f"nnUNetTrainerGBA_{args.schedule}"),
            "GBA, contrast kept": (GBA_KEEP, f"nnUNetTrainerGBA_{args.schedule}"),
            "GBA, contrast kept, 3 SinGANs": (GBA_MULTI, f"nnUNetTrainerGBA_{args.schedule}")}
    arms = {arm: dataset_trainer for arm, dataset_trainer in arms.items() if ARM_KEYS[arm] in args.arms}

    def train_and_score(dataset: int, trainer: str) -> dict[str, float]:
        backend = arm_backend(trainer, PLANS, threads=args.threads, device=args.device,
                              augmentation_workers=args.n_proc_da)
        source = raw / names[SOURCE]
        test_sets = ((f"centre {args.target_centre}", source / "imagesTs", source / "labelsTs"),
                     ("held-out centre A", in_domain / "imagesTs", in_domain / "labelsTs"),
                     ("held-out centre A, tumour x0.5", dark / "imagesTs", dark / "labelsTs"))
        return {test_name: mean_dice(train_and_predict(backend, names[dataset], images, workdir / "predictions" /
                                                       images.parent.name / trainer / str(dataset), log), labels)
                for test_name, images, labels in test_sets}

    with ThreadPoolExecutor(max_workers=len(arms) if args.parallel else 1) as pool:
        futures = {arm: pool.submit(train_and_score, *dataset_trainer) for arm, dataset_trainer in arms.items()}
        scores = {arm: future.result() for arm, future in futures.items()}
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedule", default="demo",
                        help="smoke, demo (100 it), 1epoch (250), 5epochs (1250), 20epochs (5000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--cases-a", type=int, default=10)
    parser.add_argument("--cases-b", type=int, default=6, help="target-centre test cases")
    parser.add_argument("--target-centre", choices=["B", "C"], default="B",
                        help="B: tumour-intensity shift; C: B plus a heterogeneous tumour texture (texture shift)")
    parser.add_argument("--arms", nargs="+", choices=list(ARM_KEYS.values()), default=list(ARM_KEYS.values()))
    parser.add_argument("--shape", type=int, nargs=3, default=[24, 32, 32])
    parser.add_argument("--features", type=int, nargs=2, default=[16, 128], help="network width: base, max")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.8, 1.5])
    parser.add_argument("--scales", type=int, nargs="+", default=[3],
                        help="SinGAN generators retained; one value gives as many GBA as naive copies per case")
    parser.add_argument("--dilation", type=int, default=3, help="eq. 7 dilation (px; small phantom slices)")
    parser.add_argument("--sigma", type=float, default=2.0, help="eq. 7 sigma (px)")
    parser.add_argument("--singan-iters", type=int, default=200, help="SinGAN iterations per scale")
    parser.add_argument("--singan-min-size", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-proc-da", type=int, default=0, help="nnUNet_n_proc_DA for training")
    parser.add_argument("--device", default="cpu", help="nnU-Net training/prediction and SinGAN: cpu or cuda")
    parser.add_argument("--parallel", action="store_true",
                        help="seeds in separate processes, each seed's three trainings at once (many cores / GPU)")
    parser.add_argument("--workdir", help="default: benchmarks/output/<output name>_work")
    args = parser.parse_args()
    if args.parallel and args.device == "cpu":
        parser.error("--parallel needs --device cuda: on CPU nnUNetv2_train sets torch to all cores per training, "
                     "so parallel trainings oversubscribe the CPU (on 2 cores, four of them had not finished one "
                     "250-iteration epoch after 18 min)")
    args.stem = "bench_gba_domain_shift" + ("" if args.target_centre == "B" else f"_centre{args.target_centre}")
    args.workdir = args.workdir or str(OUTPUT / f"{args.stem}_work")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with cpu_lock():
        if args.parallel:
            with ProcessPoolExecutor(len(args.seeds), mp_context=multiprocessing.get_context("spawn")) as pool:
                per_seed = dict(zip(args.seeds, pool.map(run_seed, args.seeds, [args] * len(args.seeds))))
        else:
            per_seed = {seed: run_seed(seed, args) for seed in args.seeds}
    arms = list(next(iter(per_seed.values())))
    tests = list(next(iter(per_seed.values()))[arms[0]])
    lines = [f"schedule _{args.schedule}, seeds {args.seeds}, features {args.features}, device {args.device}, "
             f"{time.time() - start:.0f} s", "",
             "| arm | " + " | ".join(f"{t} Dice (mean +- std over seeds)" for t in tests) +
             f" | per seed ({tests[0]}) |", "|---|" + "---|" * (len(tests) + 1)]
    for arm in arms:
        cells = [mean_std([per_seed[s][arm][t] for s in args.seeds]) for t in tests]
        seeds = ", ".join(f"{per_seed[s][arm][tests[0]]:.3f}" for s in args.seeds)
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {seeds} |")
    table = "\n".join(lines)
    print(table)
    (OUTPUT / f"{args.stem}.md").write_text(table + "\n")
    (OUTPUT / f"{args.stem}.json").write_text(json.dumps(
        {"command": " ".join(sys.argv), "args": vars(args), "dice": {str(s): v for s, v in per_seed.items()}},
        indent=1))


if __name__ == "__main__":
    main()
