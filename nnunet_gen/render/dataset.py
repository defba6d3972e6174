"""Pre-rendering synthetic cases into a new nnU-Net raw dataset, with provenance.

``render_dataset`` copies every case of the source dataset and adds the variants a renderer makes of each real
case; each variant is a deterministic function of (source case, recorded parameters), written with its
:class:`CaseRecord`. One module per generator (``naive``, ``gba``, ``arh``) provides a :data:`Renderer`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
from tqdm import tqdm

from nnunet_gen.errors import DataError
from nnunet_gen.io.manifest import CaseRecord, Manifest
from nnunet_gen.io.raw_dataset import Case, RawDataset, check_case
from nnunet_gen.io.writer import DatasetWriter


@dataclass
class Variant:
    """One synthetic case made from a real one: ID suffix, arrays and provenance."""

    suffix: str
    images: np.ndarray
    label: np.ndarray
    generator: str
    params: dict
    seed: int | None = None
    checkpoint_sha256: str | None = None
    extra: dict = field(default_factory=dict)
    dropped: str | None = None  # why this copy is not written (recorded in the manifest's ``skipped``)


#: A renderer maps a real case to its variants, or raises :class:`SkipCase` with the reason.
Renderer = Callable[[Case], Iterable[Variant]]


class SkipCase(Exception):
    """A real case the renderer cannot use (e.g. no tumour voxels); recorded in the manifest, not an error."""


def render_dataset(source: str | int, target_id: int, target_name: str, renderer: Renderer, job: dict,
                   overwrite: bool = False, desc: str = "render", labels: Sequence[int] = ()) -> Manifest:
    """Write ``DatasetXXX_<target_name>`` = all source cases + the renderer's variants of each real case.

    ``labels`` (the label values the renderer alters) must exist in the source's dataset.json. A run in which the
    renderer skips every case is refused: a dataset without synthetic cases is never published.
    """
    src = RawDataset.find(source)
    unknown = sorted(set(labels) - set(src.foreground_labels))
    if unknown:
        raise DataError("--labels", f"{unknown} not among the foreground labels {src.foreground_labels} of "
                                    f"{src.name}")
    src_manifest = src.manifest()
    manifest = Manifest(source_dataset=src.name, command=job.get("command"))
    allowed = set(src.labels.values())
    with DatasetWriter(target_id, target_name, src.dataset_json["channel_names"], src.labels,
                       {**job, "source": src.name}, src.file_ending, overwrite) as writer:
        for case_id in tqdm(src.case_ids(), desc=desc, unit="case"):
            record = src_manifest.cases.get(case_id) or CaseRecord(case_id, "real", case_id, case_id)
            manifest.add(record)
            case = src.read_case(case_id)
            check_case(case, allowed, allow_empty_labels=True)
            if not writer.has_case(case_id):
                writer.write_case(case_id, case.images, case.label, case.geometry)
            if not record.is_base:
                continue
            try:
                variants = list(renderer(case))
            except SkipCase as reason:
                manifest.skipped[case_id] = str(reason)
                continue
            for v in variants:
                new_id = f"{case_id}_{v.suffix}"
                if v.dropped is not None:
                    manifest.skipped[new_id] = v.dropped
                    continue
                manifest.add(CaseRecord(new_id, "synthetic", case_id, record.group, v.generator, v.params, v.seed,
                                        v.checkpoint_sha256))
                if not writer.has_case(new_id):
                    if not np.isfinite(v.images).all():
                        raise DataError(f"case {new_id}", "renderer produced NaN or infinite values")
                    writer.write_case(new_id, v.images, v.label, case.geometry)
        if not manifest.of_kind("synthetic"):
            reasons = sorted(set(manifest.skipped.values()))
            raise DataError(src.name, f"no synthetic case rendered: every case was skipped"
                                      f"{' (' + reasons[0] + ')' if reasons else ''}")
        writer.finalize(manifest, description=f"{job.get('command')} of {src.name} (nnunet_gen)")
    return manifest
