"""The embedded main job: does generative augmentation segment a shifted centre where nnU-Net's default fails?

A seeded two-centre phantom: centre A (bright tumours) is labelled, centre B (dark tumours, other contrast, noise and
bias field) is the target. A user has unlabelled target images, so a SinGAN is trained on one centre-B slice and GBA
copies of the centre-A cases are rendered (GBA paper, Sallé et al., section 3.3). Three arms are trained with the stock
``nnUNetv2_train`` on the same narrow plans and the same ``_demo`` schedule:

* ``nnUNetTrainer_demo``: nnU-Net's default augmentation (what a user has without this plugin);
* ``nnUNetTrainerNaiveRescale_demo``: naive tumour rescaling (GBA paper eq. 5), on the fly;
* ``nnUNetTrainerGBA_demo``: on the GBA-rendered dataset.

Each arm predicts centre B (``nnUNetv2_predict`` with the fold ensemble of ``folds``, test-time mirroring off to fit the
time budget); the demo prints and writes a Dice table, one figure with a
centre-B slice per arm (reference contour red, prediction cyan) and the QC montage of the naive/GBA copies. Every
step prints one line with the elapsed time. Everything lives below ``workdir`` (its own nnU-Net folders); a rerun
skips finished steps.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from nnunet_gen.convert.phantom import write_phantom_dataset
from nnunet_gen.evaluation.metrics import evaluate_folders
from nnunet_gen.evaluation.reports import write_reports
from nnunet_gen.evaluation.summary import summarize
from nnunet_gen.generators.singan import train_singan_on_case
from nnunet_gen.io.files import sha256_of_file, write_text
from nnunet_gen.io.images import read_image
from nnunet_gen.preprocess import derive_plans, is_preprocessed, plan_and_preprocess
from nnunet_gen.qc.figures import slice_montage, tumour_slice
from nnunet_gen.qc.gba import qc_montage
from nnunet_gen.render.dataset import render_dataset
from nnunet_gen.render.gba import gba_renderer
from nnunet_gen.run.nnunet import NnUNetBackend, workdir_environment
from synth.singan import SinGANConfig

SOURCE_ID, GBA_ID = 991, 993
SOURCE_NAME, GBA_NAME = "Dataset991_DemoPhantom", "Dataset993_DemoPhantomGBA"
PHANTOM_SHAPE = (24, 32, 32)
#: A narrow network (16 features doubling to 128) so three CPU trainings fit the demo's budget; every arm uses it.
DEMO_PLANS, FEATURES = "nnUNetPlansDemo", (16, 128)
#: GBA as in the domain-shift benchmark: the naive alphas, 3 finest SinGAN generators, a blending mask sized for
#: 32 px slices (the paper's 7 px / sigma 5 px are for 256 px crops).
ALPHAS, GENERATORS_RETAINED, DILATION, SIGMA = (0.5, 0.8, 1.5), (3,), 3, 2.0
SINGAN = SinGANConfig(min_size=14, max_size=32, iterations_per_scale=50)
#: The effect the papers claim, in direction: rescaling and GBA segment the target, the default does not.
EFFECT_MIN, BASELINE_MAX = 0.5, 0.1


@dataclass(frozen=True)
class Arm:
    name: str
    dataset: str
    trainer: str


ARMS = (Arm("nnU-Net default augmentation", SOURCE_NAME, "nnUNetTrainer_demo"),
        Arm("naive rescaling", SOURCE_NAME, "nnUNetTrainerNaiveRescale_demo"),
        Arm("GBA (SinGAN)", GBA_NAME, "nnUNetTrainerGBA_demo"))


class Progress:
    """One line per step with the time since the demo started; what the steps print goes to ``log`` instead."""

    def __init__(self, log: Path) -> None:
        self.start = time.time()
        self.log = log

    def __call__(self, message: str) -> None:
        print(f"[{time.time() - self.start:5.0f} s] {message}", flush=True)

    @contextmanager
    def quiet(self) -> Iterator[None]:
        """Send this process's stdout/stderr (nnU-Net's planning printout, progress bars) to the log file."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a") as stream, redirect_stdout(stream), redirect_stderr(stream):
            yield


def prepare_data(workdir: Path, seed: int, log: Progress) -> Path:
    """Phantom, SinGAN on one centre-B slice, GBA render, preprocessing and the narrow plans of both datasets."""
    raw = workdir / "nnUNet_raw"
    if not (raw / SOURCE_NAME).is_dir():
        log("phantom: 10 labelled centre-A cases, 6 centre-B target cases")
        with log.quiet():
            write_phantom_dataset(SOURCE_ID, "DemoPhantom", cases_a=10, cases_b=6, seed=seed, shape=PHANTOM_SHAPE)
    singan = workdir / "singan_centreB.safetensors"
    if not singan.is_file():
        log("SinGAN: training on one unlabelled centre-B slice")
        train_singan_on_case(SOURCE_ID, "phantomB_000", singan, "imagesTs", config=SINGAN, seed=seed, progress=False)
    if not (raw / GBA_NAME).is_dir():
        log("GBA: rendering 3 copies per centre-A case (alphas 0.5, 0.8, 1.5)")
        renderer = gba_renderer([str(singan)], alphas=ALPHAS, generators_retained=GENERATORS_RETAINED,
                                dilation_radius=DILATION, sigma=SIGMA, seed=seed)
        job = {"command": "render gba", "singan_sha256": sha256_of_file(singan), "alphas": list(ALPHAS),
               "scales": list(GENERATORS_RETAINED), "dilation": DILATION, "sigma": SIGMA, "seed": seed}
        with log.quiet():
            render_dataset(SOURCE_ID, GBA_ID, "DemoPhantomGBA", renderer, job, desc="render gba", labels=(1,))
    for dataset in (SOURCE_NAME, GBA_NAME):
        if not is_preprocessed(dataset):
            log(f"preprocessing {dataset} (nnU-Net plans of {SOURCE_NAME})")
            with log.quiet():
                plan_and_preprocess(dataset, num_processes=2)
        derive_plans(dataset, DEMO_PLANS, *FEATURES)
    return singan


