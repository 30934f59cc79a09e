"""``patchctl resolve REQ --onto BASE``: which version of a patch is the right one for this base, and why.

The ranking and the decision live in :func:`patchctl.registry.resolver.resolve_for_base`; this
module is its provider over the catalog and the checks: candidates from the catalog (narrow
queries), the target base's recorded ancestry, and each candidate's header-level checks on the
base, read from the catalog when a report of this patchctl version exists for (version, base
fingerprint), else run now and recorded (so the next resolve reads them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from patchctl import __version__
from patchctl.errors import InvalidInputError
from patchctl.registry.reads import CatalogReader, open_reader
from patchctl.registry.resolver import (
    BaseCandidate,
    BaseResolution,
    Compatibility,
    Reporter,
    exact_version,
    resolve_for_base,
)
from patchctl.schemas.refs import PatchRef, parse_patch_ref
from patchctl.settings import Settings

if TYPE_CHECKING:
    from patchctl.schemas.base import BaseFacts

__all__ = ["CatalogProvider", "ResolveTarget", "needs_resolution", "resolve_onto", "resolve_with_catalog"]

_FINGERPRINT = re.compile(r"[0-9a-fA-F]{8,64}")


@dataclass(frozen=True)
class ResolveTarget:
    """The base to resolve for: its fingerprint, and its facts when they are at hand (to run checks)."""

    weights_sha256: str
    facts: BaseFacts | None
    label: str


def needs_resolution(text: str) -> bool:
    """True for a catalog reference that is not an exact pin (``org/name``, a specifier, an alias)."""
    try:
        ref = parse_patch_ref(text)
    except InvalidInputError:
        return False
    return isinstance(ref, PatchRef) and exact_version(ref) is None


class CatalogProvider:
    """The resolver's provider: candidates and cached reports from the catalog, checks run when missing."""

    def __init__(self, settings: Settings, cat: CatalogReader, ref: PatchRef, target: ResolveTarget) -> None:
        self.settings, self.cat, self.ref, self.target = settings, cat, ref, target
        self._cands: list[BaseCandidate] | None = None
        self._ancestry: dict[str, int] | None = None
        self._cache: dict[str, tuple[str, list[str]]] | None = None

    def candidates(self) -> Sequence[BaseCandidate]:
        if self._cands is None:
            self._cands = self.cat.base_candidates(self.ref, self.target.weights_sha256)
        return self._cands

    def ancestry(self) -> Mapping[str, int]:
        if self._ancestry is None:
            self._ancestry = self.cat.ancestry(self.target.weights_sha256)
        return self._ancestry

    def compatibility(self, candidate: BaseCandidate) -> Compatibility:
        if self._cache is None:  # one query for every candidate's newest report on this base
            self._cache = self.cat.latest_report_statuses(
                self.ref.name,
                [c.version for c in self.candidates()],
                self.target.weights_sha256,
                tool_version=__version__,
            )
        cached = self._cache.get(candidate.version)
        if cached is not None:
            status, failed = cached
            return Compatibility(status, tuple(failed), cached=True)  # type: ignore[arg-type]
        if self.target.facts is None:
            return Compatibility(
                "unknown",
                ("no compat report on this base yet; give the base as a directory or hf:// to run the checks",),
            )
        return self._run_checks(candidate, self.target.facts)

    def _run_checks(self, candidate: BaseCandidate, facts: BaseFacts) -> Compatibility:
        from patchctl.checks import read_adapter_for_checks, run_checks
        from patchctl.installer import _materialized
        from patchctl.registry.store import Catalog

        # a target with facts (a directory, hf://) is resolved on a catalog opened for writing
        assert isinstance(self.cat, Catalog), "checks are recorded: open the catalog with open_catalog"

        version = self.cat.get_version(candidate.name, candidate.version)
        layout = read_adapter_for_checks(_materialized(self.settings, version))
        report = run_checks(
            layout, facts, manifest=version.manifest, target_ancestors=set(self.ancestry()), patch=version.ref
        )
        self.cat.record_compat_report(
            version.name,
            version.version,
            base_weights_sha256=facts.weights_sha256,
            status=report.status,
            report=report.model_dump(mode="json"),
            tool_version=__version__,
        )
        failed = tuple(f"{r.name}: {r.detail}" for r in report.failed)
        return Compatibility(report.status, failed, cached=False)


def _patch_ref(text: str) -> PatchRef:
    ref = parse_patch_ref(text)
    if not isinstance(ref, PatchRef):
        raise InvalidInputError(f"{text!r}: resolve takes a catalog patch (org/name, org/name>=1,<2, org/name@alias)")
    return ref


def resolve_with_catalog(
    settings: Settings,
    cat: CatalogReader,
    request: str,
    target: ResolveTarget,
    *,
    allow_unrelated: bool = False,
    explain: bool = False,
    reporter: Reporter | None = None,
) -> BaseResolution:
    """Resolve ``request`` for ``target`` on an open catalog (raises NoCompatibleVersionError)."""
    provider = CatalogProvider(settings, cat, _patch_ref(request), target)
    return resolve_for_base(
        request,
        target.weights_sha256,
        provider,
        allow_unrelated=allow_unrelated,
        check_all=explain,
        reporter=reporter,
    )


def _is_fingerprint(onto: str) -> bool:
    return _FINGERPRINT.fullmatch(onto) is not None and not Path(onto).exists()


def _target(settings: Settings, cat: CatalogReader, onto: str, *, progress: bool) -> ResolveTarget:
    if _is_fingerprint(onto):
        base = cat.get_base(onto)
        return ResolveTarget(base.weights_sha256, None, base.source)
    from patchctl.installer import _target_base

    t = _target_base(settings, onto, progress=progress)
    return ResolveTarget(t.facts.weights_sha256, t.facts, t.ref)


def resolve_onto(
    settings: Settings,
    request: str,
    *,
    onto: str,
    allow_unrelated: bool = False,
    explain: bool = False,
    progress: bool = False,
) -> BaseResolution:
    """Choose the version of ``request`` for the base ``onto`` (a directory, ``hf://repo@rev`` or a
    recorded base's weights fingerprint: then only reports already in the catalog are used, and
    the catalog is only read, without SQLAlchemy)."""
    if _is_fingerprint(onto):
        cat = open_reader(settings)
    else:
        from patchctl.registry.store import open_catalog

        cat = open_catalog(settings)
    try:
        target = _target(settings, cat, onto, progress=progress)
        return resolve_with_catalog(settings, cat, request, target, allow_unrelated=allow_unrelated, explain=explain)
    finally:
        cat.close()
