"""The Python API of patchctl. The CLI calls only this module; so can scripts and CI jobs.

Every function takes the resolved :class:`~patchctl.settings.Settings` first and returns
plain records (:mod:`patchctl.registry.records` or the dataclasses below).

This module is a façade: nothing inside ``patchctl`` but the CLI imports it. What the other
modules share lives in :mod:`patchctl._session` (catalog, store, reading a base, laying a version
out, the publisher types); push lives in :mod:`patchctl.pushing` (its stages are described
there); check and install in :mod:`patchctl.installer`; pull, publish and search in
:mod:`patchctl.sync`; validation and CI in :mod:`patchctl.evaluate`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patchctl._text import check_text
from patchctl.errors import InvalidInputError, NotFoundError
from patchctl.registry.records import (
    AliasInfo,
    Ancestor,
    BaseInfo,
    CompatReportRecord,
    InstallRecord,
    LineageEdge,
    PatchSummary,
    RemoteCopy,
    ValidationRecord,
    VersionInfo,
)
from patchctl.schemas._names import normalize_version
from patchctl.schemas.refs import HubRef, PatchRef, parse_base_ref, parse_patch_ref
from patchctl.settings import Settings

__all__ = [
    "BaseAddResult",
    "BaseListing",
    "CheckOutcome",
    "CiOutcome",
    "CiResult",
    "EvalOptions",
    "InstallOutcome",
    "OutdatedPatch",
    "PatchDetails",
    "PreparedPush",
    "PublishedCopy",
    "Publisher",
    "PullResult",
    "PushResult",
    "ValidationOutcome",
    "alias_list",
    "alias_remove",
    "alias_set",
    "base_add",
    "base_list",
    "catalog",
    "check",
    "checked_adapter",
    "ci",
    "ci_plan",
    "db_current",
    "db_upgrade",
    "install",
    "list_patches",
    "materialize_version",
    "outdated",
    "prepare_push",
    "publisher_for",
    "pull",
    "push",
    "read_base",
    "remote_url_for",
    "resolve",
    "search",
    "show",
    "unyank",
    "validate",
    "yank",
]


if TYPE_CHECKING:
    from patchctl._session import PublishedCopy, Publisher, catalog, checked_adapter, materialize_version, read_base
    from patchctl.registry.db import SchemaState
    from patchctl.registry.reads import CatalogReader
    from patchctl.registry.store import Catalog
    from patchctl.schemas.base import BaseFacts


@contextmanager
def _catalog(settings: Settings) -> Iterator[Catalog]:
    # the catalog (SQLAlchemy) is imported by the functions that open it, not by `import
    # patchctl.api`: `patchctl search` and `patchctl config` never load it
    from patchctl._session import catalog

    with catalog(settings) as cat:
        yield cat


@contextmanager
def _reader(settings: Settings) -> Iterator[CatalogReader]:
    # the read commands' catalog: a bare DB-API connection when the schema is current (no
    # SQLAlchemy imported), else the full catalog (which migrates or refuses a stale schema)
    from patchctl.registry.reads import open_reader

    with open_reader(settings) as cat:
        yield cat


def _read_base(base_dir: Path, **kwargs: Any) -> BaseFacts:
    from patchctl._session import read_base

    return read_base(base_dir, **kwargs)


# -- list / show / resolve ------------------------------------------------------------------


def list_patches(
    settings: Settings,
    namespace: str | None = None,
    *,
    limit: int | None = None,
    cursor: str | None = None,
    validated_on: str | None = None,
) -> list[PatchSummary]:
    """Patches by name; ``limit`` of them after ``cursor`` (the last name of the previous page).
    ``validated_on`` (a base directory, ``hf://repo@rev`` or weights fingerprint) keeps those with a
    version that passed validation on exactly that base."""
    with _reader(settings) as cat:
        if validated_on is None:
            return cat.list_patches(namespace, limit=limit, after=cursor)
        sha = _base_fingerprint(cat, validated_on, settings=settings)
        names = cat.validated_names(sha)
        patches = [p for p in cat.list_patches(namespace, after=cursor) if p.name in names]
        return patches if limit is None else patches[:limit]


def _base_fingerprint(cat: CatalogReader, text: str, *, settings: Settings) -> str:
    """The weights fingerprint of a base named by fingerprint (prefix), ``hf://repo@rev`` known to
    the catalog, or a local directory (hashed, not recorded)."""
    if re.fullmatch(r"[0-9a-fA-F]{8,64}", text) and not Path(text).exists():
        return cat.get_base(text).weights_sha256
    ref = parse_base_ref(text)
    if isinstance(ref, HubRef):
        found = cat.find_bases(f"hf://{ref.repo_id}", ref.revision)
        if len(found) != 1:
            raise NotFoundError(f"{text}: {len(found)} recorded bases match; give a commit or a fingerprint")
        return found[0].weights_sha256
    return _read_base(ref.path, settings=settings).weights_sha256


def _patch_ref(text: str) -> PatchRef:
    ref = parse_patch_ref(text)
    if not isinstance(ref, PatchRef):
        raise InvalidInputError(f"{text!r}: expected a catalog patch (org/name, org/name==1.0, org/name@alias)")
    return ref


def resolve(settings: Settings, ref: str) -> VersionInfo:
    with _reader(settings) as cat:
        return cat.resolve(_patch_ref(ref)).version


@dataclass(frozen=True)
class VersionRow:
    version: str
    yanked: bool
    created_at: datetime


@dataclass(frozen=True)
class PatchDetails:
    version: VersionInfo
    via: str
    versions: tuple[VersionRow, ...]
    aliases: tuple[AliasInfo, ...]
    source_base: BaseInfo | None
    lineage: tuple[Ancestor, ...]
    remotes: tuple[RemoteCopy, ...]
    compat_reports: tuple[CompatReportRecord, ...]
    validations: tuple[ValidationRecord, ...]
    installs: tuple[InstallRecord, ...]


def show(
    settings: Settings,
    ref: str,
    *,
    all_reports: bool = False,
    limit: int | None = None,
    reports_cursor: int | None = None,
    installs_cursor: int | None = None,
) -> PatchDetails:
    """Everything the catalog knows about one version (``org/name`` → the newest non-yanked).

    Compat reports: the newest per base unless ``all_reports``; reports and installs: ``limit``
    rows (newest first) older than their cursor (the last id of the previous page)."""
    with _reader(settings) as cat:
        resolved = cat.resolve(_patch_ref(ref))
        v = resolved.version
        try:
            source = cat.get_base(v.manifest.source_base.weights_sha256)
        except NotFoundError:
            source = None
        return PatchDetails(
            version=v,
            via=resolved.via,
            versions=tuple(VersionRow(*x) for x in cat.list_version_rows(v.name)),
            aliases=tuple(cat.list_aliases(v.name)),
            source_base=source,
            lineage=tuple(cat.ancestors(v.manifest.source_base.weights_sha256)),
            remotes=tuple(cat.list_remotes(v.name, v.version)),
            compat_reports=tuple(
                cat.list_compat_reports(
                    v.name, v.version, latest_per_base=not all_reports, limit=limit, before=reports_cursor
                )
            ),
            validations=tuple(cat.list_validations(v.name, v.version)),
            installs=tuple(cat.list_installs(v.name, v.version, limit=limit, before=installs_cursor)),
        )


# -- aliases and yank -------------------------------------------------------------------------


def _name_and_version(ref: str, version: str | None) -> tuple[str, str]:
    """``org/name 1.0`` or ``org/name==1.0`` / ``org/name@1.0`` → (name, version)."""
    pref = _patch_ref(ref)
    from patchctl.registry.resolver import exact_version

    pinned = exact_version(pref)
    if pref.alias or (pref.spec is not None and pinned is None):
        raise InvalidInputError(f"{ref!r}: name one exact version (org/name==1.0.0)")
    if pinned and version and normalize_version(version) != pinned:
        raise InvalidInputError(f"{ref!r} and version {version!r} disagree")
    v = pinned or version
    if not v:
        raise InvalidInputError(f"{ref!r}: which version? (org/name==1.0.0)")
    try:
        return pref.name, normalize_version(v)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


def alias_set(settings: Settings, ref: str, alias: str, version: str | None = None) -> AliasInfo:
    name, v = _name_and_version(ref, version)
    with _catalog(settings) as cat:
        return cat.set_alias(name, alias, v)


def alias_remove(settings: Settings, name: str, alias: str) -> None:
    with _catalog(settings) as cat:
        cat.remove_alias(_patch_ref(name).name, alias)


def alias_list(settings: Settings, name: str) -> list[AliasInfo]:
    with _reader(settings) as cat:
        return cat.list_aliases(_patch_ref(name).name)


def yank(settings: Settings, ref: str, version: str | None = None, *, reason: str | None = None) -> VersionInfo:
    if reason is not None:
        check_text(reason, "--reason")
    name, v = _name_and_version(ref, version)
    with _catalog(settings) as cat:
        return cat.yank(name, v, reason)


def unyank(settings: Settings, ref: str, version: str | None = None) -> VersionInfo:
    name, v = _name_and_version(ref, version)
    with _catalog(settings) as cat:
        return cat.unyank(name, v)


# -- bases ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseAddResult:
    base: BaseInfo
    created: bool
    edges: tuple[LineageEdge, ...] = ()


@dataclass(frozen=True)
class BaseListing:
    bases: tuple[BaseInfo, ...]
    edges: tuple[LineageEdge, ...] = field(default_factory=tuple)


def _parent_fingerprint(cat: Catalog, text: str, *, show_progress: bool, settings: Settings) -> str:
    """A parent given as a weights fingerprint (or prefix), ``hf://repo@rev`` known to the
    catalog, or a local base directory (read and recorded)."""

    if re.fullmatch(r"[0-9a-fA-F]{8,64}", text) and not Path(text).exists():
        return cat.get_base(text).weights_sha256
    ref = parse_base_ref(text)
    if isinstance(ref, HubRef):
        found = cat.find_bases(f"hf://{ref.repo_id}", ref.revision)
        if not found:
            raise NotFoundError(
                f"{text}: no such base in the catalog", hint="add it first (patchctl base add), or give its fingerprint"
            )
        if len(found) > 1:
            raise InvalidInputError(f"{text}: {len(found)} bases match; give a revision or a fingerprint")
        return found[0].weights_sha256
    facts = _read_base(ref.path, show_progress=show_progress, settings=settings)
    base, _ = cat.add_base(facts)
    return base.weights_sha256


def base_add(
    settings: Settings,
    base_dir: Path,
    *,
    revision: str | None = None,
    parents: Sequence[str] = (),
    relation: str = "update",
    show_progress: bool = False,
) -> BaseAddResult:
    """Record a local base (fingerprinted) and its lineage edges to ``parents``."""
    from patchctl.registry.reads import LINEAGE_RELATIONS

    if relation not in LINEAGE_RELATIONS:
        raise InvalidInputError(f"relation {relation!r}: expected one of {', '.join(LINEAGE_RELATIONS)}")
    base_dir = Path(base_dir).expanduser()
    facts = _read_base(base_dir, revision=revision, show_progress=show_progress, settings=settings)
    with _catalog(settings) as cat:
        parent_shas = [_parent_fingerprint(cat, p, show_progress=show_progress, settings=settings) for p in parents]
        base, created = cat.add_base(facts)
        edges = tuple(cat.add_lineage(base.weights_sha256, p, relation) for p in parent_shas)
        return BaseAddResult(base, created, edges)


def base_list(settings: Settings, *, limit: int | None = None, cursor: str | None = None) -> BaseListing:
    """Recorded bases and their parents; ``limit`` of them after ``cursor`` (a weights fingerprint)."""
    with _reader(settings) as cat:
        bases = tuple(cat.list_bases(limit=limit, after=cursor))
        children = None if limit is None and cursor is None else [b.weights_sha256 for b in bases]
        return BaseListing(bases, tuple(cat.list_lineage(children)))


# -- database ---------------------------------------------------------------------------------


def db_upgrade(settings: Settings) -> SchemaState:
    from patchctl.registry.db import make_engine, upgrade

    engine = make_engine(settings.database_url, create_dir=settings.uses_default_database)
    try:
        return upgrade(engine)
    finally:
        engine.dispose()


def db_current(settings: Settings) -> SchemaState:
    from patchctl.registry.db import make_engine, schema_state

    engine = make_engine(settings.database_url, create_dir=settings.uses_default_database)
    try:
        return schema_state(engine)
    finally:
        engine.dispose()


# -- push / check / install / remotes / validation (implemented in their own modules) --------
# Imported on first use (module __getattr__), so that `patchctl list` does not load the
# installer, the remotes or the evaluation code.

if TYPE_CHECKING:
    from patchctl.evaluate._ci import CiOutcome, CiResult, ci, ci_plan
    from patchctl.evaluate._outdated import OutdatedPatch, outdated
    from patchctl.evaluate._run import ValidationOutcome, validate
    from patchctl.installer import CheckOutcome, InstallOutcome, check, install
    from patchctl.pushing import EvalOptions, PreparedPush, PushResult, prepare_push, push
    from patchctl.sync import PullResult, publisher_for, pull, remote_url_for, search

_LAZY: dict[str, str] = {
    **dict.fromkeys(
        ("PublishedCopy", "Publisher", "catalog", "checked_adapter", "materialize_version", "read_base"),
        "patchctl._session",
    ),
    **dict.fromkeys(("CiOutcome", "CiResult", "ci", "ci_plan"), "patchctl.evaluate._ci"),
    **dict.fromkeys(("OutdatedPatch", "outdated"), "patchctl.evaluate._outdated"),
    **dict.fromkeys(("ValidationOutcome", "validate"), "patchctl.evaluate._run"),
    **dict.fromkeys(("CheckOutcome", "InstallOutcome", "check", "install"), "patchctl.installer"),
    **dict.fromkeys(("EvalOptions", "PreparedPush", "PushResult", "prepare_push", "push"), "patchctl.pushing"),
    **dict.fromkeys(("PullResult", "publisher_for", "pull", "remote_url_for", "search"), "patchctl.sync"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
