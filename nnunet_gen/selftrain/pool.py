"""The unlabelled target pool of a self-training run: which cases, and refusals of images nnU-Net would misread."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_gen.errors import DataError
from nnunet_gen.io.raw_dataset import RawDataset

#: Relative slack on the labelled spacing range allowed for unlabelled images, per axis.
SPACING_TOLERANCE = 0.1
UNLABELLED_DEFAULT = "imagesUnlabelledTr"


def _header(path: Path) -> tuple[tuple[float, ...], str, int]:
    """Spacing, orientation code (e.g. 'LPS') and dimension of an image file, read without its voxels."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise DataError(path.name, f"cannot read image header of {path}") from None
    direction = reader.GetDirection()
    dimension = reader.GetDimension()
    orientation = (sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(direction) if dimension == 3
                   else "2D")
    return tuple(reader.GetSpacing()), orientation, dimension


def unlabelled_cases(labelled: RawDataset, folder: Path) -> list[str]:
    """Case IDs of the unlabelled pool, refusing missing channels, ID clashes and other spacing/orientation.

    Spacing must lie, per axis, within the labelled spacing range widened by ``SPACING_TOLERANCE``; the orientation
    code must be one of the labelled images' codes.
    """
    if not folder.is_dir():
        raise DataError(str(folder), "unlabelled image folder not found")
    ending = labelled.file_ending
    suffix = "_0000" + ending
    cases = sorted(p.name[:-len(suffix)] for p in folder.iterdir()
                   if p.name.endswith(suffix) and not p.name.startswith("."))
    if not cases:
        raise DataError(str(folder), f"no unlabelled images (<case>_0000{ending})")
    clashes = sorted(set(cases) & set(labelled.case_ids()))
    if clashes:
        raise DataError(f"case {clashes[0]}", f"unlabelled case has the same ID as a labelled case "
                                              f"({len(clashes)} clash)")
    references = [_header(labelled.image_files(c)[0]) for c in labelled.case_ids()]
    spacings = np.array([s for s, _, _ in references])
    low, high = spacings.min(0) * (1 - SPACING_TOLERANCE), spacings.max(0) * (1 + SPACING_TOLERANCE)
    orientations = sorted({o for _, o, _ in references})
    for case in cases:
        for c in range(labelled.num_channels):
            if not (folder / f"{case}_{c:04d}{ending}").is_file():
                raise DataError(f"case {case}", f"unlabelled image lacks channel {c} ({case}_{c:04d}{ending})")
        spacing, orientation, dimension = _header(folder / f"{case}_0000{ending}")
        if dimension != spacings.shape[1]:
            raise DataError(f"case {case}", f"unlabelled image is {dimension}D, labelled images are "
                                            f"{spacings.shape[1]}D")
        if orientation not in orientations:
            raise DataError(f"case {case}", f"unlabelled orientation {orientation} differs from the labelled "
                                            f"images ({', '.join(orientations)}); reorient it first")
        if np.any(np.array(spacing) < low) or np.any(np.array(spacing) > high):
            raise DataError(f"case {case}", f"unlabelled spacing {tuple(round(s, 4) for s in spacing)} is outside "
                                            f"the labelled range {tuple(np.round(spacings.min(0), 4))}.."
                                            f"{tuple(np.round(spacings.max(0), 4))} (+-{SPACING_TOLERANCE:.0%}); "
                                            f"resample it first")
    return cases
