"""The local content store: patch files by sha256, immutable once written.

Layout: ``<home>/store/sha256/<first two hex>/<hex>``. A blob is written to a temporary file
in ``<home>/store/tmp`` while its sha256 is computed, fsynced, made read-only and renamed into
place, so a blob path either does not exist or holds exactly the bytes its name says.
Blobs no catalog row refers to (left by a push whose catalog transaction failed) are
harmless: nothing lists the store, and the next push of the same bytes reuses them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from patchctl._fs import CHUNK, fsync_dir, sha256_file
from patchctl.errors import IntegrityError, NotFoundError
from patchctl.schemas._common import check_safe_relpath
from patchctl.schemas.manifest import FileEntry

__all__ = ["BlobStore", "materialize"]


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def _tmpdir(self) -> Path:
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp

    def put_file(self, src: Path, expected_sha256: str | None = None) -> tuple[str, int]:
        """Copy ``src`` into the store, hashing while copying. Returns ``(sha256, size)``.

        Raises :class:`IntegrityError` when the bytes do not hash to ``expected_sha256`` (the
        file changed after it was hashed); nothing is left behind then.
        """
        if expected_sha256 is not None and self.has(expected_sha256):
            return expected_sha256, self.path(expected_sha256).stat().st_size
        fd, tmp_name = tempfile.mkstemp(prefix="blob.", suffix=".tmp", dir=self._tmpdir())
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
        if self.has(sha):
            return sha
        fd, tmp_name = tempfile.mkstemp(prefix="blob.", suffix=".tmp", dir=self._tmpdir())
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
        if dest.is_file():  # same bytes already stored (another process won the race)
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
