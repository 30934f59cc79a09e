"""Byte-level file copying for the merge engine (no torch): positioned reads/writes and
kernel-side range copies (``copy_file_range`` → ``sendfile`` → chunked)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["copy_file", "copy_range", "pread_exact", "pwrite_all"]

_COPY_CHUNK = 64 * 1024 * 1024
_FALLBACK_CHUNK = 8 * 1024 * 1024


def pread_exact(fd: int, n: int, offset: int, into: bytearray | None = None) -> bytearray:
    """Read exactly ``n`` bytes at ``offset``, into ``into`` (reused, at least ``n`` long) or a new buffer."""
    buf = into if into is not None and len(into) >= n else bytearray(n)
    view = memoryview(buf)
    done = 0
    while done < n:
        got = os.preadv(fd, [view[done:n]], offset + done)  # n bytes, not the whole reused buffer
        if got == 0:
            raise OSError(f"unexpected end of file reading {n} bytes at {offset}")
        done += got
    return buf


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


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


def copy_file(src: Path, dst: Path) -> None:
    """Copy a regular file (following symlinks, as in a Hub cache snapshot), in the kernel where possible."""
    size = src.stat().st_size
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        copy_range(fi.fileno(), fo.fileno(), size, 0, 0)
        os.fsync(fo.fileno())
