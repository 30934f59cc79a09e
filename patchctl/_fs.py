"""Small filesystem helpers: streaming hashes, atomic writes."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import mmap
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = [
    "CHUNK",
    "HashCache",
    "atomic_write_bytes",
    "atomic_write_text",
    "bypasses_page_cache",
    "fsync_dir",
    "pid_alive",
    "read_chunks",
    "sha256_file",
]

CHUNK = 8 * 1024 * 1024
#: O_DIRECT reads: offsets and lengths in multiples of this (CHUNK is one)
_DIRECT_ALIGN = 4096


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


def read_chunks(path: Path, chunk_size: int = CHUNK, *, direct: bool = False) -> Iterator[memoryview]:
    """The bytes of ``path`` in order, ``chunk_size`` at a time, as views of one reused buffer
    (each valid until the next is taken). ``direct``: read with ``O_DIRECT`` where the platform
    and filesystem allow it (from the disk into the aligned buffer: no copy, no page cache),
    else through the cache. ``chunk_size`` must then be a multiple of 4096."""
    buf = mmap.mmap(-1, chunk_size)  # page-aligned, as O_DIRECT needs
    view = memoryview(buf)
    fd = -1
    flag: int = getattr(os, "O_DIRECT", 0)
    if direct and flag and chunk_size % _DIRECT_ALIGN == 0:
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY | flag)
    direct = fd >= 0
    if fd < 0:
        fd = os.open(path, os.O_RDONLY)
    try:
        pos = 0
        while True:
            try:
                n = os.preadv(fd, [view], pos)
            except OSError as exc:
                if not direct or exc.errno != errno.EINVAL:
                    raise
                os.close(fd)  # the filesystem opened it for O_DIRECT but refuses the reads
                fd, direct = os.open(path, os.O_RDONLY), False
                continue
            if n == 0:
                return
            yield view[:n]
            pos += n
            if direct and n < chunk_size:  # a short direct read: the end of the file
                return
    finally:
        os.close(fd)


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """sha256 of a file, read in 8 MiB chunks; ``progress(n)`` is called with each chunk's size."""
    h = hashlib.sha256()
    for chunk in read_chunks(path):
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
    """Whether a process with this id exists (used to tell a killed run's leftovers from a live one's)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
