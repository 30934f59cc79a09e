"""Issue 8: damaged stores, odd bases, OS faults, first-use races, terminal injection, gc/verify.

Each test failed on the main branch before the fix it covers (the bad-input files themselves are
in tests/corpus/)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from catalogtools import run_cli, snapshot_db

from patchctl import api
from patchctl.errors import IntegrityError, OSFailureError, os_error
from patchctl.maintenance import BLOB_GRACE_S, gc, verify
from patchctl.settings import Settings

REPO_ROOT = Path(__file__).parents[2]
NAME = "acme/sst2"


def _push(settings: Settings, adapter: Path, base: Path, version: str = "1.0.0") -> api.PushResult:
    return api.push(settings, adapter, name=NAME, version=version, task="sst2", base_dir=base)


def _blob(settings: Settings, sha: str) -> Path:
    return settings.store_dir / "sha256" / sha[:2] / sha


def _flip_byte(path: Path, offset: int = -5) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# -- item 2: every patch file verified before use --------------------------------------------


def test_tampered_store_blob_is_never_merged(
    settings: Settings, llama_adapter: Path, pico_llama: Path, tmp_path: Path
) -> None:
    pushed = _push(settings, llama_adapter, pico_llama)
    weights = next(f for f in pushed.version.files if f.path.endswith(".safetensors"))
    api.install(settings, NAME, onto=str(pico_llama), out=tmp_path / "first", progress=False)
    _flip_byte(_blob(settings, weights.sha256))  # same size, one bit: the layout is a hard link to it
    with pytest.raises(IntegrityError, match="content store blob is corrupt") as exc:
        api.install(settings, NAME, onto=str(pico_llama), out=tmp_path / "second", progress=False)
    assert exc.value.hint is not None and "verify" in exc.value.hint
    assert not (tmp_path / "second").exists()
    report = verify(settings)
    assert not report.ok and {d.kind for d in report.damage} == {"corrupt"}
    # pushing the same bytes again restores the blob; the layout is rebuilt on the next install
    _push(settings, llama_adapter, pico_llama)
    api.install(settings, NAME, onto=str(pico_llama), out=tmp_path / "third", progress=False)
    assert verify(settings).ok


def test_deleted_layout_file_is_rebuilt_from_the_store(
    settings: Settings, llama_adapter: Path, pico_llama: Path, tmp_path: Path
) -> None:
    pushed = _push(settings, llama_adapter, pico_llama)
    api.install(settings, NAME, onto=str(pico_llama), out=tmp_path / "a", progress=False)
    layout = settings.home / "adapters" / pushed.version.content_digest
    (layout / "adapter_config.json").unlink()
    assert any(d.kind == "layout" for d in verify(settings).damage)
    api.install(settings, NAME, onto=str(pico_llama), out=tmp_path / "b", progress=False)
    assert (layout / "adapter_config.json").is_file() and verify(settings).ok
    a, b = (json.loads((tmp_path / d / "patchctl.json").read_text())["files"] for d in ("a", "b"))
    assert a == b  # the same model, bit for bit


def test_a_layout_caught_mid_way_by_another_process_is_replaced(
    settings: Settings, llama_adapter: Path, pico_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two jobs lay out the same version at once (concurrent `ci` jobs sharing a home): the rename
    of the second finds the destination taken; where what it finds is not a usable layout (the
    other process caught mid-way), the second's verified layout replaces it instead of failing."""
    from patchctl import installer

    pushed = _push(settings, llama_adapter, pico_llama)
    layout = settings.home / "adapters" / pushed.version.content_digest
    real = installer.materialize_version

    def racing(settings_: Settings, version: object, dest: Path) -> None:
        real(settings_, version, dest)  # type: ignore[arg-type]
        layout.mkdir(parents=True)  # the other process's layout appears, incomplete
        (layout / "adapter_config.json").write_text("{}")

    monkeypatch.setattr(installer, "materialize_version", racing)
    api.install(settings, NAME, onto=str(pico_llama), out=tmp_path / "out", progress=False)
    assert verify(settings).ok
    assert (layout / "adapter_config.json").read_bytes() == (llama_adapter / "adapter_config.json").read_bytes()
    assert not list(layout.parent.glob(".materialize-*"))  # the replaced layout went with the temporary


