"""Fault injection: SIGKILL at each stage of push, install and pull.

A real ``patchctl`` process runs with an audit hook (``sys.addaudithook``) that SIGKILLs it the
moment it reaches a stage's first file operation (opening the base's weights, a store
temporary, renaming a blob into place, writing the merged shard, renaming the output...). After
each kill: the process really died there (exit -9), nothing is half-written (no ``--out``, no
catalog row, every recorded blob intact: ``patchctl verify`` passes), ``gc`` finds the dead
process's temporaries, and running the same command again succeeds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from catalogtools import run_cli, snapshot_db

REPO_ROOT = Path(__file__).parents[2]

_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    event, needle, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
    seen = [0]
    def hook(name, args):
        if name == event and args and needle in " ".join(str(a) for a in args[:2]):
            seen[0] += 1
            if seen[0] == nth:
                os.kill(os.getpid(), signal.SIGKILL)
    sys.addaudithook(hook)
    from patchctl.cli import main
    sys.argv = ["patchctl", *sys.argv[4:]]
    main()
    """
)

#: (command, audit event, path fragment, nth occurrence): one kill point per stage
PUSH_STAGES = [
    ("push", "open", "model.safetensors", 1),  # prepare: fingerprinting the base
    ("push", "open", "/store/tmp/blob.", 1),  # stage: the first file into the store
    ("push", "os.rename", "/store/sha256/", 1),  # stage: a blob renamed into place
    ("push", "open", "/store/tmp/blob.", 3),  # stage: patch.json, just before the catalog row
]
INSTALL_STAGES = [
    ("install", "open", "/adapters/.materialize-", 1),  # laying the version out
    ("install", "os.rename", "/adapters/", 1),  # the layout renamed into place
    ("install", "open", ".patchctl-tmp-", 1),  # merging into the temporary output
    ("install", "open", "patchctl.json", 1),  # provenance, just before the output's rename
    ("install", "os.rename", ".patchctl-tmp-", 1),  # the output renamed into place
]
PULL_STAGES = [
    ("pull", "open", "/store/tmp/blob.", 1),
    ("pull", "os.rename", "/store/sha256/", 2),
]


def _env() -> dict[str, str]:
    # the merge in this process, where the audit hook sees its files (a merge child has no hook;
    # tests/cli/test_merge_process.py kills the child and its parent mid-merge)
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PATCHCTL_MERGE_PROCESS": "0"}


def _killed_run(event: str, needle: str, nth: int, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _KILLER, event, needle, str(nth), *args],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "event", "needle", "nth"),
    PUSH_STAGES + INSTALL_STAGES + PULL_STAGES,
    ids=[f"{c}-{e}-{n.strip('/').replace('/', '_')}-{k}" for c, e, n, k in PUSH_STAGES + INSTALL_STAGES + PULL_STAGES],
)
def test_sigkill_at_each_stage_leaves_nothing_half_written(
    command: str, event: str, needle: str, nth: int, llama_adapter: Path, pico_llama: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    db = f"sqlite:///{tmp_path / 'catalog.db'}"
    common = ["--home", str(home), "--db", db]
    push = ["push", str(llama_adapter), "--name", "acme/k", "--version", "1.0.0", "--task", "t"]
    push += ["--base", str(pico_llama)]
    out = tmp_path / "out"
    remote = tmp_path / "remote"
    if command == "push":
        args = push
    elif command == "install":
        assert run_cli([*common, *push]).code == 0
        args = ["install", "acme/k", "--onto", str(pico_llama), "--out", str(out)]
    else:
        source_home = tmp_path / "source"
        r = run_cli(["--home", str(source_home), *push, "--to", f"file://{remote}"])
        assert r.code == 0, r.stderr
        args = ["pull", f"file://{remote}/acme/k@1.0.0"]
    assert run_cli([*common, "db", "upgrade"]).code == 0
    before = snapshot_db(db)

    r = _killed_run(event, needle, nth, [*common, *args])
    assert r.returncode == -signal.SIGKILL, f"the kill point was never reached:\n{r.stderr[-2000:]}"

    # nothing half-written: no output, no new catalog row, every recorded blob intact
    assert not out.exists()
    after = snapshot_db(db)
    if command != "install":
        assert after["versions"] == before["versions"]
    assert {k: v for k, v in after.items() if k != "compat_reports"} == {
        k: v for k, v in before.items() if k != "compat_reports"
    }
    v = run_cli([*common, "verify", "--json"])
    assert v.code == 0 and json.loads(v.stdout)["ok"], v.stdout + v.stderr
    # the dead process's temporaries are gc's to take; then the retry succeeds
    g = run_cli([*common, "gc", "--json"])
    assert g.code == 0
    assert not [i for i in json.loads(g.stdout)["removed"] if i["kind"] == "blob"]  # fresh blobs are kept
    assert not list((home / "store" / "tmp").glob("blob.*")) if (home / "store" / "tmp").is_dir() else True
    retry = subprocess.run(
        [sys.executable, "-m", "patchctl", *common, *args], capture_output=True, text=True, env=_env()
    )
    assert retry.returncode == 0, retry.stderr
    assert run_cli([*common, "verify"]).code == 0
    if command == "install":
        assert (out / "patchctl.json").is_file()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.patchctl-")]
    else:
        assert len(snapshot_db(db)["versions"]) == 1
    shutil.rmtree(home, ignore_errors=True)
