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


def encode_header(header: Mapping[str, Any], *, like: int | None = None, align: int = 4096) -> bytes:
    """``8-byte little-endian length + JSON``, the JSON padded with spaces to a multiple of 8.

    ``like``: the data offset of the file this one is made from (8 + its header's length); the
    padding then gives this header's data offset the same remainder modulo ``align`` (at most
    ``align`` more spaces, which the format allows), so that a tensor's bytes lie at the same
    offsets modulo ``align`` in both files: blocks read from the one with ``O_DIRECT`` can be
    written to the other with ``O_DIRECT`` as they are (``DirectSink``). Not done when ``like``
    is not a multiple of 8 (the JSON's length would not be either)."""
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    if like is not None and like % 8 == 0:
        raw += b" " * ((like - 8 - len(raw)) % align)
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
