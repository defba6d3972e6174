"""What the multi-seed benchmark scripts share (run as ``python benchmarks/<script>.py``, so this folder is on
``sys.path``): one nnU-Net world per seed, the seeds run under the CPU lock, one arm's stock train -> predict -> Dice,
mean +- std cells."""
from __future__ import annotations

import fcntl
import os
import statistics
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

if TYPE_CHECKING:
    from nnunet_gen.run.nnunet import NnUNetBackend

LOCK = "/tmp/nnunet_gen_cpu.lock"


def enter_seed_workdir(root: str | Path, seed: int, log: Path) -> tuple[Path, Path, dict[str, str]]:
    """``<root>/seed<seed>`` with its own nnUNet_raw/preprocessed/results, made the current process's nnU-Net paths;
    returns (work folder, log file, environment for stock nnU-Net subprocesses)."""
    from nnunet_gen.run.nnunet import workdir_environment
    workdir = Path(root).resolve() / f"seed{seed}"
    workdir.mkdir(parents=True, exist_ok=True)
    env = workdir_environment(workdir)
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results",
                                           "nnUNet_def_n_proc", "nnUNet_compile")})
    return workdir, log, env


@contextmanager
def cpu_lock() -> Iterator[None]:
    """Hold the machine-wide CPU lock: no training or timing runs next to another heavy job."""
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def run_seeds_locked(seeds: Sequence[int], run_seed: Callable[[int, Any], Any], args: Any) -> dict[int, Any]:
    """``run_seed(seed, args)`` for every seed, one after the other, holding the CPU lock."""
    with cpu_lock():
        return {seed: run_seed(seed, args) for seed in seeds}


def arm_backend(trainer: str, plans: str = "nnUNetPlans", configuration: str = "3d_fullres", fold: int | str = "all",
                threads: int | None = None, device: str = "cpu", augmentation_workers: int = 0) -> NnUNetBackend:
    """Stock nnU-Net of one benchmark arm: one fold, one prediction worker, ``augmentation_workers`` data-augmentation
    processes in training (0 on a CPU, where they crash), ``threads`` OpenMP threads per training when given."""
    from nnunet_gen.run.nnunet import NnUNetBackend
    train_env = {"nnUNet_n_proc_DA": str(augmentation_workers),
                 **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    return NnUNetBackend(trainer, configuration, plans, (fold,), device, 1, train_env)


def train_and_predict(backend: NnUNetBackend, dataset: str, images: Path, out: Path, log: Path) -> Path:
    """Train the backend's fold of ``dataset`` unless trained, predict ``images`` into ``out`` (no test-time mirroring,
    as nnU-Net's own validation) unless ``out`` exists; resumable, ``out`` appears only when complete."""
    backend.train(dataset, backend.folds[0], log)
    if not out.is_dir():
        out.parent.mkdir(parents=True, exist_ok=True)
        backend.predict(dataset, images, out, False, log, mirroring=False)
    return out


def mean_dice(predictions: Path, labels: Path, label: int = 1) -> float:
    """Mean Dice of ``label`` over the cases of ``labels`` (nnU-Net's evaluation)."""
    from nnunet_gen.evaluation.metrics import evaluate_folders
    from nnunet_gen.evaluation.summary import summarize
    return float(summarize(evaluate_folders(predictions, labels, [label], num_processes=1))[str(label)]["Dice"]["mean"])


def mean_std(values: Sequence[float]) -> str:
    """``mean +- sample std`` (0 spread for one value), three decimals."""
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"
