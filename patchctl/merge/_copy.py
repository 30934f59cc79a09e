"""Byte-level file copying for the merge engine (no torch): positioned reads/writes and
kernel-side range copies (``copy_file_range`` → ``sendfile`` → chunked)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import sys
from pathlib import Path

from patchctl._fs import DIRECT_ALIGN

__all__ = [
    "ALIGN",
    "DirectSink",
    "WriteBehind",
    "copy_file",
    "copy_range",
    "drop_cache",
    "pread_exact",
    "pwrite_all",
    "start_writeback",
]

_COPY_CHUNK = 64 * 1024 * 1024
_FALLBACK_CHUNK = 8 * 1024 * 1024


def pread_exact(fd: int, n: int, offset: int, into: bytearray | memoryview | None = None) -> bytearray | memoryview:
    """Read exactly ``n`` bytes at ``offset``, into ``into`` (reused, at least ``n`` long) or a new buffer."""
    buf: bytearray | memoryview = into if into is not None and len(into) >= n else bytearray(n)
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


# ---- the page cache, for outputs and bases larger than it can comfortably hold ------------------
_SYNC_FILE_RANGE_WAIT_BEFORE, _SYNC_FILE_RANGE_WRITE, _SYNC_FILE_RANGE_WAIT_AFTER = 1, 2, 4
_sync_file_range: object = None  # the libc function once looked up; False where there is none


def _libc_sync_file_range() -> object:
    global _sync_file_range
    if _sync_file_range is None:
        _sync_file_range = False
        if sys.platform.startswith("linux"):
            try:
                fn = ctypes.CDLL(None, use_errno=True).sync_file_range
                fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
                fn.restype = ctypes.c_int
                _sync_file_range = fn
            except (OSError, AttributeError):
                pass
    return _sync_file_range


def start_writeback(fd: int, offset: int, length: int, *, wait: bool = False) -> None:
    """Have the kernel start writing ``[offset, offset+length)`` of ``fd`` to disk now
    (``sync_file_range``; with ``wait``, return once it is written), so that a later ``fsync``
    finds little left to do and the dirty pages can be dropped. A no-op where unsupported:
    the final ``fsync`` still makes the file durable."""
    fn = _libc_sync_file_range()
    if fn and length > 0:
        flags = _SYNC_FILE_RANGE_WRITE
        if wait:
            flags |= _SYNC_FILE_RANGE_WAIT_BEFORE | _SYNC_FILE_RANGE_WAIT_AFTER
        fn(fd, offset, length, flags)  # type: ignore[operator]


def drop_cache(fd: int, offset: int, length: int) -> None:
    """Drop ``fd``'s clean cached pages in that range (``POSIX_FADV_DONTNEED``; a hint)."""
    if length > 0 and hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


class WriteBehind:
    """Written bytes of one file sent to disk as they come, a window at a time, and with
    ``drop``, dropped from the page cache once on disk: a 16 GB output then never fills the cache
    with dirty pages (whose reclaim costs more CPU than writing them), and the ``fsync`` at the
    end finds the file nearly written. Fed with ``wrote(offset, length)`` in file order."""

    WINDOW = 32 << 20

    def __init__(self, fd: int, *, drop: bool, start: int = 0) -> None:
        self.fd = fd
        self.drop = drop
        self._written = start  # contiguous bytes written from offset 0 (when fed in order)
        self._started = 0  # writeback started for [0, _started)
        self._settled = 0  # on disk (and dropped) for [0, _settled)
        self._in_order = True

    def wrote(self, offset: int, length: int) -> None:
        if not self._in_order or offset != self._written:
            self._in_order = False  # positional writes out of order: leave it to the final fsync
            return
        self._written += length
        if self._written - self._started >= self.WINDOW:
            start_writeback(self.fd, self._started, self._written - self._started)
            self._started = self._written
            if self.drop and self._started - self._settled >= 2 * self.WINDOW:
                # the window before the last one: wait for it (back-pressure: the writer does not
                # outrun the disk by more than two windows), then drop it
                end = self._started - self.WINDOW
                start_writeback(self.fd, self._settled, end - self._settled, wait=True)
                drop_cache(self.fd, self._settled, end - self._settled)
                self._settled = end


#: O_DIRECT I/O: offsets, lengths and buffer addresses in multiples of this
ALIGN = DIRECT_ALIGN


