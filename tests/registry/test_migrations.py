"""Alembic owns the schema: migrations from empty, models agree with them, stale schemas refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import make_url

from patchctl.errors import CatalogError, StaleSchemaError
from patchctl.registry.db import (
    HEAD_REVISION,
    check_schema,
    head_revision,
    make_engine,
    schema_state,
    upgrade,
    upgrade_command,
)
from patchctl.registry.models import Base
from patchctl.registry.store import open_catalog
from patchctl.settings import Settings

TABLES = {
    "patches", "versions", "files", "aliases", "bases", "base_lineage", "version_remotes",
    "compat_reports", "validations", "installs", "alembic_version",
}  # fmt: skip


def test_upgrade_from_empty_creates_every_table(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert schema_state(engine).empty
        state = upgrade(engine)
        assert state.current == head_revision() and state.up_to_date
        assert set(inspect(engine).get_table_names()) == TABLES
        # upgrading again is a no-op
        assert upgrade(engine).current == head_revision()
    finally:
        engine.dispose()


def test_models_and_migrations_agree(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, Base.metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_constraint_names_are_explicit(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        insp = inspect(engine)
        uniques = {u["name"] for t in insp.get_table_names() for u in insp.get_unique_constraints(t)}
        assert {"uq_patches_name", "uq_versions_patch_id_sort_key", "uq_bases_weights_sha256"} <= uniques
        fks = {f["name"] for t in insp.get_table_names() for f in insp.get_foreign_keys(t)}
        assert "fk_versions_patch_id_patches" in fks
    finally:
        engine.dispose()


def test_empty_sqlite_is_created_on_first_use(tmp_path: Path) -> None:
    home = tmp_path / "new-home"
    settings = Settings.resolve(home=home)
    assert not home.exists()
    cat = open_catalog(settings)
    try:
        assert cat.list_patches() == []
    finally:
        cat.close()
    assert (home / "catalog.db").is_file()


def test_sqlite_pragmas(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'sub' / 'c.db'}", create_dir=True)
    try:
        upgrade(engine)  # turns foreign keys off while migrating, and back on
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def _with_password(url: str) -> str:
    u = make_url(url)
    return (
        u.set(password="s3cr3t-pw").render_as_string(hide_password=False) if u.get_backend_name() != "sqlite" else url
    )


def test_unmigrated_postgres_or_unknown_revision_is_refused_with_the_command(db_url: str) -> None:
    url = _with_password(db_url)
    engine = make_engine(url)
    try:
        if engine.url.get_backend_name() == "postgresql":
            # an empty team catalog is not created implicitly: the message names the command
            with pytest.raises(StaleSchemaError) as info:
                check_schema(engine, auto_create=False)
            assert upgrade_command(engine.url) in str(info.value)
            assert "s3cr3t-pw" not in str(info.value) and "***" in str(info.value)
        upgrade(engine)
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'ffffdeadbeef'"))
        with pytest.raises(StaleSchemaError, match="newer than this patchctl"):
            check_schema(engine, auto_create=True)
    finally:
        engine.dispose()


def test_older_revision_is_refused_with_the_upgrade_command(db_url: str) -> None:
    engine = make_engine(_with_password(db_url))
    try:
        upgrade(engine, "0001")
        assert schema_state(engine).current == "0001" != head_revision()
        with pytest.raises(StaleSchemaError) as info:
            check_schema(engine, auto_create=True)  # never migrates an existing catalog implicitly
        message = str(info.value)
        assert f"run: {upgrade_command(engine.url)}" in message and "0001" in message
        assert "s3cr3t-pw" not in message
        upgrade(engine)
        assert check_schema(engine, auto_create=False).up_to_date
    finally:
        engine.dispose()


def test_tables_without_revision_are_not_a_catalog(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM alembic_version"))
        with pytest.raises(CatalogError, match="not a patchctl catalog"):
            check_schema(engine, auto_create=True)
    finally:
        engine.dispose()


def test_upgrade_command_redacts_password() -> None:
    cmd = upgrade_command("postgresql+psycopg://ci:hunter2@db.example:5432/patchctl")
    assert cmd == "patchctl --db 'postgresql+psycopg://ci:***@db.example:5432/patchctl' db upgrade"


def test_head_revision_constant_is_the_newest_migration() -> None:
    # opening a catalog compares alembic_version with this constant instead of reading the
    # migration scripts: a new migration must bump it
    assert head_revision() == HEAD_REVISION


def test_an_up_to_date_catalog_is_checked_with_one_query(db_url: str) -> None:
    engine = make_engine(_with_password(db_url))
    try:
        upgrade(engine)
        statements: list[str] = []
        event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        state = check_schema(engine, auto_create=False)
        # (SQLite's BEGIN DEFERRED aside)
        assert [s for s in statements if not s.startswith("BEGIN")] == ["SELECT version_num FROM alembic_version"]
        assert state == schema_state(engine) and state.up_to_date and "s3cr3t-pw" not in state.url
    finally:
        engine.dispose()
