"""QC montage of a GBA-rendered dataset: per case the original, the naive copy and the GBA copy of the same alpha,
each titled with its tumour/surround contrast, and optionally a real target-modality tumour to judge realism."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nnunet_gen.augment.gba import GenerativeBlending, tumour_contrast
from nnunet_gen.errors import DataError
from nnunet_gen.io.images import read_image
from nnunet_gen.io.manifest import GBA_GENERATOR, Manifest
from nnunet_gen.io.raw_dataset import RawDataset
from nnunet_gen.qc.figures import slice_montage, tumour_slice


def target_panel(image_file: str, label_file: str, labels: list[int]) -> tuple[str, np.ndarray, np.ndarray]:
    """The axial slice through a real target tumour (label: reference or pseudo-label), titled with its contrast."""
    image, _ = read_image(image_file, "--target-image")
    label, _ = read_image(label_file, "--target-label")
    if image.shape != label.shape:
        raise DataError(label_file, f"label shape {label.shape} != image shape {image.shape}")
    tumour = np.isin(label, labels)
    if not tumour.any():
        raise DataError(label_file, f"no voxels with labels {labels}: no target tumour to show")
    z = tumour_slice(tumour.astype(np.uint8))
    name = Path(image_file).name.split(".")[0]
    return f"target {name} c={tumour_contrast(image, tumour):.2f}", image[z], tumour[z]


def qc_montage(dataset: str | int, out: str, num_cases: int = 3, variants_per_case: int = 3,
               target: tuple[str, str] | None = None) -> str:
    """PNG: per real case with GBA copies, the original, the naive-rescaled and the GBA axial slice through the tumour
    (red: tumour contour), each titled with its :func:`tumour_contrast` ``c``, and, with ``target`` = (image file,
    label file), a real target tumour at the end of every row. The naive panel is re-rendered from the GBA copy's
    recorded parameters with ``blend=False`` (same alpha, same code path), so each naive/GBA pair differs only in
    the blending."""
    raw = RawDataset.find(dataset)
    manifest = Manifest.load(raw.folder)
    if manifest is None:
        raise DataError(raw.name, "no nnunet_gen manifest: not a rendered dataset")
    copies: dict[str, list[str]] = {}
    for case_id in manifest.of_kind("synthetic"):
        record = manifest.cases[case_id]
        if record.generator == GBA_GENERATOR and record.params.get("blend", True):
            copies.setdefault(record.source_case, []).append(case_id)
    if not copies:
        raise DataError(raw.name, "no GBA copies in the manifest (rendered with --no-blend, or by another generator)")
    target_row_panel = None
    rows = []
    for source_id in sorted(copies)[:num_cases]:
        case = raw.read_case(source_id)
        first = manifest.cases[copies[source_id][0]].params
        tumour = np.isin(case.label, first["labels"])
        z = tumour_slice(tumour.astype(np.uint8))
        contour = tumour[z]
        original = case.images[int(first.get("channel", 0))]
        if target is not None and target_row_panel is None:
            target_row_panel = target_panel(*target, list(first["labels"]))
        row = [(f"{source_id} c={tumour_contrast(original, tumour):.2f}", original[z], contour)]
        by_alpha: dict[float, str] = {}
        for copy_id in copies[source_id]:  # one copy per alpha first, so a row shows different contrasts
            by_alpha.setdefault(manifest.cases[copy_id].params["alpha"], copy_id)
        shown = list(by_alpha.values()) + [c for c in copies[source_id] if c not in by_alpha.values()]
        for copy_id in shown[:variants_per_case]:
            params = manifest.cases[copy_id].params
            channel = int(params.get("channel", 0))
            naive = GenerativeBlending.from_parameters(params).with_blend(False)(case.images[channel], case.label)
            gba = raw.read_case(copy_id).images[channel]
            kept = " kept" if params.get("keep_contrast") else ""
            row.append((f"naive a={params['alpha']:g} c={tumour_contrast(naive, tumour):.2f}", naive[z], contour))
            row.append((f"GBA a={params['alpha']:g} n={params['start_scale']}{kept} "
                        f"c={tumour_contrast(gba, tumour):.2f}", gba[z], contour))
        rows.append(row + ([target_row_panel] if target_row_panel else []))
    slice_montage(rows, out, f"{raw.name}: original / naive rescaling / GBA{' / real target' if target else ''} "
                             f"(red: tumour; c: tumour/surround contrast)")
    return out
