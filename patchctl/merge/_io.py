"""Low-level safetensors I/O for streaming: read one tensor with plain reads, write headers,
copy byte ranges between files without passing them through Python (``copy_file_range``)."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["TORCH_DTYPES", "copy_range", "encode_header", "pread_exact", "pwrite_all", "read_tensor", "tensor_bytes"]

TORCH_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}
_COPY_CHUNK = 64 * 1024 * 1024
_FALLBACK_CHUNK = 8 * 1024 * 1024


def encode_header(header: Mapping[str, Any]) -> bytes:
    """``8-byte little-endian length + JSON``, the JSON padded with spaces to a multiple of 8."""
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def pread_exact(fd: int, n: int, offset: int, into: bytearray | None = None) -> bytearray:
    """Read exactly ``n`` bytes at ``offset``, into ``into`` (reused, at least ``n`` long) or a new buffer."""
    buf = into if into is not None and len(into) >= n else bytearray(n)
    view = memoryview(buf)
    done = 0
    while done < n:
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            raise OSError(f"unexpected end of file reading {n} bytes at {offset}")
        done += got
    return buf


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


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


def copy_range(src: int, dst: int, length: int, src_off: int, dst_off: int) -> None:
    """Copy ``length`` bytes between files in the kernel (reflink/zero-copy where the FS can).

    ``os.copy_file_range`` first, then ``os.sendfile``, then a chunked read/write.
    """
    done = 0
    mode = "copy_file_range" if hasattr(os, "copy_file_range") else "sendfile"
    while done < length:
        n = min(_COPY_CHUNK, length - done)
        if mode == "copy_file_range":
            try:
                got = os.copy_file_range(src, dst, n, src_off + done, dst_off + done)
            except OSError:  # EXDEV on old kernels, ENOSYS, EINVAL on some filesystems
                mode = "sendfile"
                continue
        elif mode == "sendfile":
            try:
                os.lseek(dst, dst_off + done, os.SEEK_SET)
                got = os.sendfile(dst, src, src_off + done, n)
            except OSError:
                mode = "chunked"
                continue
        else:
            chunk = pread_exact(src, min(n, _FALLBACK_CHUNK), src_off + done)
            pwrite_all(dst, chunk, dst_off + done)
            got = len(chunk)
        if got == 0:
            raise OSError(f"unexpected end of file copying {length} bytes at {src_off}")
        done += got
