"""``file:///path``: a directory remote (a shared NFS folder for air-gapped teams).

Layout (the same guarantees as the Hub remote)::

    <root>/<namespace>/<name>/versions/<version>/   one immutable folder per version
        adapter_config.json  adapter_model.safetensors  patch.json  README.md

A version folder is written whole under a temporary sibling (``.tmp-*``), fsynced, then renamed
into ``versions/`` — readers never see half a version, and a rename onto an existing version
fails, so two writers cannot both win. Files are made read-only. The ``versions/`` folder is
the index; its entries are PEP 440 versions. A remote URL may also name one patch folder
directly (``file:///srv/patches/org/name``).
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from pathlib import Path

from packaging.version import InvalidVersion, Version

from patchctl._fs import fsync_dir
from patchctl.errors import ConflictError, IntegrityError, InvalidInputError, NotFoundError, RemoteError
from patchctl.remotes._card import model_card
from patchctl.remotes._protocol import (
    CARD_FILE,
    Fetched,
    Published,
    RemotePatch,
    RemoteVersion,
    VersionWanted,
    select_version,
    verify_files,
)
from patchctl.schemas.manifest import MANIFEST_FILE, Manifest, check_patch_name

__all__ = ["DirectoryRemote"]

VERSIONS = "versions"


class DirectoryRemote:
    """A remote on a local or network file system."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()

    def __repr__(self) -> str:
        return f"DirectoryRemote({str(self.root)!r})"

    @property
    def url(self) -> str:
        return f"file://{self.root}"

    # ---- layout -------------------------------------------------------------------------
    def _is_patch_folder(self, path: Path) -> bool:
        return (path / VERSIONS).is_dir()

    def patch_dir(self, name: str | None) -> Path:
        """The folder of patch ``name`` (``namespace/name``); with no name, the root must be a patch folder."""
        if name is None:
            if self._is_patch_folder(self.root):
                return self.root
            if not self._patch_dirs():
                raise NotFoundError(f"{self.url}: no patch published here")
            raise InvalidInputError(
                f"{self.url}: name a patch (namespace/name), or use the URL of a patch folder "
                f"(file://{self.root}/<namespace>/<name>)"
            )
        try:
            check_patch_name(name)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        if self.root.parts[-2:] == tuple(name.split("/")) and not (self.root / name).exists():
            return self.root  # the URL names this patch's folder
        return self.root / name

    def _versions(self, pdir: Path) -> dict[str, Path]:
        vroot = pdir / VERSIONS
        if not vroot.is_dir():
            return {}
        out = {}
        for d in vroot.iterdir():
            if d.name.startswith(".") or not d.is_dir():
                continue
            try:
                out[str(Version(d.name))] = d
            except InvalidVersion:
                continue
        return out

    def _read_manifest(self, vdir: Path) -> Manifest:
        path = vdir / MANIFEST_FILE
        if not path.is_file():
            raise IntegrityError(f"{self.url}: {vdir} has no {MANIFEST_FILE} (a damaged version folder)")
        return Manifest.read(path)

    def _version_url(self, pdir: Path, version: str) -> str:
        return f"file://{pdir}@{version}"

    # ---- operations ---------------------------------------------------------------------
    def publish(self, manifest: Manifest, files_dir: Path, *, card: str | None = None) -> Published:
        files_dir = Path(files_dir)
        what = f"{manifest.name}@{manifest.version}"
        verify_files(manifest, files_dir, what=f"{what} (local files)")
        pdir = self.patch_dir(manifest.name)
        vdir = pdir / VERSIONS / manifest.version
        if vdir.exists():
            return self._existing(manifest, pdir, vdir)
        try:
            (pdir / VERSIONS).mkdir(parents=True, exist_ok=True)
            tmp = pdir / VERSIONS / f".tmp-{manifest.version}-{uuid.uuid4().hex[:12]}"
            tmp.mkdir()
        except OSError as exc:
            raise RemoteError(f"{self.url}: cannot write {pdir} ({exc.strerror or exc})") from None
        try:
            for entry in manifest.files:
                dest = tmp / entry.path
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(files_dir / entry.path, dest)
            # re-hash the copies: what lands in the remote is what the manifest says
            verify_files(manifest, tmp, what=f"{what} (copy in {self.url})")
            (tmp / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
            (tmp / CARD_FILE).write_text(
                card if card is not None else model_card(manifest, remote_url=f"file://{pdir}"), encoding="utf-8"
            )
            for p in tmp.rglob("*"):
                if p.is_file():
                    with open(p, "rb") as f:
                        os.fsync(f.fileno())
                    p.chmod(0o444)
            fsync_dir(tmp)
            try:
                os.rename(tmp, vdir)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):  # another writer won the race
                    shutil.rmtree(tmp, ignore_errors=True)
                    return self._existing(manifest, pdir, vdir)
                raise
            fsync_dir(pdir / VERSIONS)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RemoteError(f"{self.url}: cannot write {what} ({exc.strerror or exc})") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Published(
            url=self._version_url(pdir, manifest.version),
            name=manifest.name,
            version=manifest.version,
            revision=manifest.version,
            commit=manifest.content_digest,
            created=True,
        )

    def _existing(self, manifest: Manifest, pdir: Path, vdir: Path) -> Published:
        there = self._read_manifest(vdir)
        if there.content_digest != manifest.content_digest:
            raise ConflictError(
                f"{self._version_url(pdir, manifest.version)} already exists with different content "
                f"(digest {there.content_digest[:12]}…, yours {manifest.content_digest[:12]}…)",
                hint="published versions are immutable; publish under a new version",
            )
        return Published(
            url=self._version_url(pdir, manifest.version),
            name=manifest.name,
            version=manifest.version,
            revision=manifest.version,
            commit=there.content_digest,
            created=False,
        )

    def _patch_dirs(self) -> list[Path]:
        if self._is_patch_folder(self.root):
            return [self.root]
        if not self.root.is_dir():
            return []
        return sorted(
            d
            for ns in self.root.iterdir()
            if ns.is_dir() and not ns.name.startswith(".")
            for d in ns.iterdir()
            if self._is_patch_folder(d)
        )

    def list_versions(self, name: str | None = None) -> list[RemoteVersion]:
        pdirs = [self.patch_dir(name)] if name is not None or self._is_patch_folder(self.root) else self._patch_dirs()
        out = []
        for pdir in pdirs:
            for version, vdir in sorted(self._versions(pdir).items(), key=lambda kv: Version(kv[0])):
                m = self._read_manifest(vdir)
                out.append(RemoteVersion(m.name, version, version, m.content_digest, self._version_url(pdir, version)))
        return out

    def fetch(self, version: VersionWanted = None, *, name: str | None = None) -> Fetched:
        """Verify a version in place and return it; ``Fetched.dir`` is the (read-only) version folder."""
        pdir = self.patch_dir(name)
        versions = self._versions(pdir)
        if not versions and not pdir.is_dir():
            raise NotFoundError(f"{self.url}: no patch {name or pdir.name} here")
        chosen = select_version(versions, version, what=f"file://{pdir}")
        vdir = versions[chosen]
        manifest = self._read_manifest(vdir)
        what = self._version_url(pdir, chosen)
        if manifest.version != chosen:
            raise IntegrityError(f"{what}: {MANIFEST_FILE} says version {manifest.version}")
        verify_files(manifest, vdir, what=what)
        return Fetched(manifest=manifest, dir=vdir, commit=manifest.content_digest, url=what)

    def search(self, *, task: str | None = None, family: str | None = None) -> list[RemotePatch]:
        out = []
        for pdir in self._patch_dirs():
            versions = self._versions(pdir)
            if not versions:
                continue
            latest = select_version(versions, None, what=str(pdir))
            m = self._read_manifest(versions[latest])
            if task is not None and m.task.lower() != task.lower():
                continue
            if family is not None and m.source_base.family.model_type.lower() != family.lower():
                continue
            out.append(
                RemotePatch(
                    name=m.name,
                    url=f"file://{pdir}",
                    task=m.task,
                    family=m.source_base.family.model_type,
                    latest=latest,
                )
            )
        return out
