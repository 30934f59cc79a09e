"""The root group imports a command's module only when the command runs: `patchctl --help`
lists every command from a static table (checked here against the commands themselves), and
the read commands load only what they use."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

import patchctl.cli
from patchctl.cli import COMMAND_TABLE, cli

REPO = Path(__file__).parents[2]


def _real_commands() -> dict[str, tuple[str, click.Command]]:
    """Every top-level command, found by importing each module of patchctl.cli with COMMANDS."""
    found: dict[str, tuple[str, click.Command]] = {}
    for info in pkgutil.iter_modules(patchctl.cli.__path__):
        module = importlib.import_module(f"patchctl.cli.{info.name}")
        for cmd in getattr(module, "COMMANDS", ()):
            assert cmd.name not in found, f"{cmd.name} is defined twice"
            found[cmd.name] = (info.name, cmd)
    return found


def test_the_table_lists_every_command_with_its_module_and_help() -> None:
    real = _real_commands()
    assert sorted(COMMAND_TABLE) == sorted(real)
    for name, (module, cmd) in real.items():
        assert COMMAND_TABLE[name][0] == module, name
        assert not cmd.hidden and not cmd.deprecated, name
        stub = click.Command(name, help=COMMAND_TABLE[name][1])
        # the same text as click would show, at every width `--help` can compute
        for limit in range(1, 200):
            assert stub.get_short_help_str(limit) == cmd.get_short_help_str(limit), (name, limit)
        assert cli.get_command(click.Context(cli), name) is cmd


_HELP_PROBE = """
import sys
from patchctl.cli import cli
from patchctl.cli._errors import run_with_error_handling
if sys.argv[1] == "eager":
    list(cli.commands.values())  # import every command first
sys.exit(run_with_error_handling(cli, sys.argv[2:], prog_name="patchctl"))
"""


@pytest.mark.parametrize("columns", ["60", "80", "200"])
@pytest.mark.parametrize("args", [["--help"], ["lsit"], ["bse", "list"]])
def test_lazy_help_and_errors_read_as_with_every_command_imported(columns: str, args: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": columns}
    out = {
        mode: subprocess.run(
            [sys.executable, "-c", _HELP_PROBE, mode, *args], capture_output=True, text=True, env=env, timeout=120
        )
        for mode in ("lazy", "eager")
    }
    assert (out["lazy"].returncode, out["lazy"].stdout, out["lazy"].stderr) == (
        out["eager"].returncode,
        out["eager"].stdout,
        out["eager"].stderr,
    )
    if args == ["--help"]:
        assert all(f"  {name} " in out["lazy"].stdout for name in COMMAND_TABLE)
    else:
        assert "Did you mean" in out["lazy"].stderr


_IMPORT_PROBE = """
import sys
from patchctl.cli import cli
from patchctl.cli._errors import run_with_error_handling
code = run_with_error_handling(cli, sys.argv[1:], prog_name="patchctl")
loaded = sorted(m for m in ("sqlalchemy", "pydantic", "rich", "alembic", "huggingface_hub", "torch") if m in sys.modules)
print("LOADED=" + ",".join(loaded), file=sys.stderr)
sys.exit(code)
"""


def _loaded(args: list[str], home: Path) -> set[str]:
    env = {**os.environ, "PATCHCTL_HOME": str(home), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stderr.splitlines() if x.startswith("LOADED="))
    return set(filter(None, line.removeprefix("LOADED=").split(",")))


def test_help_imports_no_database_or_model_library(tmp_path: Path) -> None:
    assert _loaded(["--help"], tmp_path / "home") == set()
    assert _loaded(["list", "--help"], tmp_path / "home") <= {"sqlalchemy", "pydantic"}


def test_list_on_a_current_catalog_does_not_import_alembic(tmp_path: Path) -> None:
    home = tmp_path / "home"
    # the first command creates the catalog (from the head schema the migrations build: no
    # Alembic either, tests/registry/test_sqlite_head_schema.py) ...
    assert "alembic" not in _loaded(["list"], home)
    assert (home / "catalog.db").is_file()
    # ... after which opening it reads alembic_version with one query
    loaded = _loaded(["list"], home)
    assert "alembic" not in loaded and "huggingface_hub" not in loaded and "torch" not in loaded


def test_search_does_not_load_the_catalog(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    assert "sqlalchemy" not in _loaded(["search", "--remote", f"file://{remote}"], tmp_path / "home")


def test_read_commands_do_not_import_the_orm(db_url: str, tmp_path: Path) -> None:
    """On a current catalog, list, show, resolve --onto FINGERPRINT, lineage, base list and alias
    list read it over a bare DB-API connection: SQLAlchemy is not imported (nor pydantic by list)."""
    import importlib.util

    from patchctl.registry.db import make_engine, upgrade

    spec = importlib.util.spec_from_file_location("bench_catalog", REPO / "benchmarks" / "catalog" / "bench_catalog.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_catalog"] = bench
    spec.loader.exec_module(bench)
    engine = make_engine(db_url)
    upgrade(engine)
    bench.seed(engine, bench.SMALL, progress=False)  # type: ignore[attr-defined]
    engine.dispose()
    base = bench.base_sha(3, bench.SMALL.generations - 1)  # type: ignore[attr-defined]
    home, db = tmp_path / "home", ["--db", db_url]
    assert _loaded([*db, "list", "--limit", "5"], home) == {"rich"}
    for args in (
        ["show", "bench/p00003"],
        ["resolve", "bench/p00003", "--onto", base, "--explain"],
        ["lineage", "bench/p00003"],
        ["base", "list"],
        ["alias", "list", "bench/p00003"],
    ):
        assert "sqlalchemy" not in _loaded([*db, *args], home), args
