"""`patchctl install` merging in a child process (patchctl._mergeproc), and the command's fast exit.

The `patchctl` process starts the child as it starts, so that the child imports torch while the
parent checks; these tests run the real executable (`python -m patchctl`) and compare with the
in-process merge (PATCHCTL_MERGE_PROCESS=0): same bytes, same records, same errors and exit
codes, nothing left behind when it is interrupted or killed.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import picomodels
import pytest
import torch
from catalogtools import settings_for

from patchctl import _mergeproc
from patchctl._fs import pid_alive
from patchctl.cli import _command_name, _option
from patchctl.errors import CheckFailedError, ConflictError, IntegrityError, OSFailureError, os_error
from patchctl.merge import DELAY_ENV

REPO_ROOT = Path(__file__).resolve().parents[2]


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != _mergeproc.ENV}
    env.update(PATCHCTL_HOME=str(home), PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def _patchctl(home: Path, *args: object, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "patchctl", *map(str, args)],
        env=_env(home, **extra),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _children(pid: int) -> list[int]:
    """Running processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid and stat[0] not in (b"Z", b"X"):
                found.append(int(entry.name))
    return found


def _started_writing(dest: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.is_file() for p in dest.glob(".out.patchctl-tmp-*/*.safetensors")):
            return
        time.sleep(0.05)
    raise AssertionError(f"install did not start writing (exit {proc.poll()})")


def test_the_command_name_is_found_past_the_root_options() -> None:
    assert _command_name(["install", "x", "--onto", "y"]) == "install"
    assert _command_name(["--home", "/h", "-vv", "--db", "sqlite:///x", "install"]) == "install"
    assert _command_name(["--home=/h", "list"]) == "list"
    assert _command_name(["--home", "install"]) is None  # "install" is --home's value here
    assert _command_name(["-v"]) is None
    assert _option(["install", "p", "--onto", "hf://a/b", "--out", "o"], "--onto", "") == "hf://a/b"
    assert _option(["install", "p", "--onto=/models/x"], "--onto", "") == "/models/x"
    assert _option(["install", "p"], "--onto", "") == ""


def test_install_in_a_child_process_writes_what_the_in_process_merge_writes(
    tmp_path: Path, llama_adapter: Path, pico_llama_sharded: Path
) -> None:
    home = tmp_path / "home"
    child = _patchctl(
        home, "-v", "install", llama_adapter, "--onto", pico_llama_sharded, "--out", tmp_path / "a", "--json"
    )
    assert child.returncode == 0, child.stderr
    assert "merging in a child process" in child.stderr
    here = _patchctl(
        home, "-v", "install", llama_adapter, "--onto", pico_llama_sharded, "--out", tmp_path / "b", "--json",
        **{_mergeproc.ENV: "0"},
    )  # fmt: skip
    assert here.returncode == 0, here.stderr
    assert "merging in a child process" not in here.stderr
    a, b = json.loads(child.stdout), json.loads(here.stdout)
    assert a["result"]["files"] == b["result"]["files"]  # every file's sha256 and size
    assert a["result"]["tensors_touched"] == b["result"]["tensors_touched"] > 0
    weights = sorted(p.name for p in (tmp_path / "a").glob("*.safetensors"))
    assert len(weights) > 1
    for name in weights:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_base_whose_dtype_plan_is_not_known_yet_is_merged_in_process_then_in_a_child(
    tmp_path: Path, models_dir: Path
) -> None:
    """Building the dtype plan (T5 keeps ``wo`` in fp32: not proved from the source) imports torch
    and transformers in the patchctl process: a child would only add their memory. Once the plan
    is cached, the next install merges in a child."""
    import picozoo

    fp16 = picozoo.make_base(models_dir / "pico-t5-fp16-mergeproc", "t5", dtype=torch.float16)
    adapter = picozoo.make_adapter(fp16, models_dir / "t5-lora-mergeproc", "t5", target_modules=["q", "v", "wo"])
    home, cache = tmp_path / "home", tmp_path / "cache"
    env = {"PATCHCTL_CACHE_DIR": str(cache)}
    first = _patchctl(home, "-v", "install", adapter, "--onto", fp16, "--out", tmp_path / "a", **env)
    assert first.returncode == 0, first.stderr
    assert "merging in a child process" not in first.stderr
    assert len(list(cache.rglob("*.json"))) == 1
    second = _patchctl(home, "-v", "install", adapter, "--onto", fp16, "--out", tmp_path / "b", **env)
    assert second.returncode == 0, second.stderr
    assert "merging in a child process" in second.stderr
    for f in sorted((tmp_path / "a").glob("*.safetensors")):
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes()


