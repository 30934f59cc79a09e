"""Every example file runs: examples/make_pico.py and (slow) examples/demo.sh, twice (idempotent)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from patchctl.adapter import read_adapter
from patchctl.bases import read_local_base

ROOT = Path(__file__).resolve().parents[2]


def test_make_pico_generates_base_update_and_adapter(tmp_path: Path) -> None:
    out = tmp_path / "models"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "make_pico.py"), str(out)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    base, updated = read_local_base(out / "pico-llama"), read_local_base(out / "pico-llama-v2")
    assert base.structure_sha256 == updated.structure_sha256 and base.weights_sha256 != updated.weights_sha256
    assert len(read_adapter(out / "pico-llama-lora").pairs) == 4


@pytest.mark.slow
def test_demo_script_runs_and_is_idempotent(tmp_path: Path) -> None:
    """Runs examples/demo.sh the way `make demo` does: the venv's python and patchctl on PATH."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, cmd in (("python", f'"{sys.executable}" "$@"'), ("patchctl", f'"{sys.executable}" -m patchctl "$@"')):
        (bindir / name).write_text(f"#!/bin/sh\nexec {cmd}\n")
        (bindir / name).chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "DEMO_OUT": str(tmp_path / "demo-out"),
    }
    first = subprocess.run(
        ["bash", str(ROOT / "examples" / "demo.sh")], capture_output=True, text=True, env=env, timeout=600
    )
    assert first.returncode == 0, first.stderr
    assert "pushed demo/pico-sst2==1.0.0" in first.stderr and "demo/pico-sst2" in first.stdout
    assert (tmp_path / "demo-out" / "home" / "catalog.db").is_file()
    second = subprocess.run(
        ["bash", str(ROOT / "examples" / "demo.sh")], capture_output=True, text=True, env=env, timeout=600
    )
    assert second.returncode == 0, second.stderr
    assert "identical content: nothing to do" in second.stderr
