import json
from pathlib import Path

import pytest
from catalogtools import run_cli


def test_config_shows_resolved_settings_without_passwords(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "h"
    home.mkdir()
    (home / "config.toml").write_text('default_remote = "file:///srv/patches"\n')
    monkeypatch.setenv("PATCHCTL_HOME", str(home))
    monkeypatch.setenv("PATCHCTL_DATABASE_URL", "postgresql+psycopg://ci:s3cret@db.local/patchctl")
    res = run_cli(["config", "--json"])
    assert res.code == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["home"] == str(home)
    assert data["default_remote"] == "file:///srv/patches"  # from config.toml
    assert data["database_url"] == "postgresql+psycopg://ci:***@db.local/patchctl"
    assert "s3cret" not in res.stdout + res.stderr
    table = run_cli(["--db", "sqlite:////x/y.db", "config"])
    assert table.code == 0 and "sqlite:////x/y.db" in table.stdout


def test_config_file_with_unknown_key_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("databse_url = 'typo'\n")
    res = run_cli(["--home", str(tmp_path), "config"])
    assert res.code == 4
    assert "unknown setting(s) databse_url" in res.stderr
