"""ARHNet harmonisation on real anatomy, scored on a subject never seen in training (issue 14, ARHNet part).

Anatomy from ``benchmarks/anatomy`` (``bash benchmarks/anatomy/setup.sh`` once; loaders of ``shift.py``), 2 mm:

* training subjects: colin27, robex, itk (three people). mni152nlin6 is left out: it is an MNI152 template like the
  test subject, so it would be a near-copy of it rather than another subject.
* held-out test subject: icbm2009a (ICBM152 2009a), never trained on, never used for model selection; its GM
  probability map gives real anatomical structures as foregrounds.

Training cases (40^3 crops, fixed for every seed): simulated lesions of the anatomy benchmark's source style
(``shift.simulate_case``) and, for ``--tissue-fraction`` of the cases, a blob of normal tissue (ellipsoid, radii
2.5-6 voxels, inside the brain) as the foreground, so the harmoniser learns to restore a region from its context
rather than one lesion appearance (no atlas is used on training subjects). Images are divided by 200 (white-matter
median 100 -> 0.5) and clipped to [0, 1], the same map for every case. Each learned method is trained with the
``cpu`` preset (``synth.arhnet.config.PRESETS``; 20% of the training cases for validation, best state by
validation fPSNR) with ``--patch`` and ``--iterations`` overriding it.

Test foregrounds on icbm2009a (perturbed with eq. 1, alpha and lambda ~ U(-0.3, 0.3), drawn with the seed, the same
inputs for every method; Table 1 protocol of ``synth.arhnet.evaluation``):
simulated lesions; deep grey matter (GM probability > 0.5 within a ball of radius 3-6 voxels around a GM voxel at
least 28 mm inside the brain: basal ganglia / thalamus); cortical grey matter (same, within 12 mm of the brain
surface). MAE, fMAE, PSNR, fPSNR (PSNR capped at 60 dB) for Composite (no harmonisation), histogram matching and
the learned methods; mean and standard deviation over the seeds. Writes ``benchmarks/results/<name>.{md,json,png}``.

    flock /tmp/nnunet_gen_cpu.lock .venv/bin/python benchmarks/bench_arh_anatomy.py --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.anatomy import shift
from nnunet_gen.io.files import write_text
from nnunet_gen.qc.figures import line_plot
from synth.arhnet import (
    Harmonizer,
    HarmonizerConfig,
    evaluate_harmonizers,
    train_harmonizer,
)
from synth.arhnet.config import preset_config
from synth.arhnet.metrics import METRIC_NAMES
from synth.arhnet.patches import crop_patch

TRAINING_SUBJECTS = ("colin27", "robex", "itk")
TEST_SUBJECT = "icbm2009a"
INTENSITY_DIVISOR = 200.0
CROP = shift.CROP
DATA_SEED = 0
KINDS = ("lesion", "deep grey", "cortical grey")
LOWER_IS_BETTER = ("MAE", "fMAE")

Case = tuple[np.ndarray, np.ndarray, np.ndarray]


def to_unit(image: np.ndarray) -> np.ndarray:
    """The one intensity map of every case: white-matter median 100 -> 0.5, clipped to [0, 1]."""
    return np.clip(image / INTENSITY_DIVISOR, 0.0, 1.0).astype(np.float32)


def lesion_case(anatomy: shift.Anatomy, seed: int) -> Case:
    """A simulated source-style lesion case (image, lesion mask, brain mask)."""
    image, label = shift.simulate_case(anatomy, shift.SOURCE, seed, CROP)
    return to_unit(image), label, (image > 0).astype(np.uint8)


def crop_around(volume: np.ndarray, centre: np.ndarray) -> np.ndarray:
    return crop_patch(volume, tuple(int(c) - s // 2 for c, s in zip(centre, CROP)), CROP)


def region_case(anatomy: shift.Anatomy, region: np.ndarray, centres: np.ndarray,
                rng: np.random.Generator) -> Case:
    """Crop of the real anatomy around a random centre; foreground = ``region`` within a ball of radius 3-6 voxels
    (largest component, >= 20 voxels, redrawn otherwise)."""
    grid = np.indices(CROP).transpose(1, 2, 3, 0) - np.array(CROP) // 2
    for _ in range(50):
        centre = centres[rng.integers(len(centres))]
        ball = (grid ** 2).sum(-1) <= rng.uniform(3.0, 6.0) ** 2
        components, count = ndimage.label(ball & (crop_around(region.astype(np.uint8), centre) > 0))
        if count:
            largest = components == 1 + int(np.argmax(np.bincount(components.ravel())[1:]))
            if largest.sum() >= 20:
                brain = crop_around(anatomy.brain.astype(np.uint8), centre)
                return to_unit(crop_around(anatomy.image, centre)), largest.astype(np.uint8), brain
    raise ValueError(f"{anatomy.name}: no region of >= 20 voxels found")


def training_cases(anatomies: dict[str, shift.Anatomy], per_subject: int, tissue_fraction: float) -> list[Case]:
    """``per_subject`` cases per training subject, ``round(tissue_fraction * per_subject)`` of them tissue blobs."""
    cases = []
    rng = np.random.default_rng([DATA_SEED, 1])
    n_tissue = round(tissue_fraction * per_subject)
    for index, name in enumerate(TRAINING_SUBJECTS):
        anatomy = anatomies[name]
        centres = np.argwhere(ndimage.distance_transform_edt(anatomy.brain) >= 4)  # normal tissue, inside the brain
        for k in range(per_subject):
            cases.append(region_case(anatomy, anatomy.brain, centres, rng) if k < n_tissue
                         else lesion_case(anatomy, 10_000 + 100 * index + k))
    return cases


def held_out_cases(anatomy: shift.Anatomy, per_kind: int) -> dict[str, list[Case]]:
    """The held-out subject's cases by foreground kind (module docstring)."""
    grey = shift._array(shift.VOLUMES / f"{TEST_SUBJECT}_gm.nii.gz")
    grey = (grey > 0.5 * grey.max()) & anatomy.brain
    depth = ndimage.distance_transform_edt(anatomy.brain)
    rng = np.random.default_rng([DATA_SEED, 2])
    deep, cortical = np.argwhere(grey & (depth >= 14)), np.argwhere(grey & (depth <= 6))
    return {"lesion": [lesion_case(anatomy, 20_000 + k) for k in range(per_kind)],
            "deep grey": [region_case(anatomy, grey, deep, rng) for _ in range(per_kind)],
            "cortical grey": [region_case(anatomy, grey, cortical, rng) for _ in range(per_kind)]}


