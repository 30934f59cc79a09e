"""The real-model demo (examples/realmodel/demo.sh): its whole pipeline on a generated pico Llama
(`DEMO_SMOKE=1`: prepare → push → base add → check --drift → install → validate/score), run twice
the way `make demo` does (the venv's python and patchctl on PATH): the second run is idempotent
without --force and re-scores nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path) -> dict[str, str]:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for name, cmd in (("python", f'"{sys.executable}" "$@"'), ("patchctl", f'"{sys.executable}" -m patchctl "$@"')):
        (bindir / name).write_text(f"#!/bin/sh\nexec {cmd}\n")
        (bindir / name).chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "DEMO_OUT": str(tmp_path / "out"),
        "DEMO_SMOKE": "1",
        "OMP_NUM_THREADS": "1",
    }


def test_realmodel_demo_pipeline_on_a_pico_model_runs_twice(tmp_path: Path) -> None:
    env = _env(tmp_path)
    demo = ["bash", str(ROOT / "examples" / "realmodel" / "demo.sh")]
    first = subprocess.run(demo, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-4000:]
    out = tmp_path / "out"
    # every step ran, under its heading, with paste-able commands
    for heading in ("1. Prepare", "2. Push", "3. The provider releases", "4. Check", "5. Install", "6. Validate"):
        assert f"== {heading}" in first.stderr
    assert "$ patchctl push " in first.stderr and "'movie-review sentiment (positive/negative)'" in first.stderr
    assert "pushed demo/pico-movie-sentiment==1.0.0" in first.stderr
    assert "PASS (" in first.stdout and "drift" in first.stdout  # the check report, drift row included
    installed = out / "pico-llama-news+movie-sentiment"
    assert (installed / "patchctl.json").is_file() and (installed / "model.safetensors").is_file()
    # no library noise: no progress bars, no lm-eval git probe, no warnings
    for noise in ("it/s]", "fatal: not a git repository", "Warning", "WARNING"):
        assert noise not in first.stderr + first.stdout, noise
    table = json.loads((out / "eval" / "scores-table.json").read_text())
    scores = table["scores"]
    assert set(scores) == {"theta", "theta+delta", "theta_prime", "theta_prime+delta"}
    assert scores["theta+delta"] > scores["theta"]  # the patch learned the task on θ ...
    assert scores["theta_prime+delta"] > scores["theta_prime"]  # ... and keeps a gain on θ′
    assert "Next steps" in first.stderr and f'PATCHCTL_HOME="{out}/home"' in first.stderr

    second = subprocess.run(demo, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stderr[-4000:]
    assert "identical content: nothing to do" in second.stderr  # push is a no-op, without --force
    assert "--force" not in second.stderr.split("Next steps")[0]
    assert "continued pretraining of θ" not in second.stderr and "fine-tuning a LoRA" not in second.stderr
    assert json.loads((out / "eval" / "scores-table.json").read_text())["scores"] == scores


@pytest.mark.parametrize("script", ["prepare.py", "scores.py"])
def test_realmodel_scripts_explain_themselves(script: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "realmodel" / script)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0 and "usage" in (proc.stderr + proc.stdout).lower()
