"""Small filesystem helpers: streaming hashes, atomic writes."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "CHUNK",
    "DIRECT_ALIGN",
    "HASH_CHUNK",
    "CachedHashing",
    "HashCache",
    "Residency",
    "atomic_write_bytes",
    "atomic_write_text",
    "bypasses_page_cache",
    "fsync_dir",
    "pid_alive",
    "read_chunks",
    "sha256_file",
]

CHUNK = 8 * 1024 * 1024
#: reads for hashing: a chunk this size is still in the core's cache when it is hashed after the
#: read's copy (sha256 at 1.6-1.8 GB/s here; 1.0-1.1 GB/s for chunks of 8 MiB or more, from memory)
HASH_CHUNK = 1024 * 1024
#: O_DIRECT I/O: offsets, lengths and buffer addresses in multiples of this (CHUNK is one)
DIRECT_ALIGN = 4096


class CachedHashing:
    """Hand bytes that are not in this core's cache (read past the page cache, or written by
    another thread) to hashes a piece at a time through a small buffer: copying a piece brings it
    into the cache at memory speed, and sha256 then reads it from there. On this VM's cores
    sha256 runs at 1.03-1.14 GB/s straight from memory and at 1.36-1.50 GB/s through the copy
    (a 1 GiB buffer, pieces of 64 KiB to 1 MiB); a piece serves every hash it is given to."""

    PIECE = 256 * 1024

    def __init__(self) -> None:
        self._buf = bytearray(self.PIECE)

    def pieces(self, data: memoryview) -> Iterator[memoryview]:
        """``data``'s bytes in order, as views of the buffer (each valid until the next is taken)."""
        if data.format != "B" or data.ndim != 1:
            data = data.cast("B")
        view = memoryview(self._buf)
        for start in range(0, len(data), self.PIECE):
            piece = data[start : start + self.PIECE]
            view[: len(piece)] = piece
            yield view[: len(piece)]


def bypasses_page_cache(total_bytes: int) -> bool:
    """Whether reading (or writing) ``total_bytes`` goes past the page cache: above a quarter of
    the RAM. Such a base cannot stay cached anyway, and a cache it fills makes the kernel reclaim
    pages for every read and write, which costs more CPU than hashing or merging them (measured
    here: an uncached 5 GB file read through a full cache, 6 s of system time; with ``O_DIRECT``,
    0.1 s); a smaller one stays cached, as users reading it next expect."""
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return False
    return total_bytes > ram // 4


