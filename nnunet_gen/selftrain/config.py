"""What a self-training run computes (:class:`SelfTrainConfig`) and what it has done so far (:class:`RunState`,
``selftrain_state.json``, written atomically after every finished step so that a rerun resumes)."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nnunet_gen.errors import DataError
from nnunet_gen.io.files import write_text

STATE_FILE = "selftrain_state.json"
STATE_FORMAT = "nnunet_gen-selftrain-state-1"


@dataclass(frozen=True)
class SelfTrainConfig:
    """What a self-training run computes. All fields except ``iterations``, ``epsilon`` and ``reference_labels``
    (labels of the unlabelled pool, read only for the volume diagnostics of the report) identify the run."""

    labelled: str
    unlabelled: str
    output_id_base: int
    trainer: str
    configuration: str = "3d_fullres"
    plans: str = "nnUNetPlans"
    folds: tuple[int, ...] = (0, 1, 2, 3, 4)
    iterations: int = 3
    epsilon: float = 0.01
    val_images: str | None = None
    val_labels: str | None = None
    confidence: float | None = None
    min_size: float | None = None
    max_size: float | None = None
    size_z: float | None = None
    pseudo_mass: float | None = None
    calibrate_threshold: str | None = None
    size_from_source: float | None = None
    reference_labels: str | None = None
    dice_floor: float | None = None

    def identity(self) -> dict[str, Any]:
        """The fields that change what is computed (``reference_labels`` only adds diagnostics)."""
        d = asdict(self)
        del d["iterations"], d["epsilon"], d["reference_labels"]
        d["folds"] = list(self.folds)
        return d

    def run_id(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:12]


class RunState:
    """``selftrain_state.json``: the run's identity, finished steps, per-iteration metrics, time spent.

    Every change is written at once (temporary file + ``os.replace``), so a kill leaves the last finished step.
    """

    def __init__(self, folder: Path, config: Any, file: str = STATE_FILE):
        """``config``: any run configuration with ``identity()`` and ``run_id()`` (e.g. :class:`SelfTrainConfig`)."""
        self.path = folder / file
        identity = config.identity()
        if self.path.is_file():
            self.data = json.loads(self.path.read_text())
            if self.data.get("format") != STATE_FORMAT:
                raise DataError(str(self.path), f"unknown state format {self.data.get('format')!r}")
            if self.data["config"] != identity:
                differing = sorted(k for k in identity if self.data["config"].get(k) != identity[k])
                raise DataError(str(self.path), f"made by a run with other parameters ({', '.join(differing)}); "
                                                f"rerun that command, or use another -o / --workdir")
        else:
            self.data = {"format": STATE_FORMAT, "config": identity, "run_id": config.run_id(), "steps": {},
                         "iterations": {}, "timing": {"total_seconds": 0.0, "nnunet_seconds": 0.0}}
            self.save()

    def save(self) -> None:
        write_text(self.path, json.dumps(self.data, indent=1))

    def done(self, step: str) -> bool:
        return step in self.data["steps"]

    def finish(self, step: str, **info: Any) -> None:
        self.data["steps"][step] = {"finished": time.strftime("%Y-%m-%d %H:%M:%S"), **info}
        self.save()

    def iteration(self, k: int) -> dict[str, Any]:
        return self.data["iterations"].setdefault(str(k), {})

    def update_iteration(self, k: int, **values: Any) -> None:
        self.iteration(k).update(values)
        self.save()

    def add_time(self, total: float, nnunet: float) -> None:
        self.data["timing"]["total_seconds"] += total
        self.data["timing"]["nnunet_seconds"] += nnunet
        self.save()
