"""Catalog database plumbing: engines (SQLite pragmas, PostgreSQL URLs) and Alembic migrations.

The schema is created and changed only by the migrations in :mod:`patchctl.migrations`.
:func:`check_schema` refuses a catalog whose revision is not this patchctl's head, naming the
exact command that fixes it; an empty SQLite database is upgraded on first use so that a new
user's first command just works.

SQLite: WAL journal, a 30 s busy timeout and foreign keys on every connection; write
transactions start with ``BEGIN IMMEDIATE`` so that concurrent writers queue on the lock
instead of failing on a stale read snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from patchctl.errors import CatalogError, InvalidInputError, StaleSchemaError

__all__ = [
    "BUSY_TIMEOUT_S",
    "SchemaState",
    "check_schema",
    "head_revision",
    "make_engine",
    "normalize_url",
    "redacted_url",
    "schema_state",
    "upgrade",
    "upgrade_command",
]

BUSY_TIMEOUT_S = 30
#: execution option that makes a SQLite transaction start with BEGIN IMMEDIATE
WRITE_OPTION = "patchctl_write"


def normalize_url(url: str) -> URL:
    """Parse a database URL; plain ``postgresql://`` uses psycopg 3 (the driver patchctl installs)."""
    try:
        u = make_url(url)
    except ArgumentError:
        raise InvalidInputError(
            f"{redact_text(url)!r} is not a database URL (expected sqlite:///path or postgresql+psycopg://...)"
        ) from None
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    if u.get_backend_name() not in ("sqlite", "postgresql"):
        raise InvalidInputError(f"{redacted_url(u)}: only SQLite and PostgreSQL catalogs are supported")
    return u


def redact_text(url: str) -> str:
    from patchctl._secrets import redact

    return redact(url)


def redacted_url(url: str | URL) -> str:
    u = url if isinstance(url, URL) else make_url(url)
    return u.render_as_string(hide_password=True)


def upgrade_command(url: str | URL) -> str:
    return f"patchctl --db '{redacted_url(url)}' db upgrade"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # transactions are begun by _sqlite_begin
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_S * 1000}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
    finally:
        cur.close()


def _sqlite_begin(conn: Connection) -> None:
    mode = "IMMEDIATE" if conn.get_execution_options().get(WRITE_OPTION) else "DEFERRED"
    conn.exec_driver_sql(f"BEGIN {mode}")


def make_engine(url: str) -> Engine:
    """An engine for the catalog; a SQLite file's directory is created if missing."""
    u = normalize_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:" and not u.database.startswith("file:"):
            Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(u, connect_args={"timeout": BUSY_TIMEOUT_S})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(u, pool_pre_ping=True)


def _alembic_config(connection: Connection | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", "patchctl:migrations")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None, "patchctl ships at least one migration"
    return head


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {s.revision for s in ScriptDirectory.from_config(_alembic_config()).walk_revisions()}


@dataclass(frozen=True)
class SchemaState:
    url: str  # redacted
    current: str | None
    head: str
    empty: bool  # no tables at all

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def _connect_error(engine: Engine, exc: Exception) -> CatalogError:
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return CatalogError(f"cannot open the catalog {redacted_url(engine.url)}: {redact_text(msg)}")


def schema_state(engine: Engine) -> SchemaState:
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
            tables = inspect(conn).get_table_names()
    except OperationalError as exc:
        raise _connect_error(engine, exc) from None
    return SchemaState(url=redacted_url(engine.url), current=current, head=head_revision(), empty=not tables)


def upgrade(engine: Engine, revision: str = "head") -> SchemaState:
    """Apply migrations up to ``revision`` (default: this patchctl's head)."""
    from alembic import command

    state = schema_state(engine)
    if state.current is not None and state.current not in _known_revisions():
        raise StaleSchemaError(
            f"the catalog {state.url} is at revision {state.current}, newer than this patchctl knows "
            f"(head {state.head})",
            hint="upgrade patchctl",
        )
    sqlite = engine.url.get_backend_name() == "sqlite"
    try:
        with engine.connect().execution_options(**{WRITE_OPTION: True}) as conn:
            raw: Any = conn.connection.driver_connection
            if sqlite:  # batch migrations recreate tables: a DROP must not cascade (outside a transaction)
                raw.execute("PRAGMA foreign_keys = OFF")
            try:
                command.upgrade(_alembic_config(conn), revision)
                conn.commit()
            finally:
                if sqlite:
                    raw.execute("PRAGMA foreign_keys = ON")
    except OperationalError as exc:
        raise _connect_error(engine, exc) from None
    return schema_state(engine)


def check_schema(engine: Engine, *, auto_create: bool) -> SchemaState:
    """Refuse a catalog that is not at head. An empty database is migrated when ``auto_create``."""
    state = schema_state(engine)
    if state.up_to_date:
        return state
    if state.current is None and state.empty and auto_create:
        return upgrade(engine)
    cmd = upgrade_command(engine.url)
    if state.current is None and not state.empty:
        raise CatalogError(
            f"{state.url} has tables but no patchctl schema revision: not a patchctl catalog",
            hint="point --db / PATCHCTL_DATABASE_URL at an empty database or a patchctl catalog",
        )
    if state.current is None:
        raise StaleSchemaError(f"the catalog {state.url} has no schema yet; run: {cmd}")
    if state.current not in _known_revisions():
        raise StaleSchemaError(
            f"the catalog {state.url} is at revision {state.current}, newer than this patchctl "
            f"(head {state.head}); upgrade patchctl",
            hint="pip install -U patchctl",
        )
    raise StaleSchemaError(
        f"the catalog {state.url} is at schema revision {state.current}, this patchctl needs {state.head}; run: {cmd}"
    )


def is_lock_error(exc: SQLAlchemyError) -> bool:
    return "database is locked" in str(exc) or "deadlock detected" in str(exc)
