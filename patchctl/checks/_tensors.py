"""Reading safetensors tensors with numpy from the raw bytes (no torch, no safetensors package).

Used by the ``format`` check (every adapter value finite) and by :func:`drift_report`.
BF16 is widened exactly to float32 (``uint16 << 16``); F16/F32/F64 are read as they are.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from patchctl.bases import ITEMSIZE, header_length, tensor_nbytes
from patchctl.errors import InvalidInputError

__all__ = [
    "FLOAT_DTYPES",
    "ITEMSIZE",
    "iter_tensor_chunks",
    "nonfinite_count",
    "read_tensor",
    "tensor_span",
]

#: the floating dtypes patchctl decodes (and merges)
FLOAT_DTYPES: dict[str, str] = {"BF16": "<u2", "F16": "<f2", "F32": "<f4", "F64": "<f8"}
_CHUNK_VALUES = 4 * 1024 * 1024


def tensor_span(path: Path, info: Mapping[str, Any], *, file_size: int | None = None) -> tuple[int, int]:
    """Absolute ``(start, length)`` in the file of a tensor given its header entry; checks the offsets."""
    dtype = str(info.get("dtype"))
    shape = tuple(int(d) for d in info.get("shape", ()))
    offsets = info.get("data_offsets")
    if not (isinstance(offsets, (list, tuple)) and len(offsets) == 2):
        raise InvalidInputError(f"{path}: tensor has no valid data_offsets")
    begin, end = int(offsets[0]), int(offsets[1])
    if dtype not in ITEMSIZE:
        raise InvalidInputError(f"{path}: unknown safetensors dtype {dtype!r}")
    expected = tensor_nbytes(dtype, shape)
    if begin < 0 or end < begin or end - begin != expected:
        raise InvalidInputError(
            f"{path}: data_offsets [{begin}, {end}] do not hold {dtype}{list(shape)} ({expected} bytes)"
        )
    with open(path, "rb") as f:
        start = 8 + header_length(f.read(8)) + begin
    size = os.path.getsize(path) if file_size is None else file_size
    if start + expected > size:
        raise InvalidInputError(f"{path}: tensor data ends past the end of the file (truncated?)")
    return start, expected


def _decode(raw: bytes, dtype: str) -> npt.NDArray[np.floating[Any]]:
    arr = np.frombuffer(raw, dtype=FLOAT_DTYPES[dtype])
    if dtype == "BF16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr


def iter_tensor_chunks(
    path: Path, info: Mapping[str, Any], *, chunk_values: int = _CHUNK_VALUES
) -> Iterator[npt.NDArray[np.floating[Any]]]:
    """The values of one floating tensor as flat numpy chunks (bounded memory)."""
    dtype = str(info.get("dtype"))
    if dtype not in FLOAT_DTYPES:
        raise InvalidInputError(f"{path}: cannot decode {dtype} values (floating dtypes only: BF16, F16, F32, F64)")
    start, length = tensor_span(path, info)
    step = chunk_values * ITEMSIZE[dtype]
    with open(path, "rb") as f:
        f.seek(start)
        left = length
        while left > 0:
            raw = f.read(min(step, left))
            if not raw:
                raise InvalidInputError(f"{path}: tensor data truncated")
            left -= len(raw)
            yield _decode(raw, dtype)


def read_tensor(path: Path, info: Mapping[str, Any]) -> npt.NDArray[np.floating[Any]]:
    """One floating tensor as a numpy array of its shape (BF16 widened to float32)."""
    shape = tuple(int(d) for d in info["shape"])
    chunks = list(iter_tensor_chunks(path, info))
    if not chunks:
        return np.zeros(shape, dtype=np.float64 if info["dtype"] == "F64" else np.float32)
    flat = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
    return flat.reshape(shape)


def nonfinite_count(path: Path, info: Mapping[str, Any]) -> int:
    """How many NaN/±inf values a floating tensor holds (streamed in chunks)."""
    return sum(int(chunk.size - np.count_nonzero(np.isfinite(chunk))) for chunk in iter_tensor_chunks(path, info))