def test_local_adapter_that_differs_from_its_patch_json_is_refused(
    settings: Settings, llama_adapter: Path, pico_llama: Path, tmp_path: Path
) -> None:
    pushed = _push(settings, llama_adapter, pico_llama)
    adapter = Path(shutil.copytree(llama_adapter, tmp_path / "adapter"))
    (adapter / "patch.json").write_text(pushed.manifest.to_json())
    api.check(settings, str(adapter), onto=str(pico_llama), progress=False)  # intact: fine
    _flip_byte(adapter / "adapter_model.safetensors")
    with pytest.raises(IntegrityError, match=r"differ from its patch\.json"):
        api.install(settings, str(adapter), onto=str(pico_llama), out=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


# -- item 6: gc and verify ---------------------------------------------------------------------


def test_gc_removes_dead_temporaries_stale_layouts_and_old_unreferenced_blobs_only(
    settings: Settings, llama_adapter: Path, pico_llama: Path, tmp_path: Path
) -> None:
    pushed = _push(settings, llama_adapter, pico_llama)
    api.install(settings, NAME, onto=str(pico_llama), out=tmp_path / "out", progress=False)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    tmp = settings.store_dir / "tmp"
    (tmp / f"blob.{dead_pid}.abc.tmp").write_bytes(b"x" * 1000)  # a killed push's leftover
    live = tmp / f"blob.{os.getpid()}.def.tmp"
    live.write_bytes(b"y")  # a running push's file
    stray = settings.store_dir / "sha256" / "ab" / ("ab" + "0" * 62)
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"unreferenced")
    fresh = settings.store_dir / "sha256" / "cd" / ("cd" + "0" * 62)
    fresh.parent.mkdir(parents=True, exist_ok=True)
    fresh.write_bytes(b"just staged by a push in progress")
    old = stray.stat().st_mtime - BLOB_GRACE_S - 10
    os.utime(stray, (old, old))
    orphan_layout = settings.home / "adapters" / ("f" * 64)
    orphan_layout.mkdir(parents=True)
    (orphan_layout / "x").write_text("x")
    dead_materialize = settings.home / "adapters" / f".materialize-{dead_pid}-zz"
    dead_materialize.mkdir()
    killed_install = tmp_path / f".other.patchctl-tmp-{dead_pid}-0a1b2c3d"  # beside a recorded --out
    killed_install.mkdir()
    (killed_install / "model.safetensors").write_bytes(b"\0" * 100)
    live_install = tmp_path / f".other.patchctl-tmp-{os.getpid()}-0a1b2c3d"
    live_install.mkdir()

    dry = gc(settings, dry_run=True)
    kinds = sorted((i.kind, Path(i.path).name) for i in dry.removed)
    assert kinds == sorted(
        [
            ("temporary", f"blob.{dead_pid}.abc.tmp"),
            ("blob", stray.name),
            ("layout", orphan_layout.name),
            ("temporary", dead_materialize.name),
            ("temporary", killed_install.name),
        ]
    )
    assert stray.exists() and orphan_layout.exists()  # a dry run removes nothing
    r = run_cli(["--home", str(settings.home), "--db", settings.database_url, "gc", "--json"])
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["bytes"] == dry.bytes
    assert not stray.exists() and not orphan_layout.exists() and not dead_materialize.exists()
    assert live.exists() and fresh.exists() and live_install.exists() and not killed_install.exists()
    # every referenced blob and the live layout are still there, and intact
    assert verify(settings).ok
    for f in pushed.version.files:
        assert _blob(settings, f.sha256).is_file()
    assert (settings.home / "adapters" / pushed.version.content_digest).is_dir()


def test_verify_cli_exit_codes_and_json(settings: Settings, llama_adapter: Path, pico_llama: Path) -> None:
    pushed = _push(settings, llama_adapter, pico_llama)
    common = ["--home", str(settings.home), "--db", settings.database_url]
    r = run_cli([*common, "verify", "--json"])
    assert r.code == 0 and json.loads(r.stdout)["ok"] is True and "all intact" in r.stderr
    _blob(settings, pushed.version.files[0].sha256).unlink()
    r = run_cli([*common, "verify", "--json"])
    assert r.code == 7, r.stderr
    data = json.loads(r.stdout)
    assert data["ok"] is False and data["damage"][0]["kind"] == "missing"
    assert data["damage"][0]["version"] == f"{NAME}==1.0.0"


