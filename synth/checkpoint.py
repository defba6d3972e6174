"""Safe model files for every generator in ``synth``: safetensors only, atomic writes, one error type.

A checkpoint is one safetensors file (tensors + a string metadata header, never pickle). ``format_key`` names the
metadata entry that identifies the model kind, so a SinGAN file is never loaded as a harmoniser and vice versa.
Every failure to read one (missing, truncated, not safetensors, another model's file) is a :class:`CheckpointError`
with a one-line message; nothing else escapes :func:`load_tensors`.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import Callable, Iterator

import torch


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message is one line naming the file and the reason."""


class JsonConfig:
    """Mixin of the frozen dataclass configurations stored in checkpoint metadata: :meth:`to_json` and back, lists
    restored to tuples (configurations hold tuples), unknown keys refused (a checkpoint of another version)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str):
        raw = json.loads(text)
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {sorted(unknown)}")
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in raw.items()})


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then rename it into place.

    A process killed during ``write`` leaves only a hidden ``.<name>.*`` file, never a partial ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def sha256_of_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (checkpoint provenance in manifests)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write ``tensors`` (moved to CPU, contiguous) and ``metadata`` atomically as safetensors."""
    from safetensors.torch import save_file
    cpu = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in tensors.items()}
    atomic_write(path, lambda temporary: save_file(cpu, temporary, metadata=metadata))
    return Path(path)


def load_tensors(path: str | os.PathLike, format_key: str,
                 format_value: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a :func:`save_tensors` file whose metadata holds ``format_key`` (equal to
    ``format_value`` when given); every other file raises :class:`CheckpointError`."""
    from safetensors import safe_open
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            if format_key not in metadata or (format_value is not None and metadata[format_key] != format_value):
                found = metadata.get(format_key, "no such entry")
                raise CheckpointError(f"{path}: not a {format_value or format_key} checkpoint "
                                      f"(metadata '{format_key}': {found})")
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except CheckpointError:
        raise
    except Exception as error:  # safetensors raises its own types for truncated or foreign files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({reason})") from None
    return tensors, metadata


def generator_tensors(generator: torch.nn.Module, history: dict[str, list[float]]) -> dict[str, torch.Tensor]:
    """The tensors of a generator checkpoint: ``generator.<weights>`` and the training ``history.<loss>`` curves
    (float64 tensors: a long run's history would overflow the metadata header as JSON)."""
    tensors = {f"generator.{name}": value for name, value in generator.state_dict().items()}
    tensors.update({f"history.{name}": torch.tensor(values, dtype=torch.float64) for name, values in history.items()})
    return tensors



def load_generator_weights(generator: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> torch.nn.Module:
    """``generator`` with the ``generator.*`` weights of :func:`generator_tensors` (strict: every key must fit)."""
    generator.load_state_dict({name[len("generator."):]: value for name, value in tensors.items()
                               if name.startswith("generator.")}, strict=True)
    return generator


def history_of(tensors: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """The ``history.*`` curves of :func:`generator_tensors`."""
    return {name[len("history."):]: value.tolist() for name, value in tensors.items() if name.startswith("history.")}


@contextmanager
def architecture_check(path: str | os.PathLike, kind: str) -> Iterator[None]:
    """Turn what goes wrong while rebuilding a model from a checkpoint's metadata and weights (missing keys,
    unknown configuration fields, another architecture) into one :class:`CheckpointError` naming ``kind``."""
    try:
        yield
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        raise CheckpointError(f"{path}: {kind} checkpoint does not match its architecture ({reason})") from None
