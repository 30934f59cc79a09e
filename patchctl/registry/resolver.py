"""Picking a version of a patch for a reference, and a sortable text key for PEP 440 versions.

Rules (``org/name`` forms, see :mod:`patchctl.schemas.refs`):

- ``org/name@1.2.0`` / ``org/name==1.2.0`` (exact version): that version, even if yanked
  (the result says so, as pip does for ``==`` pins);
- ``org/name==1.2.*`` (any specifier) or ``org/name``: the newest non-yanked version that
  matches; pre-releases only when the specifier names one or nothing else matches;
- ``org/name@stable``: the version the alias points to (yanked or not; flagged).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from patchctl.errors import InvalidInputError, NotFoundError
from patchctl.schemas.refs import PatchRef

__all__ = ["Candidate", "Resolution", "exact_version", "pick_version", "version_sort_key"]

_RELEASE_PARTS = 8
_WIDTH = 8
_PRE = {"a": "a", "b": "b", "rc": "rc"}


def version_sort_key(version: str | Version) -> str:
    """A string that sorts (bytewise) like :class:`packaging.version.Version` (local labels: by text).

    ``epoch . release(8 parts, 8 digits) . pre . post . dev [+ local]``.
    """
    v = version if isinstance(version, Version) else Version(version)
    if len(v.release) > _RELEASE_PARTS or any(p >= 10**_WIDTH for p in (*v.release, v.epoch)):
        raise InvalidInputError(f"{v}: version has too many or too large release parts to index")
    release = ".".join(f"{p:0{_WIDTH}d}" for p in (*v.release, *([0] * (_RELEASE_PARTS - len(v.release)))))
    if v.pre is None and v.post is None and v.dev is not None:
        pre = "0"  # 1.0.dev1 < 1.0a1
    elif v.pre is None:
        pre = "3"  # a final release sorts after its pre-releases
    else:
        letter, n = v.pre
        pre = f"1{_PRE[letter]:<2}{n:0{_WIDTH}d}".replace(" ", "_")
        if letter == "rc":
            pre = "2" + pre[1:]
    post = "0" if v.post is None else f"1{v.post:0{_WIDTH}d}"
    dev = "1" if v.dev is None else f"0{v.dev:0{_WIDTH}d}"
    local = "" if v.local is None else f"+{v.local}"
    return f"{v.epoch:0{_WIDTH}d}!{release}|{pre}|{post}|{dev}{local}"


@dataclass(frozen=True)
class Candidate:
    version: str
    yanked: bool = False


@dataclass(frozen=True)
class Resolution:
    version: str
    yanked: bool
    via: Literal["version", "spec", "alias", "latest"]


def exact_version(ref: PatchRef) -> str | None:
    """The version a reference pins exactly (``@1.0`` or ``==1.0`` without wildcard), else None."""
    if ref.version:
        return ref.version
    if ref.spec is not None:
        specs = list(ref.spec)
        if len(specs) == 1 and specs[0].operator in ("==", "===") and "*" not in specs[0].version:
            try:
                return str(Version(specs[0].version))
            except InvalidVersion:
                return None
    return None


def pick_version(
    name: str,
    candidates: Sequence[Candidate],
    *,
    version: str | None = None,
    spec: SpecifierSet | None = None,
    alias_target: str | None = None,
) -> Resolution:
    """Choose among ``candidates`` (any order). Raises NotFoundError naming what exists."""
    if alias_target is not None:
        for c in candidates:
            if c.version == alias_target:
                return Resolution(c.version, c.yanked, "alias")
        raise NotFoundError(f"{name}: alias points to {alias_target}, which is not in the catalog")
    if not candidates:
        raise NotFoundError(f"{name}: no versions in the catalog")
    if version is not None:
        want = Version(version)
        for c in candidates:
            if Version(c.version) == want:
                return Resolution(c.version, c.yanked, "version")
        raise NotFoundError(f"{name}=={version} is not in the catalog (versions: {_listing(candidates)})")
    live = [c for c in candidates if not c.yanked]
    by_version = {c.version: c for c in live}
    matching = list((spec or SpecifierSet()).filter(by_version))
    if not matching:
        what = f"{name}{spec}" if spec is not None else name
        if any(not c.yanked for c in candidates):
            raise NotFoundError(f"no version of {what} matches (versions: {_listing(candidates)})")
        raise NotFoundError(
            f"every version of {name} is yanked (versions: {_listing(candidates)})",
            hint=f"pin one explicitly, e.g. {name}=={max(candidates, key=lambda c: Version(c.version)).version}",
        )
    best = max(matching, key=Version)
    return Resolution(best, False, "spec" if spec is not None else "latest")


def _listing(candidates: Sequence[Candidate]) -> str:
    items = sorted(candidates, key=lambda c: Version(c.version))
    return ", ".join(c.version + (" (yanked)" if c.yanked else "") for c in items) or "none"