class DirectSink:
    """One file written front to back with ``O_DIRECT`` (``fd``, opened with it): the bytes go
    from our buffers to the disk, without a copy into the page cache, its dirty-page accounting
    and its reclaim (for a base larger than the cache, that path costs more CPU than the merge;
    measured here: 16 GB written through the cache, 8-15 s of system time). ``O_DIRECT`` writes
    whole aligned blocks from aligned memory, so the partial block at the end of each write is
    kept (``stage``) and written with the next one. A write whose bytes lie in a larger aligned
    buffer, at the position they have in the file modulo :data:`ALIGN` (``region``/``pos``: the
    reads of a base whose data offsets have that alignment, see ``encode_header``), is written
    from there (the carried block goes just before it, over bytes nobody reads); any other is
    copied through ``stage``. :meth:`close` writes the last block and truncates the file to its size."""

    def __init__(self, fd: int, stage_bytes: int = 1 << 20, *, fallback: int | None = None) -> None:
        self.fd = fd
        #: the same file opened without O_DIRECT: where what O_DIRECT refuses is written
        self._fallback = fallback
        #: set once O_DIRECT refused a write: the rest goes through ``fallback``
        self._refused = False
        #: bytes written so far (the file's size once closed)
        self.size = 0
        self._stage = mmap.mmap(-1, stage_bytes)  # page-aligned; [0, size % ALIGN): the partial block
        self._view = memoryview(self._stage)
        #: zero-copy writes (for the tests: the alignment works out on real bases)
        self.direct_writes = 0

    def write(self, offset: int, data: memoryview, region: memoryview | None = None, pos: int = 0) -> None:
        """Write ``data`` at ``offset`` (where the last write ended); ``data`` is
        ``region[pos : pos + len(data)]`` when ``region`` is given (then the bytes before ``pos`` may be overwritten)."""
        if offset != self.size:
            raise ValueError(f"O_DIRECT writes must follow each other: {offset} after {self.size}")
        n = len(data)
        if n == 0:
            return
        carry = offset % ALIGN
        if region is not None and pos >= carry and (pos - carry) % ALIGN == 0 and n >= ALIGN:
            region[pos - carry : pos] = self._view[:carry]
            tail = (offset + n) % ALIGN
            end = pos + n - tail
            self._pwrite(region[pos - carry : end], offset - carry)
            self._view[:tail] = region[end : pos + n]
            self.size += n
            self.direct_writes += 1
            return
        block = offset - carry  # the file offset of stage[0]
        fill, done = carry, 0
        while done < n:
            k = min(n - done, len(self._view) - fill)
            self._view[fill : fill + k] = data[done : done + k]
            fill += k
            done += k
            full = fill - fill % ALIGN
            if full:
                self._pwrite(self._view[:full], block)
                block += full
                self._view[: fill - full] = self._view[full:fill]
                fill -= full
        self.size += n

    def _pwrite(self, view: memoryview, offset: int) -> None:
        """Write all of ``view`` (aligned) at ``offset`` (aligned). What O_DIRECT refuses (EINVAL:
        a write that would cross a file size limit is cut short of a block, and so refused; a
        filesystem that opens files for O_DIRECT but will not write them) or stops short of
        (mid-block: a full disk) goes through ``fallback``, which writes it or fails with the
        real reason (EFBIG, ENOSPC); and so do all writes after a refusal."""
        done = 0
        while done < len(view) and not self._refused:
            try:
                n = os.pwrite(self.fd, view[done:], offset + done)
            except OSError as exc:
                if exc.errno != errno.EINVAL or self._fallback is None:
                    raise
                self._refused = True
                break
            if n <= 0:
                raise OSError(errno.EIO, f"a write of {len(view) - done} bytes wrote nothing")
            done += n
            if done < len(view) and done % ALIGN:
                break
        if done < len(view):
            if self._fallback is None:
                raise OSError(errno.EIO, f"a write stopped after {offset + done} bytes")
            pwrite_all(self._fallback, view[done:], offset + done)

    def close(self) -> None:
        """Write the partial last block (padded, then cut off by truncating to :attr:`size`) and close ``fd``."""
        try:
            carry = self.size % ALIGN
            if carry:
                self._view[carry:ALIGN] = bytes(ALIGN - carry)
                self._pwrite(self._view[:ALIGN], self.size - carry)
                os.ftruncate(self.fd, self.size)
        finally:
            os.close(self.fd)
            self._view.release()
            self._stage.close()
