"""Writing a new nnU-Net raw dataset safely: staged, resumable, never overwriting without being asked.

The dataset is built in a hidden ``nnUNet_raw/.DatasetXXX_Name.partial`` folder and renamed into place only once
complete (dataset.json and manifest included), so nnU-Net never sees a half-written dataset. Each file is written
atomically and a case's label is written after its images, so a case is complete exactly when its label exists.
Rerunning the same command after a kill resumes: complete cases are skipped. Bad input (a :class:`DataError`)
removes the staging folder, leaving nothing behind.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from nnunet_gen.errors import DataError
from nnunet_gen.io.files import TEMPORARY_PREFIX, atomic_write, write_text
from nnunet_gen.io.images import Geometry, write_image
from nnunet_gen.io.manifest import Manifest
from nnunet_gen.io.raw_dataset import dataset_folder_name, datasets_with_id, nnunet_dir
from nnunet_gen.io.splits import write_grouped_splits

JOB_FILE = ".nnunet_gen_job.json"


class DatasetWriter:
    """Context manager that stages ``nnUNet_raw/DatasetXXX_Name`` and publishes it on :meth:`finalize`.

    Parameters:
        dataset_id, name: target ``DatasetXXX_Name``.
        channel_names: channel index -> name (dataset.json ``channel_names``).
        labels: label name -> value (dataset.json ``labels``).
        job: JSON-able description of the command (inputs, parameters, seed); a resumed run must match it.
        overwrite: replace an existing dataset of the same folder name.
    """

    def __init__(self, dataset_id: int, name: str, channel_names: dict[int, str], labels: dict[str, int],
                 job: dict, file_ending: str = ".nii.gz", overwrite: bool = False):
        self.folder_name = dataset_folder_name(dataset_id, name)
        raw = nnunet_dir("nnUNet_raw")
        raw.mkdir(parents=True, exist_ok=True)
        self.final = raw / self.folder_name
        self.staging = raw / f".{self.folder_name}.partial"
        self.channel_names = {int(k): v for k, v in channel_names.items()}
        self.labels = dict(labels)
        self.file_ending = file_ending
        self.overwrite = overwrite
        self.job = json.loads(json.dumps(job))

        same_id = [name for name in datasets_with_id(dataset_id) if name != self.folder_name]
        if same_id:
            raise DataError(self.folder_name, f"dataset ID {dataset_id} is already used by {same_id[0]} (nnU-Net "
                                              f"looks IDs up in nnUNet_raw, nnUNet_preprocessed and nnUNet_results)")
        if self.final.exists() and not overwrite:
            raise DataError(self.folder_name, "dataset already exists in nnUNet_raw; pass --overwrite to replace it")
        self._open_staging()

    def _open_staging(self) -> None:
        job_file = self.staging / JOB_FILE
        if self.staging.exists():
            previous = json.loads(job_file.read_text()) if job_file.is_file() else None
            if previous != self.job:
                if not self.overwrite:
                    raise DataError(self.folder_name, f"an interrupted run with other parameters left {self.staging}; "
                                                      f"rerun that command to resume it, or pass --overwrite")
                shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True, exist_ok=True)
        self._remove_temporaries()
        if not job_file.is_file():
            write_text(job_file, json.dumps(self.job, indent=1))

    def _remove_temporaries(self) -> None:
        """Delete the temporary files a killed run left between writing and renaming (hidden names, see
        :func:`~nnunet_gen.io.files.atomic_write`): nnU-Net would count them as cases."""
        for path in self.staging.rglob(f"{TEMPORARY_PREFIX}*"):
            if path.is_file() and path != self.staging / JOB_FILE:
                path.unlink()

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and issubclass(exc_type, DataError):
            shutil.rmtree(self.staging, ignore_errors=True)

    def image_path(self, case_id: str, channel: int, subfolder: str = "imagesTr") -> Path:
        return self.staging / subfolder / f"{case_id}_{channel:04d}{self.file_ending}"

    def label_path(self, case_id: str, subfolder: str = "labelsTr") -> Path:
        return self.staging / subfolder / f"{case_id}{self.file_ending}"

    def has_case(self, case_id: str, images_subfolder: str = "imagesTr",
                 labels_subfolder: str | None = "labelsTr") -> bool:
        """True when a previous (interrupted) run already wrote this case completely."""
        done = (self.label_path(case_id, labels_subfolder) if labels_subfolder
                else self.image_path(case_id, 0, images_subfolder))
        return done.is_file() and all(self.image_path(case_id, c, images_subfolder).is_file()
                                      for c in self.channel_names)

    def write_case(self, case_id: str, images: np.ndarray, label: np.ndarray | None, geometry: Geometry,
                   images_subfolder: str = "imagesTr", labels_subfolder: str = "labelsTr") -> None:
        """Write channels ``images`` (C, Z, Y, X) and then ``label`` (Z, Y, X) with ``geometry``."""
        if "__" in case_id:
            raise DataError(f"case {case_id}", "case IDs must not contain '__'")
        if images.shape[0] != len(self.channel_names):
            raise DataError(f"case {case_id}", f"{images.shape[0]} channels given, dataset has "
                                               f"{len(self.channel_names)}")
        for c in range(images.shape[0]):
            write_image(images[c].astype(np.float32), geometry, self.image_path(case_id, c, images_subfolder))
        if label is not None:
            write_image(label.astype(np.uint8 if label.max() < 256 else np.int16), geometry,
                        self.label_path(case_id, labels_subfolder))

    def copy_case(self, case_id: str, image_files: Sequence[Path], label_file: Path | None) -> None:
        """Copy an existing case's files unchanged (channels in order, then the label), each atomically."""
        if len(image_files) != len(self.channel_names):
            raise DataError(f"case {case_id}", f"{len(image_files)} channel files given, dataset has "
                                               f"{len(self.channel_names)}")
        for c, source in enumerate(image_files):
            atomic_write(self.image_path(case_id, c), lambda tmp, source=source: shutil.copyfile(source, tmp))
        if label_file is not None:
            atomic_write(self.label_path(case_id), lambda tmp: shutil.copyfile(label_file, tmp))

    def finalize(self, manifest: Manifest, **dataset_json_fields) -> Path:
        """Write dataset.json (nnunetv2's generate_dataset_json) and the manifest, publish the folder, and write
        grouped ``splits_final.json`` right away (if nnUNet_preprocessed is set and there are >= 5 patients), so even
        a stock ``nnUNetv2_plan_and_preprocess`` + ``nnUNetv2_train`` never uses nnU-Net's leaky default split."""
        labels_dir = self.staging / "labelsTr"
        num_training = len([p for p in labels_dir.iterdir() if p.name.endswith(self.file_ending)
                            and not p.name.startswith(".")]) if labels_dir.is_dir() else 0
        if num_training == 0:
            raise DataError(self.folder_name, "no labelled training case was written")
        generate_dataset_json(str(self.staging), {str(k): v for k, v in self.channel_names.items()}, self.labels,
                              num_training, self.file_ending, dataset_name=self.folder_name,
                              converted_by="nnunet_gen", **dataset_json_fields)
        manifest.save(self.staging)
        (self.staging / JOB_FILE).unlink()
        self._remove_temporaries()
        if self.final.exists():
            old = self.final.with_name(f".{self.folder_name}.old")
            shutil.rmtree(old, ignore_errors=True)
            self.final.rename(old)
            self.staging.rename(self.final)
            shutil.rmtree(old)
        else:
            self.staging.rename(self.final)
        if os.environ.get("nnUNet_preprocessed"):
            write_grouped_splits(nnunet_dir("nnUNet_preprocessed") / self.folder_name, manifest)
        return self.final
