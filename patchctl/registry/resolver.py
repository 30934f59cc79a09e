"""Picking a version of a patch for a reference, and a sortable text key for PEP 440 versions.

Rules (``org/name`` forms, see :mod:`patchctl.schemas.refs`):

- ``org/name@1.2.0`` / ``org/name==1.2.0`` (exact version): that version, even if yanked
  (the result says so, as pip does for ``==`` pins);
- ``org/name==1.2.*`` (any specifier) or ``org/name``: the newest non-yanked version that
  matches; pre-releases only when the specifier names one or nothing else matches;
- ``org/name@stable``: the version the alias points to (yanked or not; flagged).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from patchctl.errors import InvalidInputError, NotFoundError
from patchctl.schemas.refs import PatchRef

__all__ = [
    "RANK_NAMES",
    "BaseCandidate",
    "BaseResolution",
    "Candidate",
    "CandidateOutcome",
    "Compatibility",
    "NoCompatibleVersionError",
    "Reporter",
    "Resolution",
    "ResolveProvider",
    "exact_version",
    "no_fit_error",
    "pick_version",
    "resolve_for_base",
    "version_sort_key",
]

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


# -- choosing a version for a target base -----------------------------------------------------
#
# Shaped as resolvelib is: a *provider* answers questions about the world (which candidates
# match the request, how the base relates to each candidate's source base, whether a candidate
# passes the header-level checks on the base) and a *reporter* is told why each candidate was
# ranked or rejected. :func:`resolve_for_base` only ranks and decides; it does no I/O itself.

#: ranks, best first (the ``rank`` of a candidate in ``--json`` output)
RANK_VALIDATED = 1
RANK_SAME_BASE = 2
RANK_DESCENDANT = 3
RANK_UNRELATED = 4
RANK_NAMES = {
    RANK_VALIDATED: "validated on this base",
    RANK_SAME_BASE: "made on this base",
    RANK_DESCENDANT: "base descends from its source base",
    RANK_UNRELATED: "same family, unknown lineage",
}


@dataclass(frozen=True)
class BaseCandidate:
    """A version that matches the request, with what the catalog knows of it for the base."""

    name: str
    version: str
    yanked: bool
    source_weights_sha256: str
    #: a validation with a passing verdict exists for this version on the exact base
    validated: bool = False

    @property
    def ref(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class Compatibility:
    """The header-level checks of a candidate on the base: worst status and what failed."""

    status: Literal["pass", "warn", "fail", "unknown"]
    failed: tuple[str, ...] = ()  # "check: detail" per failed check
    cached: bool = False  # read from the catalog rather than run now


class ResolveProvider(Protocol):
    """What the resolver asks of the world (the catalog, the checks)."""

    def candidates(self) -> Sequence[BaseCandidate]:
        """Versions that match the request, best version first or in any order."""
        ...

    def ancestry(self) -> Mapping[str, int]:
        """Recorded ancestors of the target base: weights fingerprint → depth (1 = parent; 0 = the
        same weights under other files)."""
        ...

    def compatibility(self, candidate: BaseCandidate) -> Compatibility:
        """The header-level checks of ``candidate`` on the target base (cached or run now)."""
        ...


@dataclass(frozen=True)
class CandidateOutcome:
    ref: str
    version: str
    source_base: str
    rank: int | None  # None when rejected or not checked
    reason: str
    rejected: str | None
    check: str | None  # pass | warn | fail | unknown | None (not checked)


@dataclass(frozen=True)
class BaseResolution:
    """The decision: the chosen ref (or None) and every candidate's rank or rejection."""

    request: str
    base: str  # weights fingerprint of the target
    chosen: str | None
    candidates: tuple[CandidateOutcome, ...]
    allow_unrelated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "request": self.request,
            "base": self.base,
            "chosen": self.chosen,
            "allow_unrelated": self.allow_unrelated,
            "candidates": [
                {"ref": c.ref, "rank": c.rank, "reason": c.reason, "rejected": c.rejected, "check": c.check}
                for c in self.candidates
            ],
        }


class Reporter:
    """Collects why each candidate was ranked, rejected or chosen (subclass to stream events)."""

    def __init__(self) -> None:
        self.outcomes: dict[str, CandidateOutcome] = {}

    def ranked(self, c: BaseCandidate, rank: int, reason: str) -> None:
        self.outcomes[c.ref] = CandidateOutcome(c.ref, c.version, c.source_weights_sha256, rank, reason, None, None)

    def rejected(self, c: BaseCandidate, why: str, *, check: str | None = None) -> None:
        prev = self.outcomes.get(c.ref)
        reason = prev.reason if prev is not None else ""
        self.outcomes[c.ref] = CandidateOutcome(c.ref, c.version, c.source_weights_sha256, None, reason, why, check)

    def checked(self, c: BaseCandidate, compat: Compatibility) -> None:
        prev = self.outcomes[c.ref]
        self.outcomes[c.ref] = CandidateOutcome(
            prev.ref, prev.version, prev.source_base, prev.rank, prev.reason, None, compat.status
        )

    def not_checked(self, c: BaseCandidate, chosen: str) -> None:
        """Ranked below ``chosen``, which passed: left unchecked (``--explain`` checks it)."""
        prev = self.outcomes[c.ref]
        self.outcomes[c.ref] = CandidateOutcome(
            prev.ref, prev.version, prev.source_base, prev.rank, prev.reason, None, None
        )


class NoCompatibleVersionError(NotFoundError):
    """No candidate fits the base; ``resolution`` holds every candidate's rejection."""

    def __init__(self, message: str, *, hint: str | None = None, resolution: BaseResolution) -> None:
        super().__init__(message, hint=hint)
        self.resolution = resolution


