"""The rich progress bar and the ``python -m patchctl.merge`` runner."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from patchctl.adapter import read_adapter
from patchctl.merge import RichMergeProgress, execute_merge, plan_merge

REPO_ROOT = Path(__file__).resolve().parents[2]


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, int, int]] = []

    def start(self, total_tensors: int, total_bytes: int) -> None:
        self.events.append(("start", total_tensors, total_bytes))

    def advance(self, tensors: int, nbytes: int) -> None:
        self.events.append(("advance", tensors, nbytes))

    def finish(self) -> None:
        self.events.append(("finish", 0, 0))


def test_progress_protocol_adds_up(pico_llama_sharded: Path, llama_adapter: Path, tmp_path: Path) -> None:
    plan = plan_merge(read_adapter(llama_adapter), pico_llama_sharded)
    rec = Recorder()
    execute_merge(plan, tmp_path / "out", progress=rec, provenance={})
    assert rec.events[0] == ("start", plan.total_tensors, plan.total_bytes)
    assert rec.events[-1][0] == "finish"
    advances = [e for e in rec.events if e[0] == "advance"]
    assert sum(e[1] for e in advances) == plan.total_tensors
    assert sum(e[2] for e in advances) == plan.total_bytes


def test_rich_progress_renders_tensors_and_bytes(pico_llama: Path, llama_adapter: Path, tmp_path: Path) -> None:
    buf = io.StringIO()
    plan = plan_merge(read_adapter(llama_adapter), pico_llama)
    progress = RichMergeProgress(console=Console(file=buf, force_terminal=False, width=120))
    execute_merge(plan, tmp_path / "out", progress=progress, provenance={})
    text = buf.getvalue()
    assert f"{plan.total_tensors}/{plan.total_tensors} tensors" in text
    assert "kB" in text or "KB" in text or "bytes" in text


def test_runner_dry_run_and_merge(pico_llama: Path, llama_adapter: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "patchctl.merge", str(llama_adapter), str(pico_llama), str(tmp_path / "out")]
    dry = subprocess.run([*cmd, "--dry-run"], env=env, capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["tensors_touched"] == 4
    assert not (tmp_path / "out").exists()
    run = subprocess.run([*cmd, "--no-progress"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "model.safetensors").is_file()
    again = subprocess.run([*cmd, "--no-progress"], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 5 and "already exists" in again.stderr


def test_rich_progress_names_the_shard_and_the_download(
    pico_llama_sharded: Path, llama_adapter: Path, tmp_path: Path
) -> None:
    buf = io.StringIO()
    plan = plan_merge(read_adapter(llama_adapter), pico_llama_sharded)
    progress = RichMergeProgress("installing x", console=Console(file=buf, force_terminal=False, width=160))
    progress.start_download(1000, 2)
    progress.downloading("model-00001-of-00002.safetensors")
    progress.downloaded(600)
    execute_merge(plan, tmp_path / "out", progress=progress, provenance={})
    text = buf.getvalue()
    last = plan.shards[-1].file
    assert f"· {last} ({len(plan.shards)}/{len(plan.shards)})" in text  # which shard is being written
    assert "downloading 1/2 shards · model-00001-of-00002.safetensors" in text
    assert f"{plan.total_tensors}/{plan.total_tensors} tensors" in text
