"""Dataset conversion into nnU-Net raw datasets: a generic folder converter and the CrossMoDA layout.

Like nnU-Net's ``dataset_conversion`` scripts, but checked: every case is read, its geometry, label values and
intensities verified, and written with its original spacing/origin/direction. Bad input stops the conversion with
a one-line error naming the case, and the staged output is removed.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Sequence

from tqdm import tqdm

from nnunet_gen.errors import DataError
from nnunet_gen.io.manifest import Manifest
from nnunet_gen.io.raw_dataset import check_case, read_case_files
from nnunet_gen.io.writer import DatasetWriter

UNLABELLED_FOLDER = "imagesUnlabelledTr"
DEFAULT_LABELS = {"background": 0, "tumour": 1}
CROSSMODA_LABELS = {"background": 0, "vestibular_schwannoma": 1, "cochlea": 2}


def _stem(path: Path) -> str:
    name = path.name
    for ending in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".tif", ".tiff", ".png", ".gipl.gz"):
        if name.lower().endswith(ending):
            return name[:-len(ending)]
    return path.stem


def _files_by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(str(folder), "folder not found")
    return {_stem(p): p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


def check_label_names(label_names: dict[str, int]) -> dict[str, int]:
    """nnU-Net's label rules, checked before any case is read: background = 0 and consecutive values 0..N-1."""
    values = sorted(label_names.values())
    if label_names.get("background") != 0:
        raise DataError("--labels-map", f"needs background=0, got {label_names}")
    if values != list(range(len(values))):
        raise DataError("--labels-map", f"label values must be consecutive 0..{len(values) - 1} (nnU-Net), got "
                                        f"{values}")
    return label_names


def check_groups(groups: object, cases: Iterable[str]) -> dict[str, str]:
    """A ``--groups`` mapping case -> patient (JSON object of strings) covering known cases only."""
    if not isinstance(groups, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in groups.items()):
        raise DataError("--groups", f"expected a JSON object mapping case -> patient (strings), got "
                                    f"{type(groups).__name__}")
    unknown = sorted(set(groups) - set(cases))
    if unknown:
        raise DataError("--groups", f"names case(s) without a label file: {unknown[:3]}")
    return groups


def convert_folders(images: str | Path, labels: str | Path, dataset_id: int, name: str,
                    channels: Sequence[str] | None = None, label_names: dict[str, int] | None = None,
                    groups: dict[str, str] | None = None, allow_empty_labels: bool = False,
                    overwrite: bool = False) -> Path:
    """Folder of images + folder of labels -> raw dataset.

    Cases are named by the label files (file name without extension). Single channel: the image has the label's
    file name. With ``channels`` (e.g. ["T1", "T2"]) the images are ``<case>_<channel>.<ext>``.
    ``groups`` maps case -> patient for grouped splits (default: each case its own patient).
    """
    label_names = check_label_names(label_names or DEFAULT_LABELS)
    image_files, label_files = _files_by_stem(Path(images)), _files_by_stem(Path(labels))
    if not label_files:
        raise DataError(str(labels), "no label files found")
    if groups is not None:
        groups = check_groups(groups, label_files)
    expected = {case if not channels else f"{case}_{c}" for case in label_files for c in (channels or [None])}
    unlabelled = sorted(stem for stem in image_files if stem not in expected)
    if unlabelled:
        raise DataError(f"case {unlabelled[0]}", f"image without a label in {labels} ({len(unlabelled)} such "
                                                 f"file(s)); move unlabelled images out of {images}")
    channel_names = {i: c for i, c in enumerate(channels or ["image"])}
    job = {"command": "convert folders", "images": str(Path(images).resolve()),
           "labels": str(Path(labels).resolve()), "channels": channels, "label_names": label_names}
    with DatasetWriter(dataset_id, name, channel_names, label_names, job, overwrite=overwrite) as writer:
        for case_id, label_file in tqdm(label_files.items(), desc="convert", unit="case"):
            stems = [case_id] if not channels else [f"{case_id}_{c}" for c in channels]
            missing = [s for s in stems if s not in image_files]
            if missing:
                raise DataError(f"case {case_id}", f"missing image file(s) for {missing} in {images}")
            if writer.has_case(case_id):
                continue
            case = read_case_files(case_id, [image_files[s] for s in stems], label_file)
            check_case(case, label_names.values(), allow_empty_labels)
            writer.write_case(case_id, case.images, case.label, case.geometry)
        return writer.finalize(Manifest.for_real_cases(label_files, groups))


CROSSMODA_RE = re.compile(r"^(?P<case>.+)_(?P<kind>[A-Za-z0-9]+)$")


def convert_crossmoda(folder: str | Path, dataset_id: int, name: str, source_modality: str = "ceT1",
                      target_modality: str = "hrT2", label_suffix: str = "Label",
                      allow_empty_labels: bool = False, overwrite: bool = False) -> Path:
    """CrossMoDA layout -> raw dataset.

    ``<case>_<source_modality>`` with ``<case>_<label_suffix>`` become labelled training cases (imagesTr/labelsTr);
    ``<case>_<target_modality>`` without label form the unlabelled pool in ``imagesUnlabelledTr`` (used by
    self-training). Labels: 1 vestibular schwannoma, 2 cochlea.
    """
    files = _files_by_stem(Path(folder))
    parsed: dict[str, dict[str, Path]] = {}
    for stem, path in files.items():
        m = CROSSMODA_RE.match(stem)
        if m:
            parsed.setdefault(m["case"], {})[m["kind"]] = path
    labelled = sorted(c for c, kinds in parsed.items() if label_suffix in kinds)
    unlabelled = sorted(c for c, kinds in parsed.items() if target_modality in kinds and label_suffix not in kinds)
    if not labelled:
        raise DataError(str(folder), f"no '<case>_{label_suffix}' label files found")
    job = {"command": "convert crossmoda", "folder": str(Path(folder).resolve()), "source": source_modality,
           "target": target_modality}
    with DatasetWriter(dataset_id, name, {0: source_modality}, CROSSMODA_LABELS, job, overwrite=overwrite) as w:
        for case_id in tqdm(labelled, desc="labelled", unit="case"):
            if source_modality not in parsed[case_id]:
                raise DataError(f"case {case_id}", f"label without a {source_modality} image")
            if w.has_case(case_id):
                continue
            case = read_case_files(case_id, [parsed[case_id][source_modality]], parsed[case_id][label_suffix])
            check_case(case, CROSSMODA_LABELS.values(), allow_empty_labels)
            w.write_case(case_id, case.images, case.label, case.geometry)
        for case_id in tqdm(unlabelled, desc="unlabelled", unit="case"):
            if w.has_case(case_id, UNLABELLED_FOLDER, None):
                continue
            case = read_case_files(case_id, [parsed[case_id][target_modality]], None)
            check_case(case, CROSSMODA_LABELS.values())
            w.write_case(case_id, case.images, None, case.geometry, UNLABELLED_FOLDER)
        return w.finalize(Manifest.for_real_cases(labelled), unlabelled_modality=target_modality)
