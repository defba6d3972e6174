"""What the multi-seed benchmark scripts share (run as ``python benchmarks/<script>.py``, so this folder is on
``sys.path``): one nnU-Net world per seed, the seeds run under the CPU lock, mean +- std cells."""
from __future__ import annotations

import fcntl
import os
import statistics
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

LOCK = "/tmp/nnunet_gen_cpu.lock"


def enter_seed_workdir(root: str | Path, seed: int, log: Path) -> tuple[Path, Path, dict[str, str]]:
    """``<root>/seed<seed>`` with its own nnUNet_raw/preprocessed/results, made the current process's nnU-Net paths;
    returns (work folder, log file, environment for stock nnU-Net subprocesses)."""
    from nnunet_gen.run.nnunet import workdir_environment
    workdir = Path(root).resolve() / f"seed{seed}"
    workdir.mkdir(parents=True, exist_ok=True)
    env = workdir_environment(workdir)
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results",
                                           "nnUNet_def_n_proc")})
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


def mean_std(values: Sequence[float]) -> str:
    """``mean +- sample std`` (0 spread for one value), three decimals."""
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"
