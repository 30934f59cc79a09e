"""Alembic environment, configured programmatically by :mod:`patchctl.registry.db` (no alembic.ini).

The caller passes an open SQLAlchemy connection in ``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from patchctl.registry.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # pragma: no cover - only when someone runs the alembic CLI by hand
        from sqlalchemy import create_engine

        url = config.get_main_option("sqlalchemy.url")
        if not url:
            raise RuntimeError("patchctl migrations: no connection and no sqlalchemy.url given")
        with create_engine(url).connect() as conn:
            _run(conn)
        return
    _run(connection)


if context.is_offline_mode():  # pragma: no cover
    raise RuntimeError("patchctl migrations run online only (patchctl db upgrade)")
run()
