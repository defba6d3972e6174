"""ARHNet benchmarks on seeded phantoms (CPU): (a) the paper's Table 1 (and optionally Table 3) on held-out perturbed
lesions, (b) harmonisation throughput, (c) downstream nnU-Net Dice on held-out real cases: real only vs + Copy-Paste
vs + ARH composites (the paper's Table 2 in direction; ``--down-cases`` small makes the task data-poor).

Runs under ``flock /tmp/nnunet_gen_cpu.lock`` (taken by the script itself; ``--lock``) with its own nnUNet_raw /
preprocessed / results below ``--out``. Every budget is a flag; the defaults are what fits this 2-core CPU, not the paper's
(200 epochs, batch 16, 64^3). Deviation for the budget: learning rates 10x the paper's (1e-3 G, 5e-4 D) unless
``--paper-lr``. Writes ``arh_bench.json`` (and the Table 1 CSV / PNG) under ``--out``.

    .venv/bin/python benchmarks/bench_arh.py --parts a b c
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
LOCK = "/tmp/nnunet_gen_cpu.lock"
TABLE_ID, SOURCE_ID, CP_ID, ARH_ID = 950, 951, 952, 953


def set_nnunet_dirs(root: Path) -> dict[str, str]:
    dirs = {k: str(root / k) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    os.environ.update(dirs)
    return dirs


def harmonizer_config(args, method: str, patch: tuple[int, int, int]):
    from nnunet_gen.generators.arh import make_config
    lrs = {} if args.paper_lr else {"generator_lr": 1e-3, "discriminator_lr": 5e-4}
    return make_config(method, patch, iterations=args.iterations, batch_size=args.batch_size,
                       base_channels=args.base_channels, depth=args.depth, discriminator_channels=args.base_channels,
                       **lrs)


def part_table(args, out: Path) -> dict:
    """(a) Table 1 (+ Table 3 with --table3) on the held-out phantom cases; ARHNet vs Composite and HM."""
    from nnunet_gen.convert.phantom import write_phantom_dataset
    from nnunet_gen.generators.arh import evaluate_on_dataset, holdout_split, lesion_case_groups, load_lesion_cases
    from nnunet_gen.io.raw_dataset import RawDataset
    from synth.arhnet import format_metric_table, save_harmonizer, train_harmonizer
    if not any((out / "nnUNet_raw").glob(f"Dataset{TABLE_ID}_*")):
        write_phantom_dataset(TABLE_ID, "ArhTable", args.table_cases, 0, seed=args.seed, shape=tuple(args.shape))
    raw = RawDataset.find(TABLE_ID)
    train_ids, held_out = holdout_split(lesion_case_groups(raw, [1]), args.holdout, args.seed)
    cases = [c.as_tuple() for c in load_lesion_cases(raw, train_ids, [1])]
    methods = ["unet", "hinge_gan", "unet_gan", "rainnet", "arhnet"]
    methods += ["arhnet_bn", "arhnet_in", "arhnet_rain"] if args.table3 else []
    patch = (args.patch,) * 3
    harmonizers, seconds = {}, {}
    for method in methods:
        start = time.time()
        harmonizers[method] = train_harmonizer(cases, harmonizer_config(args, method, patch), args.seed)
        seconds[method] = round(time.time() - start, 1)
        save_harmonizer(harmonizers[method], out / "table" / "checkpoints" / f"{method}.safetensors")
    table = evaluate_on_dataset(TABLE_ID, harmonizers, out / "table", patch, holdout_fraction=args.holdout,
                                seed=args.seed, details={"train_seconds": seconds})
    print(f"\n(a) Table 1 on {len(held_out)} held-out phantom cases ({len(train_ids)} training), patch {patch}, "
          f"{args.iterations} iterations x batch {args.batch_size}, base channels {args.base_channels}, "
          f"depth {args.depth}\n" + format_metric_table(table))
    arh = table["arhnet"]
    beats = {baseline: {m: (arh[m] < table[baseline][m]) if m in ("MAE", "fMAE") else (arh[m] > table[baseline][m])
                        for m in arh} for baseline in ("composite", "hm")}
    print(f"ARHNet better than Composite / HM on each metric: {beats}")
    return {"table": table, "arhnet_beats": beats, "train_seconds": seconds, "held_out_cases": held_out,
            "train_cases": train_ids}


def _time(function, repeats: int) -> float:
    function()
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def part_throughput(args, out: Path) -> dict:
    """(b) Cases per second of harmonize_volume: a 64^3 patch and a whole ATLAS-sized volume (one lesion)."""
    from synth.arhnet import Harmonizer, harmonize_volume
    from synth.arhnet.harmonize import build_generator
    from synth.arhnet.perturbation import IntensityScaling
    config = harmonizer_config(args, "arhnet", (64, 64, 64))
    torch.manual_seed(0)
    harmonizer = Harmonizer(config, build_generator(config).eval())
    rng = np.random.default_rng(0)
    rows = {}
    for name, shape in (("64^3 patch", (64, 64, 64)), ("whole volume 189x233x197", (189, 233, 197))):
        image = rng.random(shape).astype(np.float32)
        mask = np.zeros(shape, dtype=np.uint8)
        centre = np.array(shape) // 2
        grid = np.ogrid[tuple(slice(0, s) for s in shape)]
        mask[sum((g - c) ** 2 for g, c in zip(grid, centre)) <= 8 ** 2] = 1
        seconds = _time(lambda: harmonize_volume(harmonizer, image, mask, scaling=IntensityScaling()), args.repeats)
        rows[name] = {"seconds_per_case": seconds, "cases_per_second": 1.0 / seconds}
    print(f"\n(b) throughput, ARHNet generator base {config.base_channels} depth {config.depth}, "
          f"{torch.get_num_threads()} CPU thread(s)")
    for name, row in rows.items():
        print(f"| {name} | {row['cases_per_second']:.2f} cases/s | {row['seconds_per_case']:.3f} s/case |")
    return {"rows": rows, "threads": torch.get_num_threads(), "base_channels": config.base_channels,
            "depth": config.depth}


def held_out_test_set(folder: Path, seed: int, count: int, shape: tuple[int, int, int]) -> Path:
    """Centre-A phantom cases that no arm trains on (imagesTs/labelsTs layout), seeds disjoint from the dataset's."""
    from nnunet_gen.convert.phantom import phantom_case
    from nnunet_gen.io.images import Geometry, write_image
    geometry = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    for k in range(count):
        case = f"test_{k:03d}"
        if not (folder / "labelsTs" / f"{case}.nii.gz").is_file():
            image, label = phantom_case(7_000_003 * (seed + 1) + k, "A", shape)
            write_image(image, geometry, folder / "imagesTs" / f"{case}_0000.nii.gz")
            write_image(label, geometry, folder / "labelsTs" / f"{case}.nii.gz")
    return folder


