"""``patchctl install --max-memory``: parsed, shown in the plan, passed to the engine."""

from __future__ import annotations

import json
from pathlib import Path

from catalogtools import run_cli


def test_max_memory_in_the_dry_run_plan_and_refused_when_unreadable(
    pico_llama: Path, llama_adapter: Path, tmp_path: Path
) -> None:
    home = ["--home", str(tmp_path / "home")]
    args = ["install", str(llama_adapter), "--onto", str(pico_llama), "--out", str(tmp_path / "out"), "--dry-run"]
    r = run_cli([*home, *args, "--max-memory", "1GiB", "--json"])
    assert r.code == 0, r.stderr
    memory = json.loads(r.stdout)["plan"]["memory"]
    assert memory["max_memory"] == 1 << 30
    assert memory["blocked_tensors"] == []  # pico tensors fit whole
    assert "probed" in memory["verified"]
    bad = run_cli([*home, *args, "--max-memory", "lots"])
    assert bad.code == 2 and "expected a size" in bad.stderr
    r = run_cli([*home, "install", str(llama_adapter), "--onto", str(pico_llama), "--out", str(tmp_path / "out"),
                 "--max-memory", "300MiB", "--json"])  # fmt: skip
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["result"]["merged_whole"] == []
