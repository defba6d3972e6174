"""ARHNet lesion composites rendered into a new raw dataset (Huo et al. 2023, section 3.2.2: "200 additional images"
made by Copy-Paste, then harmonised by ARHNet).

Composite ``k`` pastes a lesion of a donor case into recipient ``k mod n`` (real cases in sorted order); donors are
tried in an order drawn from ``default_rng([seed, k])`` until one lesion fits inside the recipient's tissue (image >
its minimum) away from its lesions. Each channel gets the same composite and is harmonised separately (the network
was trained on one channel). The manifest records the re-renderable composite (``composite_from_dict``), donor,
recipient, the harmoniser and the checkpoint SHA-256.

Grouping: a composite belongs to its **recipient's** patient group and lists the donor's group in
``params["linked_groups"]``, so grouped splits (``nnunet_gen.io.splits``) train it only in folds where neither patient
validates. A recipient that no donor lesion fits is skipped (``manifest.skipped``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from nnunet_gen.errors import DataError
from nnunet_gen.generators.arh import has_lesion, open_checkpoint, real_case_groups
from nnunet_gen.io.files import sha256_of_file
from nnunet_gen.io.manifest import ARH_GENERATOR, CARVEMIX_GENERATOR, COPY_PASTE_GENERATOR, Manifest
from nnunet_gen.io.raw_dataset import Case, RawDataset
from nnunet_gen.io.splits import LINKED_GROUPS_KEY
from nnunet_gen.render.dataset import Renderer, SkipCase, Variant, render_dataset
from synth.arhnet import Harmonizer, RandomCarveMix, RandomCopyPaste, derive_tissue_mask, harmonize_volume
from synth.arhnet.perturbation import IntensityScaling

#: ``--composite`` name -> (sampler factory taking the lesion labels, manifest generator name when not harmonised).
COMPOSITES: dict[str, tuple[Callable[[tuple[int, ...]], RandomCopyPaste | RandomCarveMix], str]] = {
    "copypaste": (lambda labels: RandomCopyPaste(lesion_labels=labels), COPY_PASTE_GENERATOR),
    "carvemix": (lambda labels: RandomCarveMix(lesion_labels=labels), CARVEMIX_GENERATOR),
}


@dataclass(frozen=True)
class CompositePlan:
    """Which composites each recipient gets (global indices ``k``) and the donor candidates with their groups."""

    composites_of: dict[str, list[int]]
    donor_groups: dict[str, str]
    recipient_groups: dict[str, str]


def plan_composites(source: RawDataset, num: int, labels: Sequence[int]) -> CompositePlan:
    """Composite ``k`` goes to recipient ``k mod n`` of the sorted real cases; donors are the real cases with
    lesion voxels of ``labels``."""
    if num < 1:
        raise DataError("--num", f"must be >= 1, got {num}")
    recipients = real_case_groups(source)
    donors = {c: g for c, g in recipients.items() if has_lesion(source, c, labels)}
    if not donors:
        raise DataError(source.name, f"no real case has voxels with labels {list(labels)}: no lesion to paste")
    if len(recipients) < 2:
        raise DataError(source.name, "composites need at least two real labelled cases")
    order = sorted(recipients)
    composites_of: dict[str, list[int]] = {c: [] for c in order}
    for k in range(num):
        composites_of[order[k % len(order)]].append(k)
    return CompositePlan(composites_of, donors, recipients)


def arh_renderer(source: RawDataset, plan: CompositePlan, composite: str, labels: Sequence[int], seed: int,
                 harmonizer: Harmonizer | None, checkpoint_sha256: str | None) -> Renderer:
    """Renderer of :func:`nnunet_gen.render.render_dataset` making the planned composites of each recipient (see
    module docstring); ``harmonizer`` None writes the plain composites (the Copy-Paste / CarveMix arm)."""
    make_sampler, plain_generator = COMPOSITES[composite]
    sampler = make_sampler(tuple(labels))
    generator = plain_generator if harmonizer is None else ARH_GENERATOR
    suffix = {COPY_PASTE_GENERATOR: "cp", CARVEMIX_GENERATOR: "cm", ARH_GENERATOR: "arh"}[generator]

    def render(recipient: Case) -> Iterable[Variant]:
        tissue = derive_tissue_mask(recipient.images[0])
        for k in plan.composites_of.get(recipient.case_id, []):
            rng = np.random.default_rng([seed, k])
            candidates = sorted(d for d in plan.donor_groups if d != recipient.case_id)
            for donor_id in rng.permutation(candidates).tolist() if candidates else []:
                donor = source.read_case(donor_id)
                try:
                    transform = sampler.sample(donor.images[0], donor.label, recipient.images[0], recipient.label,
                                               rng, tissue_mask=tissue)
                except ValueError:  # the donor's lesion does not fit in this recipient's tissue
                    continue
                break
            else:
                raise SkipCase("no donor lesion fits inside this case's tissue away from its lesions")
            channels, pasted_mask, label = [], None, None
            for c in range(recipient.images.shape[0]):
                result = transform(donor.images[c], donor.label, recipient.images[c], recipient.label)
                pasted_mask, label = result.pasted_mask, result.label
                channels.append(result.image if harmonizer is None else harmonize_volume(
                    harmonizer, result.image, result.pasted_mask, tissue,
                    IntensityScaling.fit(result.image, warn=False)))
            donor_group, recipient_group = plan.donor_groups[donor_id], plan.recipient_groups[recipient.case_id]
            params = {"composite": transform.to_dict(), "composite_index": k, "donor_case": donor_id,
                      "recipient_case": recipient.case_id, "donor_group": donor_group,
                      LINKED_GROUPS_KEY: [] if donor_group == recipient_group else [donor_group],
                      "pasted_voxels": int(pasted_mask.sum()),
                      "harmonizer": None if harmonizer is None else json.loads(harmonizer.config.to_json())}
            yield Variant(f"{suffix}{k:04d}", np.stack(channels).astype(np.float32), label.astype(np.int16),
                          generator, json.loads(json.dumps(params)), seed, checkpoint_sha256)
    return render


def render_arh_dataset(source: str | int, target_id: int, target_name: str, checkpoint: str | Path | None,
                       num: int = 200, composite: str = "copypaste", labels: Sequence[int] = (1,), seed: int = 0,
                       overwrite: bool = False, device: str | torch.device = "cpu") -> Manifest:
    """New raw dataset = all cases of ``source`` + ``num`` composites, harmonised with the ARHNet ``checkpoint``
    (None: plain composites). Atomic and resumable through :class:`nnunet_gen.io.writer.DatasetWriter`."""
    if composite not in COMPOSITES:
        raise DataError("--composite", f"unknown composite {composite!r}; choose one of {sorted(COMPOSITES)}")
    src = RawDataset.find(source)
    harmonizer, sha = None, None
    if checkpoint is not None:
        harmonizer, sha = open_checkpoint(checkpoint, device), sha256_of_file(checkpoint)
    plan = plan_composites(src, num, labels)
    job = {"command": "render arh", "num": num, "composite": composite, "labels": list(labels), "seed": seed,
           "checkpoint_sha256": sha}
    return render_dataset(src.name, target_id, target_name, arh_renderer(src, plan, composite, labels, seed,
                                                                         harmonizer, sha),
                          job, overwrite, desc="render arh" if harmonizer else f"render {composite}")


