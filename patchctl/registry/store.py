"""The catalog store: every read and write of the catalog database goes through :class:`Catalog`.

Sessions are managed here (one transaction per method); callers get plain frozen records
(:mod:`patchctl.registry.records`). Writes that race with other processes (many CI jobs
pushing at once) rely on unique constraints: an insert that loses the race is rolled back to
a savepoint and the winner's row is read instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from packaging.specifiers import SpecifierSet
from packaging.version import Version as PepVersion
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from patchctl.errors import CatalogError, ConflictError, InvalidInputError, NotFoundError
from patchctl.registry import models as m
from patchctl.registry.db import WRITE_OPTION, check_schema, make_engine, redacted_url
from patchctl.registry.records import (
    AddVersionResult,
    AliasInfo,
    Ancestor,
    BaseInfo,
    CompatReportRecord,
    InstallRecord,
    LineageEdge,
    LineageGraph,
    LineageResult,
    LineageVersion,
    PatchSummary,
    RemoteCopy,
    ResolvedVersion,
    ValidationRecord,
    VersionInfo,
)
from patchctl.registry.resolver import BaseCandidate, Candidate, exact_version, pick_version, version_sort_key
from patchctl.schemas._names import check_patch_name, normalize_version
from patchctl.schemas.refs import PatchRef
from patchctl.settings import Settings

if TYPE_CHECKING:
    from patchctl.schemas.base import BaseFacts, Family
    from patchctl.schemas.manifest import Manifest

__all__ = ["IDENTICAL", "LINEAGE_RELATIONS", "Catalog", "check_alias_name", "open_catalog"]

T = TypeVar("T")

#: the same tensors as the parent (re-sharded or re-uploaded): recorded automatically when a base's
#: tensor-content fingerprint matches a recorded one; the resolver treats both as the same base
IDENTICAL = "identical-weights"
#: how a child base relates to its parent (``patchctl base add --relation``)
LINEAGE_RELATIONS = (
    "update",
    "continued-pretraining",
    "finetune",
    "merge",
    "quantization",
    "other",
    IDENTICAL,
)
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")
_STATUSES = ("pass", "warn", "fail")
#: verdicts of a validation (``pass``/``fail`` are accepted for rows written before 0003)
VALIDATION_VERDICTS = ("pass", "regressed", "no-baseline", "fail")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=timezone.utc)


def check_alias_name(alias: str) -> str:
    if not _ALIAS.fullmatch(alias):
        raise InvalidInputError(f"{alias!r}: an alias starts with a letter; letters, digits, '.', '_', '-' (≤ 64)")
    try:
        PepVersion(alias)
    except ValueError:
        return alias
    raise InvalidInputError(f"{alias!r} looks like a version; an alias must not be one")


def _version(text: str) -> str:
    try:
        return normalize_version(text)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


def _name(text: str) -> str:
    try:
        return check_patch_name(text)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


class Catalog:
    """The catalog database. Use :func:`open_catalog`; close with :meth:`close` (or ``with``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._write_engine = engine.execution_options(**{WRITE_OPTION: True})

    @property
    def url(self) -> str:
        return redacted_url(self.engine.url)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sessions -------------------------------------------------------------------------

    @contextmanager
    def _session(self, write: bool = False) -> Iterator[Session]:
        session = Session(self._write_engine if write else self.engine, expire_on_commit=False)
        try:
            with session.begin():
                yield session
        except OperationalError as exc:
            first = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
            raise CatalogError(f"catalog {self.url}: {first}") from None
        finally:
            session.close()

    def _retrying(self, fn: Callable[[Session], T], attempts: int = 3) -> T:
        """Run ``fn`` in a write transaction; retry when a concurrent writer won a unique race."""
        for i in range(attempts):
            try:
                with self._session(write=True) as s:
                    return fn(s)
            except SAIntegrityError:
                if i == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    # -- lookups ---------------------------------------------------------------------------

    @staticmethod
    def _patch(s: Session, name: str) -> m.Patch:
        row = s.scalar(select(m.Patch).where(m.Patch.name == name))
        if row is None:
            raise NotFoundError(f"patch {name} is not in the catalog", hint="see `patchctl list`")
        return row

    @classmethod
    def _version_row(cls, s: Session, name: str, version: str) -> tuple[m.Patch, m.Version]:
        patch = cls._patch(s, name)
        key = version_sort_key(version)
        row = s.scalar(select(m.Version).where(m.Version.patch_id == patch.id, m.Version.sort_key == key))
        if row is None:
            versions = s.scalars(select(m.Version.version).where(m.Version.patch_id == patch.id)).all()
            listing = ", ".join(sorted(versions, key=PepVersion)) or "none"
            raise NotFoundError(f"{name}=={version} is not in the catalog (versions: {listing})")
        return patch, row

    @staticmethod
    def _info(patch: m.Patch, row: m.Version) -> VersionInfo:
        from patchctl.schemas.manifest import Manifest  # (pydantic: not needed by `list`)

        return VersionInfo(
            name=patch.name,
            version=row.version,
            content_digest=row.content_digest,
            manifest_sha256=row.manifest_sha256,
            manifest=Manifest.from_dict(row.manifest, source=f"catalog: {patch.name}=={row.version}"),
            yanked=row.yanked,
            yank_reason=row.yank_reason,
            created_at=_aware(row.created_at),
        )

    @staticmethod
    def _base_info(row: m.BaseModel) -> BaseInfo:
        from patchctl.schemas.base import Family

        return BaseInfo(
            source=row.source,
            revision=row.revision,
            weights_sha256=row.weights_sha256,
            structure_sha256=row.structure_sha256,
            family=Family.model_validate(row.family),
            created_at=_aware(row.created_at),
        )

    # -- patches and versions --------------------------------------------------------------

    @staticmethod
    def _get_or_create_patch(s: Session, name: str) -> m.Patch:
        row = s.scalar(select(m.Patch).where(m.Patch.name == name))
        if row is not None:
            return row
        try:
            with s.begin_nested():
                row = m.Patch(namespace=name.split("/", 1)[0], name=name, created_at=_now())
                s.add(row)
        except SAIntegrityError:
            row = s.scalar(select(m.Patch).where(m.Patch.name == name))
            assert row is not None
        return row

    def add_version(
        self,
        manifest: Manifest,
        *,
        manifest_sha256: str,
        base: BaseFacts | None = None,
        remote: tuple[str, str | None] | None = None,
    ) -> AddVersionResult:
        """Record a version, its files, its source base (and a remote copy) in one transaction.

        The same content already recorded → ``created=False`` (nothing changes except a new
        remote copy); different content under the same version → :class:`ConflictError`.
        """
        key = version_sort_key(manifest.version)

        def existing(s: Session, patch: m.Patch) -> AddVersionResult | None:
            row = s.scalar(select(m.Version).where(m.Version.patch_id == patch.id, m.Version.sort_key == key))
            if row is None:
                return None
            if row.content_digest != manifest.content_digest:
                raise ConflictError(
                    f"{manifest.name}=={manifest.version} already exists with different content "
                    f"(recorded {row.content_digest[:12]}, pushed {manifest.content_digest[:12]}); versions are immutable",
                    hint="push it as a new version",
                )
            if remote is not None:
                self._add_remote(s, row, *remote)
            return AddVersionResult(self._info(patch, row), created=False)

        def tx(s: Session) -> AddVersionResult:
            patch = self._get_or_create_patch(s, manifest.name)
            if (found := existing(s, patch)) is not None:
                return found
            try:
                with s.begin_nested():
                    row = m.Version(
                        patch_id=patch.id,
                        version=manifest.version,
                        sort_key=key,
                        content_digest=manifest.content_digest,
                        manifest_sha256=manifest_sha256,
                        manifest=manifest.model_dump(mode="json"),
                        task=manifest.task,
                        source_weights_sha256=manifest.source_base.weights_sha256,
                        yanked=False,
                        created_at=_now(),
                    )
                    s.add(row)
            except SAIntegrityError:
                found = existing(s, patch)
                assert found is not None
                return found
            s.add_all(m.FileRow(version_id=row.id, path=f.path, sha256=f.sha256, size=f.size) for f in manifest.files)
            if base is not None:
                self._get_or_create_base(s, base)
            if remote is not None:
                self._add_remote(s, row, *remote)
            s.flush()
            return AddVersionResult(self._info(patch, row), created=True)

        return self._retrying(tx)

    def get_version(self, name: str, version: str) -> VersionInfo:
        with self._session() as s:
            return self._info(*self._version_row(s, _name(name), _version(version)))

    def list_versions(self, name: str, *, include_yanked: bool = True) -> list[VersionInfo]:
        """Versions of a patch, oldest first."""
        with self._session() as s:
            patch = self._patch(s, _name(name))
            q = select(m.Version).where(m.Version.patch_id == patch.id)
            if not include_yanked:
                q = q.where(m.Version.yanked.is_(False))
            rows = s.scalars(q.order_by(m.Version.sort_key)).all()
            return [self._info(patch, r) for r in rows]

    def list_patches(
        self,
        namespace: str | None = None,
        *,
        limit: int | None = None,
        after: str | None = None,
        only: set[str] | None = None,
    ) -> list[PatchSummary]:
        """Patches by name (``limit`` of them after the name ``after``: a page), each with its newest
        non-yanked version. Four queries per page, whatever the number of versions."""
        with self._session() as s:
            q = select(m.Patch.id, m.Patch.name, m.Patch.namespace).order_by(m.Patch.name)
            if namespace:
                q = q.where(m.Patch.namespace == namespace)
            if after is not None:
                q = q.where(m.Patch.name > after)
            if only is not None:
                q = q.where(m.Patch.name.in_(sorted(only)))
            if limit is not None:
                q = q.limit(limit)
            patches = s.execute(q).all()
            if not patches:
                return []
            ids = [p.id for p in patches]
            totals = dict(
                s.execute(
                    select(m.Version.patch_id, func.count())
                    .where(m.Version.patch_id.in_(ids))
                    .group_by(m.Version.patch_id)
                ).all()
            )
            yanked_counts = dict(
                s.execute(
                    select(m.Version.patch_id, func.count())
                    .where(m.Version.patch_id.in_(ids), m.Version.yanked.is_(True))
                    .group_by(m.Version.patch_id)
                ).all()
            )
            counts = {pid: (n, int(yanked_counts.get(pid, 0))) for pid, n in totals.items()}
            # the newest non-yanked version of each patch: one index seek per patch (ix_versions_listing)
            v2 = m.Version.__table__.alias("v2")
            newest_id = (
                select(v2.c.id)
                .where(v2.c.patch_id == m.Patch.id, v2.c.yanked.is_(False))
                .order_by(v2.c.sort_key.desc())
                .limit(1)
                .correlate(m.Patch)
                .scalar_subquery()
            )
            newest = select(newest_id.label("vid")).where(m.Patch.id.in_(ids)).subquery()
            latest = {
                pid: (v, t)
                for pid, v, t in s.execute(
                    select(m.Version.patch_id, m.Version.version, m.Version.task).where(
                        m.Version.id.in_(select(newest.c.vid))
                    )
                ).all()
            }
            for pid, (v, _) in list(latest.items()):
                if PepVersion(v).is_prerelease:  # a final release, if any, wins over a newer pre-release
                    rows = s.execute(
                        select(m.Version.version, m.Version.yanked, m.Version.task).where(m.Version.patch_id == pid)
                    ).all()
                    choice = pick_version("", [Candidate(r.version, r.yanked) for r in rows])
                    latest[pid] = next((r.version, r.task) for r in rows if r.version == choice.version)
            aliases: dict[int, dict[str, str]] = {}
            for pid, alias, version in s.execute(
                select(m.Alias.patch_id, m.Alias.alias, m.Version.version)
                .join(m.Version, m.Alias.version_id == m.Version.id)
                .where(m.Alias.patch_id.in_(ids))
                .order_by(m.Alias.alias)
            ).all():
                aliases.setdefault(pid, {})[alias] = version
            out = []
            for p in patches:
                n, yanked = counts.get(p.id, (0, 0))
                lv, task = latest.get(p.id, (None, None))
                out.append(PatchSummary(p.name, p.namespace, lv, task, n, yanked, aliases.get(p.id, {})))
            return out

    def search_patches(self, text: str, *, limit: int = 20) -> list[PatchSummary]:
        """Patches whose name contains ``text`` (case-insensitive), by name, at most ``limit``."""
        with self._session() as s:
            like = "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            names = s.scalars(
                select(m.Patch.name)
                .where(func.lower(m.Patch.name).like(like, escape="\\"))
                .order_by(m.Patch.name)
                .limit(limit)
            ).all()
        if not names:
            return []
        wanted = set(names)
        return self.list_patches(only=wanted)

    def list_version_rows(self, name: str) -> list[tuple[str, bool, datetime]]:
        """(version, yanked, created_at) of every version of a patch, oldest first (no manifests read)."""
        with self._session() as s:
            patch = self._patch(s, _name(name))
            rows = s.execute(
                select(m.Version.version, m.Version.yanked, m.Version.created_at)
                .where(m.Version.patch_id == patch.id)
                .order_by(m.Version.sort_key)
            ).all()
            return [(v, y, _aware(t)) for v, y, t in rows]

    def resolve(self, ref: PatchRef) -> ResolvedVersion:
        """The version a reference names (see :mod:`patchctl.registry.resolver` for the rules).

        Chooses over narrow rows (version, yanked); only the chosen row is read in full."""
        with self._session() as s:
            patch = self._patch(s, ref.name)
            exact = exact_version(ref)
            target = None
            if exact is not None and not ref.alias:
                row = s.scalar(
                    select(m.Version).where(
                        m.Version.patch_id == patch.id, m.Version.sort_key == version_sort_key(exact)
                    )
                )
                if row is not None:
                    return ResolvedVersion(self._info(patch, row), "version")
            if ref.alias:
                target = s.scalar(
                    select(m.Version.version)
                    .join(m.Alias, m.Alias.version_id == m.Version.id)
                    .where(m.Alias.patch_id == patch.id, m.Alias.alias == ref.alias)
                )
                if target is None:
                    aliases = s.scalars(select(m.Alias.alias).where(m.Alias.patch_id == patch.id)).all()
                    raise NotFoundError(
                        f"{ref.name} has no alias {ref.alias!r} (aliases: {', '.join(sorted(aliases)) or 'none'})"
                    )
            rows = s.execute(select(m.Version.version, m.Version.yanked).where(m.Version.patch_id == patch.id)).all()
            cands = [Candidate(r.version, r.yanked) for r in rows]
            res = pick_version(ref.name, cands, version=exact, spec=None if exact else ref.spec, alias_target=target)
            row = s.scalar(
                select(m.Version).where(
                    m.Version.patch_id == patch.id, m.Version.sort_key == version_sort_key(res.version)
                )
            )
            assert row is not None
            return ResolvedVersion(self._info(patch, row), res.via)

    def base_candidates(self, ref: PatchRef, base_weights_sha256: str) -> list[BaseCandidate]:
        """The versions ``ref`` can resolve to (non-yanked matches; an exact pin or an alias: that
        one version) with whether each passed a validation on the exact base. Narrow queries only."""
        with self._session() as s:
            patch = self._patch(s, ref.name)
            cols = (m.Version.id, m.Version.version, m.Version.yanked, m.Version.source_weights_sha256)
            exact = exact_version(ref)
            if ref.alias:
                rows = s.execute(
                    select(*cols)
                    .join(m.Alias, m.Alias.version_id == m.Version.id)
                    .where(m.Alias.patch_id == patch.id, m.Alias.alias == ref.alias)
                ).all()
                if not rows:
                    self.resolve(ref)  # raises the not-found error listing the aliases
            elif exact is not None:
                rows = s.execute(
                    select(*cols).where(m.Version.patch_id == patch.id, m.Version.sort_key == version_sort_key(exact))
                ).all()
                if not rows:
                    self.resolve(ref)  # raises the not-found error listing the versions
            else:
                every = s.execute(select(*cols).where(m.Version.patch_id == patch.id)).all()
                live = {r.version: r for r in every if not r.yanked}
                rows = [live[v] for v in (ref.spec or SpecifierSet()).filter(live)]
                if not rows:
                    self.resolve(ref)  # raises the not-found error (nothing matches / all yanked)
            ids = [r.id for r in rows]
            validated = set(
                s.scalars(
                    select(m.Validation.version_id).where(
                        m.Validation.version_id.in_(ids),
                        m.Validation.base_weights_sha256 == base_weights_sha256,
                        m.Validation.verdict == "pass",
                    )
                ).all()
            )
            return [
                BaseCandidate(patch.name, r.version, r.yanked, r.source_weights_sha256, r.id in validated) for r in rows
            ]

    def latest_report_statuses(
        self, name: str, versions: list[str], base_weights_sha256: str, *, tool_version: str | None = None
    ) -> dict[str, tuple[str, list[str]]]:
        """The newest compat report of each version on one base (of ``tool_version`` when given):
        version → (status, ["check: detail" of each failed check]). The resolver's check cache."""
        if not versions:
            return {}
        with self._session() as s:
            patch = self._patch(s, _name(name))
            keys = {version_sort_key(v): v for v in versions}
            vrows = s.execute(
                select(m.Version.id, m.Version.version).where(
                    m.Version.patch_id == patch.id, m.Version.sort_key.in_(list(keys))
                )
            ).all()
            by_id = {r.id: r.version for r in vrows}
            newest = (
                select(m.CompatReport.version_id, func.max(m.CompatReport.id).label("rid"))
                .where(
                    m.CompatReport.version_id.in_(list(by_id)),
                    m.CompatReport.base_weights_sha256 == base_weights_sha256,
                )
                .group_by(m.CompatReport.version_id)
            )
            if tool_version is not None:
                newest = newest.where(m.CompatReport.tool_version == tool_version)
            sub = newest.subquery()
            rows = s.execute(
                select(m.CompatReport.id, m.CompatReport.version_id, m.CompatReport.status).join(
                    sub, m.CompatReport.id == sub.c.rid
                )
            ).all()
            failed_ids = [rid for rid, _, status in rows if status == "fail"]
            reports: dict[int, Any] = (
                dict(
                    s.execute(
                        select(m.CompatReport.id, m.CompatReport.report).where(m.CompatReport.id.in_(failed_ids))
                    ).all()
                )
                if failed_ids
                else {}
            )
            out: dict[str, tuple[str, list[str]]] = {}
            for rid, vid, status in rows:
                report = reports.get(rid)
                failed = [
                    f"{r.get('name')}: {r.get('detail')}"
                    for r in (report or {}).get("results", [])
                    if isinstance(r, dict) and r.get("status") == "fail"
                ]
                out[by_id[vid]] = (status, failed)
            return out

    def ancestry(self, weights_sha256: str) -> dict[str, int]:
        """Recorded ancestors of a base: weights fingerprint → generations up (1 = parent). Bases
        with identical weights (``identical-weights`` edges, either way) count as the same
        generation: depth 0 for the base's own twins."""
        with self._session() as s:
            bid = s.scalar(select(m.BaseModel.id).where(m.BaseModel.weights_sha256 == weights_sha256))
            if bid is None:
                return {}
            parents: dict[int, list[int]] = {}
            twins: dict[int, list[int]] = {}
            for c, p, r in self._edges(s):
                if r == IDENTICAL:
                    twins.setdefault(c, []).append(p)
                    twins.setdefault(p, []).append(c)
                else:
                    parents.setdefault(c, []).append(p)
            depth = {bid: 0}
            level, d = [bid], 0
            while level:
                todo = list(level)
                while todo:  # twins of this generation first (same depth), then parents (one more)
                    todo = [t for x in todo for t in twins.get(x, ()) if t not in depth]
                    for t in dict.fromkeys(todo):
                        depth[t] = d
                    level += todo
                d += 1
                level = list(dict.fromkeys(p for x in level for p in parents.get(x, ()) if p not in depth))
                for x in level:
                    depth[x] = d
            del depth[bid]
            if not depth:
                return {}
            shas = dict(
                s.execute(
                    select(m.BaseModel.id, m.BaseModel.weights_sha256).where(m.BaseModel.id.in_(list(depth)))
                ).all()
            )
            return {shas[i]: dep for i, dep in depth.items()}

    # -- aliases -------------------------------------------------------------------------

    def set_alias(
        self,
        name: str,
        alias: str,
        version: str,
        *,
        validated_on: str | None = None,
        validation_id: int | None = None,
    ) -> AliasInfo:
        """Point ``alias`` at a version (creating or moving it). Yanked versions are refused.

        ``validated_on`` (a base's weights fingerprint) and ``validation_id`` record the validation
        that justified the move (``ci --promote``); a plain move clears them."""
        name, alias, version = _name(name), check_alias_name(alias), _version(version)

        def tx(s: Session) -> AliasInfo:
            patch, row = self._version_row(s, name, version)
            if row.yanked:
                raise ConflictError(f"{name}=={version} is yanked; an alias cannot point to it")
            now = _now()
            current = s.scalar(select(m.Alias).where(m.Alias.patch_id == patch.id, m.Alias.alias == alias))
            if current is None:
                with s.begin_nested():
                    s.add(
                        m.Alias(
                            patch_id=patch.id,
                            alias=alias,
                            version_id=row.id,
                            updated_at=now,
                            validated_base_sha256=validated_on,
                            validation_id=validation_id,
                        )
                    )
            else:
                current.version_id, current.updated_at = row.id, now
                current.validated_base_sha256, current.validation_id = validated_on, validation_id
            return AliasInfo(name, alias, version, now, validated_on, validation_id)

        return self._retrying(tx)

    def remove_alias(self, name: str, alias: str) -> None:
        with self._session(write=True) as s:
            patch = self._patch(s, _name(name))
            row = s.scalar(select(m.Alias).where(m.Alias.patch_id == patch.id, m.Alias.alias == alias))
            if row is None:
                raise NotFoundError(f"{name} has no alias {alias!r}")
            s.delete(row)

    def list_aliases(self, name: str) -> list[AliasInfo]:
        with self._session() as s:
            patch = self._patch(s, _name(name))
            rows = s.execute(
                select(
                    m.Alias.alias,
                    m.Version.version,
                    m.Alias.updated_at,
                    m.Alias.validated_base_sha256,
                    m.Alias.validation_id,
                )
                .join(m.Version, m.Alias.version_id == m.Version.id)
                .where(m.Alias.patch_id == patch.id)
                .order_by(m.Alias.alias)
            ).all()
            return [AliasInfo(patch.name, a, v, _aware(t), vb, vid) for a, v, t, vb, vid in rows]

    # -- yank ----------------------------------------------------------------------------

    def yank(self, name: str, version: str, reason: str | None = None) -> VersionInfo:
        """Mark a version yanked: resolvers skip it unless pinned exactly. Idempotent (reason updated)."""
        with self._session(write=True) as s:
            patch, row = self._version_row(s, _name(name), _version(version))
            row.yanked, row.yank_reason = True, reason or None
            return self._info(patch, row)

    def unyank(self, name: str, version: str) -> VersionInfo:
        with self._session(write=True) as s:
            patch, row = self._version_row(s, _name(name), _version(version))
            row.yanked, row.yank_reason = False, None
            return self._info(patch, row)

    # -- bases and lineage -----------------------------------------------------------------

    @staticmethod
    def _get_or_create_base(
        s: Session,
        facts: BaseFacts | None = None,
        *,
        source: str | None = None,
        revision: str | None = None,
        weights_sha256: str | None = None,
        structure_sha256: str | None = None,
        family: Family | None = None,
    ) -> tuple[m.BaseModel, bool]:
        tensors_sha256 = None
        if facts is not None:
            source, revision = facts.source, facts.revision
            weights_sha256, structure_sha256, family = facts.weights_sha256, facts.structure_sha256, facts.family
            tensors_sha256 = facts.tensors_sha256
        assert source and weights_sha256 and structure_sha256 and family is not None
        row = s.scalar(select(m.BaseModel).where(m.BaseModel.weights_sha256 == weights_sha256))
        if row is not None:
            if row.revision is None and revision:
                row.revision = revision  # learn a revision recorded later; never overwrite one
            if row.tensors_sha256 is None and tensors_sha256:
                row.tensors_sha256 = tensors_sha256
            return row, False
        try:
            with s.begin_nested():
                row = m.BaseModel(
                    source=source,
                    revision=revision,
                    weights_sha256=weights_sha256,
                    structure_sha256=structure_sha256,
                    tensors_sha256=tensors_sha256,
                    family=family.model_dump(mode="json"),
                    created_at=_now(),
                )
                s.add(row)
                s.flush()
                if tensors_sha256:  # identical weights already recorded under other files
                    twin = s.scalar(
                        select(m.BaseModel.id)
                        .where(m.BaseModel.tensors_sha256 == tensors_sha256, m.BaseModel.id != row.id)
                        .order_by(m.BaseModel.id)
                        .limit(1)
                    )
                    if twin is not None:
                        s.add(m.BaseLineage(child_id=row.id, parent_id=twin, relation=IDENTICAL, created_at=_now()))
        except SAIntegrityError:
            row = s.scalar(select(m.BaseModel).where(m.BaseModel.weights_sha256 == weights_sha256))
            assert row is not None
            return row, False
        return row, True

    def add_base(self, facts: BaseFacts) -> tuple[BaseInfo, bool]:
        """Record a base (idempotent by ``weights_sha256``). Returns ``(base, created)``."""

        def tx(s: Session) -> tuple[BaseInfo, bool]:
            row, created = self._get_or_create_base(s, facts)
            s.flush()
            return self._base_info(row), created

        return self._retrying(tx)

    def get_base(self, weights_sha256: str) -> BaseInfo:
        """A base by its weights fingerprint (a unique prefix of ≥ 8 hex digits works too)."""
        with self._session() as s:
            return self._base_info(self._base_row(s, weights_sha256))

    @staticmethod
    def _base_row(s: Session, sha: str) -> m.BaseModel:
        sha = sha.lower()
        if len(sha) == 64:
            row = s.scalar(select(m.BaseModel).where(m.BaseModel.weights_sha256 == sha))
        elif len(sha) >= 8 and re.fullmatch(r"[0-9a-f]+", sha):
            rows = s.scalars(select(m.BaseModel).where(m.BaseModel.weights_sha256.startswith(sha))).all()
            if len(rows) > 1:
                raise InvalidInputError(f"base fingerprint prefix {sha} is ambiguous ({len(rows)} bases)")
            row = rows[0] if rows else None
        else:
            raise InvalidInputError(f"{sha!r} is not a weights fingerprint (64 hex digits, or a prefix of ≥ 8)")
        if row is None:
            raise NotFoundError(
                f"no base with weights fingerprint {sha} in the catalog", hint="see `patchctl base list`"
            )
        return row

    def find_bases(self, source: str, revision: str | None = None) -> list[BaseInfo]:
        with self._session() as s:
            q = select(m.BaseModel).where(m.BaseModel.source == source)
            if revision is not None:
                q = q.where(m.BaseModel.revision == revision)
            return [self._base_info(r) for r in s.scalars(q.order_by(m.BaseModel.created_at)).all()]

    def list_bases(self, *, limit: int | None = None, after: str | None = None) -> list[BaseInfo]:
        """Bases in the order they were recorded; ``limit`` of them after the base ``after`` (a page)."""
        with self._session() as s:
            q = select(m.BaseModel).order_by(m.BaseModel.id)
            if after is not None:
                q = q.where(m.BaseModel.id > self._base_row(s, after).id)
            if limit is not None:
                q = q.limit(limit)
            return [self._base_info(r) for r in s.scalars(q).all()]

    def add_lineage(self, child: str, parent: str, relation: str = "update") -> LineageEdge:
        """Record ``child`` (weights fingerprint) as derived from ``parent``. Idempotent; cycles refused."""
        if relation not in LINEAGE_RELATIONS:
            raise InvalidInputError(f"relation {relation!r}: expected one of {', '.join(LINEAGE_RELATIONS)}")

        def tx(s: Session) -> LineageEdge:
            c, p = self._base_row(s, child), self._base_row(s, parent)
            if c.id == p.id:
                raise InvalidInputError("a base cannot be its own parent")
            if c.id in {i for i, _, _ in self._walk_ids(s, p.id)}:
                raise InvalidInputError(
                    f"{c.weights_sha256[:12]} is already an ancestor of {p.weights_sha256[:12]}: lineage cycle"
                )
            edge = s.scalar(
                select(m.BaseLineage).where(m.BaseLineage.child_id == c.id, m.BaseLineage.parent_id == p.id)
            )
            if edge is None:
                with s.begin_nested():
                    edge = m.BaseLineage(child_id=c.id, parent_id=p.id, relation=relation, created_at=_now())
                    s.add(edge)
            return LineageEdge(c.weights_sha256, p.weights_sha256, edge.relation, _aware(edge.created_at))

        return self._retrying(tx)

    @staticmethod
    def _edges(s: Session) -> list[tuple[int, int, str]]:
        """Every lineage edge (child id, parent id, relation): one narrow query; the graph of bases
        is small next to versions and reports, and walking it in memory beats a query per level."""
        rows = s.execute(
            select(m.BaseLineage.child_id, m.BaseLineage.parent_id, m.BaseLineage.relation).order_by(m.BaseLineage.id)
        ).all()
        return [(c, p, r) for c, p, r in rows]

    @staticmethod
    def _parents(edges: list[tuple[int, int, str]]) -> dict[int, list[tuple[int, str]]]:
        parents: dict[int, list[tuple[int, str]]] = {}
        for c, p, r in edges:
            parents.setdefault(c, []).append((p, r))
        return parents

    @classmethod
    def _walk_ids(
        cls, s: Session, base_id: int, parents: dict[int, list[tuple[int, str]]] | None = None
    ) -> list[tuple[int, str, int]]:
        """Breadth-first ancestors of a base: (id, relation, depth), by id within a generation."""
        if parents is None:
            parents = cls._parents(cls._edges(s))
        seen = {base_id}
        frontier = [base_id]
        out: list[tuple[int, str, int]] = []
        depth = 0
        while frontier:
            depth += 1
            level = sorted((p, r) for c in frontier for p, r in parents.get(c, ()))
            frontier = []
            for pid, relation in level:
                if pid not in seen:
                    seen.add(pid)
                    frontier.append(pid)
                    out.append((pid, relation, depth))
        return out

    @classmethod
    def _walk(cls, s: Session, base_id: int) -> list[tuple[m.BaseModel, str, int]]:
        """Breadth-first ancestors of a base: (row, relation, depth)."""
        found = cls._walk_ids(s, base_id)
        if not found:
            return []
        rows = {r.id: r for r in s.scalars(select(m.BaseModel).where(m.BaseModel.id.in_([i for i, _, _ in found])))}
        return [(rows[i], rel, d) for i, rel, d in found]

    def ancestors(self, weights_sha256: str) -> list[Ancestor]:
        """Every recorded ancestor of a base, nearest first. Empty if the base is unknown."""
        with self._session() as s:
            row = s.scalar(select(m.BaseModel).where(m.BaseModel.weights_sha256 == weights_sha256))
            if row is None:
                return []
            return [Ancestor(self._base_info(r), rel, d) for r, rel, d in self._walk(s, row.id)]

    def lineage_graph(
        self, *, base: str | None = None, name: str | None = None, per_base_limit: int = 20
    ) -> LineageGraph:
        """The lineage around a base (fingerprint) or around every source base of a patch.

        Bases: the seeds' ancestors and descendants (with every edge among them); versions: the
        patch's (``name``), else up to ``per_base_limit`` per base, newest first; results: the
        newest check report and validation of each listed version on each listed base."""
        with self._session() as s:
            if name is not None:
                patch = self._patch(s, _name(name))
                vrows = s.execute(
                    select(m.Version.id, m.Version.version, m.Version.yanked, m.Version.source_weights_sha256)
                    .where(m.Version.patch_id == patch.id)
                    .order_by(m.Version.sort_key.desc())
                ).all()
                seeds = set(
                    s.scalars(
                        select(m.BaseModel.id).where(
                            m.BaseModel.weights_sha256.in_({r.source_weights_sha256 for r in vrows})
                        )
                    ).all()
                )
                versions = [(r.id, f"{patch.name}=={r.version}", r.source_weights_sha256, r.yanked) for r in vrows]
            else:
                assert base is not None
                seeds = {self._base_row(s, base).id}
                versions = []
            edges = self._edges(s)
            parent_map = self._parents(edges)
            component = set(seeds)
            for seed in seeds:
                component |= {i for i, _, _ in self._walk_ids(s, seed, parent_map)}
            children: dict[int, list[int]] = {}
            for c, p, _ in edges:
                children.setdefault(p, []).append(c)
            frontier = list(component)
            while frontier:  # descendants
                frontier = [k for f in frontier for k in children.get(f, ()) if k not in component]
                component.update(frontier)
            brows = s.scalars(select(m.BaseModel).where(m.BaseModel.id.in_(component)).order_by(m.BaseModel.id)).all()
            shas = [b.weights_sha256 for b in brows]
            child = m.BaseModel.__table__.alias("child")
            parent = m.BaseModel.__table__.alias("parent")
            erows = s.execute(
                select(
                    child.c.weights_sha256, parent.c.weights_sha256, m.BaseLineage.relation, m.BaseLineage.created_at
                )
                .join(child, child.c.id == m.BaseLineage.child_id)
                .join(parent, parent.c.id == m.BaseLineage.parent_id)
                .where(m.BaseLineage.child_id.in_(component))
                .order_by(m.BaseLineage.id)
            ).all()
            more: dict[str, int] = {}
            if name is None:
                for sha in shas:
                    rows = s.execute(
                        select(m.Version.id, m.Version.version, m.Version.yanked, m.Patch.name)
                        .join(m.Patch, m.Patch.id == m.Version.patch_id)
                        .where(m.Version.source_weights_sha256 == sha)
                        .order_by(m.Version.id.desc())
                        .limit(per_base_limit + 1)
                    ).all()
                    if len(rows) > per_base_limit:
                        more[sha] = (
                            s.scalar(
                                select(func.count())
                                .select_from(m.Version)
                                .where(m.Version.source_weights_sha256 == sha)
                            )
                            or 0
                        ) - per_base_limit
                    versions += [(r.id, f"{r.name}=={r.version}", sha, r.yanked) for r in rows[:per_base_limit]]
            vids = {v[0]: v[1] for v in versions}
            results: list[LineageResult] = []
            if vids and shas:
                for table, kind, col in (
                    (m.CompatReport, "check", m.CompatReport.status),
                    (m.Validation, "validation", m.Validation.verdict),
                ):
                    newest = (
                        select(func.max(table.id))
                        .where(table.version_id.in_(list(vids)), table.base_weights_sha256.in_(shas))
                        .group_by(table.version_id, table.base_weights_sha256)
                    )
                    for vid, bsha, status in s.execute(
                        select(table.version_id, table.base_weights_sha256, col).where(table.id.in_(newest))
                    ).all():
                        results.append(LineageResult(vids[vid], bsha, kind, status))  # type: ignore[arg-type]
            return LineageGraph(
                bases=tuple(self._base_info(b) for b in brows),
                edges=tuple(LineageEdge(c, p, r, _aware(t)) for c, p, r, t in erows),
                versions=tuple(LineageVersion(ref, src, y) for _, ref, src, y in versions),
                results=tuple(sorted(results, key=lambda r: (r.base_weights_sha256, r.ref, r.kind))),
                more_versions=more,
            )

    def list_lineage(self, children: list[str] | None = None) -> list[LineageEdge]:
        """Lineage edges (of the bases ``children`` only, when given)."""
        with self._session() as s:
            child = m.BaseModel.__table__.alias("child")
            parent = m.BaseModel.__table__.alias("parent")
            q = (
                select(
                    child.c.weights_sha256, parent.c.weights_sha256, m.BaseLineage.relation, m.BaseLineage.created_at
                )
                .join(child, child.c.id == m.BaseLineage.child_id)
                .join(parent, parent.c.id == m.BaseLineage.parent_id)
                .order_by(m.BaseLineage.id)
            )
            if children is not None:
                q = q.where(child.c.weights_sha256.in_(children))
            rows = s.execute(q).all()
            return [LineageEdge(c, p, r, _aware(t)) for c, p, r, t in rows]

    # -- remotes, reports, validations, installs --------------------------------------------

    @staticmethod
    def _add_remote(s: Session, row: m.Version, url: str, revision: str | None) -> m.VersionRemote:
        current = s.scalar(
            select(m.VersionRemote).where(m.VersionRemote.version_id == row.id, m.VersionRemote.url == url)
        )
        if current is not None:
            if current.revision != revision:  # the same copy recorded again (re-push, re-pull) changes nothing
                current.revision, current.pushed_at = revision, _now()
            return current
        with s.begin_nested():
            rem = m.VersionRemote(version_id=row.id, url=url, revision=revision, pushed_at=_now())
            s.add(rem)
        return rem

    def record_remote(self, name: str, version: str, url: str, revision: str | None = None) -> RemoteCopy:
        def tx(s: Session) -> RemoteCopy:
            patch, row = self._version_row(s, _name(name), _version(version))
            rem = self._add_remote(s, row, url, revision)
            return RemoteCopy(patch.name, row.version, rem.url, rem.revision, _aware(rem.pushed_at))

        return self._retrying(tx)

    def list_remotes(self, name: str, version: str) -> list[RemoteCopy]:
        with self._session() as s:
            patch, row = self._version_row(s, _name(name), _version(version))
            rows = s.scalars(
                select(m.VersionRemote).where(m.VersionRemote.version_id == row.id).order_by(m.VersionRemote.url)
            ).all()
            return [RemoteCopy(patch.name, row.version, r.url, r.revision, _aware(r.pushed_at)) for r in rows]

    def record_compat_report(
        self,
        name: str,
        version: str,
        *,
        base_weights_sha256: str,
        status: str,
        report: dict[str, Any],
        tool_version: str,
    ) -> CompatReportRecord:
        if status not in _STATUSES:
            raise InvalidInputError(f"status {status!r}: expected one of {', '.join(_STATUSES)}")
        with self._session(write=True) as s:
            patch, row = self._version_row(s, _name(name), _version(version))
            rec = m.CompatReport(
                version_id=row.id,
                base_weights_sha256=base_weights_sha256,
                status=status,
                report=report,
                tool_version=tool_version,
                created_at=_now(),
            )
            s.add(rec)
            s.flush()
            return self._report(patch, row, rec)

    @staticmethod
    def _report(patch: m.Patch, row: m.Version, r: m.CompatReport) -> CompatReportRecord:
        return CompatReportRecord(
            r.id,
            patch.name,
            row.version,
            r.base_weights_sha256,
            r.status,
            r.report,
            r.tool_version,
            _aware(r.created_at),
        )

    def list_compat_reports(
        self,
        name: str,
        version: str | None = None,
        *,
        base_weights_sha256: str | None = None,
        latest_per_base: bool = False,
        limit: int | None = None,
        before: int | None = None,
    ) -> list[CompatReportRecord]:
        """Compat reports of a patch (one version, one base), newest first; ``latest_per_base``:
        only the newest of each (version, base); ``limit`` rows with ids below ``before`` (a page)."""
        with self._session() as s:
            patch = self._patch(s, _name(name))
            q = select(m.CompatReport, m.Version).join(m.Version).where(m.Version.patch_id == patch.id)
            if version is not None:
                q = q.where(m.Version.sort_key == version_sort_key(_version(version)))
            if base_weights_sha256 is not None:
                q = q.where(m.CompatReport.base_weights_sha256 == base_weights_sha256)
            if latest_per_base:
                newest = (
                    select(func.max(m.CompatReport.id))
                    .join(m.Version)
                    .where(m.Version.patch_id == patch.id)
                    .group_by(m.CompatReport.version_id, m.CompatReport.base_weights_sha256)
                )
                if version is not None:
                    newest = newest.where(m.Version.sort_key == version_sort_key(_version(version)))
                q = q.where(m.CompatReport.id.in_(newest))
            if before is not None:
                q = q.where(m.CompatReport.id < before)
            q = q.order_by(m.CompatReport.id.desc())
            if limit is not None:
                q = q.limit(limit)
            rows = s.execute(q).all()
            return [self._report(patch, v, r) for r, v in rows]

    def record_validation(
        self,
        name: str,
        version: str,
        *,
        base_weights_sha256: str,
        scores: dict[str, Any],
        verdict: str,
        thresholds: dict[str, Any],
        base_ref: str | None = None,
        limit: int | None = None,
        lm_eval_version: str | None = None,
        tool_version: str | None = None,
        duration_s: float | None = None,
        check_status: str | None = None,
        forced: bool = False,
    ) -> ValidationRecord:
        """Record one validation run (one row; concurrent writers each add their own)."""
        if verdict not in VALIDATION_VERDICTS:
            raise InvalidInputError(f"verdict {verdict!r}: expected one of {', '.join(VALIDATION_VERDICTS)}")
        with self._session(write=True) as s:
            patch, row = self._version_row(s, _name(name), _version(version))
            rec = m.Validation(
                version_id=row.id,
                base_weights_sha256=base_weights_sha256,
                scores=scores,
                verdict=verdict,
                thresholds=thresholds,
                created_at=_now(),
                base_ref=base_ref,
                limit=limit,
                lm_eval_version=lm_eval_version,
                tool_version=tool_version,
                duration_s=duration_s,
                check_status=check_status,
                forced=forced,
            )
            s.add(rec)
            s.flush()
            return self._validation(patch, row, rec)

    @staticmethod
    def _validation(patch: m.Patch, row: m.Version, r: m.Validation) -> ValidationRecord:
        return ValidationRecord(
            r.id,
            patch.name,
            row.version,
            r.base_weights_sha256,
            r.scores,
            r.verdict,
            r.thresholds,
            _aware(r.created_at),
            base_ref=r.base_ref,
            limit=r.limit,
            lm_eval_version=r.lm_eval_version,
            tool_version=r.tool_version,
            duration_s=r.duration_s,
            check_status=r.check_status,
            forced=bool(r.forced),
        )

    def validated_names(self, base_weights_sha256: str, *, verdicts: tuple[str, ...] = ("pass",)) -> set[str]:
        """Names of patches with a version validated on this exact base (with one of ``verdicts``)."""
        with self._session() as s:
            rows = s.scalars(
                select(m.Patch.name)
                .join(m.Version, m.Version.patch_id == m.Patch.id)
                .join(m.Validation, m.Validation.version_id == m.Version.id)
                .where(m.Validation.base_weights_sha256 == base_weights_sha256, m.Validation.verdict.in_(verdicts))
                .distinct()
            ).all()
            return set(rows)

    def list_all_validations(self) -> list[ValidationRecord]:
        """Every validation, oldest first (``outdated`` reads their bases)."""
        with self._session() as s:
            rows = s.execute(
                select(m.Validation, m.Version, m.Patch)
                .join(m.Version, m.Validation.version_id == m.Version.id)
                .join(m.Patch, m.Version.patch_id == m.Patch.id)
                .order_by(m.Validation.id)
            ).all()
            return [self._validation(p, v, r) for r, v, p in rows]

    def list_validations(
        self, name: str, version: str | None = None, *, base_weights_sha256: str | None = None
    ) -> list[ValidationRecord]:
        """Validations of a patch (one version, one base), newest first."""
        with self._session() as s:
            patch = self._patch(s, _name(name))
            q = select(m.Validation, m.Version).join(m.Version).where(m.Version.patch_id == patch.id)
            if version is not None:
                q = q.where(m.Version.sort_key == version_sort_key(_version(version)))
            if base_weights_sha256 is not None:
                q = q.where(m.Validation.base_weights_sha256 == base_weights_sha256)
            rows = s.execute(q.order_by(m.Validation.id.desc())).all()
            return [self._validation(patch, v, r) for r, v in rows]

    def record_install(
        self,
        name: str,
        version: str,
        *,
        base_weights_sha256: str,
        out_path: str,
        format: str,
        forced: bool = False,
        report_id: int | None = None,
        decision: dict[str, Any] | None = None,
    ) -> InstallRecord:
        if format not in ("merged", "adapter"):
            raise InvalidInputError(f"install format {format!r}: expected 'merged' or 'adapter'")
        with self._session(write=True) as s:
            patch, row = self._version_row(s, _name(name), _version(version))
            rec = m.Install(
                version_id=row.id,
                base_weights_sha256=base_weights_sha256,
                out_path=out_path,
                format=format,
                forced=forced,
                report_id=report_id,
                decision=decision,
                created_at=_now(),
            )
            s.add(rec)
            s.flush()
            return self._install(patch, row, rec)

    @staticmethod
    def _install(patch: m.Patch, row: m.Version, r: m.Install) -> InstallRecord:
        return InstallRecord(
            r.id,
            patch.name,
            row.version,
            r.base_weights_sha256,
            r.out_path,
            r.format,
            r.forced,
            r.report_id,
            _aware(r.created_at),
            r.decision,
        )

    def list_installs(
        self, name: str, version: str | None = None, *, limit: int | None = None, before: int | None = None
    ) -> list[InstallRecord]:
        """Installs of a patch (or one version), newest first; ``limit`` rows with ids below ``before``."""
        with self._session() as s:
            patch = self._patch(s, _name(name))
            q = select(m.Install, m.Version).join(m.Version).where(m.Version.patch_id == patch.id)
            if version is not None:
                q = q.where(m.Version.sort_key == version_sort_key(_version(version)))
            if before is not None:
                q = q.where(m.Install.id < before)
            q = q.order_by(m.Install.id.desc())
            if limit is not None:
                q = q.limit(limit)
            rows = s.execute(q).all()
            return [self._install(patch, v, r) for r, v in rows]


def default_database_url(settings: Settings) -> str:
    return f"sqlite:///{(settings.home / 'catalog.db').resolve()}"


def open_catalog(settings: Settings, *, auto_create: bool | None = None) -> Catalog:
    """Open the catalog of ``settings``, refusing a stale schema (:class:`StaleSchemaError`).

    An empty SQLite database (the default one on a user's first command, or any new file) is
    migrated to head on first use; PostgreSQL catalogs are migrated explicitly with
    ``patchctl db upgrade``.
    """
    engine = make_engine(settings.database_url, create_dir=settings.uses_default_database)
    if auto_create is None:
        auto_create = engine.url.get_backend_name() == "sqlite"
    try:
        check_schema(engine, auto_create=auto_create)
    except BaseException:
        engine.dispose()
        raise
    return Catalog(engine)
