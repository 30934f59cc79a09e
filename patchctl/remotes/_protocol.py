"""What every remote offers (the :class:`Remote` protocol), its result types, and the helpers
both implementations share: version selection and sha256 verification against ``patch.json``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from patchctl._fs import sha256_file
from patchctl.errors import IntegrityError, NotFoundError
from patchctl.schemas.manifest import MANIFEST_FILE, Manifest

__all__ = [
    "CARD_FILE",
    "Fetched",
    "Published",
    "Remote",
    "RemotePatch",
    "RemoteVersion",
    "VersionWanted",
    "select_version",
    "tag_for",
    "verify_files",
    "version_from_tag",
]

CARD_FILE = "README.md"
#: what a caller may ask ``fetch`` for: newest (None), an exact version / tag / commit (str), or a specifier
VersionWanted = str | SpecifierSet | None


@dataclass(frozen=True)
class Published:
    """The result of :meth:`Remote.publish`. ``created`` is False when the identical version was already there."""

    url: str
    name: str
    version: str
    #: the tag (Hub: ``v<version>``) or version folder (directory) the version lives under
    revision: str
    #: Hub commit id; for a directory remote, the manifest's content digest
    commit: str
    created: bool


@dataclass(frozen=True)
class RemoteVersion:
    name: str
    version: str
    revision: str
    commit: str
    url: str


@dataclass(frozen=True)
class Fetched:
    """A verified copy of one version: every file of ``manifest.files`` in ``dir`` matches its sha256."""

    manifest: Manifest
    dir: Path
    commit: str
    url: str


@dataclass(frozen=True)
class RemotePatch:
    """One patch found by :meth:`Remote.search`."""

    name: str
    url: str
    task: str | None = None
    family: str | None = None
    latest: str | None = None
    tags: tuple[str, ...] = ()


@runtime_checkable
class Remote(Protocol):
    """Where patch files live. The catalog is the index; a remote holds bytes.

    Guarantees shared by every implementation: a version is published whole (one commit /
    one atomically renamed folder) and never changes afterwards; an identical re-publish is a
    no-op; different content under an existing version raises ConflictError; ``fetch``
    returns only files whose sha256 match ``patch.json`` (IntegrityError otherwise).
    """

    @property
    def url(self) -> str: ...

    def publish(self, manifest: Manifest, files_dir: Path, *, card: str | None = None) -> Published: ...

    def list_versions(self, name: str | None = None) -> list[RemoteVersion]: ...

    def fetch(self, version: VersionWanted = None, *, name: str | None = None) -> Fetched: ...

    def search(self, *, task: str | None = None, family: str | None = None) -> list[RemotePatch]: ...


def tag_for(version: str) -> str:
    return f"v{version}"


def version_from_tag(tag: str) -> str | None:
    """``v1.2.0`` → ``1.2.0``; None for tags that are not patch versions."""
    if not tag.startswith("v"):
        return None
    try:
        return str(Version(tag[1:]))
    except InvalidVersion:
        return None


def _parse(v: str) -> Version | None:
    try:
        return Version(v)
    except InvalidVersion:
        return None


def select_version(available: Iterable[str], wanted: VersionWanted, *, what: str) -> str:
    """Pick one of ``available`` (PEP 440 strings; the chosen one is returned as given): newest for None (final releases first), the exact
    version for a string, the newest match for a specifier. NotFoundError lists what exists."""
    by_version: dict[Version, str] = {}
    for a in available:
        v = _parse(a)
        if v is not None:
            by_version.setdefault(v, a)
    versions = sorted(by_version)
    shown = ", ".join(str(v) for v in versions) or "none"
    if wanted is None:
        if not versions:
            raise NotFoundError(f"{what}: no versions published")
        finals = [v for v in versions if not v.is_prerelease]
        return by_version[(finals or versions)[-1]]
    if isinstance(wanted, SpecifierSet):
        matching = list(wanted.filter(versions))
        if not matching:
            raise NotFoundError(f"{what}: no version matches {wanted} (available: {shown})")
        return by_version[max(matching)]
    exact = _parse(wanted[1:] if wanted.startswith("v") else wanted)
    if exact is None or exact not in by_version:
        raise NotFoundError(f"{what}: version {wanted} not found (available: {shown})")
    return by_version[exact]


def verify_files(manifest: Manifest, directory: Path, *, what: str, paths: Sequence[str] | None = None) -> None:
    """Check every file of ``manifest.files`` (or those in ``paths``) in ``directory``: present, size and
    sha256 as recorded. Raises IntegrityError naming the first bad file."""
    for entry in manifest.files:
        if paths is not None and entry.path not in paths:
            continue
        path = directory / entry.path
        if not path.is_file():
            raise IntegrityError(f"{what}: {entry.path} is missing (listed in {MANIFEST_FILE})")
        size = path.stat().st_size
        if size != entry.size:
            raise IntegrityError(
                f"{what}: {entry.path} has {size} bytes, {MANIFEST_FILE} records {entry.size}",
                hint="the copy is damaged; fetch it again or re-publish from a good copy",
            )
        actual = sha256_file(path)
        if actual != entry.sha256:
            raise IntegrityError(
                f"{what}: {entry.path} has sha256 {actual[:16]}…, {MANIFEST_FILE} records {entry.sha256[:16]}…",
                hint="the copy is damaged; fetch it again or re-publish from a good copy",
            )