def demo_figure(workdir: Path, predictions: dict[str, tuple[Path, float]], case: str) -> Path:
    """One centre-B case: the image with its reference, then each arm's prediction over the reference (titles give
    the arm's mean centre-B Dice)."""
    source = workdir / "nnUNet_raw" / SOURCE_NAME
    label, _ = read_image(source / "labelsTs" / f"{case}.nii.gz")
    image, _ = read_image(source / "imagesTs" / f"{case}_0000.nii.gz")
    z = tumour_slice(label)
    row = [(f"{case} (centre B): reference", image[z], label[z])]
    for arm, (folder, dice) in predictions.items():
        prediction, _ = read_image(folder / f"{case}.nii.gz")
        row.append((f"{arm}\n(centre-B Dice {dice:.2f})", image[z], [label[z], prediction[z]]))
    path = workdir / "demo_centreB.png"
    slice_montage([row], path, "centre-B test case: reference (red) and prediction (cyan) per arm")
    return path


def dice_table(dice: dict[Arm, float], folds: Sequence[int]) -> str:
    lines = [f"| arm | trainer | centre-B Dice (mean of 6 cases, folds {' '.join(map(str, folds))}) |",
             "|---|---|---|"]
    lines += [f"| {arm.name} | `{arm.trainer}` | {value:.3f} |" for arm, value in dice.items()]
    return "\n".join(lines)


def verdict(dice: dict[Arm, float]) -> str:
    baseline, naive, gba = (dice[arm] for arm in ARMS)
    shown = baseline <= BASELINE_MAX and naive >= EFFECT_MIN and gba >= EFFECT_MIN
    return (f"effect {'shown' if shown else 'NOT shown'}: naive rescaling and GBA "
            f"{'reach' if shown else 'should reach'} Dice >= {EFFECT_MIN} on the shifted centre while nnU-Net's "
            f"default augmentation stays <= {BASELINE_MAX}")


def run_demo(workdir: Path, seed: int = 0, folds: Sequence[int] = (0,)) -> dict[Arm, float]:
    """Run the whole demo (resumable). Returns the mean centre-B Dice per arm."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env = workdir_environment(workdir)
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results",
                                           "nnUNet_extTrainer", "nnUNet_compile", "nnUNet_def_n_proc")})
    logs = workdir / "logs"
    log = Progress(logs / "demo_steps.log")
    prepare_data(workdir, seed, log)
    test = workdir / "nnUNet_raw" / SOURCE_NAME
    dice, predictions = {}, {}
    for arm in ARMS:
        backend = NnUNetBackend(arm.trainer, plans=DEMO_PLANS, folds=folds, device="cpu", num_processes=1,
                                train_env={"nnUNet_n_proc_DA": "0"})
        for fold in folds:
            if not backend.is_trained(arm.dataset, fold):
                log(f"training {arm.name}: nnUNetv2_train {arm.dataset} 3d_fullres {fold} -tr {arm.trainer} "
                    f"-p {DEMO_PLANS}")
                backend.train(arm.dataset, fold, logs / f"{arm.trainer}_fold{fold}.log")
        out = workdir / "predictions_centreB" / f"{arm.trainer}_folds{'_'.join(map(str, folds))}"
        if not out.is_dir():
            log(f"predicting centre B with {arm.name}")
            backend.predict(arm.dataset, test / "imagesTs", out, False, logs / f"{arm.trainer}_predict.log",
                            mirroring=False)
        rows = evaluate_folders(out, test / "labelsTs", [1], num_processes=1)
        write_reports(rows, workdir / "evaluation" / out.name, name="centreB")
        dice[arm] = summarize(rows)["1"]["Dice"]["mean"]
        predictions[arm.name] = (out, dice[arm])
        log(f"{arm.name}: centre-B Dice {dice[arm]:.3f}")
    figure = demo_figure(workdir, predictions, "phantomB_000")
    montage = Path(qc_montage(GBA_NAME, str(workdir / "demo_gba_qc.png"), num_cases=3, variants_per_case=3))
    table = dice_table(dice, folds)
    write_text(workdir / "demo_dice.md", f"{table}\n\n{verdict(dice)}\n")
    print(f"\n{table}\n\n{verdict(dice)}")
    log(f"figures: {figure}, {montage}; table: {workdir / 'demo_dice.md'}; nnU-Net logs: {logs}")
    return dice
