"""References to patches and bases, as users type them.

==========================  =====================================================
``org/name``                newest non-yanked version in the catalog
``org/name==1.2.*``         PEP 440 specifier (any of ``== != <= >= < > ~= ===``)
``org/name@1.2.0``          exact version
``org/name@stable``         alias
``hf://org/repo``           a Hub repository (``@rev`` a tag, branch or commit; ``==spec`` for patch tags)
``file:///srv/patches/...`` a directory remote
``./dir``, ``/abs/dir``     a local directory (a path must start with ``/``, ``./``, ``../`` or ``~``)
==========================  =====================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from patchctl.errors import RefError
from patchctl.schemas._names import check_patch_name

__all__ = ["BaseRef", "HubRef", "PatchRef", "PathRef", "RemoteRef", "parse_base_ref", "parse_patch_ref"]

_SPEC_START = re.compile(r"(===|==|!=|<=|>=|~=|<|>)")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")
_HUB_REPO = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?(?:/[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)?$")


@dataclass(frozen=True)
class PatchRef:
    """A patch in the catalog: at most one of ``version``, ``spec``, ``alias`` is set."""

    name: str
    version: str | None = None
    spec: SpecifierSet | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version:
            return f"{self.name}=={self.version}"
        if self.spec is not None:
            return f"{self.name}{self.spec}"
        if self.alias:
            return f"{self.name}@{self.alias}"
        return self.name


@dataclass(frozen=True)
class HubRef:
    """``hf://repo_id[@revision][==spec]``: revision is a tag, branch or commit sha."""

    repo_id: str
    revision: str | None = None
    spec: SpecifierSet | None = None

    def __str__(self) -> str:
        s = f"hf://{self.repo_id}"
        if self.revision:
            s += f"@{self.revision}"
        if self.spec is not None:
            s += str(self.spec)
        return s


@dataclass(frozen=True)
class RemoteRef:
    """``file:///dir[/org/name][@version][==spec]``: a directory remote, optionally one patch in it."""

    root: Path
    name: str | None = None
    version: str | None = None
    spec: SpecifierSet | None = None

    def __str__(self) -> str:
        s = f"file://{self.root}"
        if self.name:
            s += f"/{self.name}"
        if self.version:
            s += f"@{self.version}"
        if self.spec is not None:
            s += str(self.spec)
        return s


@dataclass(frozen=True)
class PathRef:
    path: Path

    def __str__(self) -> str:
        return str(self.path)


BaseRef = PathRef | HubRef


def _no_nul(text: str) -> str:
    """A NUL byte is in no name, revision or path (the OS refuses it: a ValueError, not a clean error)."""
    if "\x00" in text:
        raise RefError(f"{text!r}: contains a NUL byte")
    return text


def _expand(text: str) -> Path:
    """``~`` and ``~user`` expanded; an unknown user (``~0``) is a clean RefError, not a RuntimeError."""
    try:
        return Path(text).expanduser()
    except RuntimeError:
        raise RefError(f"{text!r}: cannot expand the home directory of {text.split('/', 1)[0]!r}") from None


def _is_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or text in (".", "..")


def _split_spec(text: str) -> tuple[str, SpecifierSet | None]:
    m = _SPEC_START.search(text)
    if not m:
        return text, None
    head, tail = text[: m.start()], text[m.start() :]
    try:
        return head, SpecifierSet(tail)
    except InvalidSpecifier:
        raise RefError(f"{text!r}: {tail!r} is not a valid version specifier (e.g. ==1.2.*, >=1.0,<2)") from None


def _version_or_alias(text: str, at: str) -> tuple[str | None, str | None]:
    try:
        return str(Version(at)), None
    except InvalidVersion:
        pass
    if not _ALIAS.fullmatch(at):
        raise RefError(f"{text!r}: {at!r} is neither a version nor an alias name")
    return None, at


def parse_patch_ref(text: str) -> PatchRef | HubRef | RemoteRef | PathRef:
    """Parse what a user typed for a patch. Raises :class:`RefError` with the accepted forms."""
    text = _no_nul(text.strip())
    if not text:
        raise RefError("empty patch reference")
    if text.startswith("hf://"):
        return _parse_hub(text)
    if text.startswith("file://"):
        return _parse_file(text)
    if _is_path(text):
        return PathRef(_expand(text))
    head, spec = _split_spec(text)
    version = alias = None
    if "@" in head:
        head, at = head.split("@", 1)
        if spec is not None:
            raise RefError(f"{text!r}: use either @version/@alias or a specifier, not both")
        version, alias = _version_or_alias(text, at)
    try:
        check_patch_name(head)
    except ValueError as exc:
        raise RefError(
            f"{exc}. Patch references look like org/name, org/name==1.2.*, org/name@stable, "
            "hf://org/repo@rev or ./local/dir"
        ) from None
    return PatchRef(name=head, version=version, spec=spec, alias=alias)


def _parse_hub(text: str) -> HubRef:
    body, spec = _split_spec(text[len("hf://") :])
    revision = None
    if "@" in body:
        body, revision = body.split("@", 1)
        if not revision:
            raise RefError(f"{text!r}: empty revision after '@'")
    if not _HUB_REPO.fullmatch(body) or ".." in body or "--" in body:
        raise RefError(f"{text!r}: not a Hub repo id (expected hf://org/repo[@revision])")
    return HubRef(repo_id=body, revision=revision, spec=spec)


def _parse_file(text: str) -> RemoteRef:
    body, spec = _split_spec(text[len("file://") :])
    version = None
    if "@" in body.rsplit("/", 1)[-1]:
        body, at = body.rsplit("@", 1)
        version, alias = _version_or_alias(text, at)
        if alias:
            raise RefError(f"{text!r}: directory remotes take @version or a specifier, not an alias")
    if not body.startswith("/"):
        raise RefError(f"{text!r}: a directory remote is file:///absolute/path")
    return RemoteRef(root=Path(body), version=version, spec=spec)


def parse_base_ref(text: str) -> PathRef | HubRef:
    """A base is a local directory or ``hf://repo[@rev]``."""
    text = _no_nul(text.strip())
    if text.startswith("hf://"):
        ref = _parse_hub(text)
        if ref.spec is not None:
            raise RefError(f"{text!r}: a base takes @revision, not a version specifier")
        return ref
    if not text:
        raise RefError("empty base reference")
    return PathRef(_expand(text))
