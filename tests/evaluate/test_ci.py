"""ci: one base load for K patches, exact restore, JUnit and Markdown, promote only on pass, exit codes,
concurrent ci processes on one PostgreSQL catalog; ci plan; check/list/alias list show validations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from catalogtools import CliResult, run_cli
from evaltools import TASK, make_eval_base

from patchctl.settings import Settings


def _cli(home: Path, db: str, *args: object) -> CliResult:
    return run_cli(["--home", str(home), "--db", db, *[str(a) for a in args]])


def _push(home: Path, db: str, adapter: Path, base: Path, name: str, *extra: object) -> None:
    r = _cli(home, db, "push", adapter, "--name", name, "--version", "1.0.0", "--task", "t", "--base", base, *extra)
    assert r.code == 0, r.stderr


def test_session_restores_the_base_bit_for_bit(
    eval_base: Path, eval_folder: Path, good_adapter: Path, bad_adapter: Path
) -> None:
    from patchctl.evaluate import build_eval_spec, read_eval_folder
    from patchctl.evaluate._apply import state_checksum
    from patchctl.evaluate._run import _Session
    from patchctl.evaluate._score import LOADS

    spec = build_eval_spec(read_eval_folder(eval_folder))
    loads = len(LOADS)
    session = _Session(eval_base, device="cpu", batch_size=1)
    before = state_checksum(session.loaded.model)
    scores = []
    for adapter in (good_adapter, bad_adapter, good_adapter):
        scores.append(session.patched(adapter, eval_folder, spec, None, False, base_weights_sha256="0" * 64, label="x"))
        assert state_checksum(session.loaded.model) == before
    unpatched = session.unpatched(eval_folder, spec, None, False)
    assert scores[0] == scores[2] and scores[0][TASK] > unpatched[TASK] > scores[1][TASK]
    assert len(LOADS) - loads == 1


def test_ci_junit_summary_promote_and_exit_codes(
    tmp_path: Path,
    eval_base: Path,
    eval_base_v2: Path,
    eval_folder: Path,
    good_adapter: Path,
    bad_adapter: Path,
    llama_adapter: Path,
    pico_llama: Path,
) -> None:
    from junitparser import Failure, JUnitXml

    from patchctl import api

    home, db = tmp_path / "home", f"sqlite:///{tmp_path / 'c.db'}"
    _push(home, db, good_adapter, eval_base, "acme/good", "--eval", eval_folder)
    _push(home, db, bad_adapter, eval_base, "acme/bad", "--eval", eval_folder, "--no-baseline", "--min-score", "0.5")
    _push(home, db, llama_adapter, pico_llama, "acme/noeval")  # no eval set: not validated

    r = _cli(home, db, "ci", "plan", "--onto", eval_base_v2, "--format", "github-matrix")
    assert r.code == 0
    plan = json.loads(r.stdout)
    assert sorted(e["patch"] for e in plan["include"]) == ["acme/bad", "acme/good"]
    assert all(e["onto"] == str(eval_base_v2) for e in plan["include"])

    settings = Settings.resolve(home=str(home), database_url=db)
    outcome = api.ci(settings, onto=str(eval_base_v2), promote="stable", progress=False)
    assert outcome.base_loads == 1  # one base load for K patches
    assert {r.patch: r.status for r in outcome.results} == {"acme/bad==1.0.0": "regressed", "acme/good==1.0.0": "pass"}
    assert outcome.exit_code == 22

    junit, summary = tmp_path / "ci.xml", tmp_path / "summary.md"
    r = _cli(home, db, "ci", "--onto", eval_base_v2, "--promote", "stable", "--junit", junit, "--summary", summary,
             "--json")  # fmt: skip
    assert r.code == 22, r.stderr
    data = json.loads(r.stdout)
    assert data["exit_code"] == 22 and len(data["results"]) == 2
    xml = JUnitXml.fromfile(str(junit))
    cases = [c for suite in xml for c in suite]
    assert sorted(c.name for c in cases) == ["acme/bad==1.0.0", "acme/good==1.0.0"]
    failures = {c.name: r for c in cases for r in c.result if isinstance(r, Failure)}
    assert list(failures) == ["acme/bad==1.0.0"] and "patched" in failures["acme/bad==1.0.0"].message
    text = summary.read_text()
    assert "| `acme/good==1.0.0` | ✅ pass | pico_choice | acc |" in text and "❌ regressed" in text

    # promote only on pass, with the base it was validated on
    v2_sha = outcome.base_weights_sha256
    aliases = json.loads(_cli(home, db, "alias", "list", "acme/good", "--json").stdout)
    assert [(a["alias"], a["version"], a["validated_on"]) for a in aliases] == [("stable", "1.0.0", v2_sha)]
    assert json.loads(_cli(home, db, "alias", "list", "acme/bad", "--json").stdout) == []
    r = _cli(home, db, "alias", "list", "acme/good")
    assert v2_sha in r.stdout.replace("\n", "").replace(" ", "").replace("│", "") or v2_sha[:20] in r.stdout
    shown = _cli(home, db, "show", "acme/good")
    assert f"validated on {v2_sha[:12]}" in shown.stdout

    # check reports the validation on this exact base; list filters by it
    r = _cli(home, db, "check", "acme/good", "--onto", eval_base_v2, "--json")
    validated = [x for x in json.loads(r.stdout)["results"] if x["name"] == "validated"]
    assert validated and validated[0]["status"] == "pass"
    r = _cli(home, db, "check", "acme/bad", "--onto", eval_base_v2, "--json")
    assert [x["status"] for x in json.loads(r.stdout)["results"] if x["name"] == "validated"] == ["warn"]
    assert r.code == 20  # a warning, never a failure
    r = _cli(home, db, "check", "acme/noeval", "--onto", pico_llama, "--json")
    assert not [x for x in json.loads(r.stdout)["results"] if x["name"] == "validated"]
    listed = json.loads(_cli(home, db, "list", "--validated-on", eval_base_v2, "--json").stdout)
    assert [p["name"] for p in listed] == ["acme/good"]
    listed = json.loads(_cli(home, db, "list", "--validated-on", eval_base, "--json").stdout)
    assert [p["name"] for p in listed] == ["acme/good"]  # its baseline on θ

    # only the passing patch: exit 0; a base the checks refuse: exit 21
    assert _cli(home, db, "ci", "--onto", eval_base_v2, "--patches", "acme/g*").code == 0
    other_vocab = make_eval_base(tmp_path / "other-vocab", vocab=100, layers=3)  # family fails
    r = _cli(home, db, "ci", "--onto", other_vocab, "--json", "--junit", junit)
    assert r.code == 21, r.stderr
    assert [x["status"] for x in json.loads(r.stdout)["results"]] == ["refused", "refused"]
    cases = [c for suite in JUnitXml.fromfile(str(junit)) for c in suite]
    assert all("checks failed" in r.message for c in cases for r in c.result)


_CI_JOB = """
import sys
from patchctl.cli import cli
from patchctl.cli._errors import run_with_error_handling
sys.exit(run_with_error_handling(cli, sys.argv[1:], prog_name="patchctl"))
"""


@pytest.mark.slow
@pytest.mark.postgres
def test_concurrent_ci_jobs_on_postgres(
    tmp_path: Path, eval_base: Path, eval_base_v2: Path, eval_folder: Path, good_adapter: Path
) -> None:
    url = os.environ.get("PATCHCTL_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("PostgreSQL not configured (set PATCHCTL_TEST_POSTGRES_URL)")
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"patchctl_ci_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    db = make_url(url).set(database=name).render_as_string(hide_password=False)
    try:
        home = tmp_path / "home"
        assert _cli(home, db, "db", "upgrade").code == 0
        k = 2
        for i in range(k):
            _push(home, db, good_adapter, eval_base, f"acme/p{i}", "--eval", eval_folder, "--eval-limit", "6")
        plan = json.loads(_cli(home, db, "ci", "plan", "--format", "github-matrix").stdout)["include"]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "OMP_NUM_THREADS": "1"}

        def job(patch: str) -> subprocess.Popen[str]:
            args = ["--home", str(home), "--db", db, "ci", "--onto", str(eval_base_v2), "--patches", patch,
                    "--promote", "stable", "--limit", "6", "--json"]  # fmt: skip
            return subprocess.Popen(
                [sys.executable, "-c", _CI_JOB, *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )

        jobs = [job(entry["patch"]) for entry in plan * 2]  # every patch twice: two jobs race on each alias
        outs = [job.communicate(timeout=600) for job in jobs]
        assert [job.returncode for job in jobs] == [0] * len(jobs), [(o[-1000:], e[-2000:]) for o, e in outs]
        engine = create_engine(db)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version_id, COUNT(*) FROM validations GROUP BY version_id")).all()
            aliases = conn.execute(text("SELECT alias, validated_base_sha256 FROM aliases")).all()
        engine.dispose()
        assert sorted(n for _, n in rows) == [3] * k  # the baseline + one per job: no row lost, none duplicated
        assert len(aliases) == k and all(a == "stable" and sha for a, sha in aliases)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
