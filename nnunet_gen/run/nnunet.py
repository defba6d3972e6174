"""The stock nnU-Net commands as a user runs them, for every orchestrator (self-training, the demo, ``predict``).

Each training or prediction is one ``nnUNetv2_train`` / ``nnUNetv2_predict`` subprocess with ``nnUNet_extTrainer``
pointing at this checkout's ``trainers/`` folder, its output appended to a log file. Nothing here knows about
self-training or the demo; they combine these steps.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Sequence

from nnunet_gen.errors import DataError
from nnunet_gen.run.executors import FoldFailed, TrainJob, run_job

NNUNET_DIRS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


def trainer_folder() -> Path:
    """The ``trainers/`` folder to put in ``nnUNet_extTrainer`` (from a source checkout, installed with -e)."""
    folder = Path(__file__).resolve().parents[2] / "trainers"
    if not folder.is_dir():
        raise DataError("nnUNet_extTrainer", f"{folder} not found: install nnunet_gen from a checkout "
                                             f"(pip install -e .)")
    return folder


def nnunet_command(name: str) -> str:
    """Absolute path of a stock nnU-Net entry point: next to this interpreter (a venv, also on SLURM nodes), else on
    ``PATH`` (nnunetv2 installed with ``pip --target``)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise DataError(name, f"nnU-Net command not found next to {sys.executable} or on PATH (install nnunetv2)")
    return found


def default_device() -> str:
    """``cuda`` when torch sees a GPU, else ``cpu`` (what ``-device`` means when not given)."""
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def nnunet_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The nnU-Net folders of this process plus ``nnUNet_extTrainer`` with our trainers first."""
    ext = os.environ.get("nnUNet_extTrainer")
    folders = {k: os.environ[k] for k in NNUNET_DIRS if os.environ.get(k)}
    missing = [k for k in NNUNET_DIRS if k not in folders]
    if missing:
        raise DataError(missing[0], "environment variable is not set (nnU-Net needs nnUNet_raw, nnUNet_preprocessed "
                                    "and nnUNet_results)")
    trainers = os.pathsep.join([str(trainer_folder())] + ([ext] if ext else []))
    return {**folders, "nnUNet_extTrainer": trainers, **(extra or {})}


def workdir_environment(workdir: Path) -> dict[str, str]:
    """This process's environment with all three nnU-Net folders below ``workdir`` (demo and benchmarks keep their
    data there), our trainers on ``nnUNet_extTrainer``, no ``torch.compile`` and one preprocessing worker."""
    folders = {name: str(Path(workdir).resolve() / name) for name in NNUNET_DIRS}
    return {**os.environ, **folders, "nnUNet_extTrainer": str(trainer_folder()), "nnUNet_compile": "f",
            "nnUNet_def_n_proc": "1"}


def run_stock(command: Sequence[str], env: dict[str, str], log: Path) -> None:
    """Run one stock nnU-Net command (``command[0]`` from this interpreter's environment), its output appended to
    ``log``; a non-zero exit raises :class:`FoldFailed` naming the command and the log."""
    job = TrainJob(" ".join(command[:2]), (nnunet_command(command[0]), *command[1:]), env, str(log))
    code = run_job(job)
    if code != 0:
        raise FoldFailed(job, code)


class NnUNetBackend:
    """Stock ``nnUNetv2_train`` / ``nnUNetv2_predict`` of one trainer, plans and configuration.

    ``train_env`` is added to the environment of trainings only (e.g. ``nnUNet_n_proc_DA=0`` on a CPU, which would
    crash preprocessing and prediction).
    """

    def __init__(self, trainer: str, configuration: str = "3d_fullres", plans: str = "nnUNetPlans",
                 folds: Sequence[int | str] = (0, 1, 2, 3, 4), device: str = "cuda", num_processes: int = 2,
                 train_env: dict[str, str] | None = None):
        self.trainer, self.configuration, self.plans = trainer, configuration, plans
        self.folds, self.device, self.num_processes = tuple(folds), device, num_processes
        self.env = nnunet_environment()
        self.train_env = {**self.env, **(train_env or {})}

    def output_folder(self, dataset: str) -> Path:
        results = Path(self.env["nnUNet_results"])
        return results / dataset / f"{self.trainer}__{self.plans}__{self.configuration}"

    def is_trained(self, dataset: str, fold: int | str) -> bool:
        return (self.output_folder(dataset) / f"fold_{fold}" / "checkpoint_final.pth").is_file()

    def validation_folder(self, dataset: str, fold: int | str) -> Path:
        """Where ``nnUNetv2_train`` writes a fold's validation predictions (and, with ``--npz``, probabilities)."""
        return self.output_folder(dataset) / f"fold_{fold}" / "validation"

    def _train_arguments(self, dataset: str, fold: int | str) -> list[str]:
        return [dataset, self.configuration, str(fold), "-tr", self.trainer, "-p", self.plans, "-device", self.device]

    def train_job(self, dataset: str, fold: int | str, log: Path, save_probabilities: bool = False) -> TrainJob:
        """The ``nnUNetv2_train`` job of one fold; a killed training continues from its last checkpoint;
        ``save_probabilities`` adds ``--npz`` (validation softmax next to the validation predictions)."""
        command = [nnunet_command("nnUNetv2_train"), *self._train_arguments(dataset, fold)]
        if (self.output_folder(dataset) / f"fold_{fold}" / "checkpoint_latest.pth").is_file():
            command.append("--c")
        if save_probabilities:
            command.append("--npz")
        return TrainJob(f"fold {fold} of {dataset} ({self.trainer})", tuple(command), self.train_env, str(log))

    def validate(self, dataset: str, fold: int | str, log: Path) -> None:
        """Rerun a trained fold's validation with probabilities: ``nnUNetv2_train ... --val --npz``."""
        run_stock(["nnUNetv2_train", *self._train_arguments(dataset, fold), "--val", "--npz"], self.train_env, log)

    def train(self, dataset: str, fold: int | str, log: Path) -> None:
        """Train one fold unless its final checkpoint exists."""
        if self.is_trained(dataset, fold):
            return
        job = self.train_job(dataset, fold, log)
        code = run_job(job)
        if code != 0:
            raise FoldFailed(job, code)

    def predict(self, dataset: str, images: Path, out: Path, save_probabilities: bool, log: Path,
                mirroring: bool = True) -> None:
        """Fold-ensemble prediction into ``out``, staged in ``out.partial`` (a rerun continues the staged cases);
        ``mirroring`` False is ``--disable_tta`` (8x fewer forward passes on 3D data)."""
        staging = out.with_name(out.name + ".partial")
        command = [nnunet_command("nnUNetv2_predict"), "-i", str(images), "-o", str(staging), "-d", dataset,
                   "-c", self.configuration, "-tr", self.trainer, "-p", self.plans,
                   "-f", *map(str, self.folds), "-device", self.device, "-npp", str(self.num_processes),
                   "-nps", str(self.num_processes), "--continue_prediction"]
        if save_probabilities:
            command.append("--save_probabilities")
        if not mirroring:
            command.append("--disable_tta")
        job = TrainJob(f"prediction of {images} with {dataset} ({self.trainer})", tuple(command), self.env, str(log))
        code = run_job(job)
        if code != 0:
            raise FoldFailed(job, code)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)

    def preprocess(self, dataset: str, source: str | None, own_plans: bool = False) -> None:
        """Plan and preprocess with the source's plans (default: the manifest's source), or ``own_plans``."""
        from nnunet_gen.preprocess import plan_and_preprocess
        plan_and_preprocess(dataset, (self.configuration,), self.num_processes, self.plans, source, not own_plans)
