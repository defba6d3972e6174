"""Provenance manifest of a raw dataset: where every case comes from and how it was made.

Stored as ``nnunet_gen_manifest.json`` in the dataset folder. A synthetic case records its source case, the
generator, the generator's parameters and seed, and the SHA-256 of any checkpoint, so the case can be re-rendered
exactly. ``group`` is the patient a case belongs to: grouped splits keep a whole group in one fold.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from nnunet_gen.errors import DataError
from nnunet_gen.io.files import write_text

MANIFEST_FILE = "nnunet_gen_manifest.json"
FORMAT = "nnunet_gen-manifest-1"
KINDS = ("real", "translated", "synthetic", "pseudo_labelled")
#: Kinds of the labelled cases a dataset is built on: they validate, and renderers make variants of them.
BASE_KINDS = ("real", "translated")

#: ``CaseRecord.generator`` names, one vocabulary for the renderers that write them and the trainers that check them.
NAIVE_GENERATOR = "naive_rescale"
GBA_GENERATOR = "gba"
ARH_GENERATOR = "arhnet"
COPY_PASTE_GENERATOR = "copy_paste"
CARVEMIX_GENERATOR = "carvemix"
ARH_GENERATORS = (ARH_GENERATOR, COPY_PASTE_GENERATOR, CARVEMIX_GENERATOR)
SELFTRAIN_GENERATOR = "selftrain"
TRANSLATE_GENERATOR = "translate"
STYLEGAN_GENERATOR = "stylegan2"


@dataclass
class CaseRecord:
    """Provenance of one training case.

    kind: ``real`` (labelled original), ``translated`` (a real case's image translated into another modality, with
    its real label: the labelled base of a pseudo-target dataset), ``synthetic`` (rendered from ``source_case``) or
    ``pseudo_labelled`` (unlabelled image with a predicted label). Only base cases (real or translated) may ever be
    validation cases.
    """

    case_id: str
    kind: str
    source_case: str
    group: str
    generator: str | None = None
    params: dict = field(default_factory=dict)
    seed: int | None = None
    checkpoint_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"case {self.case_id}", f"unknown manifest kind '{self.kind}'")

    @property
    def is_base(self) -> bool:
        """A labelled case the dataset is built on (real or translated), not a copy or a pseudo-label."""
        return self.kind in BASE_KINDS


@dataclass
class Manifest:
    """All case records of one dataset plus dataset-level provenance."""

    source_dataset: str | None = None
    command: str | None = None
    cases: dict[str, CaseRecord] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_real_cases(cls, case_ids: Iterable[str], groups: dict[str, str] | None = None) -> "Manifest":
        """Manifest of a plain labelled dataset; each case is its own patient unless ``groups`` says otherwise."""
        groups = groups or {}
        return cls(cases={c: CaseRecord(c, "real", c, groups.get(c, c)) for c in case_ids})

    def add(self, record: CaseRecord) -> None:
        if record.case_id in self.cases:
            raise DataError(f"case {record.case_id}", "already in the manifest")
        self.cases[record.case_id] = record

    def has_generator(self, *generators: str) -> bool:
        """True when some case was made by one of ``generators``."""
        return any(r.generator in generators for r in self.cases.values())

    def base_cases(self) -> list[str]:
        """Sorted IDs of the real and translated cases (see :attr:`CaseRecord.is_base`)."""
        return sorted(c for c, r in self.cases.items() if r.is_base)

    def of_kind(self, kind: str) -> list[str]:
        return sorted(c for c, r in self.cases.items() if r.kind == kind)

    def to_json(self) -> dict:
        return {"format": FORMAT, "source_dataset": self.source_dataset, "command": self.command,
                "cases": {c: asdict(r) for c, r in sorted(self.cases.items())},
                "skipped": dict(sorted(self.skipped.items()))}

    def save(self, dataset_folder: str | Path) -> None:
        write_text(Path(dataset_folder) / MANIFEST_FILE, json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, dataset_folder: str | Path) -> "Manifest | None":
        """The dataset's manifest, or None when it has none (a dataset not made by nnunet_gen)."""
        path = Path(dataset_folder) / MANIFEST_FILE
        if not path.is_file():
            return None
        d = json.loads(path.read_text())
        if d.get("format") != FORMAT:
            raise DataError(Path(dataset_folder).name, f"{MANIFEST_FILE} has unknown format {d.get('format')!r}")
        return cls(d.get("source_dataset"), d.get("command"),
                   {c: CaseRecord(**r) for c, r in d["cases"].items()}, d.get("skipped", {}))
