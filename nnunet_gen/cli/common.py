"""Argument helpers every ``nnunet-gen`` subcommand module shares (defined once, imported by each)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from nnunet_gen.errors import DataError


def add_render_target(parser: argparse.ArgumentParser, default_suffix: str) -> None:
    """The arguments every ``render`` generator shares: source ``-d``, new dataset ``-o`` and ``--name``."""
    parser.add_argument("-d", required=True, help="source dataset ID or name")
    parser.add_argument("-o", type=int, required=True, help="new dataset ID")
    parser.add_argument("--name", help=f"new dataset name (default: source name + {default_suffix})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset of that name")


def add_device(parser: argparse.ArgumentParser) -> None:
    """``-device`` as nnU-Net spells it (``--device`` too); default: cuda when torch sees a GPU, else cpu."""
    parser.add_argument("-device", "--device", dest="device", help="cuda, cpu or mps (default: cuda when available)")


def device(args: argparse.Namespace) -> str:
    """The device the user asked for, or the default of :func:`add_device`."""
    from nnunet_gen.run.nnunet import default_device
    return args.device or default_device()


def fold(value: str) -> int | str:
    """A fold as nnU-Net's ``-f`` takes it: an integer, or ``all`` (trained on every case)."""
    if value == "all":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a fold is an integer or 'all', not {value!r}") from None


def training_environment(device_name: str) -> dict[str, str]:
    """Extra environment of nnU-Net trainings: on a CPU, no data-augmentation worker processes
    (``nnUNet_n_proc_DA=0``) unless the user set it; it is never given to planning, which it crashes."""
    import os
    if device_name == "cpu" and "nnUNet_n_proc_DA" not in os.environ:
        return {"nnUNet_n_proc_DA": "0"}
    return {}


def add_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default; 1 is fastest for small models on a busy CPU)")


def apply_threads(args: argparse.Namespace) -> None:
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)


def target_name(args: argparse.Namespace, suffix: str) -> str:
    """``--name``, or the source dataset's name + ``suffix``."""
    from nnunet_gen.io.raw_dataset import RawDataset
    return args.name or f"{RawDataset.find(args.d).short_name}{suffix}"


def parse_label_names(pairs: list[str] | None) -> dict[str, int] | None:
    """``background=0 tumour=1`` -> ``{"background": 0, "tumour": 1}``."""
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if not name or not value.lstrip("-").isdigit():
            raise DataError("--labels-map", f"expected name=value, got '{pair}'")
        if name in out:
            raise DataError("--labels-map", f"label '{name}' given twice")
        out[name] = int(value)
    return out


def read_json_file(path: str, option: str) -> Any:
    """A JSON file named by ``option``; a missing or invalid file is a one-line error."""
    file = Path(path)
    if not file.is_file():
        raise DataError(option, f"file not found: {file}")
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(option, f"{file} is not valid JSON ({error})") from None


def nested_subparsers(sub: argparse._SubParsersAction, name: str, help_text: str) -> argparse._SubParsersAction:
    """Subparsers of top-level command ``name``, created if absent (several modules add ``qc X`` commands)."""
    parser = sub.choices.get(name)
    if parser is None:
        return sub.add_parser(name, help=help_text).add_subparsers(dest=f"{name}_command", required=True)
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
