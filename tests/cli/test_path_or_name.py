"""A patch argument that names an existing directory is that directory (``runs/x/adapter``
without ``./``); when it is also a catalog patch, the directory wins with a note on stderr."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from catalogtools import CliResult, run_cli


def _cli(home: Path, *args: object) -> CliResult:
    return run_cli(["--home", str(home), *[str(a) for a in args]])


@pytest.fixture
def in_tmp(tmp_path: Path) -> Iterator[Path]:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(cwd)


def test_relative_adapter_path_without_dot_slash(in_tmp: Path, llama_adapter: Path, pico_llama: Path) -> None:
    shutil.copytree(llama_adapter, in_tmp / "runs" / "x" / "adapter")
    r = _cli(in_tmp / "home", "check", "runs/x/adapter", "--onto", pico_llama, "--json")
    assert r.code == 20, r.stderr  # checked (warnings: no manifest), not "not a patch name"
    assert "runs/x/adapter" in r.stdout
    r = _cli(in_tmp / "home", "check", "runs/x/missing", "--onto", pico_llama)
    assert r.code == 4 and "no such directory, and not a patch name" in r.stderr


def test_directory_and_catalog_patch_of_one_name(
    in_tmp: Path, llama_adapter: Path, pico_llama: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = in_tmp / "home"
    r = _cli(
        home, "push", llama_adapter, "--name", "acme/sst2", "--version", "1.0.0", "--task", "t", "--base", pico_llama
    )
    assert r.code == 0, r.stderr
    shutil.copytree(llama_adapter, in_tmp / "acme" / "sst2")
    r = _cli(home, "check", "acme/sst2", "--onto", pico_llama, "--json")
    assert r.code == 20, r.stderr  # the bare directory: no manifest, so warnings
    assert '"report_id": null' in r.stdout  # a local directory's report is not logged in the catalog
    notes = [
        rec.getMessage() for rec in caplog.records if "both a local directory and a catalog patch" in rec.getMessage()
    ]
    assert len(notes) == 1 and "acme/sst2==1.0" in notes[0]
    # a version names the catalog patch
    r = _cli(home, "check", "acme/sst2==1.0.0", "--onto", pico_llama, "--json")
    assert r.code == 0, r.stderr
    assert '"report_id": null' not in r.stdout