def part_downstream(args, out: Path) -> dict:
    """(c) nnU-Net Dice on held-out real cases: nnUNetTrainer on the real cases vs nnUNetTrainerARH on + Copy-Paste
    and + ARH composites, same schedule, each trained on all its cases (``-f all``)."""
    from nnunet_gen.convert.phantom import write_phantom_dataset
    from nnunet_gen.evaluation.metrics import evaluate_folders
    from nnunet_gen.evaluation.summary import summarize
    from nnunet_gen.generators.arh import train_on_dataset
    from nnunet_gen.preprocess import plan_and_preprocess
    from nnunet_gen.render.arh import render_arh_dataset
    from nnunet_gen.run.nnunet import run_stock, workdir_environment
    root = out
    env = {**workdir_environment(root), "nnUNet_n_proc_DA": "0"}
    raw = root / "nnUNet_raw"
    log = root / "nnunet.log"
    if not any(raw.glob(f"Dataset{SOURCE_ID}_*")):
        write_phantom_dataset(SOURCE_ID, "ArhDown", args.down_cases, 0, seed=args.seed + 1,
                              shape=tuple(args.down_shape))
    test = held_out_test_set(root / "test", args.seed, args.test_cases, tuple(args.down_shape))
    checkpoint = root / "arhnet.safetensors"
    if not checkpoint.is_file():
        train_on_dataset(SOURCE_ID, checkpoint, harmonizer_config(args, "arhnet", (args.patch,) * 3),
                         holdout_fraction=0.0, seed=args.seed)
    if not any(raw.glob(f"Dataset{CP_ID}_*")):
        render_arh_dataset(SOURCE_ID, CP_ID, "ArhDownCopyPaste", None, args.num, seed=args.seed)
    if not any(raw.glob(f"Dataset{ARH_ID}_*")):
        render_arh_dataset(SOURCE_ID, ARH_ID, "ArhDownARH", checkpoint, args.num, seed=args.seed)
    for dataset in (SOURCE_ID, CP_ID, ARH_ID):
        if not list((root / "nnUNet_preprocessed").glob(f"Dataset{dataset}_*/nnUNetPlans.json")):
            plan_and_preprocess(dataset, num_processes=1)
    arms = {"real only": (SOURCE_ID, f"nnUNetTrainer_{args.schedule}"),
            "+ copy-paste": (CP_ID, f"nnUNetTrainerARH_{args.schedule}"),
            "+ ARH": (ARH_ID, f"nnUNetTrainerARH_{args.schedule}")}
    dice, seconds = {}, {}
    for arm, (dataset, trainer) in arms.items():
        folder = next((root / "nnUNet_results").glob(f"Dataset{dataset}_*"), None)
        fold = None if folder is None else folder / f"{trainer}__nnUNetPlans__3d_fullres" / "fold_all"
        start = time.time()
        if fold is None or not (fold / "checkpoint_final.pth").is_file():
            run_stock(["nnUNetv2_train", str(dataset), "3d_fullres", "all", "-tr", trainer, "-device", args.device],
                      env, log)
        seconds[arm] = round(time.time() - start, 1)
        predictions = root / "predictions" / str(dataset)
        if len(list(predictions.glob("*.nii.gz"))) < args.test_cases:
            run_stock(["nnUNetv2_predict", "-i", str(test / "imagesTs"), "-o", str(predictions), "-d", str(dataset),
                       "-c", "3d_fullres", "-tr", trainer, "-f", "all", "-device", args.device, "-npp", "1",
                       "-nps", "1"], env, log)
        rows = evaluate_folders(predictions, test / "labelsTs", [1], num_processes=1)
        dice[arm] = float(summarize(rows)["1"]["Dice"]["mean"])
    print(f"\n(c) downstream, Dice on {args.test_cases} held-out real phantom cases, schedule '{args.schedule}', "
          f"{args.num} composites, {args.down_cases} real training cases {tuple(args.down_shape)}")
    print("| training data | Dice | train s |\n|---|---|---|")
    for arm in arms:
        print(f"| {arm} | {dice[arm]:.4f} | {seconds[arm]} |")
    return {"dice": dice, "train_seconds": seconds, "schedule": args.schedule, "composites": args.num,
            "real_cases": args.down_cases, "test_cases": args.test_cases, "shape": args.down_shape}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", default=["a", "b"], choices=["a", "b", "c"])
    p.add_argument("--out", default=str(REPO / "benchmarks" / "output" / "arh"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--iterations", type=int, default=250, help="harmoniser training iterations (paper: 200 epochs)")
    p.add_argument("--patch", type=int, default=32, help="cubic training patch (paper: 64)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--base-channels", type=int, default=8)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--paper-lr", action="store_true", help="use the paper's learning rates (1e-4 G, 5e-5 D)")
    p.add_argument("--table-cases", type=int, default=20)
    p.add_argument("--holdout", type=float, default=0.3)
    p.add_argument("--shape", type=int, nargs=3, default=[32, 48, 48])
    p.add_argument("--table3", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--down-cases", type=int, default=10, help="(c) real training cases (at least 5: grouped splits)")
    p.add_argument("--test-cases", type=int, default=10, help="(c) held-out real cases the Dice is measured on")
    p.add_argument("--down-shape", type=int, nargs=3, default=[24, 32, 32])
    p.add_argument("--num", type=int, default=20, help="composites per composite arm (paper: 200)")
    p.add_argument("--schedule", default="demo", help="nnU-Net schedule suffix (smoke, demo, 5epochs, ...)")
    p.add_argument("--lock", default=LOCK, help="file lock that serialises the heavy benchmarks on this machine")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    set_nnunet_dirs(out)  # before nnunetv2 is imported: it reads these variables once, at import
    with open(args.lock, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results_file = out / "arh_bench.json"
        results = json.loads(results_file.read_text()) if results_file.is_file() else {}
        parts = {"a": part_table, "b": part_throughput, "c": part_downstream}
        for part in args.parts:
            start = time.time()
            results[part] = {**parts[part](args, out), "seconds": round(time.time() - start, 1),
                             "command": " ".join(sys.argv), "budget": vars(args)}
            from nnunet_gen.io.files import write_text
            write_text(results_file, json.dumps(results, indent=1))
        print(f"\nwrote {results_file}")


if __name__ == "__main__":
    main()
