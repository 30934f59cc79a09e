"""Eval sets travel with the patch: manifest section, sha256-verified files on remotes (directory and
Hub), code refused unless trusted, old manifests migrated, `outdated` against a Hub base."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from catalogtools import CliResult, make_manifest, run_cli
from evaltools import TASK, make_eval_folder
from hubserver import HubServer

from patchctl.schemas.manifest import Manifest


def _cli(home: Path, db: str, *args: object) -> CliResult:
    return run_cli(["--home", str(home), "--db", db, *[str(a) for a in args]])


def _push_args(adapter: Path, base: Path, folder: Path, *extra: object) -> list[object]:
    return ["push", adapter, "--name", "acme/pref", "--version", "1.0.0", "--task", "t", "--base", base,
            "--eval", folder, *extra]  # fmt: skip


@pytest.fixture
def env(tmp_path: Path) -> tuple[Path, str]:
    return tmp_path / "home", f"sqlite:///{tmp_path / 'c.db'}"


def test_code_in_an_eval_folder_is_refused_unless_trusted(
    tmp_path: Path, env: tuple[Path, str], eval_base: Path, good_adapter: Path
) -> None:
    home, db = env
    folder = make_eval_folder(tmp_path / "eval", extra_yaml="process_docs: !function utils.process_docs\n")
    (folder / "utils.py").write_text("def process_docs(ds):\n    return ds\n")
    r = _cli(home, db, *_push_args(good_adapter, eval_base, folder, "--no-baseline"))
    assert r.code == 6 and "!function utils.process_docs" in r.stderr and "--trust-eval-code" in r.stderr
    assert _cli(home, db, "list", "--json").stdout.strip() == "[]"

    # trusted at push, published to a directory remote; pulled elsewhere it is refused again
    remote = tmp_path / "remote"
    r = _cli(home, db, *_push_args(good_adapter, eval_base, folder, "--no-baseline", "--trust-eval-code",
                                   "--to", f"file://{remote}", "--json"))  # fmt: skip
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["version"]["manifest"]["eval"]["contains_code"] is True
    home2, db2 = tmp_path / "home2", f"sqlite:///{tmp_path / 'c2.db'}"
    assert _cli(home2, db2, "pull", f"file://{remote}/acme/pref@1.0.0").code == 0
    r = _cli(home2, db2, "validate", "acme/pref", "--onto", eval_base)
    assert r.code == 6 and "would run code" in r.stderr
    shown = json.loads(_cli(home2, db2, "show", "acme/pref", "--json").stdout)
    assert shown["validations"] == [] and shown["compat_reports"] == []  # refused before anything ran


def test_data_files_must_stay_inside_the_folder(
    tmp_path: Path, env: tuple[Path, str], eval_base: Path, good_adapter: Path
) -> None:
    home, db = env
    folder = make_eval_folder(tmp_path / "eval")
    yaml = folder / f"{TASK}.yaml"
    yaml.write_text(yaml.read_text().replace("test: data.jsonl", "test: ../data.jsonl"))
    r = _cli(home, db, *_push_args(good_adapter, eval_base, folder, "--no-baseline"))
    assert r.code == 4 and "data file" in r.stderr
    yaml.write_text(yaml.read_text().replace("dataset_path: json", "dataset_path: super_glue"))
    r = _cli(home, db, *_push_args(good_adapter, eval_base, folder, "--no-baseline"))
    assert r.code == 4 and "not local" in r.stderr


def test_eval_files_are_verified_on_pull(
    tmp_path: Path, env: tuple[Path, str], eval_base: Path, eval_folder: Path, good_adapter: Path
) -> None:
    home, db = env
    remote = tmp_path / "remote"
    r = _cli(home, db, *_push_args(good_adapter, eval_base, eval_folder, "--no-baseline", "--to", f"file://{remote}"))
    assert r.code == 0, r.stderr
    [data] = list(remote.rglob("eval/data.jsonl"))
    os.chmod(data, stat.S_IRUSR | stat.S_IWUSR)
    data.write_text(data.read_text().replace('"label": 0', '"label": 1', 1))
    home2, db2 = tmp_path / "home2", f"sqlite:///{tmp_path / 'c2.db'}"
    r = _cli(home2, db2, "pull", f"file://{remote}/acme/pref@1.0.0")
    assert r.code == 7 and "eval/data.jsonl" in r.stderr
    assert _cli(home2, db2, "list", "--json").stdout.strip() == "[]"


def test_hub_round_trip_and_outdated(
    hub: HubServer, tmp_path: Path, env: tuple[Path, str], eval_base: Path, eval_base_v2: Path, eval_folder: Path,
    good_adapter: Path,
) -> None:  # fmt: skip
    from huggingface_hub import HfApi

    home, db = env
    r = _cli(home, db, *_push_args(good_adapter, eval_base, eval_folder, "--eval-limit", "6", "--to", "hf://acme/pref"))
    assert r.code == 0, r.stderr
    files = HfApi(endpoint=hub.url).list_repo_files("acme/pref")
    assert {f"eval/{TASK}.yaml", "eval/data.jsonl", "patch.json"} <= set(files)

    # another machine: pull (eval files verified), validate on a Hub base
    home2, db2 = tmp_path / "home2", f"sqlite:///{tmp_path / 'c2.db'}"
    assert _cli(home2, db2, "pull", "hf://acme/pref@1.0.0").code == 0
    hub.seed_repo("acme/base", eval_base)
    r = _cli(home2, db2, "validate", "acme/pref", "--onto", "hf://acme/base@main", "--limit", "6", "--json")
    assert r.code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["verdict"] == "pass" and data["tasks"][0]["baseline_patched"] is not None
    r = _cli(home2, db2, "outdated", "--json")
    assert (r.code, json.loads(r.stdout)) == (0, [])

    # the provider releases a new commit on main: the patch is outdated until validated on it
    commit = hub.seed_repo("acme/base", eval_base_v2)
    r = _cli(home2, db2, "outdated", "--json")
    assert r.code == 20, r.stderr
    [row] = json.loads(r.stdout)
    assert (row["patch"], row["base"], row["commit"]) == ("acme/pref==1.0.0", "hf://acme/base@main", commit)
    assert row["last_validated"] == "hf://acme/base@main"
    assert _cli(home2, db2, "validate", "acme/pref", "--onto", "hf://acme/base@main", "--limit", "6").code == 0
    assert _cli(home2, db2, "outdated").code == 0


def test_v1_manifests_still_load(env: tuple[Path, str]) -> None:
    data = json.loads(make_manifest().to_json())
    data["schema_version"] = 1
    del data["eval"]
    migrated = Manifest.from_dict(data)
    assert migrated.schema_version == 2 and migrated.eval is None
    assert migrated.content_digest == make_manifest().content_digest

    # a catalog row written by an older patchctl (schema_version 1) still reads
    from sqlalchemy import text

    from patchctl.registry.store import open_catalog
    from patchctl.settings import Settings

    home, db = env
    cat = open_catalog(Settings.resolve(home=str(home), database_url=db))
    try:
        cat.add_version(make_manifest(), manifest_sha256="0" * 64)
        with cat.engine.begin() as conn:
            conn.execute(text("UPDATE versions SET manifest = :m"), {"m": json.dumps(data)})
        assert cat.get_version("acme/sst2", "1.0.0").manifest.schema_version == 2
    finally:
        cat.close()


def test_schema_documents_the_eval_section() -> None:
    schema = json.loads(run_cli(["schema"]).stdout)
    assert schema["properties"]["schema_version"]["const"] == 2
    assert "eval" in schema["properties"]
    spec = schema["$defs"]["EvalTaskSpec"]["properties"]
    assert {"task", "metric", "min_score", "max_drop", "min_retained", "baseline"} <= set(spec)
    assert "lm-eval" in json.dumps(schema["$defs"]["EvalSpec"])


def test_a_fresh_runner_fetches_the_files_from_the_recorded_remote(
    tmp_path: Path, env: tuple[Path, str], eval_base: Path, eval_folder: Path, good_adapter: Path
) -> None:
    """CI jobs share the catalog, not the content store: ci and validate pull what they lack."""
    home, db = env
    remote = tmp_path / "remote"
    args = _push_args(good_adapter, eval_base, eval_folder, "--no-baseline", "--to", f"file://{remote}")
    assert _cli(home, db, *args).code == 0
    runner = tmp_path / "runner-home"  # same catalog, empty store
    r = _cli(runner, db, "ci", "--onto", eval_base, "--limit", "4", "--json")
    assert r.code == 0, r.stderr
    assert [x["status"] for x in json.loads(r.stdout)["results"]] == ["no-baseline"]
    runner2 = tmp_path / "runner2-home"
    assert _cli(runner2, db, "validate", "acme/pref", "--onto", eval_base, "--limit", "4").code == 0