def _rank(c: BaseCandidate, base: str, ancestry: Mapping[str, int]) -> tuple[int, int, str] | None:
    """(rank, depth, reason) from the catalog's facts, or None when the lineage is unknown."""
    if c.validated:
        return (
            RANK_VALIDATED,
            0,
            RANK_NAMES[RANK_VALIDATED] + ("" if c.source_weights_sha256 != base else " (and made on it)"),
        )
    if c.source_weights_sha256 == base:
        return RANK_SAME_BASE, 0, RANK_NAMES[RANK_SAME_BASE]
    depth = ancestry.get(c.source_weights_sha256)
    if depth == 0:  # recorded as identical weights (re-sharded or re-uploaded)
        return RANK_SAME_BASE, 0, RANK_NAMES[RANK_SAME_BASE] + " (identical weights, other files)"
    if depth is not None:
        gen = "parent" if depth == 1 else f"ancestor, {depth} generations up"
        return RANK_DESCENDANT, depth, f"base descends from its source base {c.source_weights_sha256[:12]} ({gen})"
    return None


def resolve_for_base(
    request: str,
    base: str,
    provider: ResolveProvider,
    *,
    allow_unrelated: bool = False,
    check_all: bool = False,
    reporter: Reporter | None = None,
) -> BaseResolution:
    """Choose the best candidate for ``base`` (a weights fingerprint).

    Rank: validated on this exact base > made on this exact base > the base is a recorded
    descendant of the candidate's source base (nearer first) > same family, unknown lineage
    (only with ``allow_unrelated``); ties go to the higher version. Candidates are checked in
    rank order; one whose checks fail is rejected and the next is tried. With ``check_all``
    every candidate is checked (``--explain``), else checking stops at the first that passes.
    Raises :class:`NoCompatibleVersionError` (exit 3) when none fits.
    """
    rep = reporter or Reporter()
    cands = sorted(provider.candidates(), key=lambda c: Version(c.version), reverse=True)
    ancestry = provider.ancestry()
    ranked: list[tuple[tuple[int, int], BaseCandidate]] = []
    for c in cands:
        r = _rank(c, base, ancestry)
        if r is None:
            reason = f"unknown lineage: the base is not a recorded descendant of its source base {c.source_weights_sha256[:12]}"
            if not allow_unrelated:
                rep.ranked(c, RANK_UNRELATED, reason)
                rep.rejected(c, reason + " (--allow-unrelated accepts it if the checks pass)")
                continue
            r = (RANK_UNRELATED, 0, RANK_NAMES[RANK_UNRELATED])
        rank, depth, reason = r
        rep.ranked(c, rank, reason)
        ranked.append(((rank, depth), c))
    ranked.sort(key=lambda item: (item[0][0], item[0][1], _neg(item[1].version)))
    chosen: BaseCandidate | None = None
    for _, c in ranked:
        if chosen is not None and not check_all:
            rep.not_checked(c, chosen.ref)
            continue
        compat = provider.compatibility(c)
        if compat.status == "fail":
            rep.rejected(c, "checks failed: " + ("; ".join(compat.failed) or "see `patchctl check`"), check="fail")
        elif compat.status == "unknown":
            rep.rejected(c, "; ".join(compat.failed) or "not checked on this base", check="unknown")
        else:
            rep.checked(c, compat)
            if chosen is None:
                chosen = c
    order = [c.ref for _, c in ranked] + [c.ref for c in cands if c.ref not in {x.ref for _, x in ranked}]
    res = BaseResolution(
        request=request,
        base=base,
        chosen=chosen.ref if chosen is not None else None,
        candidates=tuple(rep.outcomes[ref] for ref in order),
        allow_unrelated=allow_unrelated,
    )
    if chosen is None:
        raise no_fit_error(res, cands)
    return res


class _Desc:
    """Sort key that orders versions newest first."""

    __slots__ = ("v",)

    def __init__(self, v: Version) -> None:
        self.v = v

    def __lt__(self, other: _Desc) -> bool:
        return self.v > other.v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and self.v == other.v


def _neg(version: str) -> _Desc:
    return _Desc(Version(version))


def no_fit_error(res: BaseResolution, cands: Sequence[BaseCandidate]) -> NoCompatibleVersionError:
    """A readable failure from structured causes (as pip's ``get_installation_error`` builds its)."""
    lines = [f"no version of {res.request} fits the base {res.base[:12]}:"]
    unknown_lineage = failed = unchecked = 0
    sources: set[str] = set()
    for c in res.candidates:
        lines.append(f"  {c.ref} (made on base {c.source_base[:12]}): {c.rejected}")
        if c.rejected and c.rejected.startswith("unknown lineage"):
            unknown_lineage += 1
            sources.add(c.source_base[:12])
        elif c.check == "fail":
            failed += 1
        else:
            unchecked += 1
    hints = []
    if unknown_lineage:
        src = ", ".join(sorted(sources))
        hints.append(
            f"record where the base comes from (`patchctl base add BASE_DIR --parent {src.split(', ')[0]}`)"
            + (" or pass --allow-unrelated" if not res.allow_unrelated else "")
        )
    if failed:
        hints.append("`patchctl check REF --onto BASE` shows the failing checks; push a version trained on this base")
    if unchecked:
        hints.append("give the base as a directory or hf:// reference so that the checks can run")
    return NoCompatibleVersionError("\n".join(lines), hint="; ".join(hints) or None, resolution=res)
