"""Acquisition site of every case, for multi-site methods (adversarial normalisation).

Sources, the first that exists wins: the JSON file named by ``$nnunet_gen_SITES``, else ``nnunet_gen_sites.json``
in the raw dataset folder (both ``{"case_id": "site", ...}``), else ``params["site"]`` of the dataset's manifest.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from nnunet_gen.errors import DataError
from nnunet_gen.io.manifest import Manifest
from nnunet_gen.io.raw_dataset import nnunet_dir

SITES_FILE = "nnunet_gen_sites.json"
SITES_ENV = "nnunet_gen_SITES"


def _site_table(dataset_name: str) -> tuple[dict[str, str], str]:
    """Case -> site from the first existing source, and the source's name for messages."""
    folder = nnunet_dir("nnUNet_raw") / dataset_name
    env = os.environ.get(SITES_ENV)
    if env and not Path(env).is_file():
        raise DataError(env, f"sites file not found (${SITES_ENV})")
    for path in ([Path(env)] if env else []) + [folder / SITES_FILE]:
        if path.is_file():
            table = json.loads(path.read_text())
            if not isinstance(table, dict):
                raise DataError(str(path), "expected a JSON object mapping case IDs to sites")
            return {str(c): str(s) for c, s in table.items()}, str(path)
    manifest = Manifest.load(folder)
    table = {} if manifest is None else {c: str(r.params["site"]) for c, r in manifest.cases.items()
                                         if "site" in r.params}
    return table, f"the manifest of {dataset_name} (or ${SITES_ENV} / {SITES_FILE})"


def case_sites(dataset_name: str, case_ids: Sequence[str]) -> dict[str, str]:
    """Site of each case; refuses a case without a site and fewer than two sites among ``case_ids``."""
    table, source = _site_table(dataset_name)
    missing = [c for c in case_ids if c not in table]
    if missing:
        raise DataError(f"case {missing[0]}", f"no site in {source} ({len(missing)} case(s) without one)")
    sites = {c: table[c] for c in case_ids}
    if len(set(sites.values())) < 2:
        raise DataError(dataset_name, f"all {len(case_ids)} cases come from one site "
                                      f"({next(iter(sites.values()), 'none')}); multi-site training needs at least 2")
    return sites


def site_balanced_probabilities(identifiers: Sequence[str], sites: dict[str, str]) -> np.ndarray:
    """Sampling probability per identifier: every site gets the same total, spread uniformly over its cases."""
    counts: dict[str, int] = {}
    for i in identifiers:
        counts[sites[i]] = counts.get(sites[i], 0) + 1
    return np.array([1.0 / len(counts) / counts[sites[i]] for i in identifiers])
