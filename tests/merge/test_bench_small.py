"""The benchmark script runs end to end at tiny sizes (so it cannot rot)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "merge" / "bench_merge.py"


@pytest.mark.slow
def test_bench_small_mode(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--small", "--workdir", str(tmp_path), "--json", str(out),
         "--cases", "1gb,4gb,hub,llama3-8b"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    assert [r["run"] for r in results["rows"]] == [
        "patchctl install",
        "PEFT merge_and_unload",
        "cp -r",
        "patchctl install (base registered)",
        "patchctl install",
        "download alone (hf_hub_download)",
        "patchctl install (downloaded base)",
        "patchctl install --onto hf://",
        "cp -r (in page cache)",
        "cp -r (not cached)",
        "patchctl install (in page cache)",
        "patchctl install (base registered, in page cache)",
        "patchctl install (base registered, not cached)",
    ]
    assert set(results["ratios"]) >= {
        "wall_ours_over_peft",
        "wall_registered_over_peft",
        "hub_over_download_plus_local",
        "llama3_8b_wall_over_cp_in_page_cache",
        "llama3_8b_registered_over_cp_in_page_cache",
        "llama3_8b_registered_over_cp_not_cached",
    }
    assert all(r["wall_s"] > 0 and r["peak_rss_mib"] > 0 for r in results["rows"])
    assert results["tensors_compared_with_peft"] > 10
    assert "| patchctl install |" in proc.stdout
    assert list(tmp_path.iterdir()) == [out]  # work files cleaned up
