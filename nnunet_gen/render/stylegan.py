"""Fake cases from the joint StyleGAN2 (Son et al.) into a new raw dataset: images + argmax labels, with the latent
seed of each so it can be re-rendered exactly.

The model generates 2D slices, so a fake case is a one-slice volume (1, R, R) with the in-plane spacing recorded at
training; datasets with fakes are trained with nnU-Net's ``2d`` configuration (the paper trains a 2D U-Net; a stack
of independent fake slices would not be a 3D volume). ``with_real`` copies the real labelled cases too (the paper's
"F + R" settings). Each fake is its own group: it trains in every fold. The generator saw every real case, the
validation patients' too, so the cross-validation Dice of a mixed dataset is optimistic: evaluate on held-out cases.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from nnunet_gen.errors import DataError
from nnunet_gen.generators.stylegan import load_stylegan
from nnunet_gen.io.files import sha256_of_file
from nnunet_gen.io.images import Geometry
from nnunet_gen.io.manifest import STYLEGAN_GENERATOR, CaseRecord, Manifest
from nnunet_gen.io.raw_dataset import RawDataset
from nnunet_gen.io.writer import DatasetWriter

def fake_case_id(seed: int) -> str:
    return f"fake_{seed:06d}"


def render_stylegan(checkpoint: str | Path, dataset_id: int, name: str, seeds: Sequence[int],
                    truncation_psi: float = 1.0, with_real: str | int | None = None, device: str = "cpu",
                    batch_size: int = 16, overwrite: bool = False) -> Manifest:
    """Write ``DatasetXXX_<name>``: one fake case per latent seed (+ the real cases of ``with_real``)."""
    if not seeds:
        raise DataError("--num", "render at least one fake case")
    if not 0 <= truncation_psi <= 1:
        raise DataError("--truncation", f"psi must be in [0, 1], got {truncation_psi}")
    model, provenance = load_stylegan(checkpoint, device)
    digest = sha256_of_file(checkpoint)
    geometry = Geometry.axis_aligned(provenance["spacing_zyx"])
    real = RawDataset.find(with_real) if with_real is not None else None
    if real is not None and (real.dataset_json["channel_names"] != provenance["channel_names"]
                             or real.labels != provenance["labels"]):
        raise DataError(real.name, f"channels/labels differ from the generator's training dataset "
                                   f"{provenance['dataset']}")
    job = {"command": "render stylegan", "checkpoint_sha256": digest, "seeds": [int(s) for s in seeds],
           "truncation_psi": truncation_psi, "with_real": real.name if real else None}
    manifest = Manifest(source_dataset=provenance["dataset"], command="render stylegan")
    with DatasetWriter(dataset_id, name, provenance["channel_names"], provenance["labels"], job,
                       overwrite=overwrite) as writer:
        if real is not None:
            source_manifest = real.manifest()
            for case_id in tqdm(real.case_ids(), desc="copy real", unit="case"):
                manifest.add(source_manifest.cases.get(case_id) or CaseRecord(case_id, "real", case_id, case_id))
                if not writer.has_case(case_id):
                    writer.copy_case(case_id, real.image_files(case_id), real.label_file(case_id))
        todo = [int(s) for s in seeds]
        for start in tqdm(range(0, len(todo), batch_size), desc="render stylegan", unit="batch"):
            batch = todo[start:start + batch_size]
            images, labels = model.generate(batch, truncation_psi)
            for seed, image, label in zip(batch, images, labels):
                case_id = fake_case_id(seed)
                manifest.add(CaseRecord(case_id, "synthetic", "stylegan2", case_id, STYLEGAN_GENERATOR,
                                        {"latent_seed": seed, "truncation_psi": truncation_psi}, seed, digest))
                if not writer.has_case(case_id):
                    if not np.isfinite(image).all():
                        raise DataError(f"case {case_id}", "generator produced NaN or infinite values")
                    writer.write_case(case_id, image[:, None], label[None], geometry)
        writer.finalize(manifest, description=f"StyleGAN2 fakes of {provenance['dataset']} (nnunet_gen)")
    return manifest
