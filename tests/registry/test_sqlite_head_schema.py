"""A new SQLite catalog gets the schema the migrations build, from ``migrations/sqlite_head.sql``
(patchctl.registry.db), without importing Alembic: the same tables, columns, keys, indexes and
checks as ``alembic upgrade head``. After a new migration, rebuild the file with
``PATCHCTL_WRITE_SQLITE_HEAD=1 pytest tests/registry/test_sqlite_head_schema.py``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection

from patchctl.errors import CatalogError
from patchctl.registry import db
from patchctl.registry.db import HEAD_REVISION, check_schema, make_engine, schema_state, upgrade

REPO_ROOT = Path(__file__).resolve().parents[2]


def _structure(conn: Connection) -> dict[str, Any]:
    """What a schema is, independent of how SQLAlchemy spelled its DDL: per table its columns,
    foreign keys, indexes (with their columns) and CHECK expressions."""
    tables = [
        r[0]
        for r in conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    out: dict[str, Any] = {}
    for t in tables:
        sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = ?", (t,)).scalar() or ""
        indexes = {}
        for _, name, unique, origin, partial in conn.exec_driver_sql(f'PRAGMA index_list("{t}")'):
            cols = [r[2] for r in conn.exec_driver_sql(f'PRAGMA index_info("{name}")')]
            indexes[name if origin == "c" else f"{origin}:{','.join(cols)}"] = (unique, origin, partial, cols)
        out[t] = {
            "columns": [tuple(r[1:]) for r in conn.exec_driver_sql(f'PRAGMA table_xinfo("{t}")')],
            "foreign_keys": sorted(tuple(r[2:]) for r in conn.exec_driver_sql(f'PRAGMA foreign_key_list("{t}")')),
            "indexes": dict(sorted(indexes.items())),
            "checks": sorted(" ".join(c.split()) for c in re.findall(r"CHECK \((.*?)\)(?=,\s|\s*\)\s*$)", sql, re.S)),
        }
    return out


def _alembic_catalog(path: Path) -> dict[str, Any]:
    engine = make_engine(f"sqlite:///{path}")
    try:
        upgrade(engine)
        with engine.connect() as conn:
            return _structure(conn)
    finally:
        engine.dispose()


def test_a_new_catalog_has_the_schema_the_migrations_build_without_alembic(tmp_path: Path) -> None:
    built = _alembic_catalog(tmp_path / "alembic.db")
    if os.environ.get("PATCHCTL_WRITE_SQLITE_HEAD") == "1":
        engine = make_engine(f"sqlite:///{tmp_path / 'alembic.db'}")
        with engine.connect() as conn:
            db.SQLITE_HEAD_SCHEMA.write_text(
                db.render_sqlite_schema(db.sqlite_schema(conn), HEAD_REVISION), encoding="utf-8"
            )
        engine.dispose()
    new = tmp_path / "new.db"
    code = (
        "import sys, json\n"
        "from patchctl.registry.db import make_engine, check_schema\n"
        f"state = check_schema(make_engine({f'sqlite:///{new}'!r}), auto_create=True)\n"
        "print(json.dumps([state.current, state.up_to_date, 'alembic' in sys.modules]))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert json.loads(out.stdout) == [HEAD_REVISION, True, False]
    engine = make_engine(f"sqlite:///{new}")
    try:
        with engine.connect() as conn:
            snapshot = _structure(conn)
        assert schema_state(engine).up_to_date
    finally:
        engine.dispose()
    assert snapshot == built, (
        f"{db.SQLITE_HEAD_SCHEMA} is not what the migrations build: rebuild it with "
        "PATCHCTL_WRITE_SQLITE_HEAD=1 pytest tests/registry/test_sqlite_head_schema.py"
    )
    assert len(built) >= 5 and any(t["checks"] for t in built.values())  # the comparison compares something


def test_a_snapshot_of_another_revision_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot left from another head (a migration added, the file not rebuilt) is ignored:
    the migrations run, and the catalog is the same."""
    stale = tmp_path / "stale.sql"
    stale.write_text("-- revision 0000\nCREATE TABLE wrong (id INTEGER);\n\n", encoding="utf-8")
    monkeypatch.setattr(db, "SQLITE_HEAD_SCHEMA", stale)
    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        assert check_schema(engine, auto_create=True).up_to_date
        with engine.connect() as conn:
            got = _structure(conn)
    finally:
        engine.dispose()
    assert "wrong" not in got
    assert got == _alembic_catalog(tmp_path / "alembic.db")


def test_a_database_with_other_tables_is_still_refused(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    engine = make_engine(f"sqlite:///{path}")
    try:
        with pytest.raises(CatalogError, match="not a patchctl catalog"):
            check_schema(engine, auto_create=True)
    finally:
        engine.dispose()
    with sqlite3.connect(path) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["notes"]
