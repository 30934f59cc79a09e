"""The local content store: patch files by sha256, immutable once written.

Layout: ``<home>/store/sha256/<first two hex>/<hex>``. A blob is written to a temporary file
in ``<home>/store/tmp`` while its sha256 is computed, fsynced, made read-only and renamed into
place, so a blob path either does not exist or holds exactly the bytes its name says.
Blobs no catalog row refers to (left by a push whose catalog transaction failed) are
harmless: nothing lists the store, and the next push of the same bytes reuses them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from patchctl._fs import CHUNK, fsync_dir, pid_alive, sha256_file
from patchctl.errors import IntegrityError, NotFoundError
from patchctl.schemas._names import check_safe_relpath

if TYPE_CHECKING:
    from patchctl.schemas.manifest import FileEntry

__all__ = ["BlobStore", "layout_problems", "materialize"]

#: a temporary of the store (``blob.<pid>.<random>.tmp``) or of a publish (``patchctl-publish-<pid>-...``)
_TMP_PID = re.compile(r"^(?:blob\.|patchctl-publish-)(?P<pid>\d+)[.-]")
#: temporaries without a pid (written by older patchctl) are stale after this many seconds
LEGACY_TMP_AGE_S = 24 * 3600


def _stale_temporary(name: str, path: Path | None = None) -> bool:
    m = _TMP_PID.match(name)
    if m:
        return not pid_alive(int(m["pid"]))
    if name.startswith("blob.") and name.endswith(".tmp") and path is not None:
        with contextlib.suppress(OSError):
            return time.time() - path.stat().st_mtime > LEGACY_TMP_AGE_S
    return False


def _listdir(path: Path) -> list[Path]:
    try:
        return list(path.iterdir())
    except OSError:
        return []


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._cleaned = False

    def path(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def _tmpdir(self) -> Path:
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        if not self._cleaned:  # opportunistically, once per process: killed writers' leftovers
            self._cleaned = True
            self.clean_stale_temporaries()
        return tmp

    @staticmethod
    def _tmp_prefix() -> str:
        # the writer's pid in the name: `patchctl gc` (and every store write) removes the
        # temporaries of killed processes, never a live one's
        return f"blob.{os.getpid()}."

    def clean_stale_temporaries(self, *, dry_run: bool = False) -> list[Path]:
        """Remove (or with ``dry_run`` only list) temporaries left by killed writers."""
        stale: list[Path] = []
        entries = [*_listdir(self.root / "tmp"), *(e for e in _listdir(self.root) if e.name.startswith("patchctl-"))]
        for entry in entries:
            if _stale_temporary(entry.name, entry):
                stale.append(entry)
                if not dry_run:
                    _remove(entry)
        return stale

    def _intact(self, sha256: str) -> bool:
        """The blob exists with the bytes its name says (a damaged one is then replaced by the
        caller's fresh copy). Its mtime is refreshed, so that `gc` sees it as recently used."""
        path = self.path(sha256)
        if not path.is_file():
            return False
        if sha256_file(path) != sha256:
            return False
        with contextlib.suppress(OSError):
            os.utime(path)
        return True

    def put_file(self, src: Path, expected_sha256: str | None = None) -> tuple[str, int]:
        """Copy ``src`` into the store, hashing while copying. Returns ``(sha256, size)``.

        Raises :class:`IntegrityError` when the bytes do not hash to ``expected_sha256`` (the
        file changed after it was hashed); nothing is left behind then.
        """
        if expected_sha256 is not None and self._intact(expected_sha256):
            return expected_sha256, self.path(expected_sha256).stat().st_size
        fd, tmp_name = tempfile.mkstemp(prefix=self._tmp_prefix(), suffix=".tmp", dir=self._tmpdir())
        tmp = Path(tmp_name)
        try:
            h = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha = h.hexdigest()
            if expected_sha256 is not None and sha != expected_sha256:
                raise IntegrityError(f"{src}: changed while being stored (sha256 {sha}, expected {expected_sha256})")
            self._publish(tmp, sha)
            return sha, size
        finally:
            tmp.unlink(missing_ok=True)

    def put_bytes(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if self._intact(sha):
            return sha
        fd, tmp_name = tempfile.mkstemp(prefix=self._tmp_prefix(), suffix=".tmp", dir=self._tmpdir())
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            self._publish(tmp, sha)
        finally:
            tmp.unlink(missing_ok=True)
        return sha

    def _publish(self, tmp: Path, sha: str) -> None:
        dest = self.path(sha)
        if dest.is_file() and sha256_file(dest) == sha:  # same bytes already stored (another process won)
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o444)
        os.replace(tmp, dest)
        fsync_dir(dest.parent)

    def read_bytes(self, sha256: str) -> bytes:
        path = self.path(sha256)
        if not path.is_file():
            raise NotFoundError(f"blob {sha256} is not in the content store {self.root}")
        return path.read_bytes()

    def verify(self, sha256: str) -> None:
        path = self.path(sha256)
        if not path.is_file():
            raise NotFoundError(f"blob {sha256} is not in the content store {self.root}")
        actual = sha256_file(path)
        if actual != sha256:
            raise IntegrityError(f"{path}: content store blob is corrupt (sha256 {actual})")


def materialize(
    store: BlobStore, files: Iterable[FileEntry], dest: Path, *, link: bool = True, verify: bool = False
) -> Path:
    """Lay a version's files out in ``dest`` (a PEFT adapter directory the merge engine can read).

    Hardlinks from the store when ``link`` and the filesystem allows it (blobs are read-only, so
    a hardlinked file cannot be changed by accident), else copies. ``verify`` re-hashes each
    blob first. ``dest`` is created if missing; an existing file of the same name is replaced.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        check_safe_relpath(f.path)
        blob = store.path(f.sha256)
        if not blob.is_file():
            raise NotFoundError(f"{f.path}: blob {f.sha256} is missing from the content store {store.root}")
        if verify:
            store.verify(f.sha256)
        elif blob.stat().st_size != f.size:
            raise IntegrityError(f"{f.path}: content store blob {f.sha256} has the wrong size")
        target = dest / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        if link:
            try:
                os.link(blob, target)
                continue
            except OSError:
                pass
        shutil.copyfile(blob, target)
    return dest


def layout_problems(dest: Path, files: Iterable[FileEntry], extra: Iterable[tuple[str, str]] = ()) -> list[str]:
    """What is wrong with a laid-out version in ``dest``: each file of ``files`` (and each
    ``(path, sha256)`` of ``extra``, e.g. patch.json) must be a regular file with that sha256.
    Empty when the layout can be used. Patch files are small: they are re-hashed every time."""
    problems: list[str] = []
    wanted = [(f.path, f.sha256) for f in files] + list(extra)
    for rel, sha in wanted:
        path = Path(dest) / rel
        if path.is_symlink() or not path.is_file():
            problems.append(f"{rel}: missing")
            continue
        actual = sha256_file(path)
        if actual != sha:
            problems.append(f"{rel}: sha256 {actual[:12]}, expected {sha[:12]}")
    return problems