# -- item 1: JSON output -----------------------------------------------------------------------


def test_every_json_output_is_valid_json_even_with_non_finite_floats(capsys: pytest.CaptureFixture[str]) -> None:
    from patchctl.cli._output import print_json

    print_json({"a": float("inf"), "b": [float("nan"), -float("inf")], "c": 1.5})
    out = capsys.readouterr().out
    assert json.loads(out, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON")) == {
        "a": "Infinity",
        "b": ["NaN", "-Infinity"],
        "c": 1.5,
    }


# -- item 4: nothing outside the base directory is opened --------------------------------------

_AUDIT = textwrap.dedent(
    """
    import sys
    opened = []
    def hook(event, args):
        if event == "open" and isinstance(args[0], str):
            opened.append(args[0])
    sys.addaudithook(hook)
    from patchctl.bases import read_local_base
    from patchctl.errors import InvalidInputError
    try:
        read_local_base(sys.argv[1])
    except InvalidInputError as exc:
        print("refused:", exc, file=sys.stderr)
    print("\\n".join(opened))
    """
)


def test_index_naming_an_absolute_path_is_refused_before_it_is_opened(pico_llama_sharded: Path, tmp_path: Path) -> None:
    base = Path(shutil.copytree(pico_llama_sharded, tmp_path / "base"))
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"\0" * 16)
    index = json.loads((base / "model.safetensors.index.json").read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = str(outside)
    (base / "model.safetensors.index.json").write_text(json.dumps(index))
    r = subprocess.run(
        [sys.executable, "-c", _AUDIT, str(base)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        check=True,
    )
    assert "must be relative" in r.stderr
    assert str(outside) not in r.stdout.splitlines()


# -- item 5: OS errors -----------------------------------------------------------------------


def test_os_errors_that_are_conditions_of_the_machine_map_to_exit_11() -> None:
    full = os_error(OSError(errno.ENOSPC, "No space left on device", "/data/out/model.safetensors"))
    assert isinstance(full, OSFailureError) and full.exit_code == 11
    assert str(full) == "no space left on the device: /data/out/model.safetensors" and full.hint
    assert os_error(OSError(errno.ENAMETOOLONG, "File name too long")) is not None
    assert os_error(FileNotFoundError(errno.ENOENT, "gone")) is None  # could be a bug: keeps its traceback


def test_long_out_name_installs_and_a_too_long_one_is_a_clear_error(
    settings: Settings, llama_adapter: Path, pico_llama: Path, tmp_path: Path
) -> None:
    common = ["--home", str(settings.home), "--db", settings.database_url]
    long_ok = tmp_path / ("m" * 240)  # its temporary sibling used to exceed 255 bytes (errno 36)
    r = run_cli([*common, "install", str(llama_adapter), "--onto", str(pico_llama), "--out", str(long_ok)])
    assert r.code == 0, r.stderr
    too_long = tmp_path / ("m" * 300)
    r = run_cli([*common, "install", str(llama_adapter), "--onto", str(pico_llama), "--out", str(too_long)])
    assert r.code == 11, r.stderr
    assert "Traceback" not in r.stderr and "file name too long" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


_FSIZE = textwrap.dedent(
    """
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from patchctl.cli import main
    sys.argv = ["patchctl", *sys.argv[2:]]
    main()
    """
)


@pytest.mark.slow
def test_a_size_limited_writer_fails_install_cleanly_and_a_retry_succeeds(
    settings: Settings, llama_adapter: Path, pico_llama: Path, tmp_path: Path
) -> None:
    """The file seam: RLIMIT_FSIZE makes every write past 40 kB fail (EFBIG), as a full disk would."""
    out = tmp_path / "out"
    args = ["--home", str(settings.home), "--db", settings.database_url, "install", str(llama_adapter)]
    args += ["--onto", str(pico_llama), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    r = subprocess.run([sys.executable, "-c", _FSIZE, "40000", *args], capture_output=True, text=True, env=env)
    assert r.returncode == 11, r.stderr
    assert "file too large" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    r = subprocess.run([sys.executable, "-m", "patchctl", *args], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Path:
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root); the RLIMIT_FSIZE test covers the file seam")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_disk_full_while_merging_is_exit_11_and_nothing_is_left(
    settings: Settings, llama_adapter: Path, pico_llama: Path, small_tmpfs: Path
) -> None:
    common = ["--home", str(settings.home), "--db", settings.database_url]
    out = small_tmpfs / "out"
    r = run_cli([*common, "install", str(llama_adapter), "--onto", str(pico_llama), "--out", str(out)])
    assert r.code == 11, r.stderr
    assert "no space left on the device" in r.stderr and "Traceback" not in r.stderr
    assert list(small_tmpfs.iterdir()) == []


# -- item 9: --db paths ------------------------------------------------------------------------


def test_a_mistyped_sqlite_path_is_an_error_not_a_new_catalog(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    r = run_cli(["--home", str(tmp_path / "home"), "--db", f"sqlite:///{missing}/x.db", "list"])
    assert r.code == 10 and "does not exist" in r.stderr and r.stdout == ""
    assert not (tmp_path / "no").exists()
    # the default catalog under a brand-new home is created on demand
    r = run_cli(["--home", str(tmp_path / "new-home"), "list"])
    assert r.code == 0, r.stderr
    assert (tmp_path / "new-home" / "catalog.db").is_file()


# -- item 7: first use races -------------------------------------------------------------------


@pytest.mark.slow
def test_eight_parallel_first_commands_on_a_brand_new_home(tmp_path: Path) -> None:
    home = tmp_path / "brand-new-home"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PATCHCTL_HOME": str(home)}
    env.pop("PATCHCTL_DATABASE_URL", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "patchctl", "list", "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    for code, out, err in results:
        assert code == 0, err
        assert json.loads(out) == []
    assert run_cli(["--home", str(home), "db", "current", "--json"]).code == 0


@pytest.mark.slow
def test_eight_parallel_upgrades_of_one_new_catalog(db_url: str) -> None:
    """SQLite file or a fresh PostgreSQL database: one creator, seven that find it done."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "patchctl", "--db", db_url, "db", "upgrade"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    for p in procs:
        code = p.wait(timeout=120)
        assert code == 0, p.communicate()[1]
    tables = snapshot_db(db_url)
    assert tables["patches"] == [] and tables["versions"] == []


# -- item 8: control characters ----------------------------------------------------------------


def test_control_characters_are_refused_on_input_and_escaped_on_output(
    settings: Settings, llama_adapter: Path, pico_llama: Path
) -> None:
    common = ["--home", str(settings.home), "--db", settings.database_url]
    push = ["push", str(llama_adapter), "--name", NAME, "--version", "1.0.0", "--base", str(pico_llama)]
    r = run_cli([*common, *push, "--task", "sst2\x1b]0;pwned\x07\x1b[2J"])
    assert r.code == 4 and "control characters" in r.stderr and "\x1b" not in r.stderr
    assert run_cli([*common, "list", "--json"]).stdout.strip() == "[]"
    # a manifest from elsewhere (a remote) may still carry them: printed escaped
    from catalogtools import make_manifest, sha

    from patchctl.registry.store import open_catalog

    mf = make_manifest("acme/evil", task="evil\x1b[31m\x9b2J")
    with open_catalog(settings) as cat:
        cat.add_version(mf, manifest_sha256=sha(mf.to_json()))
    r = run_cli([*common, "list"])
    assert r.code == 0 and "\x1b" not in r.stdout and "\x9b" not in r.stdout and "\\x1b[31m" in r.stdout
    r = run_cli([*common, "show", "acme/evil"])
    assert r.code == 0 and "\x1b" not in r.stdout and "\\x1b" in r.stdout
    r = run_cli([*common, "yank", "acme/evil==1.0.0", "--reason", "bad\x1b[0m"])
    assert r.code == 4 and "control characters" in r.stderr
