"""Translation quality where a paired reference exists (a simulated second contrast of the same subject): MAE,
PSNR and SSIM of every translated case of a pseudo-target dataset against the true target-modality image.

Both images are scaled by the reference's robust range (0.5th-99.5th percentile of its non-zero voxels -> [0, 1]),
so the numbers do not depend on the scanner's intensity unit; SSIM is the mean over axial slices (2D, 7x7 window,
as the slices were translated).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage.metrics import structural_similarity

from nnunet_gen.errors import DataError
from nnunet_gen.io.images import read_image
from nnunet_gen.io.raw_dataset import RawDataset


def robust_unit_range(reference: np.ndarray) -> tuple[float, float]:
    values = reference[reference != 0] if np.any(reference != 0) else reference
    low, high = np.percentile(values, [0.5, 99.5])
    return float(low), float(max(high, low + 1e-6))


def image_quality(translated: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """MAE, PSNR (dB, data range 1) and slice-mean SSIM after scaling both by the reference's robust range."""
    low, high = robust_unit_range(reference)
    a, b = (translated - low) / (high - low), (reference - low) / (high - low)
    mse = float(np.mean((a - b) ** 2))
    window = min(7, *[n if n % 2 else n - 1 for n in b.shape[1:]])
    ssim = [structural_similarity(x, y, data_range=1.0, win_size=window) for x, y in zip(a, b)
            if np.ptp(y) > 0]
    return {"MAE": float(np.mean(np.abs(a - b))), "PSNR": float(10 * np.log10(1.0 / max(mse, 1e-10))),
            "SSIM": float(np.mean(ssim)) if ssim else float("nan")}


def translation_quality(pseudo_target: str | int, reference_folder: Path) -> list[dict]:
    """One row per translated case of ``pseudo_target``: case, source case, run and :func:`image_quality` against
    ``reference_folder/<source case>_0000<ending>``."""
    raw = RawDataset.find(pseudo_target)
    records = [r for r in raw.manifest().cases.values() if r.kind == "translated"]
    if not records:
        raise DataError(raw.name, "no translated cases (not made by nnunet-gen render translate)")
    rows = []
    for record in sorted(records, key=lambda r: r.case_id):
        reference_file = Path(reference_folder) / f"{record.source_case}_0000{raw.file_ending}"
        reference, reference_geometry = read_image(reference_file, f"case {record.source_case}")
        translated, geometry = read_image(raw.image_files(record.case_id)[0], f"case {record.case_id}")
        if translated.shape != reference.shape:
            raise DataError(f"case {record.case_id}", f"shape {translated.shape} differs from the reference's "
                                                      f"{reference.shape} (crop both the same way)")
        rows.append({"case": record.case_id, "source_case": record.source_case, "run": record.params.get("run"),
                     **image_quality(translated.astype(np.float32), reference.astype(np.float32))})
    return rows
