"""The CLI end to end (CliRunner through the real error handler) on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from catalogtools import CliResult, run_cli, snapshot_db

from patchctl.cli import cli
from patchctl.schemas.manifest import Manifest


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def _cli(home: Path, db_url: str, *args: object) -> CliResult:
    return run_cli(["--home", str(home), "--db", db_url, *[str(a) for a in args]])


def _push_args(adapter: Path, base: Path, version: str = "1.0.0") -> list[object]:
    return ["push", adapter, "--name", "acme/sst2", "--version", version, "--task", "sst2", "--base", base]


def test_push_list_show_round_trip(db_url: str, home: Path, llama_adapter: Path, pico_llama: Path) -> None:
    if db_url.startswith("postgresql"):
        # a team catalog is created explicitly; until then every command names the fix
        r = _cli(home, db_url, "list")
        assert r.code == 10 and "db upgrade" in r.stderr and r.stdout == ""
        assert _cli(home, db_url, "db", "upgrade").code == 0
    r = _cli(home, db_url, *_push_args(llama_adapter, pico_llama), "--json")
    assert r.code == 0, r.stderr
    pushed = json.loads(r.stdout)
    assert pushed["created"] is True and "pushed acme/sst2==1.0.0" in r.stderr

    r = _cli(home, db_url, "list", "--json")
    assert r.code == 0
    [row] = json.loads(r.stdout)
    assert (row["name"], row["latest"], row["task"], row["versions"]) == ("acme/sst2", "1.0.0", "sst2", 1)

    r = _cli(home, db_url, "show", "acme/sst2", "--json")
    assert r.code == 0, r.stderr
    shown = json.loads(r.stdout)
    manifest = Manifest.model_validate(shown["version"]["manifest"])
    assert manifest == Manifest.model_validate(pushed["version"]["manifest"])
    assert json.loads(manifest.to_json()) == shown["version"]["manifest"]
    assert [f["path"] for f in shown["version"]["files"]] == ["adapter_config.json", "adapter_model.safetensors"]
    assert shown["source_base"]["weights_sha256"] == manifest.source_base.weights_sha256

    # the manifest satisfies the JSON Schema `patchctl schema` prints
    schema = json.loads(run_cli(["schema"]).stdout)
    data = shown["version"]["manifest"]
    assert set(schema["required"]) <= set(data) <= set(schema["properties"])
    try:
        import jsonschema
    except ImportError:
        pass
    else:  # pragma: no cover - only where jsonschema is installed
        jsonschema.validate(data, schema)

    r = _cli(home, db_url, *_push_args(llama_adapter, pico_llama))
    assert r.code == 0 and "nothing to do" in r.stderr and r.stdout.strip() == "acme/sst2==1.0.0"

    r = _cli(home, db_url, "show", "acme/sst2==1.0.0")
    assert r.code == 0 and "adapter_model.safetensors" in r.stdout and "q_proj" in r.stdout


def test_errors_have_documented_exit_codes(
    db_url: str, home: Path, llama_adapter: Path, pico_llama: Path, tmp_path: Path
) -> None:
    assert _cli(home, db_url, "db", "upgrade").code == 0
    assert _cli(home, db_url, *_push_args(llama_adapter, pico_llama)).code == 0
    before = snapshot_db(db_url)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{not json")
    cases = [
        (["show", "acme/nothing"], 3, "not in the catalog"),
        (["show", "acme/sst2==9.9"], 3, "is not in the catalog"),
        (["show", "not a ref"], 4, "namespace/name"),
        (
            ["push", broken, "--name", "acme/x", "--version", "1", "--task", "t", "--base", pico_llama],
            4,
            "not valid JSON",
        ),
        (_push_args(llama_adapter, pico_llama, version="bad version"), 4, "PEP 440"),
        (["push", llama_adapter, "--name", "acme/x", "--version", "1"], 2, "Missing option"),
        (["alias", "set", "acme/sst2==1.0.0", "v1"], 4, "looks like a version"),
        (["yank", "acme/sst2"], 4, "which version"),
        (["base", "add", tmp_path / "missing"], 4, "does not exist"),
    ]
    for args, code, message in cases:
        r = _cli(home, db_url, *args)
        assert (r.code, r.stdout) == (code, ""), (args, r)
        assert message in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
    assert snapshot_db(db_url) == before


def test_conflict_exit_code(db_url: str, home: Path, llama_adapter: Path, pico_llama: Path, tmp_path: Path) -> None:
    import picomodels

    other = picomodels.make_adapter(pico_llama, tmp_path / "other", seed=3)
    assert _cli(home, db_url, "db", "upgrade").code == 0
    assert _cli(home, db_url, *_push_args(llama_adapter, pico_llama)).code == 0
    r = _cli(home, db_url, *_push_args(other, pico_llama))
    assert r.code == 5 and "immutable" in r.stderr and "hint: push it as a new version" in r.stderr


def test_alias_yank_base_and_db_commands(
    db_url: str, home: Path, llama_adapter: Path, pico_llama: Path, tmp_path: Path
) -> None:
    import picomodels

    assert _cli(home, db_url, "db", "upgrade").code == 0
    current = json.loads(_cli(home, db_url, "db", "current", "--json").stdout)
    assert current["up_to_date"] is True and current["current"] == current["head"]
    assert _cli(home, db_url, *_push_args(llama_adapter, pico_llama)).code == 0
    assert _cli(home, db_url, *_push_args(llama_adapter, pico_llama, version="1.1.0")).code == 0

    r = _cli(home, db_url, "alias", "set", "acme/sst2==1.0.0", "stable", "--json")
    assert r.code == 0 and json.loads(r.stdout)["version"] == "1.0.0"
    assert json.loads(_cli(home, db_url, "show", "acme/sst2@stable", "--json").stdout)["version"]["version"] == "1.0.0"
    assert json.loads(_cli(home, db_url, "show", "acme/sst2", "--json").stdout)["version"]["version"] == "1.1.0"

    r = _cli(home, db_url, "yank", "acme/sst2==1.1.0", "--reason", "regression on rte", "--json")
    assert r.code == 0 and json.loads(r.stdout)["yanked"] is True
    assert json.loads(_cli(home, db_url, "show", "acme/sst2", "--json").stdout)["version"]["version"] == "1.0.0"
    r = _cli(home, db_url, "show", "acme/sst2==1.1.0", "--json")
    assert r.code == 0 and "warning: acme/sst2==1.1.0 is yanked: regression on rte" in r.stderr
    assert _cli(home, db_url, "unyank", "acme/sst2", "1.1.0").code == 0
    assert json.loads(_cli(home, db_url, "alias", "list", "acme/sst2", "--json").stdout)[0]["alias"] == "stable"
    assert _cli(home, db_url, "alias", "rm", "acme/sst2", "stable").code == 0
    assert _cli(home, db_url, "show", "acme/sst2@stable").code == 3

    updated = picomodels.make_updated_base(pico_llama, tmp_path / "theta-prime")
    r = _cli(
        home, db_url, "base", "add", updated, "--parent", pico_llama, "--relation", "continued-pretraining", "--json"
    )
    assert r.code == 0, r.stderr
    added = json.loads(r.stdout)
    assert added["created"] is True and added["edges"][0]["relation"] == "continued-pretraining"
    listing = json.loads(_cli(home, db_url, "base", "list", "--json").stdout)
    assert len(listing["bases"]) == 2 and len(listing["edges"]) == 1
    r = _cli(home, db_url, "base", "list")
    assert r.code == 0 and "llama" in r.stdout


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    out = []
    for name, cmd in sorted(group.commands.items()):
        out.append(((*prefix, name), cmd))
        if isinstance(cmd, click.Group):
            out.extend(_all_commands(cmd, (*prefix, name)))
    return out


def test_every_command_has_help_and_is_in_the_readme() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    for path, cmd in _all_commands(cli):
        r = run_cli([*path, "--help"])
        assert r.code == 0 and "Usage:" in r.stdout, path
        assert cmd.help, f"{' '.join(path)} has no help text"
        if not isinstance(cmd, click.Group):
            assert f"patchctl {' '.join(path)}" in readme, f"README does not document `patchctl {' '.join(path)}`"


_PROBE = """
import sys
from patchctl.cli import cli
from patchctl.cli._errors import run_with_error_handling
code = run_with_error_handling(cli, sys.argv[1:], prog_name="patchctl")
heavy = sorted(m for m in ("torch", "transformers", "peft") if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.parametrize("args", [["--help"], ["list"], ["list", "--json"], ["show", "acme/none"], ["db", "current"]])
def test_cli_does_not_import_torch(args: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "PATCHCTL_HOME": str(tmp_path / "home"), "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode in (0, 3), proc.stderr
    assert "HEAVY=\n" in proc.stderr, proc.stderr
