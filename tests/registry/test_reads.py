"""The catalog's reads on a bare DB-API connection (open_reader) and through the ORM catalog's pool
are the same queries; a catalog that is not at head still goes through open_catalog's checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from catalogtools import load_bench_catalog
from sqlalchemy import text
from sqlalchemy.engine import make_url

from patchctl.errors import CatalogError, NotFoundError, StaleSchemaError
from patchctl.registry.db import make_engine, upgrade, upgrade_command
from patchctl.registry.reads import CatalogConnection, CatalogReader, open_reader
from patchctl.registry.store import Catalog
from patchctl.schemas.refs import PatchRef, parse_patch_ref
from patchctl.settings import Settings


def _with_password(url: str) -> str:
    u = make_url(url)
    return u.set(password="s3cr3t-pw").render_as_string(hide_password=False) if u.password is None and u.host else url


def _ref(text_: str) -> PatchRef:
    ref = parse_patch_ref(text_)
    assert isinstance(ref, PatchRef)
    return ref


def _everything(cat: CatalogReader, base: str) -> list[Any]:
    name = "bench/p00001"
    v = cat.resolve(_ref(name)).version
    return [
        cat.list_patches(limit=7),
        cat.list_patches(limit=3, after="bench/p00004"),
        cat.search_patches("p0001"),
        cat.validated_names(base),
        v,
        cat.resolve(_ref(name + "@stable")),
        cat.resolve(_ref(name + ">=0.2,<0.8")),
        cat.get_version(name, "0.3.0"),
        cat.list_version_rows(name),
        cat.list_aliases(name),
        cat.list_remotes(name, v.version),
        cat.list_compat_reports(name, latest_per_base=True, limit=10),
        cat.list_compat_reports(name, v.version, base_weights_sha256=base),
        cat.list_validations(name),
        cat.list_installs(name, limit=3),
        cat.base_candidates(_ref(name), base),
        cat.latest_report_statuses(name, ["0.1.0", "0.5.0", "0.9.0"], base),
        cat.ancestry(base),
        cat.ancestors(base),
        cat.get_base(base[:10]),
        cat.find_bases("hf://org/base-1"),
        cat.list_bases(limit=4),
        cat.list_lineage(),
        cat.lineage_graph(name=name),
        cat.lineage_graph(base=base, per_base_limit=2),
    ]


def test_bare_connection_and_catalog_read_the_same(db_url: str, tmp_path: Path) -> None:
    bench = load_bench_catalog()
    url = _with_password(db_url)
    engine = make_engine(url)
    upgrade(engine)
    bench.seed(engine, bench.SMALL, progress=False)
    base = bench.base_sha(1, bench.SMALL.generations - 1)
    with Catalog(engine) as cat:
        expected = _everything(cat, base)
    with open_reader(Settings(home=tmp_path / "h", database_url=url)) as reader:
        assert isinstance(reader, CatalogConnection)  # the schema is current: no SQLAlchemy engine
        assert "s3cr3t-pw" not in reader.url
        assert _everything(reader, base) == expected
        assert reader.get_version("bench/p00001", "0.3.0").yanked is False
        with pytest.raises(NotFoundError, match=r"bench/p00001==7.0 is not in the catalog \(versions: 0.0.0, "):
            reader.get_version("bench/p00001", "7.0")
        with pytest.raises(NotFoundError, match="no alias 'nope'"):
            reader.resolve(_ref("bench/p00001@nope"))
        # queries joined on the patch's name still say what is missing when they find nothing
        with pytest.raises(NotFoundError, match=r"bench/p00001==9.9.9 is not in the catalog"):
            reader.list_remotes("bench/p00001", "9.9.9")
        for missing in (reader.list_validations, reader.list_installs, reader.list_aliases, reader.list_version_rows):
            with pytest.raises(NotFoundError, match="patch bench/nope is not in the catalog"):
                missing("bench/nope")
        with pytest.raises(NotFoundError, match="patch bench/nope is not in the catalog"):
            reader.latest_report_statuses("bench/nope", ["1.0"], base)


def test_an_older_revision_is_refused_by_the_read_path_too(db_url: str, tmp_path: Path) -> None:
    url = _with_password(db_url)
    engine = make_engine(url)
    try:
        upgrade(engine, "0001")
        with pytest.raises(StaleSchemaError) as info:
            open_reader(Settings(home=tmp_path / "h", database_url=url))
        assert f"run: {upgrade_command(engine.url)}" in str(info.value) and "s3cr3t-pw" not in str(info.value)
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'ffffdeadbeef'"))
        with pytest.raises(StaleSchemaError, match="newer than this patchctl"):
            open_reader(Settings(home=tmp_path / "h", database_url=url))
    finally:
        engine.dispose()


def test_a_new_default_catalog_is_created_then_read_bare(tmp_path: Path) -> None:
    settings = Settings.resolve(home=tmp_path / "home", env={})
    with open_reader(settings) as first:  # nothing there yet: open_catalog creates it (migrations)
        assert isinstance(first, Catalog) and first.list_patches() == []
    with open_reader(settings) as second:
        assert isinstance(second, CatalogConnection) and second.list_patches() == []


def test_a_missing_sqlite_directory_is_the_same_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nowhere' / 'catalog.db'}"
    with pytest.raises(CatalogError, match="does not exist"):
        open_reader(Settings(home=tmp_path / "h", database_url=url))
