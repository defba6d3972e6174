"""The self-training loop (GBA paper, section 3.4): train the folds, predict the unlabelled pool with the ensemble,
write the pseudo-labelled dataset, preprocess it on the labelled plans, retrain; resumable step by step.
See :mod:`nnunet_gen.selftrain` for the method and its stop rules."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from nnunet_gen.errors import DataError
from nnunet_gen.evaluation.metrics import evaluate_folders
from nnunet_gen.evaluation.reports import write_reports
from nnunet_gen.evaluation.summary import summarize
from nnunet_gen.io.manifest import SELFTRAIN_GENERATOR, CaseRecord, Manifest
from nnunet_gen.io.raw_dataset import RawDataset, nnunet_dir, parse_dataset_folder
from nnunet_gen.io.writer import DatasetWriter
from nnunet_gen.preprocess import is_preprocessed, write_sampling_config
from nnunet_gen.run.executors import Executor, SequentialExecutor, TrainJob
from nnunet_gen.selftrain.calibration import (CALIBRATION_MODES, calibrate_on_validation, label_volumes,
                                              pool_volume_curve, threshold_for_volume, volume_diagnostics)
from nnunet_gen.selftrain.config import RunState, SelfTrainConfig
from nnunet_gen.selftrain.pool import unlabelled_cases
from nnunet_gen.selftrain.pseudo_labels import make_pseudo_labels, pseudo_label_agreement
from nnunet_gen.selftrain.report import write_selftrain_report


class Backend(Protocol):
    """The nnU-Net work of a run; :class:`NnUNetBackend` runs the stock commands, tests substitute fakes."""

    def train_job(self, dataset: str, fold: int, log: Path, save_probabilities: bool = False) -> TrainJob: ...

    def is_trained(self, dataset: str, fold: int) -> bool: ...

    def validation_folder(self, dataset: str, fold: int) -> Path: ...

    def validate(self, dataset: str, fold: int, log: Path) -> None: ...

    def predict(self, dataset: str, images: Path, out: Path, save_probabilities: bool, log: Path) -> None: ...

    def preprocess(self, dataset: str, source: str | None, own_plans: bool = False) -> None: ...


@dataclass
class SelfTraining:
    """One self-training run; :meth:`run` is resumable (see module docstring)."""

    config: SelfTrainConfig
    backend: Backend
    executor: Executor = field(default_factory=SequentialExecutor)
    workdir: Path | None = None
    log: Callable[[str], None] = print

    def __post_init__(self) -> None:
        self.labelled = RawDataset.find(self.config.labelled)
        if self.workdir is None:
            self.workdir = (nnunet_dir("nnUNet_results") /
                            f"selftrain_{self.config.output_id_base:03d}_{self.config.trainer}")
        self.workdir = Path(self.workdir)
        self.labels = self.labelled.foreground_labels
        self.dataset_labels = dict(self.labelled.labels)
        if self.config.confidence is not None and "ignore" not in self.dataset_labels:
            self.dataset_labels["ignore"] = max(self.dataset_labels.values()) + 1
        self.ignore_label = self.dataset_labels.get("ignore")
        if (self.config.val_images is None) != (self.config.val_labels is None):
            raise DataError("--val-images/--val-labels", "give both or neither")
        if self.config.pseudo_mass is not None and not 0 < self.config.pseudo_mass < 1:
            raise DataError("--pseudo-mass", f"must be in (0, 1), got {self.config.pseudo_mass}")
        if self.config.confidence is not None and not 0 < self.config.confidence <= 1:
            raise DataError("--confidence", f"must be in (0, 1], got {self.config.confidence}")
        if self.config.calibrate_threshold not in (None, *CALIBRATION_MODES):
            raise DataError("--calibrate-threshold", f"must be one of {', '.join(CALIBRATION_MODES)}, "
                                                     f"got {self.config.calibrate_threshold!r}")
        if self.config.dice_floor is not None and self.config.val_images is None:
            raise DataError("--dice-floor", "needs a labelled validation set (--val-images/--val-labels)")
        if self.config.size_from_source is not None and self.config.size_from_source < 1:
            raise DataError("--size-from-source", f"must be >= 1, got {self.config.size_from_source}")
        self.cases = unlabelled_cases(self.labelled, Path(self.config.unlabelled))  # bad input: before any state
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state = RunState(self.workdir, self.config)
        self._nnunet_seconds = 0.0

    # -- helpers ---------------------------------------------------------------------------------------------
    def dataset_name(self, k: int) -> str:
        """Dataset trained in iteration ``k``: the labelled one, then ``Dataset<base+k-1>_<name>ST<k>``."""
        if k == 0:
            return self.labelled.name
        return f"Dataset{self.config.output_id_base + k - 1:03d}_{self.labelled.short_name}ST{k}"

    def iteration_dir(self, k: int) -> Path:
        return self.workdir / f"iteration_{k}"

    @property
    def needs_validation_probabilities(self) -> bool:
        """Trainings save their validation softmax (``--npz``) for the ``dice``/``volume`` calibrations."""
        return self.config.calibrate_threshold in ("dice", "volume")

    @property
    def needs_pool_probabilities(self) -> bool:
        """The pool prediction saves the ensemble softmax (confidence filter, calibrated threshold)."""
        return self.config.confidence is not None or self.config.calibrate_threshold is not None

    def _timed(self, function: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        try:
            return function()
        finally:
            self._nnunet_seconds += time.perf_counter() - start

    # -- steps -------------------------------------------------------------------------------------------------
    def _preprocess_labelled(self) -> None:
        step = "iteration_0/preprocess"
        if self.state.done(step):
            return
        ready = self._labelled_is_preprocessed()
        if not ready:
            self.log(f"preprocessing {self.labelled.name}")
            self._timed(lambda: self.backend.preprocess(self.labelled.name, None))
        self.state.finish(step, reused=ready)

    def _labelled_is_preprocessed(self) -> bool:
        """Plans, grouped splits and preprocessed data of the configuration exist (e.g. from nnunet-gen preprocess)."""
        return is_preprocessed(self.labelled.name, self.config.plans, self.config.configuration)

    def _write_dataset(self, k: int) -> None:
        """Labelled cases + kept pseudo-labelled cases of iteration k-1 -> raw dataset of iteration k."""
        step = f"iteration_{k}/dataset"
        if self.state.done(step):
            return
        name = self.dataset_name(k)
        command = f"nnunet-gen selftrain iteration {k} (run {self.config.run_id()})"
        final = nnunet_dir("nnUNet_raw") / name
        existing = Manifest.load(final) if final.is_dir() else None
        if existing is not None and existing.command == command:  # killed after publishing, before recording
            self.state.finish(step, dataset=name, resumed=True)
            return
        pseudo_dir = self.iteration_dir(k - 1) / "pseudo_labels"
        kept = json.loads((pseudo_dir / "pseudo_labels.json").read_text())["kept"]
        source_manifest = self.labelled.manifest()
        manifest = Manifest(source_dataset=self.labelled.name, command=command)
        ending = self.labelled.file_ending
        unlabelled = Path(self.config.unlabelled)
        job = {"command": command, "pseudo_labels": str(pseudo_dir), "kept": kept}
        self.log(f"writing {name}: {len(self.labelled.case_ids())} labelled + {len(kept)} pseudo-labelled cases")
        with DatasetWriter(self.config.output_id_base + k - 1, parse_dataset_folder(name)[1],
                           self.labelled.dataset_json["channel_names"],
                           self.dataset_labels, job, ending) as writer:
            for case in self.labelled.case_ids():
                manifest.add(source_manifest.cases.get(case) or CaseRecord(case, "real", case, case))
                if not writer.has_case(case):
                    writer.copy_case(case, self.labelled.image_files(case), self.labelled.label_file(case))
            for case in kept:
                manifest.add(CaseRecord(case, "pseudo_labelled", case, f"unlabelled:{case}", SELFTRAIN_GENERATOR,
                                        {"iteration": k - 1, "trainer": self.config.trainer,
                                         "folds": list(self.config.folds), "largest_component": True,
                                         "confidence": self.config.confidence,
                                         "threshold": self.state.iteration(k - 1).get("threshold")}))
                if not writer.has_case(case):
                    writer.copy_case(case, [unlabelled / f"{case}_{c:04d}{ending}"
                                            for c in range(self.labelled.num_channels)], pseudo_dir / f"{case}{ending}")
            writer.finalize(manifest, description=f"{self.labelled.name} + pseudo-labelled target images, "
                                                  f"self-training iteration {k} (nnunet_gen)")
        self.state.finish(step, dataset=name)

    def _preprocess(self, k: int) -> None:
        step = f"iteration_{k}/preprocess"
        if self.state.done(step):
            return
        self.log(f"preprocessing {self.dataset_name(k)} on the plans of {self.labelled.name}")
        self._timed(lambda: self.backend.preprocess(self.dataset_name(k), self.labelled.name))
        write_sampling_config(nnunet_dir("nnUNet_preprocessed") / self.dataset_name(k), self.config.pseudo_mass)
        self.state.finish(step)

    def _train(self, k: int) -> None:
        dataset = self.dataset_name(k)
        steps = {f"iteration_{k}/train/fold_{f}": f for f in self.config.folds}
        todo = []
        for step, fold in steps.items():
            if self.state.done(step):
                continue
            if self.backend.is_trained(dataset, fold):  # finished before a kill hid it from the state file
                self.state.finish(step, reused_checkpoint=True)
                continue
            log = self.workdir / "logs" / f"iteration_{k}_fold_{fold}.log"
            todo.append((step, self.backend.train_job(dataset, fold, log, self.needs_validation_probabilities)))
        if not todo:
            return
        self.log(f"iteration {k}: training {len(todo)} fold(s) of {dataset} with {self.config.trainer}")
        by_name = {job.name: step for step, job in todo}
        self._timed(lambda: self.executor.run_all([job for _, job in todo],
                                                  lambda job: self.state.finish(by_name[job.name], log=job.log)))

    def _validate(self, k: int) -> None:
        step = f"iteration_{k}/validate"
        if self.config.val_images is None or self.state.done(step):
            return
        out = self.iteration_dir(k) / "validation"
        self.log(f"iteration {k}: predicting the labelled validation set")
        self._timed(lambda: self.backend.predict(self.dataset_name(k), Path(self.config.val_images), out, False,
                                                 self.workdir / "logs" / f"iteration_{k}_predict.log"))
        rows = evaluate_folders(out, self.config.val_labels, self.labels, self.labelled.file_ending,
                                num_processes=1)
        summary = summarize(rows)
        write_reports(rows, out / "evaluation", summary, name="validation")
        dice = float(np.mean([summary[str(label)]["Dice"]["mean"] for label in self.labels]))
        self.state.update_iteration(k, val_dice=dice)
        self.state.finish(step, val_dice=dice)

    def _pseudo_label(self, k: int, cases: list[str]) -> None:
        predict_step, pseudo_step = f"iteration_{k}/predict", f"iteration_{k}/pseudo_labels"
        raw = self.iteration_dir(k) / "predictions"
        if not self.state.done(predict_step):
            self.log(f"iteration {k}: predicting {len(cases)} unlabelled images with the fold ensemble")
            self._timed(lambda: self.backend.predict(self.dataset_name(k), Path(self.config.unlabelled), raw,
                                                     self.needs_pool_probabilities,
                                                     self.workdir / "logs" / f"iteration_{k}_predict.log"))
            self.state.finish(predict_step)
        if self.state.done(pseudo_step):
            return
        out = self.iteration_dir(k) / "pseudo_labels"
        threshold = self._calibrate(k, raw, cases)
        min_size, max_size = self._size_bounds()
        summary = make_pseudo_labels(raw, out, cases, self.labels, self.labelled.file_ending,
                                     self.config.confidence, self.ignore_label, min_size, max_size,
                                     self.config.size_z, threshold)
        agreement = None
        if k > 0:
            agreement = pseudo_label_agreement(self.iteration_dir(k - 1) / "pseudo_labels", out, self.labels,
                                               self.labelled.file_ending, self.ignore_label)
        ignored = summary["ignored_fraction"]
        self.state.update_iteration(k, n_unlabelled=len(cases), n_kept=len(summary["kept"]),
                                    n_dropped=len(summary["dropped"]), pseudo_agreement=agreement,
                                    mean_ignored_fraction=float(np.mean(list(ignored.values()))) if ignored else None,
                                    threshold=threshold, **self._volume_summary(summary["volumes_mm3"]))
        self.state.finish(pseudo_step, dropped=summary["dropped"])

    def _calibrate(self, k: int, predictions: Path, cases: list[str]) -> float | None:
        """The foreground threshold of iteration k's pseudo-labels (None: nnU-Net's argmax); see
        :mod:`nnunet_gen.selftrain.calibration`."""
        mode = self.config.calibrate_threshold
        if mode is None:
            return None
        if mode == "prior":
            curve = pool_volume_curve(predictions, cases, self.labels, self.labelled.file_ending)
            threshold = threshold_for_volume(curve, self.source_volumes()["mean"])
        else:
            folders = [self._validation_probabilities(k, fold) for fold in self.config.folds]
            threshold = calibrate_on_validation(folders, self.labelled.folder / "labelsTr", self.labels,
                                                self.labelled.file_ending, mode)
        self.log(f"iteration {k}: calibrated foreground threshold ({mode}) {threshold:.2f}")
        return threshold

    def _validation_probabilities(self, k: int, fold: int) -> Path:
        """Fold-validation folder with the softmax of every validation case; reruns the validation with ``--npz``
        when the fold was trained without it (e.g. a checkpoint shared with a run without calibration)."""
        folder = self.backend.validation_folder(self.dataset_name(k), fold)
        ending = self.labelled.file_ending
        cases = [p.name[:-len(ending)] for p in folder.glob(f"*{ending}")] if folder.is_dir() else []
        if not cases or not all((folder / f"{case}.npz").is_file() for case in cases):
            self.log(f"iteration {k}: validating fold {fold} again to save its probabilities")
            self._timed(lambda: self.backend.validate(self.dataset_name(k), fold,
                                                      self.workdir / "logs" / f"iteration_{k}_fold_{fold}_val.log"))
        return folder

    def source_volumes(self) -> dict[str, float]:
        """Mean, min and max foreground volume (mm^3) of the labelled cases, computed once and kept in the state."""
        if "source_volume_mm3" not in self.state.data:
            volumes = list(label_volumes(self.labelled.folder / "labelsTr", self.labelled.case_ids(), self.labels,
                                         self.labelled.file_ending).values())
            self.state.data["source_volume_mm3"] = {"mean": float(np.mean(volumes)), "min": float(np.min(volumes)),
                                                    "max": float(np.max(volumes)), "n": len(volumes)}
            self.state.save()
        return self.state.data["source_volume_mm3"]

    def _size_bounds(self) -> tuple[float | None, float | None]:
        """``min_size``/``max_size``, narrowed to the labelled volume range widened by ``size_from_source``."""
        low, high, slack = self.config.min_size, self.config.max_size, self.config.size_from_source
        if slack is None:
            return low, high
        source = self.source_volumes()
        return max(low or 0.0, source["min"] / slack), min(high or np.inf, source["max"] * slack)

    def _volume_summary(self, pseudo: dict[str, float]) -> dict[str, Any]:
        """Per-case pseudo-label / reference volumes and their means, for the report (reference: the optional
        ``reference_labels`` of the pool; source: the labelled cases, which needs no target labels)."""
        reference = {}
        if self.config.reference_labels is not None:
            reference = label_volumes(Path(self.config.reference_labels), list(pseudo), self.labels,
                                      self.labelled.file_ending)
        cases = volume_diagnostics(pseudo, reference)
        ratios = [row["ratio"] for row in cases.values() if row["ratio"] is not None]
        return {"volumes": cases, "source_volume_mean": self.source_volumes()["mean"],
                "pseudo_volume_mean": float(np.mean(list(pseudo.values()))),
                "reference_volume_mean": float(np.mean(list(reference.values()))) if reference else None,
                "volume_ratio_mean": float(np.mean(ratios)) if ratios else None}

    # -- decisions and reports ---------------------------------------------------------------------------------
    def failure_reason(self) -> str | None:
        """The GBA paper's failure-case rule (section 4.3): a first stage whose validation Dice is below
        ``dice_floor`` means an erroneous translation; such a run is not self-trained."""
        floor, dice = self.config.dice_floor, self.state.iteration(0).get("val_dice")
        if floor is None or dice is None or dice >= floor:
            return None
        return f"failure case: validation Dice {dice:.3f} after the first stage is below the floor {floor}"

    def stop_reason(self, k: int) -> str | None:
        """Why the run stops after iteration k, or None to go on."""
        eps = self.config.epsilon
        current = self.state.iteration(k)
        if k > 0:
            previous = self.state.iteration(k - 1)
            if current.get("val_dice") is not None and previous.get("val_dice") is not None:
                change = current["val_dice"] - previous["val_dice"]
                if abs(change) < eps:
                    return f"validation Dice changed by {change:+.4f} (|change| < epsilon {eps})"
            if current.get("pseudo_agreement") is not None and current["pseudo_agreement"] > 1 - eps:
                return f"pseudo-labels agree with the previous iteration (Dice {current['pseudo_agreement']:.4f} " \
                       f"> 1 - epsilon)"
        if k >= self.config.iterations:
            return f"reached {self.config.iterations} self-training iteration(s)"
        return None

    def report_rows(self) -> list[dict[str, Any]]:
        rows = []
        for key in sorted(self.state.data["iterations"], key=int):
            k = int(key)
            values = self.state.iteration(k)
            previous = self.state.data["iterations"].get(str(k - 1), {})
            change = (values["val_dice"] - previous["val_dice"]
                      if values.get("val_dice") is not None and previous.get("val_dice") is not None else None)
            rows.append({"iteration": k, "dataset": self.dataset_name(k), "val_dice": values.get("val_dice"),
                         "val_dice_change": change, "pseudo_agreement": values.get("pseudo_agreement"),
                         "n_unlabelled": values.get("n_unlabelled"), "n_kept": values.get("n_kept"),
                         "n_dropped": values.get("n_dropped"),
                         "mean_ignored_fraction": values.get("mean_ignored_fraction"),
                         "threshold": values.get("threshold"),
                         "source_volume_mean": values.get("source_volume_mean"),
                         "pseudo_volume_mean": values.get("pseudo_volume_mean"),
                         "reference_volume_mean": values.get("reference_volume_mean"),
                         "volume_ratio_mean": values.get("volume_ratio_mean"),
                         "stop": values.get("stop")})
        return rows

    def write_report(self) -> dict[str, Path]:
        """``selftrain_report.{md,csv,json,png}`` in the work folder."""
        title = (f"Self-training of {self.labelled.name} with {self.config.trainer} "
                 f"(folds {' '.join(map(str, self.config.folds))})")
        volumes = {key: values.get("volumes", {}) for key, values in self.state.data["iterations"].items()}
        return write_selftrain_report(self.report_rows(), self.state.data["config"], self.state.data["timing"],
                                      self.workdir, title, volumes)

    # -- main loop ---------------------------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        """Run (or resume) until a stop rule fires; returns the per-iteration report rows."""
        start = time.perf_counter()
        self._nnunet_seconds = 0.0
        try:
            self._preprocess_labelled()
            k = 0
            while True:
                if k > 0:
                    self._write_dataset(k)
                    self._preprocess(k)
                self._train(k)
                self._validate(k)
                if k == 0 and self.failure_reason() is not None:
                    self.state.update_iteration(k, stop=self.failure_reason(), failed=True)
                    self.log(f"stopped: {self.failure_reason()}; no self-training")
                    break
                self._pseudo_label(k, self.cases)
                reason = self.stop_reason(k)
                self.state.update_iteration(k, stop=reason)
                if reason is not None:
                    self.log(f"stopped after iteration {k}: {reason}")
                    break
                k += 1
        finally:
            self.state.add_time(time.perf_counter() - start, self._nnunet_seconds)
            if self.state.data["iterations"]:
                self.write_report()
        return self.report_rows()


