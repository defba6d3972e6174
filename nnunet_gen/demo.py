"""The embedded main job: two-centre phantom -> naive copies -> nnU-Net baseline vs NaiveRescale -> Dice table.

Runs the stock nnU-Net commands in subprocesses exactly as a user would (``nnUNetv2_train ... -tr NAME`` with
``nnUNet_extTrainer`` set, ``nnUNetv2_predict -f 0 1 2 3 4``), on CPU, with the short ``_demo`` schedule.
Everything is written below ``workdir`` (its own nnUNet_raw/preprocessed/results).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

from nnunet_gen.convert.phantom import write_phantom_dataset
from nnunet_gen.evaluation.metrics import evaluate_folders
from nnunet_gen.evaluation.reports import write_reports
from nnunet_gen.evaluation.summary import summarize
from nnunet_gen.io.files import write_text
from nnunet_gen.io.images import read_image
from nnunet_gen.io.manifest import Manifest
from nnunet_gen.io.raw_dataset import RawDataset
from nnunet_gen.preprocess import derive_plans, is_preprocessed, plan_and_preprocess
from nnunet_gen.qc.figures import slice_montage, tumour_slice
from nnunet_gen.render.dataset import render_dataset
from nnunet_gen.render.naive import naive_renderer
from nnunet_gen.run.nnunet import run_stock, workdir_environment

SOURCE_ID, NAIVE_ID = 991, 992
#: A narrow network (8 features doubling to 64) so ten CPU trainings fit in minutes; both arms use it.
DEMO_PLANS = "nnUNetPlansDemo"
ARMS = {"baseline": "nnUNetTrainer_demo", "naive rescale": "nnUNetTrainerNaiveRescale_demo"}


def train_and_predict(dataset: int, trainer: str, folds: Sequence[int], images: Path, out: Path,
                      env: dict[str, str], log: Path) -> None:
    """Train the folds that have no final checkpoint yet (resumable), then predict ``images`` with the ensemble."""
    train_env = {**env, "nnUNet_n_proc_DA": "0"}
    results = Path(env["nnUNet_results"])
    for fold in folds:
        done = list(results.glob(f"Dataset{dataset}_*/{trainer}__{DEMO_PLANS}__3d_fullres/fold_{fold}/"
                                 f"checkpoint_final.pth"))
        if not done:
            run_stock(["nnUNetv2_train", str(dataset), "3d_fullres", str(fold), "-tr", trainer, "-p", DEMO_PLANS,
                       "-device", "cpu"], train_env, log)
    run_stock(["nnUNetv2_predict", "-i", str(images), "-o", str(out), "-d", str(dataset), "-c", "3d_fullres",
               "-tr", trainer, "-p", DEMO_PLANS, "-f", *map(str, folds), "-device", "cpu", "-npp", "1", "-nps", "1"],
              env, log)


def demo_figure(workdir: Path, naive: RawDataset, predictions: dict[str, Path], test_labels: Path) -> Path:
    """One training case with its naive copies, and one centre-B case with each arm's prediction."""
    manifest = Manifest.load(naive.folder)
    source = sorted(manifest.of_kind("real"))[0]
    copies = sorted(c for c in manifest.of_kind("synthetic") if manifest.cases[c].source_case == source)
    case = naive.read_case(source)
    z = tumour_slice(case.label)
    row_a = [(f"{source} (centre A)", case.images[0, z], case.label[z])]
    for c in copies:
        row_a.append((f"naive alpha={manifest.cases[c].params['alpha']}", naive.read_case(c).images[0, z],
                      case.label[z]))
    b_case = sorted(p.name for p in test_labels.iterdir())[0]
    label_b, _ = read_image(test_labels / b_case)
    image_b, _ = read_image(test_labels.parent / "imagesTs" / b_case.replace(".nii.gz", "_0000.nii.gz"))
    zb = tumour_slice(label_b)
    row_b = [(f"{b_case[:-7]} (centre B) + truth", image_b[zb], label_b[zb])]
    for arm, folder in predictions.items():
        row_b.append((f"prediction: {arm}", image_b[zb], read_image(folder / b_case)[0][zb]))
    path = workdir / "demo_case.png"
    slice_montage([row_a, row_b], path, "nnunet_gen demo: naive tumour rescaling (red: label / prediction)")
    return path


def run_demo(workdir: Path, seed: int = 0, folds: Sequence[int] = (0, 1, 2, 3, 4)) -> dict[str, float]:
    """Run the whole demo (resumable: rerunning skips finished steps). Returns mean centre-B Dice per arm."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env = workdir_environment(workdir)
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})
    log = workdir / "nnunet.log"
    start = time.time()

    raw_root = workdir / "nnUNet_raw"
    source = raw_root / f"Dataset{SOURCE_ID}_DemoPhantom"
    if not source.is_dir():
        write_phantom_dataset(SOURCE_ID, "DemoPhantom", cases_a=10, cases_b=6, seed=seed, shape=(24, 32, 32))
    if not (raw_root / f"Dataset{NAIVE_ID}_DemoPhantomNaive").is_dir():
        job = {"command": "render naive", "alphas": [0.5, 0.8, 1.5], "labels": [1]}
        render_dataset(SOURCE_ID, NAIVE_ID, "DemoPhantomNaive", naive_renderer(), job, desc="render naive")
    for dataset in (SOURCE_ID, NAIVE_ID):
        name = f"Dataset{dataset}_DemoPhantom" + ("Naive" if dataset == NAIVE_ID else "")
        if not is_preprocessed(name):
            plan_and_preprocess(dataset, num_processes=2)
    derive_plans(SOURCE_ID, DEMO_PLANS, base_features=8, max_features=64)

    test_images, test_labels = source / "imagesTs", source / "labelsTs"
    predictions, dice = {}, {}
    for arm, trainer in ARMS.items():
        out = workdir / "predictions_centreB" / trainer
        train_and_predict(SOURCE_ID, trainer, folds, test_images, out, env, log)
        rows = evaluate_folders(out, test_labels, [1], num_processes=1)
        write_reports(rows, out / "evaluation", name="centreB")
        dice[arm] = summarize(rows)["1"]["Dice"]["mean"]
        predictions[arm] = out

    figure = demo_figure(workdir, RawDataset(raw_root / f"Dataset{NAIVE_ID}_DemoPhantomNaive"), predictions,
                         test_labels)
    table = ["| trainer | centre-B Dice (mean over cases, fold ensemble) |", "|---|---|"]
    table += [f"| {ARMS[arm]} | {value:.3f} |" for arm, value in dice.items()]
    text = "\n".join(table)
    write_text(workdir / "demo_dice.md", text + "\n")
    print(text)
    print(f"figure: {figure}\nlog: {log}\ntotal time: {time.time() - start:.0f} s")
    return dice
