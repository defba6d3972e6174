"""Where the nnU-Net trainings of a self-training run execute: in turn, N at a time, or as SLURM jobs (submitit).

Self-training trains ``len(folds) x (1 + iterations)`` models (the GBA paper: 5 folds x 4 passes = 20), which is the
dominant cost. Every job is one stock ``nnUNetv2_train`` command (a :class:`TrainJob`), so a job runs the same way
whatever executes it; multi-GPU DDP for one fold stays nnU-Net's own ``-num_gpus``. Executors report each finished
job back to the caller in the calling thread (``on_done``), so the caller can record it in its state file at once.
A job that fails raises :class:`FoldFailed` naming the fold and its log, after the other running jobs have ended.
"""
from __future__ import annotations

import os
import queue
import subprocess
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from nnunet_gen.errors import DataError


@dataclass(frozen=True)
class TrainJob:
    """One training command: argv, extra environment, the log it appends to, and what it trains (for messages)."""

    name: str
    command: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    log: str = ""


class FoldFailed(DataError):
    """A job (a fold's training, an ensemble prediction) exited non-zero; one line naming it and its log."""

    def __init__(self, job: TrainJob, returncode: int | str):
        super().__init__(job.name, f"failed (exit {returncode}); see {job.log}. Fix the cause and rerun the same "
                                   f"command: finished steps are not redone")
        self.job, self.returncode = job, returncode

    def __reduce__(self):
        return FoldFailed, (self.job, self.returncode)


def run_job(job: TrainJob, extra_env: dict[str, str] | None = None) -> int:
    """Run ``job`` in a subprocess with its output appended to ``job.log``; returns the exit code.

    Module-level and dependent on ``job`` only, so submitit can pickle it and run it on another machine.
    """
    env = {**os.environ, **job.env, **(extra_env or {})}
    Path(job.log).parent.mkdir(parents=True, exist_ok=True)
    with open(job.log, "a") as log:
        log.write(f"\n$ {' '.join(job.command)}\n")
        log.flush()
        return subprocess.run(list(job.command), env=env, stdout=log, stderr=subprocess.STDOUT).returncode


OnDone = Callable[[TrainJob], None]


class SequentialExecutor:
    """One job after the other, in this process's environment (``--executor local``)."""

    def run_all(self, jobs: Sequence[TrainJob], on_done: OnDone) -> None:
        for job in jobs:
            code = run_job(job)
            if code != 0:
                raise FoldFailed(job, code)
            on_done(job)


class ParallelExecutor:
    """Up to ``workers`` jobs at once on this machine (``--executor parallel``).

    With GPUs, worker slot ``i`` sets ``CUDA_VISIBLE_DEVICES`` to ``gpus[i]``, so each concurrent training sees one
    GPU of its own; ``workers`` defaults to the number of GPUs (1 without GPUs).
    """

    def __init__(self, workers: int | None = None, gpus: Sequence[str] | None = None):
        self.gpus = list(gpus) if gpus is not None else visible_gpus()
        self.workers = workers or max(1, len(self.gpus))
        if self.workers < 1:
            raise DataError("--workers", "needs at least one worker")

    def run_all(self, jobs: Sequence[TrainJob], on_done: OnDone) -> None:
        slots: queue.Queue[int] = queue.Queue()
        for slot in range(self.workers):
            slots.put(slot)

        def in_slot(job: TrainJob) -> int:
            slot = slots.get()
            try:
                extra = {"CUDA_VISIBLE_DEVICES": self.gpus[slot % len(self.gpus)]} if self.gpus else {}
                return run_job(job, extra)
            finally:
                slots.put(slot)

        failure: FoldFailed | None = None
        with ThreadPoolExecutor(self.workers) as pool:
            pending: dict[Future, TrainJob] = {pool.submit(in_slot, job): job for job in jobs}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    job = pending.pop(future)
                    code = future.result()
                    if code == 0:
                        on_done(job)
                    elif failure is None:
                        failure = FoldFailed(job, code)
                        for other in pending:  # jobs not started yet are not started any more
                            other.cancel()
                pending = {f: j for f, j in pending.items() if not f.cancelled()}
        if failure is not None:
            raise failure


class SubmititExecutor:
    """Each job as a submitit job (``--executor slurm``: ``submitit.AutoExecutor``; tests: ``LocalExecutor``).

    ``executor`` is a configured submitit executor; all jobs are submitted at once and collected as they finish,
    polling every ``poll_seconds`` (SLURM's accounting should not be polled much faster than submitit's default).
    """

    def __init__(self, executor, poll_seconds: float = 10.0):
        self.executor = executor
        self.poll_seconds = poll_seconds

    @classmethod
    def slurm(cls, folder: str | os.PathLike, partition: str | None = None, timeout_min: int = 24 * 60,
              gpus_per_node: int = 1, cpus_per_task: int = 8, mem_gb: int = 32) -> "SubmititExecutor":
        """A SLURM executor (submitit picks local execution where no SLURM is present)."""
        import submitit
        executor = submitit.AutoExecutor(folder=str(folder))
        params = {"timeout_min": timeout_min, "gpus_per_node": gpus_per_node, "cpus_per_task": cpus_per_task,
                  "mem_gb": mem_gb, "name": "nnunet_gen_selftrain"}
        if partition:
            params["slurm_partition"] = partition
        executor.update_parameters(**params)
        return cls(executor)

    def run_all(self, jobs: Sequence[TrainJob], on_done: OnDone) -> None:
        import submitit
        submitted = {self.executor.submit(run_job, job): job for job in jobs}
        failure: FoldFailed | None = None
        for handle in submitit.helpers.as_completed(list(submitted), poll_frequency=self.poll_seconds):
            job = submitted[handle]
            try:
                code = handle.result()
            except Exception as error:  # the job died outside nnU-Net (killed, timeout, node failure)
                code = f"submitit: {str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__}"
            if code == 0:
                on_done(job)
            elif failure is None:
                failure = FoldFailed(job, code)
        if failure is not None:
            raise failure


def visible_gpus() -> list[str]:
    """GPU indices this process may use (``CUDA_VISIBLE_DEVICES`` if set, else all that torch sees)."""
    declared = os.environ.get("CUDA_VISIBLE_DEVICES")
    if declared is not None:
        return [g for g in declared.split(",") if g.strip() not in ("", "-1")]
    import torch
    return [str(i) for i in range(torch.cuda.device_count())]


Executor = SequentialExecutor | ParallelExecutor | SubmititExecutor


def make_executor(kind: str, workers: int | None = None, folder: str | os.PathLike | None = None,
                  partition: str | None = None, timeout_min: int = 24 * 60) -> Executor:
    """``local`` | ``parallel`` | ``slurm`` as the CLI names them."""
    if kind == "local":
        return SequentialExecutor()
    if kind == "parallel":
        return ParallelExecutor(workers)
    if kind == "slurm":
        if folder is None:
            raise DataError("--executor slurm", "needs a folder for submitit's logs")
        return SubmititExecutor.slurm(folder, partition, timeout_min)
    raise DataError("--executor", f"unknown executor '{kind}' (local, parallel, slurm)")
