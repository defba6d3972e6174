"""Safe file writing and file checks shared by every stage: atomic writes, checksums, raw image validation.

:func:`atomic_write` and :func:`sha256_of_file` are the ones ``synth`` uses for checkpoints (written once, there).
:func:`check_image_file` looks at the bytes of an image file, because SimpleITK's NIfTI reader silently turns
NaN/inf voxels into 0 and zero-fills a truncated ``.nii.gz``: checking the decoded array cannot see either.
"""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from nnunet_gen.errors import DataError
from synth.checkpoint import atomic_write, sha256_of_file

__all__ = ["atomic_write", "sha256_of_file", "write_text", "write_bytes", "check_image_file", "TEMPORARY_PREFIX"]

#: Temporary files of :func:`atomic_write` start with a dot; listings of cases skip every hidden file.
TEMPORARY_PREFIX = "."

#: NIfTI-1 datatype code -> numpy dtype of the voxels (the float types are the ones that can hold NaN/inf).
_NIFTI_FLOAT_TYPES = {16: np.float32, 64: np.float64}
_NIFTI_HEADER_BYTES = 348
_NIFTI2_HEADER_BYTES = 540


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write ``data`` to ``path``."""
    atomic_write(path, lambda temporary: Path(temporary).write_bytes(data))


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write a UTF-8 text file."""
    write_bytes(path, text.encode("utf-8"))


def _nifti_bytes(path: Path, where: str) -> bytes:
    """The decompressed bytes of a ``.nii``/``.nii.gz`` file; a truncated or corrupt gzip stream is a DataError."""
    if not path.name.endswith(".gz"):
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as stream:
            return stream.read()
    except gzip.BadGzipFile:
        raise DataError(where, f"{path.name} is not gzip-compressed (not a valid .nii.gz)") from None
    except EOFError:
        raise DataError(where, f"{path.name} is truncated (its gzip stream ends early)") from None
    except (OSError, zlib.error) as error:
        raise DataError(where, f"{path.name} is corrupt ({error})") from None


def check_image_file(path: str | os.PathLike, where: str) -> None:
    """Refuse a NIfTI file that is truncated (fewer voxel bytes than its header declares, or a broken gzip stream)
    or whose stored float voxels hold NaN or inf. Other formats are left to the reader, which refuses them itself."""
    path = Path(path)
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        return
    data = _nifti_bytes(path, where)
    if len(data) < _NIFTI_HEADER_BYTES:
        raise DataError(where, f"{path.name} is truncated (no complete NIfTI header)")
    if _NIFTI2_HEADER_BYTES in (int.from_bytes(data[0:4], "little"), int.from_bytes(data[0:4], "big")):
        return  # NIfTI-2: the gzip stream was complete; the reader checks the rest
    order = "<" if int.from_bytes(data[0:4], "little") == _NIFTI_HEADER_BYTES else ">"
    header = np.frombuffer(data[:_NIFTI_HEADER_BYTES], dtype=np.uint8)
    dims = header[40:56].view(f"{order}i2")
    datatype = int(header[70:72].view(f"{order}i2")[0])
    bitpix = int(header[72:74].view(f"{order}i2")[0])
    offset = int(header[108:112].view(f"{order}f4")[0])
    n_dims = int(dims[0])
    if not 1 <= n_dims <= 7 or bitpix <= 0 or offset < _NIFTI_HEADER_BYTES:
        raise DataError(where, f"{path.name} has an invalid NIfTI header")
    voxels = int(np.prod([max(int(d), 1) for d in dims[1:n_dims + 1]], dtype=np.int64))
    needed = offset + voxels * bitpix // 8
    if len(data) < needed:
        raise DataError(where, f"{path.name} is truncated ({len(data)} of {needed} bytes)")
    if datatype in _NIFTI_FLOAT_TYPES:
        values = np.frombuffer(data, dtype=np.dtype(_NIFTI_FLOAT_TYPES[datatype]).newbyteorder(order),
                               count=voxels, offset=offset)
        if not np.isfinite(values).all():
            raise DataError(where, f"{path.name} contains NaN or infinite values")