def test_a_first_install_onto_a_llama_release_merges_in_a_child_with_nothing_cached(
    tmp_path: Path, models_dir: Path, llama_adapter: Path
) -> None:
    """A bf16 Llama base never seen before (new home, empty cache): its dtype plan is proved empty
    from transformers' source, so the first install already merges in the child, and writes what
    the in-process merge writes."""
    bf16 = picomodels.make_base(models_dir / "pico-llama-bf16-mergeproc", "llama", dtype=torch.bfloat16)
    env = {"PATCHCTL_CACHE_DIR": str(tmp_path / "cache")}
    child = _patchctl(tmp_path / "h1", "-v", "install", llama_adapter, "--onto", bf16, "--out", tmp_path / "a", **env)
    assert child.returncode == 0, child.stderr
    assert "merging in a child process" in child.stderr
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.json"))
    here = _patchctl(
        tmp_path / "h2", "install", llama_adapter, "--onto", bf16, "--out", tmp_path / "b", PATCHCTL_MERGE_PROCESS="0"
    )
    assert here.returncode == 0, here.stderr
    for f in sorted((tmp_path / "a").glob("*.safetensors")):
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes()


def test_an_install_that_stops_before_the_merge_leaves_no_child(
    tmp_path: Path, llama_adapter: Path, pico_llama: Path
) -> None:
    home = tmp_path / "home"
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "patchctl", "install", str(llama_adapter), "--onto", str(pico_llama), "--out", str(out)],
        env=_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == ConflictError.exit_code, err  # --out exists: refused before the checks
    assert "already exists" in err and "Traceback" not in err
    time.sleep(0.2)
    assert _children(proc.pid) == []
    r = _patchctl(home, "install", llama_adapter, "--onto", pico_llama, "--out", tmp_path / "o", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "o").exists()


