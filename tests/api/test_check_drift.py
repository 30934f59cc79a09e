"""``check --drift``: per-module weight drift from the source base to the target, logged with the report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from catalogtools import run_cli

from patchctl import api
from patchctl.errors import InvalidInputError
from patchctl.settings import Settings

NAME = "acme/drift"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.resolve(home=str(tmp_path / "home"))


def test_drift_is_added_to_the_report_and_logged(
    settings: Settings, llama_adapter: Path, pico_llama: Path, pico_llama_updated: Path
) -> None:
    api.push(settings, llama_adapter, base_dir=pico_llama, name=NAME, version="1.0.0", task="t")
    same = api.check(settings, NAME, onto=str(pico_llama), progress=False, drift=True)
    drift = same.report.result("drift")
    assert drift.status == "pass"  # onto its own base: nothing moved
    assert all(m["rel"] == 0 for m in drift.data["modules"])
    moved = api.check(settings, NAME, onto=str(pico_llama_updated), progress=False, drift=True).report.result("drift")
    assert len(moved.data["modules"]) == 4 and all(m["rel"] > 0 for m in moved.data["modules"])
    [logged, *_] = api.show(settings, NAME).compat_reports
    assert [r["name"] for r in logged.report["results"]][-1] == "drift"


def test_drift_source_must_be_the_training_base(
    settings: Settings, llama_adapter: Path, pico_llama: Path, pico_llama_updated: Path, tmp_path: Path
) -> None:
    moved_source = tmp_path / "moved"
    shutil.copytree(pico_llama, moved_source)
    api.push(settings, llama_adapter, base_dir=moved_source, name=NAME, version="1.0.0", task="t")
    shutil.rmtree(moved_source)  # the manifest's source directory is gone
    with pytest.raises(InvalidInputError, match="--source-base"):
        api.check(settings, NAME, onto=str(pico_llama_updated), progress=False, drift=True)
    with pytest.raises(InvalidInputError, match="is not the base"):
        api.check(settings, NAME, onto=str(pico_llama), progress=False, source_base=pico_llama_updated)
    ok = api.check(settings, NAME, onto=str(pico_llama_updated), progress=False, source_base=pico_llama)
    assert ok.report.result("drift").status in ("pass", "warn")


def test_drift_via_cli_exit_code_and_json(
    tmp_path: Path, llama_adapter: Path, pico_llama: Path, pico_llama_updated: Path
) -> None:
    home = tmp_path / "h"
    push = ["push", str(llama_adapter), "--name", NAME, "--version", "1", "--task", "t", "--base", str(pico_llama)]
    assert run_cli(["--home", str(home), *push]).code == 0
    r = run_cli(["--home", str(home), "check", NAME, "--onto", str(pico_llama_updated), "--drift", "--json"])
    data = json.loads(r.stdout)
    assert data["results"][-1]["name"] == "drift"
    assert r.code == data["exit_code"]
