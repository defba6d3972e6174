"""Brain-centre crop of a raw dataset, and pasting predictions back into the original geometry (GBA paper, 4.2.2).

Every image (both modalities) is resampled to one voxel spacing, then a fixed-size box is cut around the brain centre:
the mean position of the voxels brighter than the 75th intensity percentile (the paper, after its reference [56]).
Each case's :class:`CropRecord` (original grid, resampled spacing, box) is stored in ``nnunet_gen_crops.json`` of the
cropped dataset, so :func:`paste_back` puts a prediction made on the crop into the original image grid, where the
evaluation happens. Images are resampled linearly, labels with nearest neighbour.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from nnunet_gen.errors import DataError
from nnunet_gen.io.files import write_text
from nnunet_gen.io.images import Geometry, read_image, write_image
from nnunet_gen.io.raw_dataset import RawDataset
from nnunet_gen.io.writer import DatasetWriter

CROPS_FILE = "nnunet_gen_crops.json"
CROPS_FORMAT = "nnunet_gen-crops-1"
#: Brain-centre rule of the paper: voxels above this intensity percentile.
CENTRE_PERCENTILE = 75.0


@dataclass(frozen=True)
class CropRecord:
    """Where a cropped case came from: the original grid (shape Z, Y, X and geometry) and the box (start, size in
    voxels of the resampled grid, Z, Y, X order) cut from the image resampled to ``spacing_zyx``."""

    original_shape: tuple[int, ...]
    original_geometry: Geometry
    spacing_zyx: tuple[float, ...]
    start: tuple[int, ...]
    size: tuple[int, ...]

    def to_json(self) -> dict:
        d = asdict(self)
        d["original_geometry"] = self.original_geometry.to_json()
        return d

    @classmethod
    def from_json(cls, d: dict) -> "CropRecord":
        return cls(tuple(d["original_shape"]), Geometry.from_json(d["original_geometry"]),
                   tuple(d["spacing_zyx"]), tuple(d["start"]), tuple(d["size"]))


def _image(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    return geometry.apply_to(sitk.GetImageFromArray(array))


def resample(array: np.ndarray, geometry: Geometry, spacing_zyx: Sequence[float] | None,
             is_label: bool) -> tuple[np.ndarray, Geometry]:
    """``array`` on a grid of ``spacing_zyx`` with the same origin and direction covering the same extent
    (None: unchanged)."""
    if spacing_zyx is None or np.allclose(geometry.spacing_zyx, spacing_zyx):
        return array, geometry
    new_spacing_xyz = tuple(float(s) for s in reversed(spacing_zyx))
    size_xyz = [max(1, int(round(n * old / new))) for n, old, new
                in zip(reversed(array.shape), geometry.spacing, new_spacing_xyz)]
    target = Geometry(new_spacing_xyz, geometry.origin, geometry.direction)
    out = sitk.Resample(_image(array, geometry), size_xyz, sitk.Transform(), 
                        sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear, geometry.origin, new_spacing_xyz,
                        geometry.direction, 0.0)
    return sitk.GetArrayFromImage(out), target


def brain_centre(volume: np.ndarray, percentile: float = CENTRE_PERCENTILE) -> np.ndarray:
    """Mean (Z, Y, X) index of the voxels above the ``percentile``-th intensity percentile."""
    bright = volume > np.percentile(volume, percentile)
    if not bright.any():
        bright = np.ones_like(volume, dtype=bool)
    return np.argwhere(bright).mean(0)


def crop_box(centre: Sequence[float], size: Sequence[int], shape: Sequence[int], where: str) -> tuple[int, ...]:
    """Start of a ``size`` box centred on ``centre``, shifted to lie inside ``shape`` (0 in ``size``: whole axis)."""
    start = []
    for axis, (c, s, n) in enumerate(zip(centre, size, shape)):
        s = s or n
        if s > n:
            raise DataError(where, f"crop size {tuple(size)} larger than the resampled volume {tuple(shape)} "
                                   f"(axis {'ZYX'[axis]})")
        start.append(int(min(max(round(c - s / 2), 0), n - s)))
    return tuple(start)


def cropped_geometry(geometry: Geometry, start: Sequence[int]) -> Geometry:
    """Geometry of a sub-volume starting at voxel ``start`` (Z, Y, X): the origin moves along the direction axes."""
    direction = np.array(geometry.direction).reshape(3, 3)
    offset = direction @ (np.array(list(reversed(start)), dtype=float) * np.array(geometry.spacing))
    return Geometry(geometry.spacing, tuple(float(v) for v in np.array(geometry.origin) + offset),
                    geometry.direction)


def crop_case(images: np.ndarray, label: np.ndarray | None, geometry: Geometry, spacing_zyx: Sequence[float] | None,
              size: Sequence[int], where: str, start: Sequence[int] | None = None
              ) -> tuple[np.ndarray, np.ndarray | None, Geometry, CropRecord]:
    """Resample channels (C, Z, Y, X) and label, crop around channel 0's brain centre (or at ``start``: the box of
    a paired image); returns the crops, their geometry and the record that inverts the crop."""
    channels = [resample(c, geometry, spacing_zyx, False) for c in images]
    resampled, grid = np.stack([c for c, _ in channels]), channels[0][1]
    if start is None:
        start = crop_box(brain_centre(resampled[0]), size, resampled.shape[1:], where)
    box = tuple(slice(a, a + (s or n)) for a, s, n in zip(start, size, resampled.shape[1:]))
    record = CropRecord(tuple(images.shape[1:]), geometry, tuple(grid.spacing_zyx), start,
                        tuple(b.stop - b.start for b in box))
    cropped_label = None
    if label is not None:
        cropped_label = resample(label, geometry, spacing_zyx, True)[0][box]
    return resampled[(slice(None), *box)], cropped_label, cropped_geometry(grid, start), record


def paste_back(label: np.ndarray, record: CropRecord) -> np.ndarray:
    """A label map predicted on the crop, on the original image grid (nearest neighbour; 0 outside the crop)."""
    if tuple(label.shape) != tuple(record.size):
        raise DataError("paste-back", f"prediction shape {label.shape} is not the crop size {record.size}")
    grid = Geometry(tuple(reversed(record.spacing_zyx)), record.original_geometry.origin,
                    record.original_geometry.direction)
    moving = _image(label.astype(np.int16), cropped_geometry(grid, record.start))
    g = record.original_geometry
    out = sitk.Resample(moving, [int(n) for n in reversed(record.original_shape)], sitk.Transform(),
                        sitk.sitkNearestNeighbor, g.origin, g.spacing, g.direction, 0)
    return sitk.GetArrayFromImage(out).astype(label.dtype)


def _folder_pairs(raw: RawDataset) -> list[tuple[str, str | None]]:
    """(images folder, its labels folder or None) for every ``images*`` folder of the dataset."""
    pairs = []
    for folder in sorted(p.name for p in raw.folder.iterdir() if p.is_dir() and p.name.startswith("images")):
        labels = "labels" + folder[len("images"):]
        pairs.append((folder, labels if (raw.folder / labels).is_dir() else None))
    return pairs


def crop_dataset(source: str | int, dataset_id: int, name: str, size: Sequence[int],
                 spacing_zyx: Sequence[float] | None = None, overwrite: bool = False) -> Path:
    """Resample + brain-centre crop every case of every ``images*`` folder (labels alongside) into a new raw dataset
    with the same manifest, and the crop records in ``nnunet_gen_crops.json``.

    The folder that dataset.json names ``paired_target_folder`` (the other modality of the labelled subjects, a
    translation-quality reference) is cut with the boxes of the ``imagesTr`` cases, so pairs stay aligned.
    """
    raw = RawDataset.find(source)
    if len(size) != 3 or any(s < 0 for s in size):
        raise DataError("--size", f"expected three sizes >= 0 (Z Y X; 0 = whole axis), got {list(size)}")
    if spacing_zyx is not None and (len(spacing_zyx) != 3 or any(s <= 0 for s in spacing_zyx)):
        raise DataError("--spacing", f"expected three spacings > 0 (Z Y X, mm), got {list(spacing_zyx)}")
    job = {"command": "crop", "source": raw.name, "size": list(size),
           "spacing": None if spacing_zyx is None else list(spacing_zyx)}
    records: dict[str, dict[str, dict]] = {}
    paired = raw.dataset_json.get("paired_target_folder")
    with DatasetWriter(dataset_id, name, raw.dataset_json["channel_names"], raw.labels, job, raw.file_ending,
                       overwrite) as writer:
        pairs = sorted(_folder_pairs(raw), key=lambda pair: pair[0] == paired)  # the paired folder last
        for images, labels in pairs:
            folder_records = records.setdefault(images, {})
            for case_id in tqdm(raw.case_ids(images), desc=f"crop {images}", unit="case"):
                case = raw.read_case(case_id, images, labels)
                box = records.get("imagesTr", {}).get(case_id, {}).get("start") if images == paired else None
                cropped, label, geometry, record = crop_case(case.images, case.label, case.geometry, spacing_zyx,
                                                             size, f"case {case_id} ({images})", box)
                folder_records[case_id] = record.to_json()
                if not writer.has_case(case_id, images, labels):
                    writer.write_case(case_id, cropped, label, geometry, images, labels or "labelsTr")
        write_text(writer.staging / CROPS_FILE, json.dumps({"format": CROPS_FORMAT, "source": raw.name,
                                                             "cases": records}, indent=1))
        extra = {k: v for k, v in raw.dataset_json.items() if k not in
                 ("channel_names", "labels", "numTraining", "file_ending", "name", "converted_by", "description")}
        return writer.finalize(raw.manifest(), description=f"{raw.name} resampled to {job['spacing']} and "
                                                           f"brain-centre cropped to {list(size)} (nnunet_gen)",
                               **extra)


def crop_records(dataset: str | int, images_folder: str) -> dict[str, CropRecord]:
    """The crop records of one ``images*`` folder of a cropped dataset."""
    raw = RawDataset.find(dataset)
    path = raw.folder / CROPS_FILE
    if not path.is_file():
        raise DataError(raw.name, f"no {CROPS_FILE}: not made by nnunet-gen crop")
    data = json.loads(path.read_text())
    if data.get("format") != CROPS_FORMAT:
        raise DataError(raw.name, f"{CROPS_FILE} has unknown format {data.get('format')!r}")
    if images_folder not in data["cases"]:
        raise DataError(raw.name, f"no crop records for folder {images_folder} (has {sorted(data['cases'])})")
    return {case: CropRecord.from_json(d) for case, d in data["cases"][images_folder].items()}


def paste_back_folder(dataset: str | int, images_folder: str, predictions: Path, out: Path,
                      file_ending: str | None = None) -> list[str]:
    """Paste every prediction ``<case><ending>`` in ``predictions`` back into its original grid, written to ``out``."""
    records = crop_records(dataset, images_folder)
    ending = file_ending or RawDataset.find(dataset).file_ending
    files = sorted(p for p in Path(predictions).glob(f"*{ending}") if not p.name.startswith("."))
    if not files:
        raise DataError(str(predictions), f"no predictions *{ending}")
    done = []
    for path in tqdm(files, desc="paste back", unit="case"):
        case = path.name[:-len(ending)]
        if case not in records:
            raise DataError(f"case {case}", f"no crop record in folder {images_folder}")
        label, _ = read_image(path, f"case {case}")
        write_image(paste_back(label, records[case]), records[case].original_geometry, Path(out) / path.name)
        done.append(case)
    return done
