"""The catalog's reads: one SQL implementation of each, run on a plain DB-API connection.

:class:`CatalogReader` holds every read query of the catalog (list, search, show's pieces,
resolve, the resolver's candidates and cached reports, ancestry, lineage), written as SQL for
both SQLite (:mod:`sqlite3`) and PostgreSQL (psycopg) and returning the plain records of
:mod:`patchctl.registry.records`. Two classes run it:

* :class:`patchctl.registry.store.Catalog` (SQLAlchemy, writes and migrations), on a DB-API
  connection of its engine's pool, so an open catalog in a service or a test reads through the
  same queries;
* :class:`CatalogConnection`, on one bare connection opened by :func:`open_reader` without
  SQLAlchemy: what ``patchctl list``, ``show``, ``resolve --onto FINGERPRINT`` and ``lineage``
  use, so that a command's process does not import the ORM (a fifth of a second of start-up).

:func:`open_reader` takes the fast path only when the catalog is exactly at
:data:`~patchctl.registry._constants.HEAD_REVISION` (one query); anything else (no such file, an
older or newer schema, an empty database, a URL it does not handle itself, a connection that
fails) goes through :func:`~patchctl.registry.store.open_catalog`, which migrates or refuses
exactly as before.

Each public method runs in one read transaction (a consistent snapshot on both databases).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from patchctl.errors import CatalogError, InvalidInputError, NotFoundError
from patchctl.registry._constants import BUSY_TIMEOUT_S, HEAD_REVISION
from patchctl.registry.records import (
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

if TYPE_CHECKING:
    from patchctl.settings import Settings

__all__ = [
    "IDENTICAL",
    "LINEAGE_RELATIONS",
    "CatalogConnection",
    "CatalogReader",
    "Rows",
    "aware",
    "base_info",
    "check_name",
    "check_version",
    "open_reader",
    "version_info",
    "version_not_found",
]

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

_VCOLS = "v.id, v.version, v.content_digest, v.manifest_sha256, v.manifest, v.yanked, v.yank_reason, v.created_at"
_BCOLS = "b.id, b.source, b.revision, b.weights_sha256, b.structure_sha256, b.family, b.created_at"


def aware(ts: datetime | str) -> datetime:
    """A stored timestamp as an aware datetime (SQLite keeps them as naive UTC text)."""
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=timezone.utc)


def check_name(text: str) -> str:
    try:
        return check_patch_name(text)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


def check_version(text: str) -> str:
    try:
        return normalize_version(text)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


def version_not_found(name: str, version: str, versions: Sequence[str]) -> NotFoundError:
    from packaging.version import Version as PepVersion

    listing = ", ".join(sorted(versions, key=PepVersion)) or "none"
    return NotFoundError(f"{name}=={version} is not in the catalog (versions: {listing})")


def version_info(
    name: str,
    version: str,
    content_digest: str,
    manifest_sha256: str,
    manifest: dict[str, Any],
    yanked: bool,
    yank_reason: str | None,
    created_at: datetime | str,
) -> VersionInfo:
    """A version's record from its row's values (the manifest validated: pydantic, imported here)."""
    from patchctl.schemas.manifest import Manifest

    return VersionInfo(
        name=name,
        version=version,
        content_digest=content_digest,
        manifest_sha256=manifest_sha256,
        manifest=Manifest.from_dict(manifest, source=f"catalog: {name}=={version}"),
        yanked=yanked,
        yank_reason=yank_reason,
        created_at=aware(created_at),
    )


def base_info(
    source: str,
    revision: str | None,
    weights_sha256: str,
    structure_sha256: str,
    family: dict[str, Any],
    created_at: datetime | str,
) -> BaseInfo:
    """A base's record from its row's values (the family validated: pydantic, imported here)."""
    from patchctl.schemas.base import Family

    return BaseInfo(
        source=source,
        revision=revision,
        weights_sha256=weights_sha256,
        structure_sha256=structure_sha256,
        family=Family.model_validate(family),
        created_at=aware(created_at),
    )


def _marks(n: int) -> str:
    return "(" + ", ".join("?" * n) + ")"


class Rows:
    """A DB-API connection with the few helpers the queries need: ``?`` placeholders on both
    databases (psycopg's ``%s`` substituted), JSON columns decoded, booleans as ``bool``."""

    def __init__(self, conn: Any, backend: str) -> None:
        self.conn = conn
        self.pg = backend == "postgresql"

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.conn.cursor()
        try:
            cur.execute(sql.replace("?", "%s") if self.pg else sql, tuple(params))
            return list(cur.fetchall())
        finally:
            cur.close()

    def first(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = self.all(sql, params)
        return rows[0] if rows else None

    def json(self, value: Any) -> Any:
        """A JSON column's value (psycopg decodes ``json`` itself; SQLite stores text)."""
        return json.loads(value) if isinstance(value, str) and not self.pg else value


class CatalogReader:
    """Every read of the catalog. Subclasses provide :meth:`_connection` (a DB-API connection),
    :attr:`backend` (``sqlite`` or ``postgresql``) and :attr:`url` (redacted, for messages)."""

    backend: str

    @property
    def url(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> CatalogReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        raise NotImplementedError
        yield  # pragma: no cover

    @contextmanager
    def _read(self) -> Iterator[Rows]:
        """One read transaction on a connection (SQLite: ``BEGIN`` … ``COMMIT``, so that the
        queries see one snapshot; psycopg opens one itself, rolled back at the end)."""
        with self._connection() as conn:
            rows = Rows(conn, self.backend)
            dbapi = sys.modules[type(conn).__module__.split(".", 1)[0]]
            began = not rows.pg and not conn.in_transaction
            try:
                if began:
                    conn.execute("BEGIN")
                yield rows
            except dbapi.OperationalError as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise CatalogError(f"catalog {self.url}: {first}") from None
            finally:
                if rows.pg:
                    conn.rollback()
                elif began and conn.in_transaction:
                    conn.execute("COMMIT")

    # -- lookups (inside a read) ---------------------------------------------------------------

    @staticmethod
    def _patch(c: Rows, name: str) -> tuple[int, str]:
        row = c.first("SELECT id, name FROM patches WHERE name = ?", (name,))
        if row is None:
            raise NotFoundError(f"patch {name} is not in the catalog", hint="see `patchctl list`")
        return row[0], row[1]

    @staticmethod
    def _version(c: Rows, patch_id: int, version: str) -> tuple[Any, ...] | None:
        return c.first(
            f"SELECT {_VCOLS} FROM versions v WHERE v.patch_id = ? AND v.sort_key = ?",
            (patch_id, version_sort_key(version)),
        )

    @classmethod
    def _version_row(cls, c: Rows, name: str, version: str) -> tuple[str, tuple[Any, ...]]:
        patch_id, name = cls._patch(c, name)
        row = cls._version(c, patch_id, version)
        if row is None:
            versions = [r[0] for r in c.all("SELECT version FROM versions WHERE patch_id = ?", (patch_id,))]
            raise version_not_found(name, version, versions)
        return name, row

    @staticmethod
    def _info(c: Rows, name: str, row: tuple[Any, ...]) -> VersionInfo:
        _, version, digest, manifest_sha, manifest, yanked, reason, created = row
        return version_info(name, version, digest, manifest_sha, c.json(manifest), bool(yanked), reason, created)

    @staticmethod
    def _base_info(c: Rows, row: tuple[Any, ...]) -> BaseInfo:
        _, source, revision, weights, structure, family, created = row
        return base_info(source, revision, weights, structure, c.json(family), created)

    @staticmethod
    def _base_row(c: Rows, sha: str) -> tuple[Any, ...]:
        """A base's row (:data:`_BCOLS`) by fingerprint or a unique prefix of ≥ 8 hex digits."""
        sha = sha.lower()
        if len(sha) == 64:
            row = c.first(f"SELECT {_BCOLS} FROM bases b WHERE b.weights_sha256 = ?", (sha,))
        elif len(sha) >= 8 and re.fullmatch(r"[0-9a-f]+", sha):
            rows = c.all(f"SELECT {_BCOLS} FROM bases b WHERE b.weights_sha256 LIKE ?", (sha + "%",))
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

    @staticmethod
    def _edges(c: Rows) -> list[tuple[int, int, str]]:
        """Every lineage edge (child id, parent id, relation): one narrow query; the graph of bases
        is small next to versions and reports, and walking it in memory beats a query per level."""
        return [(ch, p, r) for ch, p, r in c.all("SELECT child_id, parent_id, relation FROM base_lineage ORDER BY id")]

    @staticmethod
    def _parents(edges: list[tuple[int, int, str]]) -> dict[int, list[tuple[int, str]]]:
        parents: dict[int, list[tuple[int, str]]] = {}
        for ch, p, r in edges:
            parents.setdefault(ch, []).append((p, r))
        return parents

    @classmethod
    def _walk_ids(
        cls, c: Rows, base_id: int, parents: dict[int, list[tuple[int, str]]] | None = None
    ) -> list[tuple[int, str, int]]:
        """Breadth-first ancestors of a base: (id, relation, depth), by id within a generation."""
        if parents is None:
            parents = cls._parents(cls._edges(c))
        seen = {base_id}
        frontier = [base_id]
        out: list[tuple[int, str, int]] = []
        depth = 0
        while frontier:
            depth += 1
            level = sorted((p, r) for ch in frontier for p, r in parents.get(ch, ()))
            frontier = []
            for pid, relation in level:
                if pid not in seen:
                    seen.add(pid)
                    frontier.append(pid)
                    out.append((pid, relation, depth))
        return out

    # -- patches and versions --------------------------------------------------------------------

    def get_version(self, name: str, version: str) -> VersionInfo:
        with self._read() as c:
            return self._info(c, *self._version_row(c, check_name(name), check_version(version)))

    def list_version_rows(self, name: str) -> list[tuple[str, bool, datetime]]:
        """(version, yanked, created_at) of every version of a patch, oldest first (no manifests read)."""
        name = check_name(name)
        with self._read() as c:
            rows = self._of_patch(
                c,
                name,
                "SELECT v.version, v.yanked, v.created_at FROM versions v JOIN patches p ON p.id = v.patch_id "
                "WHERE p.name = ? ORDER BY v.sort_key",
                (name,),
            )
            return [(v, bool(y), aware(t)) for v, y, t in rows]

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
        with self._read() as c:
            where: list[str] = []
            params: list[Any] = []
            if namespace:
                where.append("namespace = ?")
                params.append(namespace)
            if after is not None:
                where.append("name > ?")
                params.append(after)
            if only is not None:
                if not only:
                    return []
                where.append("name IN " + _marks(len(only)))
                params += sorted(only)
            sql = "SELECT id, name, namespace FROM patches"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY name"
            if limit is not None:
                sql += " LIMIT ?"
                params.append(limit)
            patches = c.all(sql, params)
            if not patches:
                return []
            ids = [p[0] for p in patches]
            inn = _marks(len(ids))
            counts = {
                pid: (int(n), int(y or 0))
                for pid, n, y in c.all(
                    "SELECT patch_id, COUNT(*), SUM(CASE WHEN yanked THEN 1 ELSE 0 END) FROM versions "
                    f"WHERE patch_id IN {inn} GROUP BY patch_id",
                    ids,
                )
            }
            # the newest non-yanked version of each patch: one index seek per patch (ix_versions_listing)
            latest: dict[int, tuple[str, str | None]] = {
                pid: (v, t)
                for pid, v, t in c.all(
                    "SELECT v.patch_id, v.version, v.task FROM versions v WHERE v.id IN ("
                    "SELECT (SELECT v2.id FROM versions v2 WHERE v2.patch_id = p.id AND v2.yanked = ? "
                    f"ORDER BY v2.sort_key DESC LIMIT 1) FROM patches p WHERE p.id IN {inn})",
                    [False, *ids],
                )
            }
            from packaging.version import Version as PepVersion

            for pid, (v, _) in list(latest.items()):
                if PepVersion(v).is_prerelease:  # a final release, if any, wins over a newer pre-release
                    rows = c.all("SELECT version, yanked, task FROM versions WHERE patch_id = ?", (pid,))
                    choice = pick_version("", [Candidate(r[0], bool(r[1])) for r in rows])
                    latest[pid] = next((r[0], r[2]) for r in rows if r[0] == choice.version)
            aliases: dict[int, dict[str, str]] = {}
            for pid, alias, version in c.all(
                "SELECT a.patch_id, a.alias, v.version FROM aliases a JOIN versions v ON a.version_id = v.id "
                f"WHERE a.patch_id IN {inn} ORDER BY a.alias",
                ids,
            ):
                aliases.setdefault(pid, {})[alias] = version
            out = []
            for pid, name, ns in patches:
                n, yanked = counts.get(pid, (0, 0))
                lv, task = latest.get(pid, (None, None))
                out.append(PatchSummary(name, ns, lv, task, n, yanked, aliases.get(pid, {})))
            return out

    def search_patches(self, text: str, *, limit: int = 20) -> list[PatchSummary]:
        """Patches whose name contains ``text`` (case-insensitive), by name, at most ``limit``."""
        like = "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        with self._read() as c:
            names = c.all(
                "SELECT name FROM patches WHERE lower(name) LIKE ? ESCAPE '\\' ORDER BY name LIMIT ?", (like, limit)
            )
        if not names:
            return []
        return self.list_patches(only={n for (n,) in names})

    def validated_names(self, base_weights_sha256: str, *, verdicts: tuple[str, ...] = ("pass",)) -> set[str]:
        """Names of patches with a version validated on this exact base (with one of ``verdicts``)."""
        with self._read() as c:
            rows = c.all(
                "SELECT DISTINCT p.name FROM patches p JOIN versions v ON v.patch_id = p.id "
                "JOIN validations va ON va.version_id = v.id "
                f"WHERE va.base_weights_sha256 = ? AND va.verdict IN {_marks(len(verdicts))}",
                (base_weights_sha256, *verdicts),
            )
            return {n for (n,) in rows}

    def _resolve(self, c: Rows, ref: PatchRef) -> ResolvedVersion:
        patch_id, name = self._patch(c, ref.name)
        exact = exact_version(ref)
        target = None
        if exact is not None and not ref.alias:
            row = self._version(c, patch_id, exact)
            if row is not None:
                return ResolvedVersion(self._info(c, name, row), "version")
        if ref.alias:
            found = c.first(
                "SELECT v.version FROM versions v JOIN aliases a ON a.version_id = v.id "
                "WHERE a.patch_id = ? AND a.alias = ?",
                (patch_id, ref.alias),
            )
            if found is None:
                aliases = [a for (a,) in c.all("SELECT alias FROM aliases WHERE patch_id = ?", (patch_id,))]
                raise NotFoundError(
                    f"{ref.name} has no alias {ref.alias!r} (aliases: {', '.join(sorted(aliases)) or 'none'})"
                )
            target = found[0]
        rows = c.all("SELECT version, yanked FROM versions WHERE patch_id = ?", (patch_id,))
        cands = [Candidate(v, bool(y)) for v, y in rows]
        res = pick_version(ref.name, cands, version=exact, spec=None if exact else ref.spec, alias_target=target)
        row = self._version(c, patch_id, res.version)
        assert row is not None
        return ResolvedVersion(self._info(c, name, row), res.via)

    def resolve(self, ref: PatchRef) -> ResolvedVersion:
        """The version a reference names (see :mod:`patchctl.registry.resolver` for the rules).

        Chooses over narrow rows (version, yanked); only the chosen row is read in full."""
        with self._read() as c:
            return self._resolve(c, ref)

    def base_candidates(self, ref: PatchRef, base_weights_sha256: str) -> list[BaseCandidate]:
        """The versions ``ref`` can resolve to (non-yanked matches; an exact pin or an alias: that
        one version) with whether each passed a validation on the exact base. One narrow query."""
        cols = (
            "SELECT v.id, v.version, v.yanked, v.source_weights_sha256, EXISTS (SELECT 1 FROM validations va "
            "WHERE va.version_id = v.id AND va.base_weights_sha256 = ? AND va.verdict = ?) FROM versions v "
            "JOIN patches p ON p.id = v.patch_id"
        )
        params: list[Any] = [base_weights_sha256, "pass", ref.name]
        with self._read() as c:
            exact = exact_version(ref)
            if ref.alias:
                rows = c.all(
                    f"{cols} JOIN aliases a ON a.version_id = v.id AND a.patch_id = p.id WHERE p.name = ? AND a.alias = ?",
                    [*params, ref.alias],
                )
            elif exact is not None:
                rows = c.all(f"{cols} WHERE p.name = ? AND v.sort_key = ?", [*params, version_sort_key(exact)])
            else:
                from packaging.specifiers import SpecifierSet

                live = {r[1]: r for r in c.all(f"{cols} WHERE p.name = ?", params) if not r[2]}
                rows = [live[v] for v in (ref.spec or SpecifierSet()).filter(live)]
            if not rows:
                self._resolve(c, ref)  # raises the not-found error (no patch, alias, version; nothing matches)
                return []
            return [BaseCandidate(ref.name, v, bool(y), src, bool(ok)) for _, v, y, src, ok in rows]

    def latest_report_statuses(
        self, name: str, versions: list[str], base_weights_sha256: str, *, tool_version: str | None = None
    ) -> dict[str, tuple[str, list[str]]]:
        """The newest compat report of each version on one base (of ``tool_version`` when given):
        version → (status, ["check: detail" of each failed check]). The resolver's check cache:
        one query (the report's JSON read only for failures)."""
        if not versions:
            return {}
        name = check_name(name)
        keys = sorted({version_sort_key(v) for v in versions})
        # the newest report of each version: one backward seek of the (version, base, id) index each
        newest = "SELECT r2.id FROM compat_reports r2 WHERE r2.version_id = v.id AND r2.base_weights_sha256 = ?"
        params: list[Any] = ["fail", base_weights_sha256]
        if tool_version is not None:
            newest += " AND r2.tool_version = ?"
            params.append(tool_version)
        params += [name, *keys]
        with self._read() as c:
            rows = c.all(
                "SELECT v.version, r.status, CASE WHEN r.status = ? THEN r.report END FROM versions v "
                f"JOIN patches p ON p.id = v.patch_id JOIN compat_reports r ON r.id = ({newest} ORDER BY r2.id DESC "
                f"LIMIT 1) WHERE p.name = ? AND v.sort_key IN {_marks(len(keys))}",
                params,
            )
            if not rows:
                self._patch(c, name)  # raises when there is no such patch
            out: dict[str, tuple[str, list[str]]] = {}
            for version, status, report in rows:
                failed = [
                    f"{r.get('name')}: {r.get('detail')}"
                    for r in (c.json(report) or {}).get("results", [])
                    if isinstance(r, dict) and r.get("status") == "fail"
                ]
                out[version] = (status, failed)
            return out

    def list_aliases(self, name: str) -> list[AliasInfo]:
        name = check_name(name)
        with self._read() as c:
            rows = self._of_patch(
                c,
                name,
                "SELECT a.alias, v.version, a.updated_at, a.validated_base_sha256, a.validation_id "
                "FROM aliases a JOIN versions v ON a.version_id = v.id JOIN patches p ON p.id = a.patch_id "
                "WHERE p.name = ? ORDER BY a.alias",
                (name,),
            )
            return [AliasInfo(name, a, v, aware(t), vb, vid) for a, v, t, vb, vid in rows]

    def list_remotes(self, name: str, version: str) -> list[RemoteCopy]:
        name, version = check_name(name), check_version(version)
        with self._read() as c:
            rows = c.all(  # (the version's row, with no remote: one NULL row)
                "SELECT v.version, r.url, r.revision, r.pushed_at FROM versions v JOIN patches p ON p.id = v.patch_id "
                "LEFT JOIN version_remotes r ON r.version_id = v.id WHERE p.name = ? AND v.sort_key = ? ORDER BY r.url",
                (name, version_sort_key(version)),
            )
            if not rows:
                self._version_row(c, name, version)  # raises: there is no such version
            return [RemoteCopy(name, v, u, r, aware(t)) for v, u, r, t in rows if u is not None]

    @staticmethod
    def _filtered(
        table: str, cols: str, name: str, version: str | None, base: str | None = None
    ) -> tuple[str, list[str], list[Any]]:
        """(``SELECT cols FROM <table> r JOIN versions v JOIN patches p``, conditions, parameters):
        the patch's, the version's and the base's conditions."""
        where: list[str] = ["p.name = ?"]
        params: list[Any] = [name]
        if version is not None:
            where.append("v.sort_key = ?")
            params.append(version_sort_key(check_version(version)))
        if base is not None:
            where.append("r.base_weights_sha256 = ?")
            params.append(base)
        sql = f"SELECT {cols} FROM {table} r JOIN versions v ON v.id = r.version_id JOIN patches p ON p.id = v.patch_id"
        return sql, where, params

    def _of_patch(self, c: Rows, name: str, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The rows of a query on one patch's rows (joined by name); none: the patch must exist."""
        rows = c.all(sql, params)
        if not rows:
            self._patch(c, name)  # raises when there is no such patch
        return rows

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
        cols = "r.id, v.version, r.base_weights_sha256, r.status, r.report, r.tool_version, r.created_at"
        name = check_name(name)
        with self._read() as c:
            sql, where, params = self._filtered("compat_reports", cols, name, version, base_weights_sha256)
            if latest_per_base:
                newest = (
                    "SELECT MAX(r2.id) FROM compat_reports r2 JOIN versions v2 ON v2.id = r2.version_id "
                    "JOIN patches p2 ON p2.id = v2.patch_id WHERE p2.name = ?"
                )
                params.append(name)
                if version is not None:
                    newest += " AND v2.sort_key = ?"
                    params.append(version_sort_key(check_version(version)))
                where.append(f"r.id IN ({newest} GROUP BY r2.version_id, r2.base_weights_sha256)")
            if before is not None:
                where.append("r.id < ?")
                params.append(before)
            sql += " WHERE " + " AND ".join(where) + " ORDER BY r.id DESC"
            if limit is not None:
                sql += " LIMIT ?"
                params.append(limit)
            return [
                CompatReportRecord(rid, name, v, b, s, c.json(rep), tv, aware(t))
                for rid, v, b, s, rep, tv, t in self._of_patch(c, name, sql, params)
            ]

    def list_validations(
        self, name: str, version: str | None = None, *, base_weights_sha256: str | None = None
    ) -> list[ValidationRecord]:
        """Validations of a patch (one version, one base), newest first."""
        cols = (
            'r.id, v.version, r.base_weights_sha256, r.scores, r.verdict, r.thresholds, r.created_at, r.base_ref, r."limit", '
            "r.lm_eval_version, r.tool_version, r.duration_s, r.check_status, r.forced"
        )
        name = check_name(name)
        with self._read() as c:
            sql, where, params = self._filtered("validations", cols, name, version, base_weights_sha256)
            rows = self._of_patch(c, name, sql + " WHERE " + " AND ".join(where) + " ORDER BY r.id DESC", params)
            return [
                ValidationRecord(
                    rid,
                    name,
                    v,
                    b,
                    c.json(scores),
                    verdict,
                    c.json(thresholds),
                    aware(t),
                    base_ref=ref,
                    limit=lim,
                    lm_eval_version=lm,
                    tool_version=tv,
                    duration_s=dur,
                    check_status=cs,
                    forced=bool(forced),
                )
                for rid, v, b, scores, verdict, thresholds, t, ref, lim, lm, tv, dur, cs, forced in rows
            ]

    def list_installs(
        self, name: str, version: str | None = None, *, limit: int | None = None, before: int | None = None
    ) -> list[InstallRecord]:
        """Installs of a patch (or one version), newest first; ``limit`` rows with ids below ``before``."""
        cols = "r.id, v.version, r.base_weights_sha256, r.out_path, r.format, r.forced, r.report_id, r.created_at, r.decision"
        name = check_name(name)
        with self._read() as c:
            sql, where, params = self._filtered("installs", cols, name, version)
            if before is not None:
                where.append("r.id < ?")
                params.append(before)
            sql += " WHERE " + " AND ".join(where) + " ORDER BY r.id DESC"
            if limit is not None:
                sql += " LIMIT ?"
                params.append(limit)
            return [
                InstallRecord(iid, name, v, b, out, fmt, bool(forced), rep, aware(t), c.json(dec))
                for iid, v, b, out, fmt, forced, rep, t, dec in self._of_patch(c, name, sql, params)
            ]

    # -- bases and lineage -----------------------------------------------------------------------

    def get_base(self, weights_sha256: str) -> BaseInfo:
        """A base by its weights fingerprint (a unique prefix of ≥ 8 hex digits works too)."""
        with self._read() as c:
            return self._base_info(c, self._base_row(c, weights_sha256))

    def find_bases(self, source: str, revision: str | None = None) -> list[BaseInfo]:
        with self._read() as c:
            sql, params = f"SELECT {_BCOLS} FROM bases b WHERE b.source = ?", [source]
            if revision is not None:
                sql += " AND b.revision = ?"
                params.append(revision)
            return [self._base_info(c, r) for r in c.all(sql + " ORDER BY b.created_at", params)]

    def list_bases(self, *, limit: int | None = None, after: str | None = None) -> list[BaseInfo]:
        """Bases in the order they were recorded; ``limit`` of them after the base ``after`` (a page)."""
        with self._read() as c:
            sql, params = f"SELECT {_BCOLS} FROM bases b", []
            if after is not None:
                sql += " WHERE b.id > ?"
                params.append(self._base_row(c, after)[0])
            sql += " ORDER BY b.id"
            if limit is not None:
                sql += " LIMIT ?"
                params.append(limit)
            return [self._base_info(c, r) for r in c.all(sql, params)]

    def list_lineage(self, children: list[str] | None = None) -> list[LineageEdge]:
        """Lineage edges (of the bases ``children`` only, when given)."""
        sql = (
            "SELECT ch.weights_sha256, pa.weights_sha256, l.relation, l.created_at FROM base_lineage l "
            "JOIN bases ch ON ch.id = l.child_id JOIN bases pa ON pa.id = l.parent_id"
        )
        params: list[Any] = []
        if children is not None:
            if not children:
                return []
            sql += f" WHERE ch.weights_sha256 IN {_marks(len(children))}"
            params += children
        with self._read() as c:
            return [LineageEdge(ch, p, r, aware(t)) for ch, p, r, t in c.all(sql + " ORDER BY l.id", params)]

    def ancestry(self, weights_sha256: str) -> dict[str, int]:
        """Recorded ancestors of a base: weights fingerprint → generations up (1 = parent). Bases
        with identical weights (``identical-weights`` edges, either way) count as the same
        generation: depth 0 for the base's own twins. One query (the edges, with fingerprints)."""
        with self._read() as c:
            edges = c.all(
                "SELECT ch.weights_sha256, pa.weights_sha256, l.relation FROM base_lineage l "
                "JOIN bases ch ON ch.id = l.child_id JOIN bases pa ON pa.id = l.parent_id ORDER BY l.id"
            )
        parents: dict[str, list[str]] = {}
        twins: dict[str, list[str]] = {}
        for ch, p, r in edges:
            if r == IDENTICAL:
                twins.setdefault(ch, []).append(p)
                twins.setdefault(p, []).append(ch)
            else:
                parents.setdefault(ch, []).append(p)
        depth = {weights_sha256: 0}
        level, d = [weights_sha256], 0
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
        del depth[weights_sha256]
        return depth

    def ancestors(self, weights_sha256: str) -> list[Ancestor]:
        """Every recorded ancestor of a base, nearest first. Empty if the base is unknown."""
        with self._read() as c:
            row = c.first("SELECT id FROM bases WHERE weights_sha256 = ?", (weights_sha256,))
            if row is None:
                return []
            found = self._walk_ids(c, row[0])
            if not found:
                return []
            ids = [i for i, _, _ in found]
            rows = {r[0]: r for r in c.all(f"SELECT {_BCOLS} FROM bases b WHERE b.id IN {_marks(len(ids))}", ids)}
            return [Ancestor(self._base_info(c, rows[i]), rel, d) for i, rel, d in found]

    def lineage_graph(
        self, *, base: str | None = None, name: str | None = None, per_base_limit: int = 20
    ) -> LineageGraph:
        """The lineage around a base (fingerprint) or around every source base of a patch.

        Bases: the seeds' ancestors and descendants (with every edge among them); versions: the
        patch's (``name``), else up to ``per_base_limit`` per base, newest first; results: the
        newest check report and validation of each listed version on each listed base."""
        with self._read() as c:
            if name is not None:
                patch_id, pname = self._patch(c, check_name(name))
                vrows = c.all(
                    "SELECT id, version, yanked, source_weights_sha256 FROM versions WHERE patch_id = ? "
                    "ORDER BY sort_key DESC",
                    (patch_id,),
                )
                sources = sorted({r[3] for r in vrows})
                seeds = (
                    {
                        i
                        for (i,) in c.all(
                            f"SELECT id FROM bases WHERE weights_sha256 IN {_marks(len(sources))}", sources
                        )
                    }
                    if sources
                    else set()
                )
                versions = [(vid, f"{pname}=={v}", src, bool(y)) for vid, v, y, src in vrows]
            else:
                assert base is not None
                seeds = {self._base_row(c, base)[0]}
                versions = []
            edges = self._edges(c)
            parent_map = self._parents(edges)
            component = set(seeds)
            for seed in seeds:
                component |= {i for i, _, _ in self._walk_ids(c, seed, parent_map)}
            children: dict[int, list[int]] = {}
            for ch, p, _ in edges:
                children.setdefault(p, []).append(ch)
            frontier = list(component)
            while frontier:  # descendants
                frontier = [k for f in frontier for k in children.get(f, ()) if k not in component]
                component.update(frontier)
            ids = sorted(component)
            brows = (
                c.all(f"SELECT {_BCOLS} FROM bases b WHERE b.id IN {_marks(len(ids))} ORDER BY b.id", ids)
                if ids
                else []
            )
            shas = [b[3] for b in brows]
            erows = (
                c.all(
                    "SELECT ch.weights_sha256, pa.weights_sha256, l.relation, l.created_at FROM base_lineage l "
                    "JOIN bases ch ON ch.id = l.child_id JOIN bases pa ON pa.id = l.parent_id "
                    f"WHERE l.child_id IN {_marks(len(ids))} ORDER BY l.id",
                    ids,
                )
                if ids
                else []
            )
            more: dict[str, int] = {}
            if name is None:
                for sha in shas:
                    rows = c.all(
                        "SELECT v.id, v.version, v.yanked, p.name FROM versions v JOIN patches p ON p.id = v.patch_id "
                        "WHERE v.source_weights_sha256 = ? ORDER BY v.id DESC LIMIT ?",
                        (sha, per_base_limit + 1),
                    )
                    if len(rows) > per_base_limit:
                        total = c.first("SELECT COUNT(*) FROM versions WHERE source_weights_sha256 = ?", (sha,))
                        more[sha] = int(total[0] if total else 0) - per_base_limit
                    versions += [(vid, f"{n}=={v}", sha, bool(y)) for vid, v, y, n in rows[:per_base_limit]]
            vids = {v[0]: v[1] for v in versions}
            results: list[LineageResult] = []
            if vids and shas:
                for table, kind, col in (
                    ("compat_reports", "check", "status"),
                    ("validations", "validation", "verdict"),
                ):
                    inv, inb = _marks(len(vids)), _marks(len(shas))
                    for vid, bsha, status in c.all(
                        f"SELECT version_id, base_weights_sha256, {col} FROM {table} WHERE id IN ("
                        f"SELECT MAX(id) FROM {table} WHERE version_id IN {inv} AND base_weights_sha256 IN {inb} "
                        "GROUP BY version_id, base_weights_sha256)",
                        [*vids, *shas],
                    ):
                        results.append(LineageResult(vids[vid], bsha, kind, status))  # type: ignore[arg-type]
            return LineageGraph(
                bases=tuple(self._base_info(c, b) for b in brows),
                edges=tuple(LineageEdge(ch, p, r, aware(t)) for ch, p, r, t in erows),
                versions=tuple(LineageVersion(ref, src, y) for _, ref, src, y in versions),
                results=tuple(sorted(results, key=lambda r: (r.base_weights_sha256, r.ref, r.kind))),
                more_versions=more,
            )


class CatalogConnection(CatalogReader):
    """The catalog read over one bare DB-API connection (no SQLAlchemy): see :func:`open_reader`."""

    def __init__(self, conn: Any, backend: str, url: str) -> None:
        self._conn, self.backend, self._url = conn, backend, url

    @property
    def url(self) -> str:
        return self._url

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        yield self._conn


def _redacted(url: str) -> str:
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def _at_head(conn: Any, backend: str) -> bool:
    rows = Rows(conn, backend).all("SELECT version_num FROM alembic_version")
    return [tuple(r) for r in rows] == [(HEAD_REVISION,)]


def _connect(url: str) -> CatalogConnection | None:
    """A bare connection to an up-to-date catalog, or None when the full path must decide."""
    if url.startswith("sqlite:///") and "?" not in url and "%" not in url:
        path = os.path.expanduser(url[len("sqlite:///") :])
        if not path or path == ":memory:" or path.startswith("file:") or not os.path.isfile(path):
            return None
        import sqlite3

        try:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            return None
        try:
            ok = _at_head(conn, "sqlite")
        except sqlite3.Error:
            ok = False
        if not ok:
            conn.close()
            return None
        return CatalogConnection(conn, "sqlite", url)
    m = re.match(r"postgres(?:ql)?(?:\+psycopg)?://", url)
    if m is None:
        return None
    try:
        import psycopg
    except ImportError:  # (open_catalog says what is missing)
        return None
    try:
        pg = psycopg.connect("postgresql://" + url[m.end() :])
    except psycopg.Error:
        return None
    try:
        ok = _at_head(pg, "postgresql")
        pg.rollback()
    except psycopg.Error:
        ok = False
    if not ok:
        pg.close()
        return None
    return CatalogConnection(pg, "postgresql", _redacted(url))


def open_reader(settings: Settings) -> CatalogReader:
    """The catalog of ``settings``, for reading: a bare connection when the catalog is at this
    patchctl's head revision, else :func:`~patchctl.registry.store.open_catalog` (which creates
    an empty SQLite catalog, and refuses a stale or foreign one, naming the command that fixes it)."""
    found = _connect(settings.database_url)
    if found is not None:
        return found
    from patchctl.registry.store import open_catalog

    return open_catalog(settings)
