"""Reading and writing single images with their exact geometry (spacing, origin, direction).

Arrays are in SimpleITK's index order reversed, i.e. (Z, Y, X) for 3D, as nnU-Net's SimpleITKIO uses them.
Every write goes to a temporary file in the target folder and is renamed into place, so a killed process never
leaves a half-written image under the final name.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from nnunet_gen.errors import DataError
from nnunet_gen.io.files import atomic_write, check_image_file


@dataclass(frozen=True)
class Geometry:
    """Physical placement of an image: SimpleITK spacing/origin/direction (x, y, z order)."""

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def axis_aligned(cls, spacing_zyx: Sequence[float]) -> "Geometry":
        """Axis-aligned 3D geometry at the origin with (z, y, x) voxel spacing (what generated data uses)."""
        return cls(tuple(float(s) for s in reversed(spacing_zyx)), (0.0, 0.0, 0.0),
                   (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))

    @classmethod
    def isotropic(cls, spacing_mm: float) -> "Geometry":
        """Axis-aligned 3D geometry at the origin with ``spacing_mm`` voxels (what generated phantoms use)."""
        return cls.axis_aligned((spacing_mm,) * 3)

    @classmethod
    def of(cls, image: sitk.Image) -> "Geometry":
        return cls(tuple(image.GetSpacing()), tuple(image.GetOrigin()), tuple(image.GetDirection()))

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def difference(self, other: "Geometry", tolerance: float = 1e-4) -> tuple[str, tuple, tuple] | None:
        """``(field, mine, theirs)`` for the first of spacing, origin, direction that differs beyond ``tolerance``
        (values rounded for messages), or None when both place an image identically."""
        for field in ("spacing", "origin", "direction"):
            mine, theirs = getattr(self, field), getattr(other, field)
            if len(mine) != len(theirs) or not np.allclose(mine, theirs, atol=tolerance, rtol=0):
                return field, tuple(round(v, 4) for v in mine), tuple(round(v, 4) for v in theirs)
        return None

    def matches(self, other: "Geometry", tolerance: float = 1e-4) -> bool:
        return self.difference(other, tolerance) is None

    @property
    def spacing_zyx(self) -> tuple[float, ...]:
        """Spacing in array axis order."""
        return tuple(reversed(self.spacing))

    def to_json(self) -> dict:
        return {"spacing": list(self.spacing), "origin": list(self.origin), "direction": list(self.direction)}

    @classmethod
    def from_json(cls, d: dict) -> "Geometry":
        return cls(tuple(d["spacing"]), tuple(d["origin"]), tuple(d["direction"]))


def reader_reason(error: Exception) -> str:
    """The reason in a SimpleITK exception, without its source-file location (the text after ``ERROR:``)."""
    text = str(error).strip()
    for line in text.splitlines():
        if "ERROR:" in line:
            return line.split("ERROR:", 1)[1].strip()
    lines = [line for line in text.splitlines() if line.strip() and ".cxx:" not in line and ".h:" not in line]
    return lines[0].strip() if lines else "unknown reader error"


def read_image(path: str | os.PathLike, where: str | None = None) -> tuple[np.ndarray, Geometry]:
    """Read a 2D/3D single-component image with its geometry.

    The file itself is checked first (:func:`~nnunet_gen.io.files.check_image_file`: truncation, NaN/inf in NIfTI
    float voxels); unreadable, multi-component or 4D files raise :class:`DataError` naming ``where``.
    """
    path = Path(path)
    where = where or path.name
    if not path.is_file():
        raise DataError(where, f"file not found: {path}")
    check_image_file(path, where)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise DataError(where, f"cannot read {path.name}: {reader_reason(error)}") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(where, f"{path.name} has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
                               f"give one file per channel")
    if image.GetDimension() not in (2, 3):
        raise DataError(where, f"{path.name} is {image.GetDimension()}D; nnU-Net takes 2D or 3D images, one file per "
                               f"channel")
    return sitk.GetArrayFromImage(image), Geometry.of(image)


def write_image(array: np.ndarray, geometry: Geometry, path: str | os.PathLike) -> None:
    """Atomically write ``array`` with ``geometry`` (format from the file ending, e.g. .nii.gz)."""
    image = geometry.apply_to(sitk.GetImageFromArray(array))
    atomic_write(path, lambda tmp: sitk.WriteImage(image, tmp, useCompression=True))
