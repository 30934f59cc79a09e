"""Small filesystem helpers: streaming hashes, atomic writes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["CHUNK", "HashCache", "atomic_write_bytes", "atomic_write_text", "fsync_dir", "pid_alive", "sha256_file"]

CHUNK = 8 * 1024 * 1024


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """sha256 of a file, read in 8 MiB chunks; ``progress(n)`` is called with each chunk's size."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
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
