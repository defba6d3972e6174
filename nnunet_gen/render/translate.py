"""Pseudo-target datasets (GBA paper, section 3.2, eq. 4): every labelled source case translated into the target
modality slice by slice, with its real label, optionally sharpened by Van Cittert deconvolution (section 4.2.2).

Several translation runs (checkpoints trained with different seeds) can go into one dataset: the paper found large
run-to-run variation in CycleGAN outputs, and pooling runs widens the tumour appearances a segmenter sees. Case
``<case>_run<k>`` is run k's translation; it is a ``translated`` base case of its source's patient group, so all runs
of a validation patient stay in one fold. The target pool (``imagesUnlabelledTr``) is copied along, so
``nnunet-gen selftrain -d <pseudo-target>`` finds it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from nnunet_gen.errors import DataError
from nnunet_gen.generators.translation import UNLABELLED_FOLDER, load_translator
from nnunet_gen.io.files import sha256_of_file
from nnunet_gen.io.manifest import TRANSLATE_GENERATOR, CaseRecord, Manifest
from nnunet_gen.io.raw_dataset import RawDataset, check_case
from nnunet_gen.io.writer import DatasetWriter
from synth.translation import van_cittert


@dataclass(frozen=True)
class Deconvolution:
    """Van Cittert deconvolution of the translated volumes: Gaussian PSF of ``sigma_mm``, ``iterations`` steps,
    relaxation factor ``relaxation`` (the paper's values are lost from our copy; see README)."""

    sigma_mm: float
    iterations: int = 10
    relaxation: float = 1.0

    def __post_init__(self) -> None:
        if self.sigma_mm <= 0 or self.iterations < 1 or not 0 < self.relaxation <= 2:
            raise DataError("--deconvolve", f"needs sigma > 0 mm, iterations >= 1 and relaxation in (0, 2], got "
                                            f"{self.sigma_mm}, {self.iterations}, {self.relaxation}")

    def __call__(self, volume: np.ndarray, spacing_zyx: Sequence[float]) -> np.ndarray:
        return van_cittert(volume, self.sigma_mm, spacing_zyx, self.iterations, self.relaxation)


def render_translated(source: str | int, dataset_id: int, name: str, checkpoints: Sequence[str | Path],
                      target_modality: str | None = None, deconvolution: Deconvolution | None = None,
                      device: str = "cpu", overwrite: bool = False) -> Manifest:
    """Write ``DatasetXXX_<name>``: the translations of every labelled case of ``source`` by every checkpoint."""
    raw = RawDataset.find(source)
    if raw.num_channels != 1:
        raise DataError(raw.name, f"translation takes single-channel datasets, this one has {raw.num_channels}")
    if not checkpoints:
        raise DataError("--translator", "give at least one translation checkpoint")
    translators = [load_translator(path, device) for path in checkpoints]  # bad files fail before writing
    modality = target_modality or raw.dataset_json.get("unlabelled_modality") or "target"
    source_manifest = raw.manifest()
    cases = source_manifest.base_cases() or raw.case_ids()
    runs = [{"run": k, "checkpoint": str(Path(p).resolve()), "checkpoint_sha256": sha256_of_file(p),
             "method": t.config.method} for k, (p, t) in enumerate(zip(checkpoints, translators))]
    job = {"command": "render translate", "source": raw.name, "runs": runs, "target_modality": modality,
           "deconvolution": asdict(deconvolution) if deconvolution else None}
    manifest = Manifest(source_dataset=raw.name, command="render translate")
    allowed = set(raw.labels.values())
    with DatasetWriter(dataset_id, name, {0: modality}, raw.labels, job, raw.file_ending, overwrite) as writer:
        for run, translator in zip(runs, translators):
            for case_id in tqdm(cases, desc=f"translate run {run['run']}", unit="case"):
                record = source_manifest.cases.get(case_id) or CaseRecord(case_id, "real", case_id, case_id)
                new_id = f"{case_id}_run{run['run']}"
                manifest.add(CaseRecord(new_id, "translated", case_id, record.group, TRANSLATE_GENERATOR,
                                        {"run": run["run"], "method": run["method"], "target_modality": modality,
                                         "deconvolution": job["deconvolution"]}, None, run["checkpoint_sha256"]))
                if writer.has_case(new_id):
                    continue
                case = raw.read_case(case_id)
                check_case(case, allowed, allow_empty_labels=True)
                image = translator.translate_volume(case.images[0])
                if deconvolution is not None:
                    image = deconvolution(image, case.geometry.spacing_zyx)
                if not np.isfinite(image).all():
                    raise DataError(f"case {new_id}", "translation produced NaN or infinite values")
                writer.write_case(new_id, image[None], case.label, case.geometry)
        for case_id in tqdm(raw.case_ids(UNLABELLED_FOLDER), desc="copy target pool", unit="case"):
            if not writer.has_case(case_id, UNLABELLED_FOLDER, None):
                pool = raw.read_case(case_id, UNLABELLED_FOLDER, None)
                writer.write_case(case_id, pool.images, None, pool.geometry, UNLABELLED_FOLDER)
        writer.finalize(manifest, description=f"{raw.name} translated into {modality} by {len(runs)} run(s) "
                                              f"(nnunet_gen)", unlabelled_modality=modality)
    return manifest
