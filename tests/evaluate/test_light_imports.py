"""check (with its validated line), list --validated-on, ci plan and schema stay light: no torch,
transformers, peft or lm-eval imported (heavy imports live inside the functions that score)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from catalogtools import run_cli

_PROBE = """
import sys
from patchctl.cli import cli
from patchctl.cli._errors import run_with_error_handling
code = run_with_error_handling(cli, sys.argv[1:], prog_name="patchctl")
heavy = sorted(m for m in ("torch", "transformers", "peft", "lm_eval", "datasets") if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
sys.exit(code)
"""


def test_light_commands_do_not_import_torch(
    tmp_path: Path, llama_adapter: Path, pico_llama: Path, eval_folder: Path
) -> None:
    home, db = tmp_path / "home", f"sqlite:///{tmp_path / 'c.db'}"
    base = ["--home", str(home), "--db", db]
    r = run_cli([*base, "push", str(llama_adapter), "--name", "acme/x", "--version", "1", "--task", "t",
                 "--base", str(pico_llama), "--eval", str(eval_folder), "--no-baseline"])  # fmt: skip
    assert r.code == 0, r.stderr
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    for args in (
        ["check", "acme/x", "--onto", str(pico_llama)],
        ["list", "--validated-on", str(pico_llama)],
        ["ci", "plan", "--format", "github-matrix"],
        ["show", "acme/x"],
        ["schema"],
    ):
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE, *base, *args], capture_output=True, text=True, env=env, timeout=120
        )
        assert proc.returncode in (0, 20), (args, proc.stderr)
        assert "HEAVY=\n" in proc.stderr, (args, proc.stderr)
