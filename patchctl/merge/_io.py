"""Low-level safetensors I/O for streaming: read one tensor with plain reads, write headers,
copy byte ranges between files without passing them through Python (``copy_file_range``)."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

import torch

from patchctl.merge._copy import copy_range, pread_exact, pwrite_all

__all__ = ["TORCH_DTYPES", "copy_range", "encode_header", "pread_exact", "pwrite_all", "read_tensor", "tensor_bytes"]

TORCH_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}


def encode_header(header: Mapping[str, Any]) -> bytes:
    """``8-byte little-endian length + JSON``, the JSON padded with spaces to a multiple of 8."""
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def read_tensor(
    fd: int, offset: int, nbytes: int, dtype: str, shape: tuple[int, ...], *, into: bytearray | None = None
) -> torch.Tensor:
    """One tensor from a safetensors file, read with plain reads (no mmap) into a writable buffer:
    ``into`` when it is large enough (the tensor then aliases it), else a fresh one."""
    tdtype = TORCH_DTYPES[dtype]
    if nbytes == 0:
        return torch.empty(shape, dtype=tdtype)
    buf = pread_exact(fd, nbytes, offset, into)
    return torch.frombuffer(buf, dtype=tdtype, count=nbytes // tdtype.itemsize).reshape(shape)


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """The raw little-endian bytes of a tensor, without a copy when it is contiguous."""
    t = t.contiguous()
    if t.numel() == 0:
        return memoryview(b"")
    raw: Any = t.view(-1).view(torch.uint8).numpy()
    return memoryview(raw)
