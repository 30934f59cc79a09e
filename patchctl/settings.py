"""One settings object, resolved once: flags > environment > config file > defaults.

==================  ==========================  ==================================  ===========================
setting             flag                        environment                         default
==================  ==========================  ==================================  ===========================
home                ``--home``                  ``PATCHCTL_HOME``                   user data dir (platformdirs)
database_url        ``--db``                    ``PATCHCTL_DATABASE_URL``           ``sqlite:///<home>/catalog.db``
default_remote      ``--to`` (push)             ``PATCHCTL_REMOTE``                 none
==================  ==========================  ==================================  ===========================

The config file is ``<home>/config.toml`` with the same keys (``database_url``, ``default_remote``).
Nothing here is read at import time.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchctl.errors import InvalidInputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["SETTINGS_TABLE", "Settings"]

#: (name, flag, environment variable, description) — feeds `patchctl config` and the docs
SETTINGS_TABLE: tuple[tuple[str, str, str, str], ...] = (
    ("home", "--home", "PATCHCTL_HOME", "data directory: catalog.db, store/, config.toml"),
    ("database_url", "--db", "PATCHCTL_DATABASE_URL", "SQLAlchemy URL of the catalog (sqlite or postgresql)"),
    ("default_remote", "--to", "PATCHCTL_REMOTE", "remote that `push` publishes to when --to is not given"),
)


def _default_home() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("patchctl", appauthor=False))


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    default_remote: str | None = None

    @property
    def store_dir(self) -> Path:
        """The content-addressed store of patch files."""
        return self.home / "store"

    @property
    def hash_cache_dir(self) -> Path:
        """Remembered sha256 of base weight files (by path, inode, size and mtime)."""
        return self.home / "cache" / "sha256"

    @property
    def dtype_plan_cache_dir(self) -> Path:
        """Which tensors a model class keeps in fp32 (``patchctl.merge._fp32``), by transformers
        version, dtype and config: the same for every home, so kept in the user's cache directory
        (``$PATCHCTL_CACHE_DIR``, default the platform's, e.g. ``~/.cache/patchctl``)."""
        import os

        from platformdirs import user_cache_dir

        root = os.environ.get("PATCHCTL_CACHE_DIR") or user_cache_dir("patchctl", appauthor=False)
        return Path(root).expanduser() / "dtype-plans"

    @property
    def default_database_url(self) -> str:
        """The catalog under the home: the only one created (with its directory) on demand."""
        return f"sqlite:///{(self.home / 'catalog.db').resolve()}"

    @property
    def uses_default_database(self) -> bool:
        return self.database_url == self.default_database_url

    @property
    def config_file(self) -> Path:
        return self.home / "config.toml"

    @classmethod
    def resolve(
        cls,
        *,
        home: str | Path | None = None,
        database_url: str | None = None,
        default_remote: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Settings:
        env = os.environ if env is None else env
        home_path = Path(home or env.get("PATCHCTL_HOME") or _default_home()).expanduser()
        file_cfg = _read_config(home_path / "config.toml")
        db = (
            database_url
            or env.get("PATCHCTL_DATABASE_URL")
            or file_cfg.get("database_url")
            or f"sqlite:///{(home_path / 'catalog.db').resolve()}"
        )
        remote = default_remote or env.get("PATCHCTL_REMOTE") or file_cfg.get("default_remote")
        return cls(home=home_path, database_url=str(db), default_remote=str(remote) if remote else None)


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInputError(f"{path}: not valid TOML ({exc})") from None
    unknown = set(data) - {row[0] for row in SETTINGS_TABLE}
    if unknown:
        raise InvalidInputError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
    return data
