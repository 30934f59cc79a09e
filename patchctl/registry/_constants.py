"""Constants of the catalog that the SQLAlchemy-free read path needs too (this module imports nothing)."""

#: the newest migration in ``patchctl/migrations`` (bump it with every new migration;
#: tests/registry/test_migrations.py checks it against Alembic's script directory)
HEAD_REVISION = "0004"
#: SQLite: how long a connection waits for another process's write lock
BUSY_TIMEOUT_S = 30
