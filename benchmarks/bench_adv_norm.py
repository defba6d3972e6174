"""Multi-site segmentation (Delisle et al.'s setting): does adversarial normalisation beat what a user tries first?

Data per seed (its own nnUNet_raw/preprocessed/results under ``--workdir``): the multi-site phantom (``nnunet-gen
phantom-multisite``: training sites A, B, C with their own T1 tissue contrast, bias, noise and slice thickness; an
unseen site D) or ``--data anatomy`` (``benchmarks/anatomy/multisite.py``: the same sites on real anatomy, training
subjects and a held-out test subject). Every arm trains ``nnUNetv2_train 3d_fullres all`` with the same plans (the
dataset's own, narrowed to ``--features``) and the same schedule:

* ``nnUNetTrainer_<schedule>``: stock nnU-Net on the pooled sites;
* ``nnUNetTrainerDA5_<schedule>``: nnU-Net's heavier augmentation (more intensity and contrast transforms);
* ``nnUNetTrainerAdvNorm_<schedule>``: a normaliser G in front of nnU-Net's network, trained against a (K+1)-class
  site discriminator, site-balanced sampling; the paper's learning rates (G 1e-5, D 1e-4);
* ``nnUNetTrainerAdvNormScaledLR_<schedule>``: the same with the paper's rate ratios at nnU-Net's segmenter rate
  (G 1e-3, D 1e-2).

Scores: Dice (``nnUNetv2_predict --disable_tta``) on the held-out cases of every seen site and of the unseen site;
the mean pairwise Jensen-Shannon divergence of per-site intensity histograms of the training cases before and after
G (``nnunet-gen evaluate-normalisation``). Resumable; holds /tmp/nnunet_gen_cpu.lock; writes
benchmarks/output/bench_adv_norm[_anatomy].{md,json} and a Dice figure.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_adv_norm.py --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from seed_workdir import arm_backend, enter_seed_workdir, mean_dice, mean_std, run_seeds_locked, train_and_predict

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "benchmarks" / "output"
PLANS = "nnUNetPlansSmall"
DATASET = 970
TRAINERS = ("nnUNetTrainer", "nnUNetTrainerDA5", "nnUNetTrainerAdvNorm", "nnUNetTrainerAdvNormScaledLR")
ADV_NORM = TRAINERS[2:]


def write_data(seed: int, args) -> Path:
    if args.data == "phantom":
        from nnunet_gen.convert.multisite_phantom import write_multisite_phantom
        return write_multisite_phantom(DATASET, "MultiSite", args.train, args.test, seed, tuple(args.shape))
    sys.path.insert(0, str(REPO))
    from benchmarks.anatomy.multisite import build_dataset, load_subjects
    return build_dataset(load_subjects(), DATASET, "MultiSite", seed, crop=tuple(args.crop))


def run_seed(seed: int, args) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    from nnunet_gen.convert.multisite_phantom import SEEN_SITES, UNSEEN_SITES, held_out_folders
    from nnunet_gen.evaluation.normalisation import evaluate_normalisation
    from nnunet_gen.preprocess import derive_plans, is_preprocessed, plan_and_preprocess

    workdir, log, _ = enter_seed_workdir(args.workdir, seed, OUTPUT / f"{args.stem}_seed{seed}.log")
    raw = workdir / "nnUNet_raw" / f"Dataset{DATASET}_MultiSite"
    if not raw.is_dir():
        write_data(seed, args)
    if not is_preprocessed(DATASET):
        plan_and_preprocess(DATASET, num_processes=1)
    derive_plans(DATASET, PLANS, args.features[0], args.features[1])

    dice: dict[str, dict[str, float]] = {}
    for base in TRAINERS:
        trainer = f"{base}_{args.schedule}"
        backend = arm_backend(trainer, PLANS, threads=args.threads)
        dice[base] = {}
        for site in (*SEEN_SITES, *UNSEEN_SITES):
            images, labels = held_out_folders(site)
            out = train_and_predict(backend, raw.name, raw / images, workdir / "predictions" / trainer / site, log)
            dice[base][site] = mean_dice(out, raw / labels)
    jsd = {}
    for base in ADV_NORM:
        report = evaluate_normalisation(DATASET, f"{base}_{args.schedule}", "all", workdir / "normalisation" / base,
                                        plans=PLANS, subset="all")
        jsd["before"] = report["before"]["mean_pairwise_jsd"]
        jsd[base] = report["after"]["mean_pairwise_jsd"]
    return dice, jsd


def dice_figure(results: dict, seeds: list[int], sites: list[str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(TRAINERS)
    for k, trainer in enumerate(TRAINERS):
        values = np.array([[results[s][0][trainer][site] for site in sites] for s in seeds])
        x = np.arange(len(sites)) + (k - (len(TRAINERS) - 1) / 2) * width
        ax.bar(x, values.mean(0), width, yerr=values.std(0, ddof=1) if len(seeds) > 1 else None, label=trainer,
               capsize=3)
    ax.set_xticks(np.arange(len(sites)), [f"site {s}" + (" (unseen)" if s == sites[-1] else "") for s in sites])
    ax.set_ylabel("held-out Dice")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title(f"multi-site benchmark, seeds {seeds}: mean +- std")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    from nnunet_gen.convert.multisite_phantom import SEEN_SITES, UNSEEN_SITES
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["phantom", "anatomy"], default="phantom")
    parser.add_argument("--schedule", default="demo", help="nnU-Net schedule of every arm (demo: 8 x 50 it)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--train", type=int, default=6, help="phantom: training subjects per seen site")
    parser.add_argument("--test", type=int, default=4, help="phantom: held-out subjects per site")
    parser.add_argument("--shape", type=int, nargs=3, default=[24, 32, 32])
    parser.add_argument("--crop", type=int, nargs=3, default=[40, 40, 40], help="anatomy: crop per case (2 mm voxels)")
    parser.add_argument("--features", type=int, nargs=2, default=[16, 128], help="network width: base, max")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir")
    args = parser.parse_args()
    args.stem = "bench_adv_norm" + ("" if args.data == "phantom" else "_anatomy")
    args.workdir = args.workdir or str(OUTPUT / f"{args.stem}_work")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    start = time.time()
    results = run_seeds_locked(args.seeds, run_seed, args)
    sites = [*SEEN_SITES, *UNSEEN_SITES]
    lines = [f"{args.data}, schedule _{args.schedule}, fold all, plans {PLANS} {args.features}, seeds {args.seeds}, "
             f"{time.time() - start:.0f} s; held-out Dice, mean +- std over seeds (per seed)", "",
             "| arm | " + " | ".join(f"site {s}" for s in SEEN_SITES) + " | seen mean | unseen site "
             + ", ".join(UNSEEN_SITES) + " |", "|---|" + "---|" * (len(sites) + 1)]
    for trainer in TRAINERS:
        per_site = {site: [results[s][0][trainer][site] for s in args.seeds] for site in sites}
        seen = [sum(results[s][0][trainer][site] for site in SEEN_SITES) / len(SEEN_SITES) for s in args.seeds]
        cells = [f"{mean_std(per_site[site])} ({', '.join(f'{v:.3f}' for v in per_site[site])})" for site in sites]
        lines.append(f"| {trainer} | " + " | ".join(cells[:len(SEEN_SITES)]) + f" | {mean_std(seen)} | "
                     + " | ".join(cells[len(SEEN_SITES):]) + " |")
    lines += ["", "| training cases (z-scored) | mean pairwise JSD of site histograms |", "|---|---|",
              f"| before G | {mean_std([results[s][1]['before'] for s in args.seeds])} |"]
    lines += [f"| after G of {base} | {mean_std([results[s][1][base] for s in args.seeds])} |" for base in ADV_NORM]
    table = "\n".join(lines)
    print(table)
    (OUTPUT / f"{args.stem}.md").write_text(table + "\n")
    (OUTPUT / f"{args.stem}.json").write_text(json.dumps(
        {"command": " ".join(sys.argv), "args": vars(args), "dice": {str(s): r[0] for s, r in results.items()},
         "jsd": {str(s): r[1] for s, r in results.items()}}, indent=1))
    dice_figure(results, args.seeds, sites, OUTPUT / f"{args.stem}_dice.png")


if __name__ == "__main__":
    main()
