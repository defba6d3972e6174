"""Reading an nnU-Net raw dataset (``nnUNet_raw/DatasetXXX_Name``) and checking it against its dataset.json."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from nnunet_gen.errors import DataError
from nnunet_gen.io.images import Geometry, read_image

if TYPE_CHECKING:
    from nnunet_gen.io.manifest import Manifest

DATASET_FOLDER_RE = re.compile(r"^Dataset(\d{3})_([A-Za-z0-9_\-]+)$")


def nnunet_dir(variable: str) -> Path:
    """Folder named by one of nnU-Net's environment variables (nnUNet_raw, nnUNet_preprocessed, nnUNet_results).

    Unset, or set to something that exists but is not a folder: a one-line :class:`DataError`.
    """
    value = os.environ.get(variable)
    if not value:
        raise DataError(variable, "environment variable is not set (nnU-Net needs nnUNet_raw, "
                                  "nnUNet_preprocessed and nnUNet_results)")
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise DataError(variable, f"{path} is not a folder")
    return path


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``DatasetXXX_Name`` as nnU-Net spells it."""
    if not 0 < dataset_id < 1000:
        raise DataError(f"Dataset{dataset_id}", "dataset ID must be between 1 and 999")
    folder = f"Dataset{dataset_id:03d}_{name}"
    if not DATASET_FOLDER_RE.match(folder) or "__" in name:
        raise DataError(folder, "dataset name may only use letters, digits, '-' and single '_'")
    return folder


def parse_dataset_folder(folder_name: str) -> tuple[int, str]:
    """``DatasetXXX_Name`` -> (XXX, Name)."""
    match = DATASET_FOLDER_RE.match(folder_name)
    if match is None:
        raise DataError(folder_name, "not an nnU-Net dataset folder name (DatasetXXX_Name)")
    return int(match.group(1)), match.group(2)


def datasets_with_id(dataset_id: int) -> list[str]:
    """Every ``DatasetXXX_*`` folder with this ID in nnUNet_raw, nnUNet_preprocessed and nnUNet_results (the
    places nnU-Net searches when it turns an ID into a name), sorted, without repeats."""
    names = set()
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        if not os.environ.get(variable):
            continue
        root = nnunet_dir(variable)
        if root.is_dir():
            names.update(p.name for p in root.iterdir() if p.is_dir() and DATASET_FOLDER_RE.match(p.name)
                         and parse_dataset_folder(p.name)[0] == dataset_id)
    return sorted(names)


def resolve_dataset_name(dataset: str | int) -> str:
    """Dataset ID or name -> ``DatasetXXX_Name``, looked up like nnU-Net does (raw, preprocessed, results)."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        if os.environ.get(variable):
            nnunet_dir(variable)  # a variable pointing to a file: one line, not nnU-Net's traceback
    try:
        return maybe_convert_to_dataset_name(dataset)
    except ValueError:
        raise DataError(f"dataset {dataset}", "expected a dataset ID (e.g. 501) or a folder name "
                                              "(Dataset501_Name)") from None
    except RuntimeError as error:
        text = " ".join(str(error).split())
        if "Could not find" in text:
            text = (f"no dataset with ID {int(dataset)} in nnUNet_raw, nnUNet_preprocessed or nnUNet_results "
                    f"(check the nnUNet_* environment variables)")
        elif "More than one dataset name found" in text:
            text = (f"ID {dataset} is used by several datasets ({', '.join(datasets_with_id(int(dataset)))}); "
                    f"remove or renumber the extra ones")
        raise DataError(f"dataset {dataset}", text) from None


def foreground_labels(labels: dict[str, int]) -> list[int]:
    """Foreground label values of a dataset.json ``labels`` dict, as nnunetv2's ``LabelManager`` defines them."""
    from nnunetv2.utilities.label_handling.label_handling import LabelManager
    return sorted(int(v) for v in LabelManager(labels, regions_class_order=None).foreground_labels)


@dataclass
class Case:
    """One case: channels stacked as (C, Z, Y, X) float32, label (Z, Y, X) or None, and its geometry."""

    case_id: str
    images: np.ndarray
    label: np.ndarray | None
    geometry: Geometry


