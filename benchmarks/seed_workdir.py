"""One nnU-Net world per benchmark seed, shared by the benchmark scripts (run as ``python benchmarks/<script>.py``,
so this folder is on ``sys.path``)."""
from __future__ import annotations

import os
from pathlib import Path


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