def _mid_merge(
    tmp_path: Path, adapter: Path, base: Path, act: Callable[[subprocess.Popen[bytes], int], None]
) -> tuple[int, bytes, int]:
    """Start ``patchctl install`` (slowed down), wait until its child writes, then ``act(proc,
    child)``; the parent's exit code, its stderr and the child's pid."""
    dest = tmp_path / "dest"
    args = ["install", str(adapter), "--onto", str(base), "--out", str(dest / "out")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "patchctl", *args],
        env=_env(tmp_path / "home", **{DELAY_ENV: "0.3"}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _started_writing(dest, proc)
        [child] = _children(proc.pid)
        act(proc, child)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err, child


def test_ctrl_c_during_a_merge_in_the_child_is_exit_130_and_leaves_nothing(
    tmp_path: Path, llama_adapter: Path, pico_llama_sharded: Path
) -> None:
    # SIGINT to the parent only: it stops the child and waits for it
    code, err, child = _mid_merge(
        tmp_path, llama_adapter, pico_llama_sharded, lambda p, c: p.send_signal(signal.SIGINT)
    )
    assert code == 130, err
    assert b"aborted" in err and b"Traceback" not in err  # click's word for an interrupted command
    assert not pid_alive(child)
    assert list((tmp_path / "dest").iterdir()) == []  # the child removed its temporary output before the parent exited


def test_a_child_killed_mid_merge_is_a_clear_error(
    tmp_path: Path, llama_adapter: Path, pico_llama_sharded: Path
) -> None:
    # as the kernel's OOM killer would
    code, err, _ = _mid_merge(tmp_path, llama_adapter, pico_llama_sharded, lambda p, c: os.kill(c, signal.SIGKILL))
    assert code == OSFailureError.exit_code, err
    assert b"ended without a result (killed by SIGKILL)" in err and b"Traceback" not in err
    out = tmp_path / "dest" / "out"
    assert not out.exists()
    r = _patchctl(tmp_path / "home", "install", llama_adapter, "--onto", pico_llama_sharded, "--out", out)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # the killed child's temporary output is gone


def test_a_killed_parent_takes_its_child_with_it(tmp_path: Path, llama_adapter: Path, pico_llama_sharded: Path) -> None:
    code, _, child = _mid_merge(tmp_path, llama_adapter, pico_llama_sharded, lambda p, c: p.kill())
    assert code == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(child)


_READY_THEN_EXIT = (
    "import pickle, struct, sys\n"
    "data = pickle.dumps(('ready',))\n"
    "sys.stdout.buffer.write(struct.pack('<Q', len(data)) + data); sys.stdout.flush()\n"
    "sys.stdin.buffer.read(8)\n"
    "sys.exit(4)\n"
)


def test_a_child_that_cannot_start_is_replaced_by_a_merge_here_and_one_that_dies_is_an_error(
    tmp_path: Path, llama_adapter: Path, pico_llama: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An interpreter that cannot run `-m patchctl._mergeproc` (a frozen executable): the child
    ends before it says it is ready, and the install merges in its own process, same bytes. A
    child that dies once ready is an error (exit 11), nothing installed."""
    from patchctl import installer

    settings = settings_for(tmp_path / "home", f"sqlite:///{tmp_path / 'catalog.db'}")

    def install(out: Path, command: list[str] | None) -> object:
        worker = _mergeproc.MergeWorker(command) if command else None
        try:
            return installer.install(
                settings, str(llama_adapter), onto=str(pico_llama), out=out, progress=False, merge_worker=worker
            )
        finally:
            if worker is not None:
                worker.close()

    with caplog.at_level(logging.WARNING, logger="patchctl._mergeproc"):
        install(tmp_path / "a", [sys.executable, "-c", "raise SystemExit(3)"])
    assert "the merge process could not start (exit status 3); merging in this process" in caplog.text
    install(tmp_path / "b", None)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    with pytest.raises(OSFailureError, match=r"ended without a result \(exit status 4\)"):
        install(tmp_path / "c", [sys.executable, "-c", _READY_THEN_EXIT])
    assert not (tmp_path / "c").exists()


def test_no_worker_where_no_process_can_be_started(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    with caplog.at_level(logging.WARNING, logger="patchctl._mergeproc"):
        assert _mergeproc._started() is None  # for_install returns it: the install merges here
    assert "could not be started" in caplog.text


@pytest.mark.parametrize(
    "exc",
    [
        ConflictError("out exists", hint="pass --overwrite"),
        IntegrityError("sha256 mismatch"),
        CheckFailedError("2 checks failed"),
        OSError(errno.ENOSPC, "No space left on device", "/data/out/model.safetensors"),
        OSError(errno.EFBIG, "File too large"),
        KeyboardInterrupt(),
        ValueError("a bug"),
    ],
)
def test_errors_keep_their_class_hint_and_exit_code_across_the_pipe(exc: BaseException) -> None:
    _, kind, *args = _mergeproc._error_message(exc)
    again = _mergeproc._rebuilt(kind, *args)
    if isinstance(exc, OSError):
        assert type(again) is OSError and again.errno == exc.errno and again.filename == exc.filename  # type: ignore[attr-defined]
        before, after = os_error(exc), os_error(again)  # type: ignore[arg-type]
        assert before is not None and after is not None
        assert (after.message, after.exit_code) == (before.message, before.exit_code)
    elif isinstance(exc, ValueError):
        assert isinstance(again, RuntimeError) and "ValueError: a bug" in str(again)  # the child's traceback
    else:
        assert type(again) is type(exc)
        for attr in ("message", "hint", "exit_code"):
            assert getattr(again, attr, None) == getattr(exc, attr, None)


def test_a_zombie_is_not_alive() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:  # exited, not reaped: a zombie
            time.sleep(0.01)
        assert not pid_alive(pid)
        os.kill(pid, 0)  # it still exists
    finally:
        os.waitpid(pid, 0)
    assert pid_alive(os.getpid())


def test_the_command_exits_fast_with_its_output_flushed_and_its_exit_code(tmp_path: Path) -> None:
    home = tmp_path / "home"
    r = _patchctl(home, "list", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == [] and r.stderr == ""
    r = _patchctl(home, "show", "acme/none==1.0.0", "--json")
    assert r.returncode == 3 and "error:" in r.stderr
    # a reader that goes away early is not an error
    proc = subprocess.run(
        f"{sys.executable} -m patchctl --help | head -c 10",
        shell=True,
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout == "Usage: pat" and "Error" not in proc.stderr and "Traceback" not in proc.stderr
