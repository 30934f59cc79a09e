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
from typing import Any, TypeVar

from packaging.version import Version as PepVersion
from sqlalchemy import select
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
    PatchSummary,
    RemoteCopy,
    ResolvedVersion,
    ValidationRecord,
    VersionInfo,
)
from patchctl.registry.resolver import Candidate, exact_version, pick_version, version_sort_key
from patchctl.schemas.base import BaseFacts, Family
from patchctl.schemas.manifest import Manifest, check_patch_name, normalize_version
from patchctl.schemas.refs import PatchRef
from patchctl.settings import Settings

__all__ = ["LINEAGE_RELATIONS", "Catalog", "check_alias_name", "open_catalog"]

T = TypeVar("T")

#: how a child base relates to its parent (``patchctl base add --relation``)
LINEAGE_RELATIONS = ("update", "continued-pretraining", "finetune", "merge", "quantization", "other")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")
_STATUSES = ("pass", "warn", "fail")


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

    def list_patches(self, namespace: str | None = None) -> list[PatchSummary]:
        with self._session() as s:
            q = select(m.Patch).order_by(m.Patch.name)
            if namespace:
                q = q.where(m.Patch.namespace == namespace)
            out = []
            for patch in s.scalars(q).all():
                rows = s.execute(
                    select(m.Version.version, m.Version.yanked, m.Version.task)
                    .where(m.Version.patch_id == patch.id)
                    .order_by(m.Version.sort_key)
                ).all()
                live = [r for r in rows if not r.yanked]
                latest = None
                if live:
                    choice = pick_version(patch.name, [Candidate(r.version, r.yanked) for r in rows])
                    latest = next(r for r in live if r.version == choice.version)
                aliases = s.execute(
                    select(m.Alias.alias, m.Version.version)
                    .join(m.Version, m.Alias.version_id == m.Version.id)
                    .where(m.Alias.patch_id == patch.id)
                    .order_by(m.Alias.alias)
                ).all()
                out.append(
                    PatchSummary(
                        name=patch.name,
                        namespace=patch.namespace,
                        latest=latest.version if latest else None,
                        task=latest.task if latest else None,
                        versions=len(rows),
                        yanked=len(rows) - len(live),
                        aliases={a: v for a, v in aliases},
                    )
                )
            return out

    def resolve(self, ref: PatchRef) -> ResolvedVersion:
        """The version a reference names (see :mod:`patchctl.registry.resolver` for the rules)."""
        with self._session() as s:
            patch = self._patch(s, ref.name)
            rows = s.scalars(select(m.Version).where(m.Version.patch_id == patch.id)).all()
            cands = [Candidate(r.version, r.yanked) for r in rows]
            target = None
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
            exact = exact_version(ref)
            res = pick_version(ref.name, cands, version=exact, spec=None if exact else ref.spec, alias_target=target)
            row = next(r for r in rows if r.version == res.version)
            return ResolvedVersion(self._info(patch, row), res.via)

    # -- aliases -------------------------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: str) -> AliasInfo:
        """Point ``alias`` at a version (creating or moving it). Yanked versions are refused."""
        name, alias, version = _name(name), check_alias_name(alias), _version(version)

        def tx(s: Session) -> AliasInfo:
            patch, row = self._version_row(s, name, version)
            if row.yanked:
                raise ConflictError(f"{name}=={version} is yanked; an alias cannot point to it")
            now = _now()
            current = s.scalar(select(m.Alias).where(m.Alias.patch_id == patch.id, m.Alias.alias == alias))
            if current is None:
                with s.begin_nested():
                    s.add(m.Alias(patch_id=patch.id, alias=alias, version_id=row.id, updated_at=now))
            else:
                current.version_id, current.updated_at = row.id, now
            return AliasInfo(name, alias, version, now)

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
                select(m.Alias.alias, m.Version.version, m.Alias.updated_at)
                .join(m.Version, m.Alias.version_id == m.Version.id)
                .where(m.Alias.patch_id == patch.id)
                .order_by(m.Alias.alias)
            ).all()
            return [AliasInfo(patch.name, a, v, _aware(t)) for a, v, t in rows]

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
        if facts is not None:
            source, revision = facts.source, facts.revision
            weights_sha256, structure_sha256, family = facts.weights_sha256, facts.structure_sha256, facts.family
        assert source and weights_sha256 and structure_sha256 and family is not None
        row = s.scalar(select(m.BaseModel).where(m.BaseModel.weights_sha256 == weights_sha256))
        if row is not None:
            if row.revision is None and revision:
                row.revision = revision  # learn a revision recorded later; never overwrite one
            return row, False
        try:
            with s.begin_nested():
                row = m.BaseModel(
                    source=source,
                    revision=revision,
                    weights_sha256=weights_sha256,
                    structure_sha256=structure_sha256,
                    family=family.model_dump(mode="json"),
                    created_at=_now(),
                )
                s.add(row)
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

    def list_bases(self) -> list[BaseInfo]:
        with self._session() as s:
            rows = s.scalars(select(m.BaseModel).order_by(m.BaseModel.created_at, m.BaseModel.id)).all()
            return [self._base_info(r) for r in rows]

    def add_lineage(self, child: str, parent: str, relation: str = "update") -> LineageEdge:
        """Record ``child`` (weights fingerprint) as derived from ``parent``. Idempotent; cycles refused."""
        if relation not in LINEAGE_RELATIONS:
            raise InvalidInputError(f"relation {relation!r}: expected one of {', '.join(LINEAGE_RELATIONS)}")

        def tx(s: Session) -> LineageEdge:
            c, p = self._base_row(s, child), self._base_row(s, parent)
            if c.id == p.id:
                raise InvalidInputError("a base cannot be its own parent")
            if c.id in {a.id for a, _, _ in self._walk(s, p.id)}:
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
    def _walk(s: Session, base_id: int) -> list[tuple[m.BaseModel, str, int]]:
        """Breadth-first ancestors of a base: (row, relation, depth)."""
        seen = {base_id}
        frontier = [base_id]
        out: list[tuple[m.BaseModel, str, int]] = []
        depth = 0
        while frontier:
            depth += 1
            rows = s.execute(
                select(m.BaseModel, m.BaseLineage.relation)
                .join(m.BaseLineage, m.BaseLineage.parent_id == m.BaseModel.id)
                .where(m.BaseLineage.child_id.in_(frontier))
                .order_by(m.BaseModel.id)
            ).all()
            frontier = []
            for row, relation in rows:
                if row.id not in seen:
                    seen.add(row.id)
                    frontier.append(row.id)
                    out.append((row, relation, depth))
        return out

    def ancestors(self, weights_sha256: str) -> list[Ancestor]:
        """Every recorded ancestor of a base, nearest first. Empty if the base is unknown."""
        with self._session() as s:
            row = s.scalar(select(m.BaseModel).where(m.BaseModel.weights_sha256 == weights_sha256))
            if row is None:
                return []
            return [Ancestor(self._base_info(r), rel, d) for r, rel, d in self._walk(s, row.id)]

    def list_lineage(self) -> list[LineageEdge]:
        with self._session() as s:
            child = m.BaseModel.__table__.alias("child")
            parent = m.BaseModel.__table__.alias("parent")
            rows = s.execute(
                select(
                    child.c.weights_sha256, parent.c.weights_sha256, m.BaseLineage.relation, m.BaseLineage.created_at
                )
                .join(child, child.c.id == m.BaseLineage.child_id)
                .join(parent, parent.c.id == m.BaseLineage.parent_id)
                .order_by(m.BaseLineage.id)
            ).all()
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
        self, name: str, version: str | None = None, *, base_weights_sha256: str | None = None
    ) -> list[CompatReportRecord]:
        """Compat reports of a patch (one version, one base), newest first."""
        with self._session() as s:
            patch = self._patch(s, _name(name))
            q = select(m.CompatReport, m.Version).join(m.Version).where(m.Version.patch_id == patch.id)
            if version is not None:
                q = q.where(m.Version.sort_key == version_sort_key(_version(version)))
            if base_weights_sha256 is not None:
                q = q.where(m.CompatReport.base_weights_sha256 == base_weights_sha256)
            rows = s.execute(q.order_by(m.CompatReport.id.desc())).all()
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
    ) -> ValidationRecord:
        if verdict not in ("pass", "fail"):
            raise InvalidInputError(f"verdict {verdict!r}: expected 'pass' or 'fail'")
        with self._session(write=True) as s:
            patch, row = self._version_row(s, _name(name), _version(version))
            rec = m.Validation(
                version_id=row.id,
                base_weights_sha256=base_weights_sha256,
                scores=scores,
                verdict=verdict,
                thresholds=thresholds,
                created_at=_now(),
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
        )

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
        )

    def list_installs(self, name: str, version: str | None = None) -> list[InstallRecord]:
        """Installs of a patch (or one version), newest first."""
        with self._session() as s:
            patch = self._patch(s, _name(name))
            q = select(m.Install, m.Version).join(m.Version).where(m.Version.patch_id == patch.id)
            if version is not None:
                q = q.where(m.Version.sort_key == version_sort_key(_version(version)))
            rows = s.execute(q.order_by(m.Install.id.desc())).all()
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