class Residency:
    """Which parts of a file the page cache holds, asked without reading them: ``mincore`` on a
    mapping of the file that is never touched (a read with ``RWF_NOWAIT`` would start readahead
    of what is missing, filling the cache it is meant to go around). Linux; elsewhere
    :meth:`of` gives None."""

    _libc: Any = None
    #: bytes -> bytes: 1 where a page is resident (bit 0 of mincore's answer), 0 elsewhere
    _BIT0 = bytes(i & 1 for i in range(256))

    def __init__(self, addr: int, size: int) -> None:
        self._addr = addr
        self._size = size
        self._page = mmap.PAGESIZE

    @classmethod
    def _lib(cls) -> Any:
        if cls._libc is None:
            cls._libc = False
            if sys.platform.startswith("linux"):
                import ctypes  # here, not at import: ctypes stays out of the CLI's start-up

                try:
                    libc = ctypes.CDLL(None, use_errno=True)
                    libc.mmap.restype = ctypes.c_void_p
                    libc.mmap.argtypes = [
                        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long,
                    ]  # fmt: skip
                    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
                    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
                    cls._libc = libc
                except (OSError, AttributeError):
                    pass
        return cls._libc

    @classmethod
    def of(cls, fd: int) -> Residency | None:
        """A residency map of ``fd`` (opened for reading), or None where it cannot be had."""
        libc = cls._lib()
        size = os.fstat(fd).st_size
        if not libc or size == 0:
            return None
        import ctypes

        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr is None or addr == ctypes.c_void_p(-1).value:  # MAP_FAILED
            return None
        return cls(addr, size)

    def holds(self, offset: int, length: int) -> bool:
        """Whether every page of ``[offset, offset + length)`` is in the page cache now."""
        start = offset - offset % self._page
        end = min(self._size, offset + length)
        if end <= start:
            return True
        import ctypes

        vec = ctypes.create_string_buffer(-(-(end - start) // self._page))  # a byte per page
        if self._libc.mincore(self._addr + start, end - start, vec) != 0:
            return False
        return vec.raw.translate(self._BIT0).count(0) == 0

    def close(self) -> None:
        if self._addr:
            self._libc.munmap(self._addr, self._size)
            self._addr = 0


def read_chunks(path: Path, chunk_size: int = CHUNK, *, direct: bool = False) -> Iterator[memoryview]:
    """The bytes of ``path`` in order, ``chunk_size`` at a time, as views of reused buffers (each
    valid until the next is taken). ``direct``: read with ``O_DIRECT`` where the platform and
    filesystem allow it (from the disk into aligned buffers: no copy, no page cache; the next
    chunk is read on another thread while this one is used, as the kernel's readahead would),
    else through the cache; chunks that the page cache holds are copied from there (:class:`Residency`).
    ``chunk_size`` must then be a multiple of 4096."""
    fd = -1
    flag: int = getattr(os, "O_DIRECT", 0)
    if direct and flag and chunk_size % DIRECT_ALIGN == 0:
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY | flag)
    if fd >= 0:
        yield from _direct_chunks(path, fd, chunk_size)
        return
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            yield view[:n]


def _direct_chunks(path: Path, fd: int, chunk_size: int) -> Iterator[memoryview]:
    """:func:`read_chunks` through ``fd`` (opened with O_DIRECT; closed here). Three page-aligned
    buffers and a queue of one: the reader fills the third while this thread uses the first and
    the second waits, so a buffer is never refilled while in use. A filesystem that opened the
    file for O_DIRECT but refuses the reads (EINVAL before any byte) is read through the cache."""
    import queue
    import threading

    bufs = [mmap.mmap(-1, chunk_size) for _ in range(3)]  # page-aligned, as O_DIRECT needs
    cached_fd = os.open(path, os.O_RDONLY)
    resident = Residency.of(cached_fd)
    ready: queue.Queue[tuple[int, int] | BaseException | None] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item: tuple[int, int] | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        pos, i = 0, 0
        try:
            while True:
                if resident is not None and resident.holds(pos, chunk_size):
                    n = _read_full(cached_fd, memoryview(bufs[i % 3]), pos)
                else:
                    n = os.preadv(fd, [bufs[i % 3]], pos)
                if n == 0 or not put((i % 3, n)):
                    break
                pos, i = pos + n, i + 1
                if n < chunk_size:  # a short direct read: the end of the file
                    break
            put(None)
        except BaseException as exc:
            put(exc)

    thread = threading.Thread(target=reader, name="patchctl-read-direct", daemon=True)
    thread.start()
    got = 0
    try:
        while (item := ready.get()) is not None:
            if isinstance(item, BaseException):
                if isinstance(item, OSError) and item.errno == errno.EINVAL and got == 0:
                    break  # refused: read through the cache below
                raise item
            k, n = item
            got += n
            yield memoryview(bufs[k])[:n]
        else:
            return
    finally:
        stop.set()
        thread.join()
        os.close(fd)
        os.close(cached_fd)
        if resident is not None:
            resident.close()
    yield from read_chunks(path, chunk_size)


def _read_full(fd: int, view: memoryview, offset: int) -> int:
    """Read into all of ``view`` at ``offset``, short only at the end of the file."""
    done = 0
    while done < len(view) and (n := os.preadv(fd, [view[done:]], offset + done)):
        done += n
    return done


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """sha256 of a file, read in :data:`HASH_CHUNK` chunks; ``progress(n)`` is called with each chunk's size."""
    h = hashlib.sha256()
    for chunk in read_chunks(path, HASH_CHUNK):
        h.update(chunk)
        if progress is not None:
            progress(len(chunk))
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary sibling, fsync, then ``os.replace`` into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a short temporary name: a long target name must not make its sibling exceed NAME_MAX
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def pid_alive(pid: int) -> bool:
    """Whether a process with this id is running (used to tell a killed run's leftovers from a
    live one's). A zombie is not: a killed merge child (see :mod:`patchctl._mergeproc`) stays one
    until the init process reaps it, which some do late."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]  # after the command name, which may hold spaces
    except (OSError, IndexError):
        return True  # no /proc (not Linux): as before
    return state not in (b"Z", b"X")


class HashCache:
    """sha256 of files, remembered by (real path, device, inode, size, mtime) — git's stat-cache
    idea — so that checking or installing onto the same multi-GB base again does not re-read it.

    A file modified within the last 2 seconds is hashed but not cached (its mtime could still
    change within the same clock tick). Entries are small text files under ``root``.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _entry(self, path: Path, st: os.stat_result) -> Path:
        ident = f"{os.path.realpath(path)}\0{st.st_dev}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}"
        key = hashlib.sha256(ident.encode()).hexdigest()
        return self.root / key[:2] / key

    def sha256(self, path: Path, progress: Callable[[int], None] | None = None) -> str:
        st = os.stat(path)
        entry = self._entry(path, st)
        try:
            cached = entry.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            cached = ""
        if len(cached) == 64 and all(c in "0123456789abcdef" for c in cached):
            if progress is not None:
                progress(st.st_size)
            return cached
        digest = sha256_file(path, progress)
        if time.time() - st.st_mtime_ns / 1e9 > 2 and os.stat(path).st_mtime_ns == st.st_mtime_ns:
            # a read-only home: hashing still works, it is just not remembered
            with contextlib.suppress(OSError):
                atomic_write_text(entry, digest + "\n")
        return digest
