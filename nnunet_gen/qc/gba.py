"""QC montage of a GBA-rendered dataset: per case the original, the naive copy and the GBA copy of the same alpha."""
from __future__ import annotations

import numpy as np

from nnunet_gen.augment.gba import GenerativeBlending
from nnunet_gen.errors import DataError
from nnunet_gen.io.manifest import GBA_GENERATOR, Manifest
from nnunet_gen.io.raw_dataset import RawDataset
from nnunet_gen.qc.figures import slice_montage, tumour_slice


def qc_montage(dataset: str | int, out: str, num_cases: int = 3, variants_per_case: int = 3) -> str:
    """PNG: per real case with GBA copies, the original, the naive-rescaled and the GBA axial slice through the tumour
    (red: tumour contour). The naive panel is re-rendered from the GBA copy's recorded parameters with
    ``blend=False`` (same alpha, same code path), so each naive/GBA pair differs only in the blending."""
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
    rows = []
    for source_id in sorted(copies)[:num_cases]:
        case = raw.read_case(source_id)
        first = manifest.cases[copies[source_id][0]].params
        tumour = np.isin(case.label, first["labels"])
        z = tumour_slice(tumour.astype(np.uint8))
        contour = tumour[z]
        row = [(f"{source_id} original", case.images[int(first.get("channel", 0)), z], contour)]
        by_alpha: dict[float, str] = {}
        for copy_id in copies[source_id]:  # one copy per alpha first, so a row shows different contrasts
            by_alpha.setdefault(manifest.cases[copy_id].params["alpha"], copy_id)
        shown = list(by_alpha.values()) + [c for c in copies[source_id] if c not in by_alpha.values()]
        for copy_id in shown[:variants_per_case]:
            params = manifest.cases[copy_id].params
            channel = int(params.get("channel", 0))
            naive = GenerativeBlending.from_parameters({**params, "blend": False})(case.images[channel], case.label)
            gba = raw.read_case(copy_id).images[channel]
            row.append((f"naive a={params['alpha']:g}", naive[z], contour))
            row.append((f"GBA a={params['alpha']:g} n={params['start_scale']}", gba[z], contour))
        rows.append(row)
    slice_montage(rows, out, f"{raw.name}: original / naive rescaling / GBA (red: tumour)")
    return out
