"""The readers of untrusted files under a coverage-guided fuzzer (atheris), for a bounded number of
executions: any crash other than a clean PatchctlError fails the test. Set
``PATCHCTL_FUZZ_RUNS`` to run longer (the default keeps CI at about 20 s)."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

TARGET = Path(__file__).with_name("fuzz_readers.py")
REPO_ROOT = Path(__file__).parents[2]


def test_readers_survive_fuzzing(tmp_path: Path) -> None:
    runs = int(os.environ.get("PATCHCTL_FUZZ_RUNS", "5000"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    # libFuzzer reads the peak RSS from getrusage, which a child inherits from this process across
    # fork/exec (the pytest process may already have loaded real models): 2 GiB above that peak
    inherited_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    rss_limit = inherited_mb + 2048
    r = subprocess.run(
        [sys.executable, str(TARGET), f"-runs={runs}", "-max_total_time=60", f"-rss_limit_mb={rss_limit}", str(corpus)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        cwd=tmp_path,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    done = re.search(r"Done (\d+) runs", r.stderr)
    assert done is not None, r.stderr[-2000:]
    executions = int(done.group(1))
    print(f"fuzz: {executions} executions, no crash")
    assert executions >= min(runs, 1000)
