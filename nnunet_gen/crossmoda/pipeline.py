"""``nnunet-gen crossmoda``: the GBA paper's cross-modal pipeline (sections 3.2-3.4, 4.2, 4.3), resumable step by step.

Input: one raw dataset with the labelled source-modality cases (``imagesTr``/``labelsTr``), the unlabelled
target-modality pool (``imagesUnlabelledTr``) and, optionally, labelled target-modality validation and test folders
(e.g. ``imagesVal``/``labelsVal``, ``imagesTs``/``labelsTs``). Datasets written (IDs from ``output_id_base`` = B):

====  ======================================  =====================================================================
ID    dataset                                 step
====  ======================================  =====================================================================
B     ``<name>Crop``                          resample + brain-centre crop of every folder (``nnunet-gen crop``)
—     ``<workdir>/translation/run<k>``         ``runs`` translators (CycleGAN or CUT), seeds ``seed + k``
B+1   ``<name>Pseudo``                        the labelled cases translated by every run (+ Van Cittert); planned
                                              and preprocessed on its own: every later dataset uses its plans
B+2   ``<name>PseudoNaive`` / ``...GBA``      naive or GBA copies (GBA: a SinGAN trained on a real target slice)
B+3.. ``<name>Pseudo...ST<k>``                self-training on the real target pool (:mod:`nnunet_gen.selftrain`)
====  ======================================  =====================================================================

Then the last iteration's fold ensemble + largest component predicts the test folder, the predictions are pasted
back into the original geometry and evaluated there against the original labels. With ``dice_floor`` and a
validation folder, a first stage below the floor is the paper's failure case: the run stops (:class:`FailureCase`)
instead of self-training. Every finished step is recorded in ``crossmoda_state.json``; a rerun resumes.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from nnunet_gen.convert.crop import crop_dataset, paste_back_folder
from nnunet_gen.errors import DataError
from nnunet_gen.evaluation.metrics import evaluate_folders
from nnunet_gen.evaluation.reports import write_reports
from nnunet_gen.evaluation.summary import summarize, summary_markdown
from nnunet_gen.generators.singan import train_singan_on_case
from nnunet_gen.generators.translation import UNLABELLED_FOLDER, target_image_files, train_translation
from nnunet_gen.inference import keep_largest_components
from nnunet_gen.io.files import sha256_of_file, write_text
from nnunet_gen.io.raw_dataset import RawDataset, dataset_folder_name, nnunet_dir
from nnunet_gen.render.dataset import render_dataset
from nnunet_gen.render.gba import gba_renderer
from nnunet_gen.render.naive import naive_renderer
from nnunet_gen.render.translate import Deconvolution, render_translated
from nnunet_gen.run.executors import Executor, SequentialExecutor
from nnunet_gen.selftrain import SelfTrainConfig, SelfTraining
from nnunet_gen.selftrain.config import RunState
from nnunet_gen.selftrain.loop import Backend
from synth.singan import SinGANConfig
from synth.translation import PRESETS

STATE_FILE = "crossmoda_state.json"
AUGMENTATIONS = ("none", "naive", "gba")


class FailureCase(DataError):
    """The first stage scored below the Dice floor: the translation failed, the run stops (GBA paper, 4.3)."""


@dataclass(frozen=True)
class CrossModaConfig:
    """What a crossmoda run computes; every field but ``iterations``/``epsilon`` identifies the run."""

    dataset: str
    output_id_base: int
    trainer: str
    crop_size: tuple[int, int, int] = (0, 0, 0)
    spacing: tuple[float, float, float] | None = None
    translation: str = "cyclegan"
    preset: str = "cpu"
    translation_iterations: int | None = None
    runs: int = 1
    seed: int = 0
    source_cases: tuple[str, ...] = ()
    target_cases: tuple[str, ...] = ()
    deconvolution_sigma_mm: float | None = None
    deconvolution_iterations: int = 10
    deconvolution_relaxation: float = 1.0
    augment: str = "gba"
    alphas: tuple[float, ...] = (0.5, 0.8, 1.5)
    singan_iterations: int = 200
    singan_min_size: int = 25
    gba_scales: tuple[int, ...] = (3, 4)
    keep_contrast: bool = False
    configuration: str = "3d_fullres"
    plans: str = "nnUNetPlans"
    folds: tuple[int, ...] = (0, 1, 2, 3, 4)
    iterations: int = 3
    epsilon: float = 0.01
    dice_floor: float | None = None
    val_folder: str | None = None
    test_folder: str = "imagesTs"

    def identity(self) -> dict:
        d = json.loads(json.dumps(asdict(self)))
        del d["iterations"], d["epsilon"]
        return d

    def run_id(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:12]


def labels_folder(images_folder: str) -> str:
    """``imagesTs`` -> ``labelsTs``."""
    return "labels" + images_folder[len("images"):]


@dataclass
class CrossModa:
    """One crossmoda run; :meth:`run` is resumable (see module docstring)."""

    config: CrossModaConfig
    backend: Backend
    executor: Executor = field(default_factory=SequentialExecutor)
    workdir: Path | None = None
    device: str = "cpu"
    overwrite: bool = False
    log: Callable[[str], None] = print

    def __post_init__(self) -> None:
        c = self.config
        self.source = RawDataset.find(c.dataset)
        if c.augment not in AUGMENTATIONS:
            raise DataError("--augment", f"must be one of {', '.join(AUGMENTATIONS)}, got {c.augment!r}")
        if c.preset not in PRESETS:
            raise DataError("--preset", f"must be one of {', '.join(PRESETS)}, got {c.preset!r}")
        if c.runs < 1:
            raise DataError("--runs", f"must be >= 1, got {c.runs}")
        target = target_image_files(self.source.folder / UNLABELLED_FOLDER, self.source.file_ending, c.target_cases)
        if not target:
            raise DataError(self.source.name, f"no target image in {UNLABELLED_FOLDER} (missing target pool)")
        if not (self.source.folder / c.test_folder).is_dir():
            raise DataError(self.source.name, f"no test folder {c.test_folder}")
        if c.val_folder and not all((self.source.folder / f).is_dir() for f in (c.val_folder,
                                                                                labels_folder(c.val_folder))):
            raise DataError(self.source.name, f"validation needs both {c.val_folder} and {labels_folder(c.val_folder)}")
        if c.dice_floor is not None and c.val_folder is None:
            raise DataError("--dice-floor", "needs a labelled target validation folder (--val-folder)")
        self.workdir = Path(self.workdir or nnunet_dir("nnUNet_results") /
                            f"crossmoda_{c.output_id_base:03d}_{c.trainer}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state = RunState(self.workdir, c, STATE_FILE)

    # -- dataset names -----------------------------------------------------------------------------------------
    def _name(self, offset: int, suffix: str) -> str:
        return dataset_folder_name(self.config.output_id_base + offset, f"{self.source.short_name}{suffix}")

    @property
    def cropped(self) -> str:
        return self._name(0, "Crop")

    @property
    def pseudo_target(self) -> str:
        return self._name(1, "Pseudo")

    @property
    def labelled(self) -> str:
        """The dataset the first segmentation stage trains on."""
        if self.config.augment == "none":
            return self.pseudo_target
        return self._name(2, f"Pseudo{'Naive' if self.config.augment == 'naive' else 'GBA'}")

    def translator_path(self, run: int) -> Path:
        return self.workdir / "translation" / f"run{run}.safetensors"

    # -- steps -------------------------------------------------------------------------------------------------
    def _step(self, name: str, work: Callable[[], dict | None]) -> None:
        if self.state.done(name):
            return
        self.log(f"crossmoda: {name}")
        self.state.finish(name, **(work() or {}))

    def _crop(self) -> dict:
        c = self.config
        crop_dataset(self.source.name, c.output_id_base, self.cropped.split("_", 1)[1], c.crop_size, c.spacing,
                     self.overwrite)
        return {"dataset": self.cropped}

    def _translate(self, run: int) -> dict:
        c = self.config
        config = replace(PRESETS[c.preset], method=c.translation,
                         **({"iterations": c.translation_iterations} if c.translation_iterations else {}))
        train_translation(self.cropped, self.translator_path(run), config, None, c.source_cases, c.target_cases,
                          seed=c.seed + run, device=self.device)
        return {"checkpoint": str(self.translator_path(run)),
                "sha256": sha256_of_file(self.translator_path(run))}

    def _render_pseudo_target(self) -> dict:
        c = self.config
        deconvolution = (Deconvolution(c.deconvolution_sigma_mm, c.deconvolution_iterations,
                                       c.deconvolution_relaxation) if c.deconvolution_sigma_mm is not None else None)
        render_translated(self.cropped, c.output_id_base + 1, self.pseudo_target.split("_", 1)[1],
                          [self.translator_path(k) for k in range(c.runs)], None, deconvolution, self.device,
                          self.overwrite)
        return {"dataset": self.pseudo_target}

    def _augment(self) -> dict:
        c = self.config
        labels = RawDataset.find(self.pseudo_target).foreground_labels
        job = {"command": f"crossmoda {c.augment}", "run_id": c.run_id()}
        if c.augment == "naive":
            renderer = naive_renderer(c.alphas, labels)
        else:
            singan = self.workdir / "singan.safetensors"
            case = sorted(target_image_files(nnunet_dir("nnUNet_raw") / self.cropped / UNLABELLED_FOLDER,
                                             self.source.file_ending, c.target_cases))[0]
            if not singan.is_file():
                config = SinGANConfig(min_size=c.singan_min_size, iterations_per_scale=c.singan_iterations)
                train_singan_on_case(self.cropped, case, singan, UNLABELLED_FOLDER, config=config, seed=c.seed,
                                     device=self.device)
            renderer = gba_renderer([str(singan)], labels, c.alphas, c.gba_scales, seed=c.seed, device=self.device,
                                    keep_contrast=c.keep_contrast)
            job["singan_sha256"] = sha256_of_file(singan)
        render_dataset(self.pseudo_target, c.output_id_base + 2, self.labelled.split("_", 1)[1], renderer, job,
                       self.overwrite, desc=f"render {c.augment}",
                       labels=labels)
        return {"dataset": self.labelled}

    def self_training(self) -> SelfTraining:
        c = self.config
        cropped = nnunet_dir("nnUNet_raw") / self.cropped
        val = (cropped / c.val_folder, cropped / labels_folder(c.val_folder)) if c.val_folder else (None, None)
        config = SelfTrainConfig(labelled=self.labelled, unlabelled=str(cropped / UNLABELLED_FOLDER),
                                 output_id_base=c.output_id_base + 3, trainer=c.trainer,
                                 configuration=c.configuration, plans=c.plans, folds=c.folds,
                                 iterations=c.iterations, epsilon=c.epsilon,
                                 val_images=str(val[0]) if val[0] else None,
                                 val_labels=str(val[1]) if val[1] else None, dice_floor=c.dice_floor)
        return SelfTraining(config, self.backend, self.executor, self.workdir / "selftrain", self.log)

    def _predict_test(self, selftrain: SelfTraining) -> dict:
        """Last iteration's ensemble + largest component on the cropped test images, pasted back."""
        c = self.config
        last = max(int(k) for k in selftrain.state.data["iterations"])
        dataset = selftrain.dataset_name(last)
        images = nnunet_dir("nnUNet_raw") / self.cropped / c.test_folder
        test = self.workdir / "test"
        self.backend.predict(dataset, images, test / "cropped_raw", False, self.workdir / "logs" / "test_predict.log")
        keep_largest_components(test / "cropped_raw", test / "cropped", self.source.foreground_labels,
                                self.source.file_ending)
        paste_back_folder(self.cropped, c.test_folder, test / "cropped", test / "predictions")
        return {"iteration": last, "dataset": dataset, "predictions": str(test / "predictions")}

    def _evaluate(self) -> dict:
        c = self.config
        reference = self.source.folder / labels_folder(c.test_folder)
        if not reference.is_dir():
            return {"evaluated": False}
        rows = evaluate_folders(self.workdir / "test" / "predictions", reference, self.source.foreground_labels,
                                self.source.file_ending, num_processes=1)
        summary = summarize(rows)
        write_reports(rows, self.workdir / "evaluation", summary, name="test")
        dice = float(np.mean([summary[str(label)]["Dice"]["mean"] for label in self.source.foreground_labels]))
        return {"evaluated": True, "test_dice": dice, "summary": summary_markdown(summary)}

    def write_report(self, selftrain: SelfTraining | None) -> Path:
        """``crossmoda_report.md``: the datasets, the translation runs, self-training and the test evaluation."""
        steps = self.state.data["steps"]
        lines = [f"# crossmoda run {self.config.run_id()} of {self.source.name}", "",
                 f"Datasets: {self.cropped} -> {self.pseudo_target}"
                 f"{' -> ' + self.labelled if self.labelled != self.pseudo_target else ''}", "",
                 "| step | finished |", "|---|---|"]
        lines += [f"| {name} | {info['finished']} |" for name, info in steps.items()]
        if selftrain is not None and (selftrain.workdir / "selftrain_report.md").is_file():
            lines += ["", (selftrain.workdir / "selftrain_report.md").read_text()]
        evaluation = steps.get("evaluate", {})
        if evaluation.get("evaluated"):
            lines += ["", f"## Test set ({self.config.test_folder}, original geometry)", "",
                      f"Mean Dice: {evaluation['test_dice']:.4f}", "", evaluation["summary"]]
        path = self.workdir / "crossmoda_report.md"
        write_text(path, "\n".join(lines) + "\n")
        return path

    def run(self) -> Path:
        """Run (or resume) every step; returns the report. Raises :class:`FailureCase` on the Dice floor."""
        c = self.config
        self._step("crop", self._crop)
        for run in range(c.runs):
            self._step(f"translate/run{run}", lambda run=run: self._translate(run))
        self._step("pseudo_target", self._render_pseudo_target)
        self._step("plan", lambda: self.backend.preprocess(self.pseudo_target, None, own_plans=True))
        if c.augment != "none":
            self._step(f"augment/{c.augment}", self._augment)
        selftrain = self.self_training()
        selftrain.run()
        failure = selftrain.failure_reason()
        if failure is not None:
            self.write_report(selftrain)
            raise FailureCase(self.labelled, f"{failure}; the run stops before self-training (report: "
                                             f"{self.workdir / 'crossmoda_report.md'})")
        self._step("predict_test", lambda: self._predict_test(selftrain))
        self._step("evaluate", self._evaluate)
        return self.write_report(selftrain)
