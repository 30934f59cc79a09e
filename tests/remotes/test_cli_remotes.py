"""Remotes through the catalog and the CLI, end to end: ``push --to``, ``pull``, ``search``,
``check``/``install --onto hf://`` — the real client against the Hub-compatible test server, and
directory remotes, each through the CLI's real error handler (exit codes, messages)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from catalogtools import CliResult, run_cli, snapshot_db
from hubserver import HubServer
from remotes.helpers import SECRET
from safetensors import safe_open

from patchctl.settings import Settings

NAME = "acme/sst2-lora"


@dataclass
class Side:
    """One remote as the CLI sees it."""

    kind: str
    push_url: str  # what `push --to` takes
    pull_url: str  # what `pull` takes (versions appended)
    hub: HubServer | None = None
    root: Path | None = None

    def state(self) -> Any:
        """What a no-op must leave unchanged: the Hub's refs and commits, or the directory's files."""
        if self.hub is not None:
            if NAME not in self.hub.repos:
                return None
            return self.hub.refs(NAME), self.hub.commit_count(NAME)
        assert self.root is not None
        return sorted((str(p.relative_to(self.root)), p.stat().st_mtime_ns) for p in self.root.rglob("*"))

    def corrupt(self, version: str, path: str) -> None:
        if self.hub is not None:
            self.hub.corrupt(NAME, path, revision=f"v{version}")
            return
        assert self.root is not None
        target = self.root / NAME / "versions" / version / path
        target.chmod(0o644)
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))


@pytest.fixture(params=["hf", "file"])
def side(request: pytest.FixtureRequest, tmp_path: Path) -> Side:
    if request.param == "hf":
        hub: HubServer = request.getfixturevalue("hub")
        return Side("hf", f"hf://{NAME}", f"hf://{NAME}", hub=hub)
    root = tmp_path / "remote"
    return Side("file", f"file://{root}", f"file://{root / NAME}", root=root)


class Catalogs:
    """One catalog per home, as each home has by default: the SQLite file in it, or a fresh
    PostgreSQL database per home (dropped at the end of the test)."""

    def __init__(self, admin: str | None) -> None:
        self.admin = admin
        self.urls: dict[Path, str] = {}

    def url(self, home: Path) -> str:
        if self.admin is None:
            return Settings.resolve(home=home).database_url
        if home not in self.urls:
            from sqlalchemy import create_engine, text
            from sqlalchemy.engine import make_url

            name = f"patchctl_t_{uuid.uuid4().hex[:12]}"
            engine = create_engine(self.admin, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            engine.dispose()
            url = make_url(self.admin).set(database=name).render_as_string(hide_password=False)
            self.urls[home] = url
            # a PostgreSQL catalog is created by `db upgrade` (only the default SQLite one on demand)
            r = run_cli(["--db", url, "db", "upgrade"])
            assert r.code == 0, r.stderr
        return self.urls[home]

    def close(self) -> None:
        if self.admin is None or not self.urls:
            return
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        engine = create_engine(self.admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            for url in self.urls.values():
                conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
        engine.dispose()


_catalogs = Catalogs(None)


@pytest.fixture(autouse=True)
def catalog(db_url: str, request: pytest.FixtureRequest) -> Iterator[Catalogs]:
    """Every test of this module on both catalogs (README: every catalog test runs on PostgreSQL too):
    ``db_url`` picks the backend (and skips PostgreSQL when it is not configured); each home then gets
    its own catalog of that backend, passed to the CLI with ``--db``. The slow Hub fault-injection
    tests (client retries and timeouts, tens of seconds each) run on SQLite only: they exercise the
    transport, and a failed pull on PostgreSQL is covered by ``test_pull_interrupted_then_retry``."""
    global _catalogs
    if not db_url.startswith("sqlite") and request.node.get_closest_marker("slow") is not None:
        pytest.skip("Hub fault injection runs on SQLite only (transport, not catalog)")
    _catalogs = Catalogs(None if db_url.startswith("sqlite") else os.environ["PATCHCTL_TEST_POSTGRES_URL"])
    try:
        yield _catalogs
    finally:
        _catalogs.close()
        _catalogs = Catalogs(None)


def db_args(home: Path) -> list[str]:
    """``--db URL`` on PostgreSQL; nothing on SQLite (the home's default catalog, created on demand)."""
    return [] if _catalogs.admin is None else ["--db", _catalogs.url(home)]


def cli(home: Path, *args: object, env: dict[str, str] | None = None) -> CliResult:
    return run_cli(["--home", str(home), *db_args(home), *[str(a) for a in args]], env=env)


def db(home: Path) -> dict[str, list[tuple[Any, ...]]]:
    return snapshot_db(_catalogs.url(home))


def push(home: Path, adapter: Path, base: Path, *extra: object, version: str = "1.0.0") -> CliResult:
    args = ["push", adapter, "--name", NAME, "--version", version, "--task", "sst2", "--base", base]
    return cli(home, *args, *extra)


def show(home: Path, ref: str = NAME) -> dict[str, Any]:
    r = cli(home, "show", ref, "--json")
    assert r.code == 0, r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    return data


def n_versions(home: Path) -> int:
    """Versions in the catalog (``list`` first creates the catalog where a failed command left none)."""
    assert cli(home, "list").code == 0
    return len(db(home)["versions"])


def store_blobs(home: Path) -> dict[str, Path]:
    root = home / "store"
    return {p.name: p for p in root.rglob("*") if p.is_file()} if root.exists() else {}


def assert_store_valid(home: Path) -> None:
    """Every blob in the content store has the sha256 it is filed under (nothing claims to be valid wrongly)."""
    for name, p in store_blobs(home).items():
        if len(name) == 64:
            assert hashlib.sha256(p.read_bytes()).hexdigest() == name, p


def tensors(out: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for f in sorted(out.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for k in st.keys():  # noqa: SIM118 - safe_open has no __iter__
                t = st.get_tensor(k)
                found[k] = (
                    t.contiguous().view(-1).view(__import__("torch").uint8).numpy().tobytes()
                    + str((t.dtype, tuple(t.shape))).encode()
                )
    return found


# ---- push --to ---------------------------------------------------------------------------------


def test_push_to_publishes_records_and_repush_is_noop(
    side: Side, tmp_path: Path, llama_adapter: Path, pico_llama: Path
) -> None:
    home = tmp_path / "a"
    r = push(home, llama_adapter, pico_llama, "--to", side.push_url, "--json")
    assert r.code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["created"] is True and out["remote"]["url"].startswith(side.push_url.split("://")[0])
    shown = show(home)
    [copy] = shown["remotes"]
    assert copy["url"] == out["remote"]["url"] and copy["revision"] == out["remote"]["revision"]
    assert "published to" in r.stderr
    state = side.state()
    assert state is not None

    again = push(home, llama_adapter, pico_llama, "--to", side.push_url)
    assert again.code == 0, again.stderr
    assert "nothing to do" in again.stderr
    assert side.state() == state  # no new commit, no rewritten file
    assert len(show(home)["remotes"]) == 1


def test_identical_push_to_a_second_remote_records_a_second_copy(
    hub: HubServer, tmp_path: Path, llama_adapter: Path, pico_llama: Path
) -> None:
    home = tmp_path / "a"
    assert push(home, llama_adapter, pico_llama, "--to", f"hf://{NAME}").code == 0
    before = db(home)["versions"]
    r = push(home, llama_adapter, pico_llama, "--to", f"file://{tmp_path / 'mirror'}")
    assert r.code == 0, r.stderr
    assert db(home)["versions"] == before
    urls = sorted(c["url"] for c in show(home)["remotes"])
    assert urls == [f"file://{tmp_path / 'mirror' / NAME}@1.0.0", f"hf://{NAME}@v1.0.0"]
    # the mirror serves it to a fresh home
    r = cli(tmp_path / "b", "pull", f"file://{tmp_path / 'mirror' / NAME}")
    assert r.code == 0, r.stderr


@pytest.mark.parametrize("configured", ["env", "config.toml"])
def test_default_remote_and_local_only(
    side: Side, configured: str, tmp_path: Path, llama_adapter: Path, pico_llama: Path
) -> None:
    home = tmp_path / "a"
    env: dict[str, str] = {}
    if configured == "env":
        env["PATCHCTL_REMOTE"] = side.push_url
    else:
        home.mkdir()
        (home / "config.toml").write_text(f'default_remote = "{side.push_url}"\n')
    r = cli(
        home, "push", llama_adapter, "--name", NAME, "--version", "1.0.0", "--task", "sst2", "--base", pico_llama,
        "--local-only", env=env,
    )  # fmt: skip
    assert r.code == 0, r.stderr
    assert side.state() in (None, [])
    assert show(home)["remotes"] == []
    r = cli(
        home, "push", llama_adapter, "--name", NAME, "--version", "1.0.0", "--task", "sst2", "--base", pico_llama,
        env=env,
    )  # fmt: skip
    assert r.code == 0, r.stderr
    assert side.state() not in (None, [])
    assert len(show(home)["remotes"]) == 1


def test_conflicting_content_under_the_same_version(
    side: Side, tmp_path: Path, llama_adapter: Path, adapter_b: Path, pico_llama: Path
) -> None:
    home = tmp_path / "a"
    assert push(home, llama_adapter, pico_llama, "--to", side.push_url).code == 0
    before_db, before_remote = db(home), side.state()
    # the same catalog refuses before publishing
    r = push(home, adapter_b, pico_llama, "--to", side.push_url)
    assert r.code == 5, r.stderr
    assert db(home) == before_db and side.state() == before_remote
    # another catalog: the remote refuses, and that catalog records nothing
    other = tmp_path / "b"
    r = push(other, adapter_b, pico_llama, "--to", side.push_url)
    assert r.code == 5, (r.code, r.stderr)
    assert r.stderr.count("\n") <= 3 and "Traceback" not in r.stderr
    assert n_versions(other) == 0
    assert side.state() == before_remote


_SLOW = pytest.mark.slow  # the client retries these requests with backoff (~24 s) before giving up


@pytest.mark.parametrize(
    "failure",
    [
        "create-repo",
        pytest.param("preupload", marks=_SLOW),
        pytest.param("lfs-upload", marks=_SLOW),
        "commit",
        "tag",
        "down",
    ],
)
def test_failed_publish_records_no_version(
    hub: HubServer, failure: str, tmp_path: Path, llama_adapter: Path, pico_llama: Path
) -> None:
    """Each step of a Hub publish failing with a 5xx (or the server down): exit 8, no version in the
    catalog; the same push then goes through once the Hub is back, tagged once."""
    home = tmp_path / "a"
    if failure == "down":
        hub.stop()
    else:
        hub.fail_next(100, status=503, route=failure)
    r = push(home, llama_adapter, pico_llama, "--to", f"hf://{NAME}")
    assert r.code == 8, (r.code, r.stderr)
    assert "Traceback" not in r.stderr
    assert n_versions(home) == 0 and all(rows == [] for rows in db(home).values())
    assert cli(home, "show", NAME).code == 3
    # once the Hub answers again, the same push goes through
    hub.faults.clear()
    if not hub.running:
        hub.start()
    r = push(home, llama_adapter, pico_llama, "--to", f"hf://{NAME}")
    assert r.code == 0, r.stderr
    [copy] = show(home)["remotes"]
    assert hub.refs(NAME)["tags"] == {"v1.0.0": copy["revision"]}
    r = cli(tmp_path / "b", "pull", f"hf://{NAME}@1.0.0")
    assert r.code == 0, r.stderr


def test_failed_directory_publish_records_no_version(tmp_path: Path, llama_adapter: Path, pico_llama: Path) -> None:
    home = tmp_path / "a"
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    r = push(home, llama_adapter, pico_llama, "--to", f"file://{blocker}")
    assert r.code == 8, (r.code, r.stderr)
    assert n_versions(home) == 0


# ---- pull ---------------------------------------------------------------------------------------


@pytest.fixture
def published(side: Side, tmp_path: Path, llama_adapter: Path, adapter_b: Path, pico_llama: Path) -> Side:
    """1.0.0 (llama_adapter) and 1.1.0 (adapter_b) on the remote, pushed from another home."""
    home = tmp_path / "publisher"
    assert push(home, llama_adapter, pico_llama, "--to", side.push_url).code == 0
    assert push(home, adapter_b, pico_llama, "--to", side.push_url, version="1.1.0").code == 0
    return side


@pytest.mark.parametrize(("suffix", "expected"), [("", "1.1.0"), ("@1.0.0", "1.0.0"), ("==1.*", "1.1.0"),
                                                  ("==1.0.*", "1.0.0")])  # fmt: skip
def test_pull_into_a_fresh_home(published: Side, suffix: str, expected: str, tmp_path: Path) -> None:
    home = tmp_path / "fresh"
    r = cli(home, "pull", published.pull_url + suffix, "--json")
    assert r.code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["created"] is True and out["version"]["version"] == expected
    shown = show(home, f"{NAME}=={expected}")
    [copy] = shown["remotes"]
    assert copy["url"] == out["remote"]["url"] and copy["revision"] == out["commit"]
    blobs = store_blobs(home)
    for f in shown["version"]["files"]:
        assert f["sha256"] in blobs
    assert_store_valid(home)
    # pulling again changes nothing
    before = db(home), sorted(blobs)
    r = cli(home, "pull", published.pull_url + suffix, "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["created"] is False
    assert (db(home), sorted(store_blobs(home))) == before


def test_one_remote_copy_however_a_version_is_asked_for(published: Side, tmp_path: Path) -> None:
    if published.hub is None:
        pytest.skip("directory remotes take versions and specifiers only")
    home = tmp_path / "fresh"
    commit = published.hub.refs(NAME)["tags"]["v1.1.0"]
    for suffix in ("@main", f"@{commit}", "@1.1.0", "==1.1.*", ""):
        r = cli(home, "pull", published.pull_url + suffix)
        assert r.code == 0, (suffix, r.stderr)
    [copy] = show(home, f"{NAME}==1.1.0")["remotes"]
    assert (copy["url"], copy["revision"]) == (f"hf://{NAME}@v1.1.0", commit)


@pytest.mark.parametrize("path", ["adapter_model.safetensors", "adapter_config.json"])
def test_pull_of_a_corrupted_blob(published: Side, path: str, tmp_path: Path) -> None:
    published.corrupt("1.0.0", path)
    home = tmp_path / "fresh"
    r = cli(home, "pull", published.pull_url + "@1.0.0")
    assert r.code == 7, (r.code, r.stderr)
    assert "sha256" in r.stderr and "Traceback" not in r.stderr
    assert n_versions(home) == 0
    assert_store_valid(home)
    if path == "adapter_config.json":  # 1.1.0 shares the weights blob (content-addressed on the Hub), not this one
        r = cli(home, "pull", published.pull_url + "@1.1.0")
        assert r.code == 0, r.stderr
        assert n_versions(home) == 1


def test_pull_unknown_version(published: Side, tmp_path: Path) -> None:
    r = cli(tmp_path / "fresh", "pull", published.pull_url + "@9.9.9")
    assert r.code == 3, (r.code, r.stderr)


# ---- tokens -------------------------------------------------------------------------------------


def test_token_required_and_never_shown(
    hub: HubServer, tmp_path: Path, llama_adapter: Path, pico_llama: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "hf_" + "Wr0ngT0kenValue" * 2
    good = {"HF_TOKEN": SECRET}
    home, fresh = tmp_path / "a", tmp_path / "b"
    assert push(home, llama_adapter, pico_llama, "--to", f"hf://{NAME}").code == 0  # before auth is on
    hub.require_token(SECRET)
    seen: list[str] = []

    def run(h: Path, *args: object, env: dict[str, str] | None = None) -> CliResult:
        r = cli(h, *args, env=env)
        seen.extend([r.stdout, r.stderr])
        return r

    hub.seed_repo("acme/base", pico_llama)
    for env in (None, {"HF_TOKEN": wrong}):
        r = run(fresh, "-vv", "pull", f"hf://{NAME}@1.0.0", env=env)
        assert r.code == 9, (r.code, r.stderr)
        assert "Traceback" not in r.stderr
        r = run(fresh, "push", llama_adapter, "--name", "acme/other", "--version", "1.0.0", "--task", "sst2",
                "--base", pico_llama, "--to", "hf://acme/other", env=env)  # fmt: skip
        assert r.code == 9, (r.code, r.stderr)
        r = run(fresh, "search", "--remote", "hf://acme", env=env)
        assert r.code == 9, (r.code, r.stderr)
        r = run(home, "-vv", "check", NAME, "--onto", "hf://acme/base", env=env)
        assert r.code == 9, (r.code, r.stderr)
        r = run(home, "install", NAME, "--onto", "hf://acme/base", "--out", tmp_path / "out", env=env)
        assert r.code == 9, (r.code, r.stderr)
    assert n_versions(fresh) == 0
    r = run(fresh, "-vv", "pull", f"hf://{NAME}@1.0.0", "--json", env=good)
    assert r.code == 0, r.stderr
    r = run(home, "-vv", "install", NAME, "--onto", "hf://acme/base", "--out", tmp_path / "out", env=good)
    assert r.code == 0, r.stderr
    r = run(fresh, "push", llama_adapter, "--name", "acme/other", "--version", "1.0.0", "--task", "sst2",
            "--base", pico_llama, "--to", "hf://acme/other", env=good)  # fmt: skip
    assert r.code == 0, r.stderr
    # the token `hf auth login` stored (HF_HOME/token) is used too
    stored = Path(os.environ["HF_HOME"]) / "token"
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_text(SECRET)
    r = run(tmp_path / "c", "pull", f"hf://{NAME}@1.0.0")
    assert r.code == 0, r.stderr
    rows = "".join(json.dumps(db(h), default=str) for h in (home, fresh, tmp_path / "c"))
    for secret in (SECRET, wrong):
        for text in [*seen, caplog.text, rows]:
            assert secret not in text
        for p in tmp_path.rglob("*"):  # catalogs, stores, the merged output and its provenance
            if p.is_file():
                assert secret.encode() not in p.read_bytes(), p


# ---- search -------------------------------------------------------------------------------------


def test_search_by_task_and_family(published: Side, tmp_path: Path, pico_llama: Path) -> None:
    home = tmp_path / "fresh"
    where = "hf://acme" if published.kind == "hf" else published.push_url

    def names(*args: str) -> list[str]:
        r = cli(home, "search", "--remote", where, *args, "--json")
        assert r.code == 0, r.stderr
        return [p["name"] for p in json.loads(r.stdout)]

    if published.hub is not None:  # a base (no patchctl tag) in the same namespace is not a patch
        published.hub.seed_repo("acme/pico-llama", pico_llama)
    assert names() == [NAME]
    assert names("--task", "sst2") == [NAME]
    assert names("--family", "llama") == [NAME]
    assert names("--task", "gsm8k") == []
    assert names("--family", "gpt2") == []
    r = cli(home, "search", "--remote", where, "--task", "sst2", "--json")
    [found] = json.loads(r.stdout)
    assert found["latest"] == "1.1.0"
    r = cli(home, "search", "--remote", where)
    assert r.code == 0 and NAME in r.stdout


# ---- check / install --onto hf:// ---------------------------------------------------------------


def _results(r: CliResult) -> list[tuple[str, str]]:
    data = json.loads(r.stdout)
    return [(c["name"], c["status"], c["detail"], c.get("data")) for c in data["results"]]


def test_check_onto_a_hub_base_reads_headers_only(
    hub: HubServer, tmp_path: Path, llama_adapter: Path, pico_llama: Path
) -> None:
    from remotes.test_remote_bases import BIG, _big_safetensors

    base = tmp_path / "big-base"
    shutil.copytree(pico_llama, base)
    _big_safetensors(base / "model-extra.safetensors")
    hub.seed_repo("acme/big", base)
    home = tmp_path / "a"
    assert push(home, llama_adapter, pico_llama).code == 0
    hub.reset_counters()
    remote = cli(home, "check", NAME, "--onto", "hf://acme/big", "--json")
    served = hub.bytes_served
    print(f"check --onto hf:// of a {BIG} byte base: {served} bytes served")
    assert remote.code in (0, 20), remote.stderr
    assert served < 1_000_000
    local = cli(home, "check", NAME, "--onto", base, "--json")
    assert local.code == remote.code
    assert _results(remote) == _results(local)
    # the same weights (one fingerprint): both reports are kept, show lists the newest per base
    assert len(show(home)["compat_reports"]) == 1
    every = cli(home, "show", NAME, "--all-reports", "--json")
    assert len(json.loads(every.stdout)["compat_reports"]) == 2


@pytest.mark.parametrize("base_fixture", ["pico_llama", "pico_llama_sharded"])
def test_install_onto_a_hub_base_equals_local(
    hub: HubServer, base_fixture: str, tmp_path: Path, llama_adapter: Path, request: pytest.FixtureRequest
) -> None:
    pico_llama: Path = request.getfixturevalue(base_fixture)
    hub.seed_repo("acme/pico-llama", pico_llama)
    home = tmp_path / "a"
    assert push(home, llama_adapter, pico_llama).code == 0
    hub.reset_counters()
    r = cli(home, "install", NAME, "--onto", "hf://acme/pico-llama", "--out", tmp_path / "remote-out")
    assert r.code == 0, r.stderr
    weights = sum(f.stat().st_size for f in pico_llama.glob("*.safetensors"))
    assert hub.bytes_for("resolve", "GET") >= weights  # the base was downloaded
    r = cli(home, "install", NAME, "--onto", pico_llama, "--out", tmp_path / "local-out")
    assert r.code == 0, r.stderr
    a, b = tensors(tmp_path / "remote-out"), tensors(tmp_path / "local-out")
    assert a and a == b
    assert len(show(home)["installs"]) == 2


def test_dry_run_onto_a_hub_base_downloads_nothing(
    hub: HubServer, tmp_path: Path, llama_adapter: Path, pico_llama: Path
) -> None:
    hub.seed_repo("acme/pico-llama", pico_llama)
    home = tmp_path / "a"
    assert push(home, llama_adapter, pico_llama).code == 0
    hub.reset_counters()
    r = cli(home, "install", NAME, "--onto", "hf://acme/pico-llama", "--out", tmp_path / "out", "--dry-run")
    assert r.code == 0, r.stderr
    assert not (tmp_path / "out").exists()
    assert [q for q in hub.requests_for("resolve", "GET") if q.path.endswith(".safetensors") and not q.range] == []


def test_rebased_adapter_onto_a_hub_base_downloads_no_weights(
    hub: HubServer, tmp_path: Path, llama_adapter: Path, pico_llama: Path
) -> None:
    commit = hub.seed_repo("acme/pico-llama", pico_llama)
    home = tmp_path / "a"
    assert push(home, llama_adapter, pico_llama).code == 0
    hub.reset_counters()
    out = tmp_path / "out"
    r = cli(home, "install", NAME, "--onto", "hf://acme/pico-llama", "--out", out, "--format", "adapter")
    assert r.code == 0, r.stderr
    assert [q for q in hub.requests_for("resolve", "GET") if q.path.endswith(".safetensors") and not q.range] == []
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "acme/pico-llama" and cfg.get("revision") == commit


def test_failing_check_onto_a_hub_base_downloads_nothing(
    hub: HubServer, tmp_path: Path, gpt2_adapter: Path, pico_gpt2: Path, pico_llama: Path
) -> None:
    hub.seed_repo("acme/pico-llama", pico_llama)
    home = tmp_path / "a"
    assert push(home, gpt2_adapter, pico_gpt2).code == 0
    hub.reset_counters()
    r = cli(home, "install", NAME, "--onto", "hf://acme/pico-llama", "--out", tmp_path / "out")
    assert r.code == 21, (r.code, r.stderr)
    assert not (tmp_path / "out").exists()
    full_reads = [q for q in hub.requests_for("resolve", "GET") if q.path.endswith(".safetensors") and not q.range]
    assert full_reads == []
    weights = sum(f.stat().st_size for f in pico_llama.glob("*.safetensors"))
    assert hub.bytes_for("resolve", "GET") < weights
    assert show(home)["installs"] == []


def test_install_a_hub_patch_pulls_then_installs(published: Side, tmp_path: Path, pico_llama: Path) -> None:
    home = tmp_path / "fresh"
    ref = published.pull_url + "@1.0.0"
    r = cli(home, "install", ref, "--onto", pico_llama, "--out", tmp_path / "out")
    assert r.code == 0, r.stderr
    shown = show(home, f"{NAME}==1.0.0")
    assert len(shown["remotes"]) == 1 and len(shown["installs"]) == 1
    assert tensors(tmp_path / "out")
    # a second install reuses the pulled version
    before = db(home)["versions"]
    r = cli(home, "install", ref, "--onto", pico_llama, "--out", tmp_path / "out2")
    assert r.code == 0, r.stderr
    assert db(home)["versions"] == before


def test_install_merges_the_commit_that_was_checked(
    hub: HubServer,
    tmp_path: Path,
    llama_adapter: Path,
    pico_llama: Path,
    pico_gpt2: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """main moves between the header checks and the download: the checked commit is the one merged."""
    import patchctl.remotes._bases as bases

    checked = hub.seed_repo("acme/base", pico_llama)
    real = bases.stream_base

    def main_moves_first(*args: Any, **kwargs: Any) -> Any:
        hub.seed_repo("acme/base", pico_gpt2)  # a new, unrelated commit on main
        return real(*args, **kwargs)

    monkeypatch.setattr(bases, "stream_base", main_moves_first)
    home = tmp_path / "a"
    assert push(home, llama_adapter, pico_llama).code == 0
    r = cli(home, "install", NAME, "--onto", "hf://acme/base", "--out", tmp_path / "remote-out")
    assert r.code == 0, r.stderr
    provenance = json.loads((tmp_path / "remote-out" / "patchctl.json").read_text())
    assert checked in json.dumps(provenance)
    assert cli(home, "install", NAME, "--onto", pico_llama, "--out", tmp_path / "local-out").code == 0
    assert tensors(tmp_path / "remote-out") == tensors(tmp_path / "local-out")


def test_install_refuses_a_downloaded_base_that_differs_from_the_checked_one(
    hub: HubServer, tmp_path: Path, llama_adapter: Path, pico_llama: Path
) -> None:
    """A weights blob damaged past its header: the checks pass on headers, the download is verified."""
    hub.seed_repo("acme/base", pico_llama)
    blob = hub.blob_path(hub.file_at("acme/base", "model.safetensors").sha256)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    data[-1] ^= 0xFF
    home = tmp_path / "a"
    assert push(home, llama_adapter, pico_llama).code == 0
    r = cli(home, "install", NAME, "--onto", "hf://acme/base", "--out", tmp_path / "out")
    assert r.code == 7, (r.code, r.stderr)
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()
    assert show(home)["installs"] == []
    # the damaged copy left the HF cache: once the Hub serves good bytes again, a retry works
    blob.write_bytes(bytes(data))
    r = cli(home, "install", NAME, "--onto", "hf://acme/base", "--out", tmp_path / "out")
    assert r.code == 0, r.stderr
    assert len(show(home)["installs"]) == 1


@pytest.mark.parametrize("mode", ["drop", "status"])
def test_interrupted_base_download_then_retry(
    hub: HubServer, mode: str, tmp_path: Path, llama_adapter: Path, pico_llama: Path
) -> None:
    hub.seed_repo("acme/base", pico_llama)
    home = tmp_path / "a"
    assert push(home, llama_adapter, pico_llama).code == 0
    # header reads are ranged; the full download is the first GET without a Range of the weights
    hub.fail_next(20, route="resolve", path_contains="model.safetensors", mode=mode, method="GET")
    r = cli(home, "install", NAME, "--onto", "hf://acme/base", "--out", tmp_path / "out")
    assert r.code == 8, (r.code, r.stderr)
    assert not (tmp_path / "out").exists() and show(home)["installs"] == []
    hub.faults.clear()
    r = cli(home, "install", NAME, "--onto", "hf://acme/base", "--out", tmp_path / "out")
    assert r.code == 0, r.stderr
    assert cli(home, "install", NAME, "--onto", pico_llama, "--out", tmp_path / "local").code == 0
    assert tensors(tmp_path / "out") == tensors(tmp_path / "local")


def test_pull_interrupted_then_retry(published: Side, tmp_path: Path) -> None:
    if published.hub is None:
        pytest.skip("a directory remote has no transport to interrupt")
    home = tmp_path / "fresh"
    published.hub.fail_next(20, route="resolve", path_contains="adapter_model.safetensors", mode="drop")
    r = cli(home, "pull", published.pull_url + "@1.0.0")
    assert r.code == 8, (r.code, r.stderr)
    assert n_versions(home) == 0
    assert_store_valid(home)
    published.hub.faults.clear()
    r = cli(home, "pull", published.pull_url + "@1.0.0")
    assert r.code == 0, r.stderr
    assert n_versions(home) == 1


def test_pull_of_other_content_under_a_recorded_version(
    published: Side, tmp_path: Path, adapter_b: Path, pico_llama: Path
) -> None:
    """The catalog has its own 1.0.0; the remote's 1.0.0 differs: refused, the catalog unchanged."""
    home = tmp_path / "local"
    assert push(home, adapter_b, pico_llama).code == 0
    before = db(home)
    r = cli(home, "pull", published.pull_url + "@1.0.0")
    assert r.code == 5, (r.code, r.stderr)
    assert db(home) == before


def test_install_of_a_damaged_remote_patch_writes_nothing(published: Side, tmp_path: Path, pico_llama: Path) -> None:
    published.corrupt("1.0.0", "adapter_config.json")
    home = tmp_path / "fresh"
    r = cli(home, "install", published.pull_url + "@1.0.0", "--onto", pico_llama, "--out", tmp_path / "out")
    assert r.code == 7, (r.code, r.stderr)
    assert not (tmp_path / "out").exists()
    assert n_versions(home) == 0


_PROBE = """
import sys
from patchctl.cli import cli
from patchctl.cli._errors import run_with_error_handling
code = run_with_error_handling(cli, sys.argv[1:], prog_name="patchctl")
heavy = sorted(m for m in ("torch", "transformers", "peft") if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
sys.exit(code)
"""


def test_remote_commands_do_not_import_torch(
    hub: HubServer, tmp_path: Path, llama_adapter: Path, pico_llama: Path
) -> None:
    """check --onto hf://, pull and search stay light (a fresh interpreter each)."""
    import subprocess
    import sys

    hub.seed_repo("acme/pico-llama", pico_llama)
    home = tmp_path / "a"
    assert push(home, llama_adapter, pico_llama, "--to", f"hf://{NAME}").code == 0
    env = {**os.environ, "HF_HUB_DISABLE_XET": "1", "PYTHONPATH": str(Path(__file__).parents[2])}
    for args in (
        ["--home", home, *db_args(home), "check", NAME, "--onto", "hf://acme/pico-llama", "--json"],
        ["--home", tmp_path / "b", *db_args(tmp_path / "b"), "pull", f"hf://{NAME}"],
        ["--home", tmp_path / "b", *db_args(tmp_path / "b"), "search", "--remote", "hf://acme", "--json"],
    ):
        cmd = [sys.executable, "-c", _PROBE, *map(str, args)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "HEAVY=\n" in proc.stderr, (args, proc.stderr)


_HUB_FAULTS = [
    *(
        (mode, status, "adapter_model.safetensors")
        for mode, status in (("status", 500), ("status", 502), ("status", 504), ("drop", 200), ("reset", 0))
    ),
    ("status", 503, "patch.json"),
    ("drop", 200, "patch.json"),
    ("reset", 0, "adapter_config.json"),
]


@pytest.mark.slow
@pytest.mark.parametrize("side", ["hf"], indirect=True)
@pytest.mark.parametrize(("mode", "status", "path"), _HUB_FAULTS, ids=[f"{m}-{s}-{p}" for m, s, p in _HUB_FAULTS])
def test_hub_fault_mid_download_then_retry(published: Side, mode: str, status: int, path: str, tmp_path: Path) -> None:
    """Issue 8: 5xx, truncated bodies and reset connections on each file of a pull: exit 8 with one
    line, nothing recorded, the store valid (`patchctl verify` passes); the retry succeeds."""
    assert published.hub is not None
    home = tmp_path / "fresh"
    published.hub.fail_next(20, route="resolve", path_contains=path, mode=mode, status=status or 500)
    r = cli(home, "pull", published.pull_url + "@1.0.0")
    assert r.code == 8, (r.code, r.stderr)
    assert "Traceback" not in r.stderr and len([x for x in r.stderr.splitlines() if x.startswith("error:")]) == 1
    _nothing_recorded_then_retry(published, home)


@pytest.fixture
def short_hub_timeouts(monkeypatch: pytest.MonkeyPatch) -> float:
    """huggingface_hub's documented HF_HUB_DOWNLOAD_TIMEOUT / HF_HUB_ETAG_TIMEOUT, set to one second
    (the CLI runs in this process, where the client has read them at import: set them there too)."""
    import huggingface_hub.constants as constants

    for var in ("HF_HUB_DOWNLOAD_TIMEOUT", "HF_HUB_ETAG_TIMEOUT"):
        monkeypatch.setenv(var, "1")
        monkeypatch.setattr(constants, var, 1)
    return 1.0


def _nothing_recorded_then_retry(published: Side, home: Path) -> None:
    """After a failed pull: no version recorded, the store valid (`patchctl verify` passes); once the
    Hub's faults are cleared the same pull succeeds."""
    assert published.hub is not None
    assert n_versions(home) == 0
    assert_store_valid(home)
    assert cli(home, "verify").code == 0
    published.hub.faults.clear()
    r = cli(home, "pull", published.pull_url + "@1.0.0")
    assert r.code == 0, r.stderr
    assert n_versions(home) == 1 and cli(home, "verify").code == 0


def _one_error_line(r: CliResult) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    [line] = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    return line


@pytest.mark.slow
@pytest.mark.parametrize("side", ["hf"], indirect=True)
@pytest.mark.parametrize("path", ["adapter_model.safetensors", "patch.json"])
def test_hub_stall_mid_pull_then_retry(published: Side, path: str, short_hub_timeouts: float, tmp_path: Path) -> None:
    """Issue 8: the Hub stops answering mid-download (longer than the client's timeout): exit 8 with one
    line that says so, nothing recorded, the store valid (`patchctl verify` passes); the retry succeeds."""
    assert published.hub is not None
    home = tmp_path / "fresh"
    published.hub.fail_next(
        20, method="GET", route="resolve", path_contains=path, mode="stall", delay=3 * short_hub_timeouts
    )
    r = cli(home, "pull", published.pull_url + "@1.0.0")
    assert r.code == 8, (r.code, r.stderr)
    line = _one_error_line(r)
    assert "timed out" in line and published.hub.url in line, line
    _nothing_recorded_then_retry(published, home)


@pytest.mark.slow
def test_hub_stall_mid_base_download_then_retry(
    hub: HubServer, short_hub_timeouts: float, tmp_path: Path, llama_adapter: Path, pico_llama: Path
) -> None:
    """Issue 8: `install --onto hf://` whose base download stalls: exit 8, one line, no --out, no
    install recorded, `verify` passes; the retry installs the same model as from the local base."""
    hub.seed_repo("acme/base", pico_llama)
    home = tmp_path / "a"
    assert push(home, llama_adapter, pico_llama).code == 0
    before = db(home)
    hub.fail_next(
        20, method="GET", route="resolve", path_contains="model.safetensors", mode="stall", delay=3 * short_hub_timeouts
    )
    out = tmp_path / "out"
    r = cli(home, "install", NAME, "--onto", "hf://acme/base", "--out", out)
    assert r.code == 8, (r.code, r.stderr)
    line = _one_error_line(r)
    assert "timed out" in line and hub.url in line, line
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    assert db(home) == before and show(home)["installs"] == []
    assert cli(home, "verify").code == 0
    hub.faults.clear()
    r = cli(home, "install", NAME, "--onto", "hf://acme/base", "--out", out)
    assert r.code == 0, r.stderr
    assert cli(home, "install", NAME, "--onto", pico_llama, "--out", tmp_path / "local").code == 0
    assert tensors(out) == tensors(tmp_path / "local")
    assert cli(home, "verify").code == 0