def summarise(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}


def beats(table: dict[str, dict[str, float]], method: str, baseline: str) -> dict[str, bool]:
    """Per metric: is ``method`` strictly better than ``baseline``?"""
    sign = {m: -1.0 if m in LOWER_IS_BETTER else 1.0 for m in METRIC_NAMES}
    return {m: sign[m] * (table[method][m] - table[baseline][m]) > 0 for m in METRIC_NAMES}


def markdown(result: dict) -> str:
    digits = {"MAE": 4, "fMAE": 3, "PSNR": 2, "fPSNR": 2}
    seeds = result["seeds"]
    lines = [f"# ARHNet harmonisation on a held-out real subject ({TEST_SUBJECT})", "",
             f"`{result['command']}`", "",
             (f"Seeds {seeds}; {result['train_cases']} training cases on {', '.join(TRAINING_SUBJECTS)}; test: "
              f"{result['test_cases']} cases on {TEST_SUBJECT} ({', '.join(KINDS)}); patch {result['patch']}^3; "
              f"{result['wall_seconds']:.0f} s in all. Mean +- std over seeds; lower MAE/fMAE, higher PSNR/fPSNR "
              "better; (f)PSNR capped at 60 dB."), ""]
    for group in ("all", *KINDS):
        lines += [f"## {group} foregrounds", "", "| method | " + " | ".join(METRIC_NAMES) + " |",
                  "|---" * (len(METRIC_NAMES) + 1) + "|"]
        for method, row in result["summary"][group].items():
            lines.append(f"| {method} | " + " | ".join(
                f"{row[m]['mean']:.{digits[m]}f} +- {row[m]['std']:.{digits[m]}f}" for m in METRIC_NAMES) + " |")
        lines.append("")
    lines += ["## Learned methods better than Composite and HM on all four metrics (all foregrounds)", ""]
    for method, verdict in result["verdict"].items():
        lines.append(f"- {method}: mean over seeds {verdict['mean']}; per seed {verdict['per_seed']}")
    lines += ["", "## Model selection (validation fPSNR on held-out training cases)", "",
              ("| method | seed | kept iteration | validation fPSNR | composite validation fPSNR | stopped early | "
               "train s |"), "|---|---|---|---|---|---|---|"]
    for entry in result["training"]:
        lines.append(f"| {entry['method']} | {entry['seed']} | {entry['best_iteration']} | "
                     f"{entry['best_fPSNR']:.2f} | {entry['composite_fPSNR']:.2f} | {entry['stopped_early']} | "
                     f"{entry['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["arhnet", "unet"], help="learned methods to train")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--patch", type=int, default=24, help="patch edge (voxels of 2 mm)")
    parser.add_argument("--iterations", type=int, default=800)
    parser.add_argument("--per-subject", type=int, default=10, help="training cases per training subject")
    parser.add_argument("--tissue-fraction", type=float, default=0.5,
                        help="fraction of training cases whose foreground is a normal-tissue blob (0: lesions only)")
    parser.add_argument("--test-per-kind", type=int, default=8, help="test cases per foreground kind")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: fastest on the shared CPU)")
    parser.add_argument("--name", default="arh_anatomy", help="results go to benchmarks/results/<name>.*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()
    anatomies = {name: shift.load_anatomy(name) for name in (*TRAINING_SUBJECTS, TEST_SUBJECT)}
    train = training_cases(anatomies, args.per_subject, args.tissue_fraction)
    tests = held_out_cases(anatomies[TEST_SUBJECT], args.test_per_kind)
    groups = {"all": [case for kind in KINDS for case in tests[kind]], **tests}
    patch = (args.patch,) * 3
    baselines = {name: Harmonizer(HarmonizerConfig(method=name, patch_size=patch)) for name in ("composite", "hm")}
    tables: dict[int, dict[str, dict]] = {}
    training, curves = [], {}
    for seed in args.seeds:
        harmonizers = dict(baselines)
        for method in args.methods:
            config = preset_config(args.preset, method, patch_size=patch, iterations=args.iterations)
            began = time.time()
            harmonizers[method] = train_harmonizer(train, config, seed)
            record = harmonizers[method].validation
            training.append({"method": method, "seed": seed, "seconds": time.time() - began,
                             **{k: record[k] for k in ("best_iteration", "best_fPSNR", "composite_fPSNR",
                                                       "stopped_early")}, "curve": record["curve"]})
            curves[f"{method} seed {seed}"] = ([p["iteration"] for p in record["curve"]],
                                               [p["fPSNR"] for p in record["curve"]])
        tables[seed] = {group: evaluate_harmonizers(harmonizers, cases, patch, seed)
                        for group, cases in groups.items()}
        print(f"seed {seed} done after {time.time() - start:.0f} s: "
              + json.dumps({m: round(r["fPSNR"], 2) for m, r in tables[seed]["all"].items()}), flush=True)
        write_results(args, tables, training, curves, len(train), len(groups["all"]), time.time() - start)


def write_results(args: argparse.Namespace, tables: dict[int, dict[str, dict]], training: list[dict],
                  curves: dict, train_cases: int, test_cases: int, seconds: float) -> None:
    """Markdown, JSON and the validation-curve PNG over the seeds finished so far (rewritten after each seed)."""
    seeds = sorted(tables)
    methods = ["composite", "hm", *args.methods]
    summary = {group: {method: {metric: summarise([tables[s][group][method][metric] for s in seeds])
                                for metric in METRIC_NAMES} for method in methods} for group in tables[seeds[0]]}
    mean_table = {m: {k: v["mean"] for k, v in summary["all"][m].items()} for m in methods}
    verdict = {method: {"mean": all(all(beats(mean_table, method, b).values()) for b in ("composite", "hm")),
                        "per_seed": [all(all(beats(tables[s]["all"], method, b).values()) for b in ("composite", "hm"))
                                     for s in seeds]} for method in args.methods}
    result = {"command": "flock /tmp/nnunet_gen_cpu.lock .venv/bin/python benchmarks/bench_arh_anatomy.py "
                         + " ".join(sys.argv[1:]),
              "seeds": seeds, "preset": args.preset, "patch": args.patch, "iterations": args.iterations,
              "tissue_fraction": args.tissue_fraction, "training_subjects": list(TRAINING_SUBJECTS),
              "test_subject": TEST_SUBJECT, "train_cases": train_cases, "test_cases": test_cases,
              "summary": summary, "per_seed": {str(s): tables[s] for s in seeds}, "verdict": verdict,
              "training": training, "wall_seconds": seconds}
    out = REPO / "benchmarks" / "results"
    write_text(out / f"{args.name}.json", json.dumps(result, indent=1))
    write_text(out / f"{args.name}.md", markdown(result))
    composite_validation = float(np.mean([t["composite_fPSNR"] for t in training]))
    line_plot(curves, out / f"{args.name}.png", "iteration", "validation fPSNR (dB)",
              "validation curves (held-out training cases)", {"composite": composite_validation})
    print(markdown(result), flush=True)


if __name__ == "__main__":
    main()
