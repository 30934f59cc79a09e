"""The catalog store: every write of the catalog database goes through :class:`Catalog`.

Its reads are :class:`~patchctl.registry.reads.CatalogReader`'s (one SQL implementation of each,
shared with the SQLAlchemy-free read path of the CLI), run on a DB-API connection of the engine's
pool. Writes use the ORM, one session and transaction per method; callers get plain frozen records
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

from packaging.version import Version as PepVersion
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from patchctl.errors import CatalogError, ConflictError, InvalidInputError, NotFoundError
from patchctl.registry import models as m
from patchctl.registry.db import WRITE_OPTION, check_schema, make_engine, redacted_url
from patchctl.registry.reads import (
    IDENTICAL,
    LINEAGE_RELATIONS,
    CatalogReader,
    Rows,
    aware,
    base_info,
    check_name,
    check_version,
    version_info,
    version_not_found,
)
from patchctl.registry.records import (
    AddVersionResult,
    AliasInfo,
    BaseInfo,
    CompatReportRecord,
    InstallRecord,
    LineageEdge,
    RemoteCopy,
    ValidationRecord,
    VersionInfo,
)
from patchctl.registry.resolver import version_sort_key
from patchctl.settings import Settings

if TYPE_CHECKING:
    from patchctl.schemas.base import BaseFacts, Family
    from patchctl.schemas.manifest import Manifest

__all__ = ["IDENTICAL", "LINEAGE_RELATIONS", "Catalog", "check_alias_name", "open_catalog"]

T = TypeVar("T")

_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")
_STATUSES = ("pass", "warn", "fail")
#: verdicts of a validation (``pass``/``fail`` are accepted for rows written before 0003)
VALIDATION_VERDICTS = ("pass", "regressed", "no-baseline", "fail")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def check_alias_name(alias: str) -> str:
    if not _ALIAS.fullmatch(alias):
        raise InvalidInputError(f"{alias!r}: an alias starts with a letter; letters, digits, '.', '_', '-' (≤ 64)")
    try:
        PepVersion(alias)
    except ValueError:
        return alias
    raise InvalidInputError(f"{alias!r} looks like a version; an alias must not be one")


_name, _version = check_name, check_version


class Catalog(CatalogReader):
    """The catalog database. Use :func:`open_catalog`; close with :meth:`close` (or ``with``).

    Reads are :class:`~patchctl.registry.reads.CatalogReader`'s SQL, on a DB-API connection of the
    engine's pool; writes use the ORM, one transaction per method."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.backend = engine.url.get_backend_name()
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

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        try:
            raw = self.engine.raw_connection()
        except OperationalError as exc:
            first = str(exc.orig).splitlines()[0] if exc.orig is not None else str(exc)
            raise CatalogError(f"catalog {self.url}: {first}") from None
        try:
            yield raw.driver_connection
        finally:
            raw.close()  # back to the pool

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

    # -- lookups (ORM rows, for writes) --------------------------------------------------------

    @staticmethod
    def _orm_patch(s: Session, name: str) -> m.Patch:
        row = s.scalar(select(m.Patch).where(m.Patch.name == name))
        if row is None:
            raise NotFoundError(f"patch {name} is not in the catalog", hint="see `patchctl list`")
        return row

    @classmethod
    def _orm_version_row(cls, s: Session, name: str, version: str) -> tuple[m.Patch, m.Version]:
        patch = cls._orm_patch(s, name)
        key = version_sort_key(version)
        row = s.scalar(select(m.Version).where(m.Version.patch_id == patch.id, m.Version.sort_key == key))
        if row is None:
            versions = s.scalars(select(m.Version.version).where(m.Version.patch_id == patch.id)).all()
            raise version_not_found(name, version, versions)
        return patch, row

    @staticmethod
    def _orm_info(patch: m.Patch, row: m.Version) -> VersionInfo:
        return version_info(
            patch.name,
            row.version,
            row.content_digest,
            row.manifest_sha256,
            row.manifest,
            row.yanked,
            row.yank_reason,
            row.created_at,
        )

    @staticmethod
    def _orm_base_info(row: m.BaseModel) -> BaseInfo:
        return base_info(row.source, row.revision, row.weights_sha256, row.structure_sha256, row.family, row.created_at)

    def _rows(self, s: Session) -> Rows:
        """The session's own DB-API connection, for the reads' SQL inside a write transaction."""
        return Rows(s.connection().connection.driver_connection, self.backend)

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
            return AddVersionResult(self._orm_info(patch, row), created=False)

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
            return AddVersionResult(self._orm_info(patch, row), created=True)

        return self._retrying(tx)

    def list_versions(self, name: str, *, include_yanked: bool = True) -> list[VersionInfo]:
        """Versions of a patch, oldest first."""
        with self._session() as s:
            patch = self._orm_patch(s, _name(name))
            q = select(m.Version).where(m.Version.patch_id == patch.id)
            if not include_yanked:
                q = q.where(m.Version.yanked.is_(False))
            rows = s.scalars(q.order_by(m.Version.sort_key)).all()
            return [self._orm_info(patch, r) for r in rows]

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
            patch, row = self._orm_version_row(s, name, version)
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
            patch = self._orm_patch(s, _name(name))
            row = s.scalar(select(m.Alias).where(m.Alias.patch_id == patch.id, m.Alias.alias == alias))
            if row is None:
                raise NotFoundError(f"{name} has no alias {alias!r}")
            s.delete(row)

    # -- yank ----------------------------------------------------------------------------

    def yank(self, name: str, version: str, reason: str | None = None) -> VersionInfo:
        """Mark a version yanked: resolvers skip it unless pinned exactly. Idempotent (reason updated)."""
        with self._session(write=True) as s:
            patch, row = self._orm_version_row(s, _name(name), _version(version))
            row.yanked, row.yank_reason = True, reason or None
            return self._orm_info(patch, row)

    def unyank(self, name: str, version: str) -> VersionInfo:
        with self._session(write=True) as s:
            patch, row = self._orm_version_row(s, _name(name), _version(version))
            row.yanked, row.yank_reason = False, None
            return self._orm_info(patch, row)

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
            return self._orm_base_info(row), created

        return self._retrying(tx)

    def add_lineage(self, child: str, parent: str, relation: str = "update") -> LineageEdge:
        """Record ``child`` (weights fingerprint) as derived from ``parent``. Idempotent; cycles refused."""
        if relation not in LINEAGE_RELATIONS:
            raise InvalidInputError(f"relation {relation!r}: expected one of {', '.join(LINEAGE_RELATIONS)}")

        def tx(s: Session) -> LineageEdge:
            rows = self._rows(s)
            (cid, *_, csha, _, _, _), (pid, *_, psha, _, _, _) = (
                self._base_row(rows, child),
                self._base_row(rows, parent),
            )
            if cid == pid:
                raise InvalidInputError("a base cannot be its own parent")
            if cid in {i for i, _, _ in self._walk_ids(rows, pid)}:
                raise InvalidInputError(f"{csha[:12]} is already an ancestor of {psha[:12]}: lineage cycle")
            edge = s.scalar(select(m.BaseLineage).where(m.BaseLineage.child_id == cid, m.BaseLineage.parent_id == pid))
            if edge is None:
                with s.begin_nested():
                    edge = m.BaseLineage(child_id=cid, parent_id=pid, relation=relation, created_at=_now())
                    s.add(edge)
            return LineageEdge(csha, psha, edge.relation, aware(edge.created_at))

        return self._retrying(tx)

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
            patch, row = self._orm_version_row(s, _name(name), _version(version))
            rem = self._add_remote(s, row, url, revision)
            return RemoteCopy(patch.name, row.version, rem.url, rem.revision, aware(rem.pushed_at))

        return self._retrying(tx)

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
            patch, row = self._orm_version_row(s, _name(name), _version(version))
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
            aware(r.created_at),
        )

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
            patch, row = self._orm_version_row(s, _name(name), _version(version))
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
            aware(r.created_at),
            base_ref=r.base_ref,
            limit=r.limit,
            lm_eval_version=r.lm_eval_version,
            tool_version=r.tool_version,
            duration_s=r.duration_s,
            check_status=r.check_status,
            forced=bool(r.forced),
        )

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
            patch, row = self._orm_version_row(s, _name(name), _version(version))
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
            aware(r.created_at),
            r.decision,
        )


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
