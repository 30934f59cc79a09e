from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from patchctl.registry.db import make_engine, upgrade
from patchctl.registry.store import Catalog, open_catalog
from patchctl.settings import Settings


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    """Settings on a migrated catalog (SQLite file or a fresh PostgreSQL database)."""
    engine = make_engine(db_url)
    upgrade(engine)
    engine.dispose()
    return Settings(home=tmp_path / "home", database_url=db_url)


@pytest.fixture
def catalog(settings: Settings) -> Iterator[Catalog]:
    cat = open_catalog(settings)
    yield cat
    cat.close()
