"""Alembic migrations of the catalog: the only way a schema is created (``patchctl db upgrade``)."""