class RawDataset:
    """An existing raw dataset folder with a dataset.json."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        json_file = self.folder / "dataset.json"
        if not json_file.is_file():
            raise DataError(self.folder.name, "no dataset.json (is this an nnU-Net raw dataset?)")
        self.dataset_json: dict = json.loads(json_file.read_text())
        for key in ("channel_names", "labels", "numTraining", "file_ending"):
            if key not in self.dataset_json:
                raise DataError(self.folder.name, f"dataset.json lacks '{key}'")

    @classmethod
    def find(cls, dataset: str | int) -> "RawDataset":
        """Open ``nnUNet_raw/<dataset>`` by ID or name."""
        name = resolve_dataset_name(dataset)
        folder = nnunet_dir("nnUNet_raw") / name
        if not folder.is_dir():
            raise DataError(name, f"not found in nnUNet_raw ({folder.parent})")
        return cls(folder)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def dataset_id(self) -> int:
        return parse_dataset_folder(self.name)[0]

    @property
    def short_name(self) -> str:
        """The name without ``DatasetXXX_``."""
        return parse_dataset_folder(self.name)[1]

    def manifest(self) -> "Manifest":
        """The dataset's provenance manifest, or (for a dataset not made by nnunet_gen) one of real cases only."""
        from nnunet_gen.io.manifest import Manifest
        return Manifest.load(self.folder) or Manifest.for_real_cases(self.case_ids())

    @property
    def foreground_labels(self) -> list[int]:
        """Label values other than background and ``ignore`` (nnunetv2's ``LabelManager``)."""
        return foreground_labels(self.labels)

    @property
    def file_ending(self) -> str:
        return self.dataset_json["file_ending"]

    @property
    def num_channels(self) -> int:
        return len(self.dataset_json["channel_names"])

    @property
    def labels(self) -> dict[str, int]:
        """Label name -> value. Region-based datasets (list values) are not supported by nnunet_gen."""
        labels = self.dataset_json["labels"]
        if any(not isinstance(v, int) for v in labels.values()):
            raise DataError(self.name, "region-based labels are not supported")
        return labels

    def case_ids(self, subfolder: str = "labelsTr") -> list[str]:
        """Sorted case IDs: from label files for labelsTr, from channel-0000 images for image-only folders."""
        folder = self.folder / subfolder
        if not folder.is_dir():
            return []
        ending = self.file_ending
        if subfolder.startswith("labels"):
            return sorted(p.name[:-len(ending)] for p in folder.iterdir()
                          if p.name.endswith(ending) and not p.name.startswith("."))
        suffix = "_0000" + ending
        return sorted(p.name[:-len(suffix)] for p in folder.iterdir()
                      if p.name.endswith(suffix) and not p.name.startswith("."))

    def image_files(self, case_id: str, subfolder: str = "imagesTr") -> list[Path]:
        return [self.folder / subfolder / f"{case_id}_{c:04d}{self.file_ending}" for c in range(self.num_channels)]

    def label_file(self, case_id: str, subfolder: str = "labelsTr") -> Path:
        return self.folder / subfolder / f"{case_id}{self.file_ending}"

    def read_case(self, case_id: str, images_subfolder: str = "imagesTr",
                  labels_subfolder: str | None = "labelsTr") -> Case:
        """Read all channels (and the label when ``labels_subfolder`` is given)."""
        label_file = self.label_file(case_id, labels_subfolder) if labels_subfolder else None
        return read_case_files(case_id, self.image_files(case_id, images_subfolder), label_file)

    def validate(self, allow_empty_labels: bool = False) -> None:
        """Check dataset.json against the files: numTraining, channels present, geometry, label values, NaNs."""
        ids = self.case_ids()
        if self.dataset_json["numTraining"] != len(ids):
            raise DataError(self.name, f"dataset.json numTraining={self.dataset_json['numTraining']} but "
                                       f"labelsTr holds {len(ids)} cases")
        allowed = set(self.labels.values())
        for case_id in ids:
            check_case(self.read_case(case_id), allowed, allow_empty_labels)


def read_case_files(case_id: str, image_files: Sequence[Path], label_file: Path | None) -> Case:
    """Read channels + label of one case and check that they share one geometry."""
    arrays, geometry = [], None
    for f in image_files:
        array, g = read_image(f, where=f"case {case_id}")
        if geometry is not None:
            problem = ("shape", array.shape, arrays[0].shape) if array.shape != arrays[0].shape \
                else g.difference(geometry)
            if problem:
                raise DataError(f"case {case_id}", f"channel {f.name}: {problem[0]} {problem[1]} does not match "
                                                   f"{image_files[0].name}'s {problem[2]}")
        arrays.append(array.astype(np.float32))
        geometry = geometry or g
    label = None
    if label_file is not None:
        label, g = read_image(label_file, where=f"case {case_id}")
        problem = ("shape", label.shape, arrays[0].shape) if label.shape != arrays[0].shape \
            else g.difference(geometry)
        if problem:
            raise DataError(f"case {case_id}", f"label {problem[0]} {problem[1]} does not match the image's "
                                               f"{problem[2]}")
        if np.issubdtype(label.dtype, np.integer):
            label = label.astype(np.int16)
    return Case(case_id, np.stack(arrays), label, geometry)


def check_case(case: Case, allowed_labels: Iterable[int], allow_empty_labels: bool = False) -> None:
    """Refuse NaN/inf intensities, label values outside ``allowed_labels`` and (unless allowed) empty label maps."""
    where = f"case {case.case_id}"
    if not np.isfinite(case.images).all():
        raise DataError(where, "image contains NaN or infinite values")
    if case.label is None:
        return
    if not np.issubdtype(case.label.dtype, np.integer):
        if not np.array_equal(case.label, np.round(case.label)):
            raise DataError(where, "label map has non-integer values")
        case.label = case.label.astype(np.int16)
    present = set(np.unique(case.label).tolist())
    unknown = sorted(present - set(allowed_labels))
    if unknown:
        raise DataError(where, f"label values {unknown} are not in dataset.json labels {sorted(set(allowed_labels))}")
    if not allow_empty_labels and present <= {0}:
        raise DataError(where, "label map is empty (no foreground voxel)")
