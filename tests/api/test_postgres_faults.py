"""PostgreSQL stopped in the middle of a command: a throwaway server of our own (never the shared
one), stopped with ``pg_ctl -m immediate`` at the moment a push is about to record its version.
The push fails with one line (exit 10), nothing is recorded, and once the server is back the
store verifies and the same push succeeds."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).parents[2]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PgServer:
    def __init__(self, bindir: Path, data: Path, port: int) -> None:
        self.bindir, self.data, self.port = bindir, data, port
        self.as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def ctl(self, *args: str) -> list[str]:
        return [*self.as_pg, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args]

    def start(self) -> None:
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.data} -c fsync=off"
        log = str(self.data.parent / "log")
        subprocess.run(self.ctl("-l", log, "-w", "-o", opts, "start"), check=True, capture_output=True)


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[PgServer]:
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL binaries not installed (.ci/run installs them)")
    root = Path(tempfile.mkdtemp(prefix="patchctl-test-pg-"))  # outside pytest's private tmp (mode 700)
    os.chmod(root, 0o755)
    data = root / "data"
    data.mkdir()
    (root / "log").touch()
    if os.geteuid() == 0:
        if subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
            pytest.skip("no postgres user to run a throwaway server as")
        shutil.chown(data, "postgres")
        shutil.chown(root / "log", "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = PgServer(bindir, data, port)
    init = [*server.as_pg, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
    subprocess.run(init, check=True, capture_output=True)
    server.start()
    try:
        yield server
    finally:
        subprocess.run(server.ctl("-m", "immediate", "stop"), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


_STOPPER = textwrap.dedent(
    """
    import subprocess, sys
    stop = sys.argv[1].split("\\x1f")
    seen = [0]
    def hook(name, args):
        if name == "open" and args and "/store/tmp/blob." in str(args[0]):
            seen[0] += 1
            if seen[0] == 3:  # patch.json staged: the catalog transaction comes next
                subprocess.run(stop, check=True, capture_output=True)
    sys.addaudithook(hook)
    from patchctl.cli import main
    sys.argv = ["patchctl", *sys.argv[2:]]
    main()
    """
)


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_stopped_mid_push(
    own_postgres: PgServer, llama_adapter: Path, pico_llama: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    common = ["--home", str(tmp_path / "home"), "--db", own_postgres.url]
    run = [sys.executable, "-m", "patchctl", *common]
    assert subprocess.run([*run, "db", "upgrade"], env=env, capture_output=True).returncode == 0
    push = ["push", str(llama_adapter), "--name", "acme/pg", "--version", "1.0.0", "--task", "t"]
    push += ["--base", str(pico_llama)]
    stop = "\x1f".join(own_postgres.ctl("-m", "immediate", "stop"))
    r = subprocess.run(
        [sys.executable, "-c", _STOPPER, stop, *common, *push], env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 10, r.stderr
    assert "Traceback" not in r.stderr and [x for x in r.stderr.splitlines() if x.startswith("error:")]
    own_postgres.start()
    time.sleep(0.5)
    listed = subprocess.run([*run, "list", "--json"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0 and listed.stdout.strip() == "[]"  # nothing recorded
    assert subprocess.run([*run, "verify"], env=env, capture_output=True).returncode == 0
    again = subprocess.run([*run, *push], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert subprocess.run([*run, "verify"], env=env, capture_output=True).returncode == 0
