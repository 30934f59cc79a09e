"""Keeping a home healthy: ``verify`` re-hashes the content store against the catalog;
``gc`` removes what nothing needs any more.

``gc`` removes, and never anything else:

- temporaries of processes that are gone (killed pushes' ``store/tmp/blob.<pid>.*.tmp``,
  publishes' ``store/patchctl-publish-<pid>-*``, installs' ``adapters/.materialize-<pid>-*``);
  a live process's files are left alone (its pid is in the name);
- blobs no catalog version refers to, once older than :data:`BLOB_GRACE_S` (a push stages its
  blobs before it records the version: a fresh unreferenced blob may be about to be used);
- ``adapters/<digest>/`` layouts of content digests the catalog does not hold;
- killed installs' ``.<out>.patchctl-tmp-<pid>-*`` folders in the folders recorded installs
  wrote to (an install to the same ``--out`` also removes them).

A referenced blob is never removed. Both read the whole catalog: a maintenance command, not a
hot path.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from patchctl._fs import pid_alive, sha256_file
from patchctl._session import catalog
from patchctl.registry.blobs import BlobStore, layout_problems
from patchctl.registry.records import VersionInfo
from patchctl.schemas.manifest import MANIFEST_FILE
from patchctl.settings import Settings

__all__ = ["BLOB_GRACE_S", "Damage", "GcItem", "GcReport", "VerifyReport", "gc", "verify"]

#: unreferenced blobs younger than this are kept (a concurrent push may be about to record them)
BLOB_GRACE_S = 3600
_MATERIALIZE_PREFIX = ".materialize-"
#: an install's temporary sibling of its --out (patchctl.merge._output names them so)
_OUT_TMP = re.compile(r"^\..+\.patchctl-(?:tmp|old)-(?P<pid>\d+)-[0-9a-f]+$")


@dataclass(frozen=True)
class Damage:
    """One problem ``verify`` found. ``kind``: ``missing`` or ``corrupt`` (a store blob: the
    version cannot be installed until it is pulled or pushed again) or ``layout`` (an
    ``adapters/<digest>`` folder that differs from the store: the next install rebuilds it)."""

    kind: str
    version: str
    path: str
    detail: str


@dataclass(frozen=True)
class VerifyReport:
    versions: int
    blobs: int
    bytes: int
    damage: tuple[Damage, ...]

    @property
    def ok(self) -> bool:
        return not self.damage


@dataclass(frozen=True)
class GcItem:
    kind: str  # "temporary" | "blob" | "layout"
    path: str
    bytes: int


@dataclass(frozen=True)
class GcReport:
    dry_run: bool
    removed: tuple[GcItem, ...]

    @property
    def bytes(self) -> int:
        return sum(i.bytes for i in self.removed)


def _all_versions(settings: Settings) -> list[VersionInfo]:
    with catalog(settings) as cat:
        return [v for p in cat.list_patches() for v in cat.list_versions(p.name)]


def _install_parents(settings: Settings) -> set[Path]:
    """The folders installs wrote into: where killed installs left their temporary siblings."""
    with catalog(settings) as cat:
        return {Path(i.out_path).parent for p in cat.list_patches() for i in cat.list_installs(p.name)}


def _wanted(v: VersionInfo) -> list[tuple[str, str]]:
    return [(f.path, f.sha256) for f in v.files] + [(MANIFEST_FILE, v.manifest_sha256)]


def verify(settings: Settings) -> VerifyReport:
    """Re-hash every blob the catalog refers to, and every laid-out version."""
    store = BlobStore(settings.store_dir)
    damage: list[Damage] = []
    seen: dict[str, bool] = {}
    total = 0
    versions = _all_versions(settings)
    for v in versions:
        for rel, sha in _wanted(v):
            if sha not in seen:
                path = store.path(sha)
                if not path.is_file():
                    seen[sha] = False
                    damage.append(Damage("missing", v.ref, rel, f"blob {sha[:12]} is not in the store"))
                    continue
                total += path.stat().st_size
                actual = sha256_file(path)
                seen[sha] = actual == sha
                if actual != sha:
                    damage.append(Damage("corrupt", v.ref, rel, f"blob {sha[:12]} hashes to {actual[:12]}"))
        layout = settings.home / "adapters" / v.content_digest
        if layout.exists():
            files = [f for f in v.files if seen.get(f.sha256, False)]
            for problem in layout_problems(layout, files):
                damage.append(Damage("layout", v.ref, str(layout), problem))
    return VerifyReport(versions=len(versions), blobs=len(seen), bytes=total, damage=tuple(damage))


def _size(path: Path) -> int:
    try:
        if path.is_dir() and not path.is_symlink():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        return path.lstat().st_size
    except OSError:
        return 0


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def gc(settings: Settings, *, dry_run: bool = False, now: float | None = None) -> GcReport:
    """Remove temporaries of dead processes, unreferenced blobs and stale layouts (see the module doc)."""
    now = time.time() if now is None else now
    store = BlobStore(settings.store_dir)
    items: list[GcItem] = []
    for path in store.clean_stale_temporaries(dry_run=True):
        items.append(GcItem("temporary", str(path), _size(path)))
    adapters = settings.home / "adapters"
    versions = _all_versions(settings)  # read before listing the store: a later push's blobs are fresh
    referenced = {sha for v in versions for _, sha in _wanted(v)}
    digests = {v.content_digest for v in versions}
    if adapters.is_dir():
        for entry in adapters.iterdir():
            if entry.name.startswith(_MATERIALIZE_PREFIX):
                pid = entry.name[len(_MATERIALIZE_PREFIX) :].split("-", 1)[0]
                if pid.isdigit() and not pid_alive(int(pid)):
                    items.append(GcItem("temporary", str(entry), _size(entry)))
            elif not entry.name.startswith(".") and entry.name not in digests:
                items.append(GcItem("layout", str(entry), _size(entry)))
    for parent in sorted(_install_parents(settings)):
        try:
            entries = list(parent.iterdir())
        except OSError:
            continue
        for entry in entries:
            m = _OUT_TMP.match(entry.name)
            if m and not pid_alive(int(m["pid"])):
                items.append(GcItem("temporary", str(entry), _size(entry)))
    blobs = settings.store_dir / "sha256"
    if blobs.is_dir():
        for path in blobs.glob("*/*"):
            if path.name in referenced or not path.is_file():
                continue
            try:
                age = now - path.stat().st_mtime
            except OSError:
                continue
            if age >= BLOB_GRACE_S:
                items.append(GcItem("blob", str(path), _size(path)))
    if not dry_run:
        for item in items:
            _remove(Path(item.path))
        for d in blobs.glob("*") if blobs.is_dir() else ():
            if d.is_dir():
                with contextlib.suppress(OSError):
                    os.rmdir(d)  # only when empty
    return GcReport(dry_run=dry_run, removed=tuple(items))
