"""``resolve REQ --onto BASE``: the JSON cases in resolve_cases/ run through a real catalog.

Each case: base generations (``bases``, with parents), versions made on them, aliases, yanks,
cached check reports and validations on the target, the request, the target, and the expected
choice (with ranks, reasons, rejections) or the expected failure message.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from catalogtools import base_facts, make_manifest, run_cli, sha

from patchctl import __version__, errors
from patchctl.registry.resolver import NoCompatibleVersionError
from patchctl.registry.store import Catalog
from patchctl.resolving import needs_resolution, resolve_onto
from patchctl.settings import Settings

CASES = sorted((Path(__file__).parent / "resolve_cases").glob("*.json"))


def seed(catalog: Catalog, case: dict[str, Any]) -> None:
    """Lay a case's catalog state down through the catalog store."""
    for b in case.get("bases", []):
        catalog.add_base(base_facts(b["id"]))
        if b.get("parent"):
            catalog.add_lineage(sha(b["id"]), sha(b["parent"]), b.get("relation", "update"))
    for v in case["versions"]:
        mf = make_manifest("acme/p", v["version"], content=v["version"], base=v["base"])
        catalog.add_version(mf, manifest_sha256=sha(mf.to_json()))
    for alias, target in case.get("aliases", {}).items():
        catalog.set_alias("acme/p", alias, target)
    for v in case["versions"]:
        if v.get("yanked"):
            catalog.yank("acme/p", v["version"])
    explicit = {r["version"] for r in case.get("reports", []) if r["base"] == case["onto"]}
    reports = list(case.get("reports", []))
    if case.get("default_reports", True):  # every other candidate passes on the target
        reports = [{"version": v["version"], "base": case["onto"], "status": "pass"} for v in case["versions"]
                   if v["version"] not in explicit] + reports  # fmt: skip
    for r in reports:
        results = [
            {"name": f.split(":")[0], "status": "fail", "detail": f.split(": ", 1)[1]} for f in r.get("failed", [])
        ]
        catalog.record_compat_report(
            "acme/p",
            r["version"],
            base_weights_sha256=sha(r["base"]),
            status=r["status"],
            report={"results": results},
            tool_version=r.get("tool_version", __version__),
        )
    for val in case.get("validations", []):
        catalog.record_validation(
            "acme/p",
            val["version"],
            base_weights_sha256=sha(val["base"]),
            scores={"acc": 0.9},
            verdict=val["verdict"],
            thresholds={"acc": 0.8},
        )


@pytest.mark.parametrize("case_file", CASES, ids=[c.stem for c in CASES])
def test_resolve_case(case_file: Path, catalog: Catalog, settings: Settings) -> None:
    case = json.loads(case_file.read_text())
    seed(catalog, case)
    expect = case["expect"]

    def run() -> Any:
        return resolve_onto(
            settings, case["request"], onto=sha(case["onto"]), allow_unrelated=case.get("allow_unrelated", False),
            explain=True,
        )  # fmt: skip

    if "error" in expect:
        with pytest.raises(errors.NotFoundError) as info:
            run()
        assert re.search(expect["error"], info.value.message), info.value.message
        if "hint" in expect:
            assert info.value.hint is not None and expect["hint"] in info.value.hint
        return
    res = run()
    assert res.chosen == expect["chosen"]
    by_ref = {c.ref: c for c in res.candidates}
    for ref, rank in expect.get("ranks", {}).items():
        assert by_ref[ref].rank == rank, by_ref[ref]
    for ref, text in expect.get("reason", {}).items():
        assert text in by_ref[ref].reason
    for ref, text in expect.get("rejected", {}).items():
        assert by_ref[ref].rejected is not None and text in by_ref[ref].rejected
    for ref, status in expect.get("check", {}).items():
        assert by_ref[ref].check == status
    for ref in expect.get("absent", []):
        assert ref not in by_ref
    if "order" in expect:
        assert [c.ref for c in res.candidates] == expect["order"]


def test_cases_cover_the_issue() -> None:
    assert len(CASES) >= 15


def test_lazy_checking_stops_at_the_first_fit(catalog: Catalog, settings: Settings) -> None:
    """Without --explain, candidates ranked below the chosen one are not checked."""
    case = json.loads((Path(__file__).parent / "resolve_cases" / "nearer_ancestor_first.json").read_text())
    seed(catalog, case)
    res = resolve_onto(settings, "acme/p", onto=sha("theta2"))
    by_ref = {c.ref: c for c in res.candidates}
    assert res.chosen == "acme/p==1.0.0" and by_ref["acme/p==1.0.0"].check == "pass"
    assert by_ref["acme/p==2.0.0"].check is None and by_ref["acme/p==2.0.0"].rejected is None


def test_cli_json_and_exit_codes(catalog: Catalog, settings: Settings) -> None:
    case = json.loads((Path(__file__).parent / "resolve_cases" / "failing_candidate_skipped.json").read_text())
    seed(catalog, case)
    db = ["--home", str(settings.home), "--db", settings.database_url]
    r = run_cli([*db, "resolve", "acme/p", "--onto", sha("theta2"), "--json"])
    assert r.code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["chosen"] == "acme/p==1.0.0" and data["base"] == sha("theta2")
    assert {c["ref"]: c["rejected"] is not None for c in data["candidates"]} == {
        "acme/p==2.0.0": True,
        "acme/p==1.0.0": False,
    }
    assert set(data["candidates"][0]) >= {"ref", "rank", "reason", "rejected"}
    r = run_cli([*db, "resolve", "acme/p", "--onto", sha("theta2")])
    assert (r.code, r.stdout.strip()) == (0, "acme/p==1.0.0")
    r = run_cli([*db, "resolve", "acme/p>=2", "--onto", sha("theta2"), "--json"])
    assert r.code == 3
    assert json.loads(r.stdout)["chosen"] is None
    assert "checks failed: shapes" in r.stderr
    r = run_cli([*db, "resolve", "acme/p>=2", "--onto", sha("theta2"), "--explain"])
    assert r.code == 3 and "rejected" in r.stdout
    r = run_cli([*db, "resolve", "acme/p>=9", "--onto", sha("theta2"), "--json"])
    assert r.code == 3 and json.loads(r.stdout) == {"request": "acme/p>=9", "base": None, "chosen": None,
                                                    "candidates": []}  # fmt: skip
    assert "no version of acme/p>=9 matches" in r.stderr


def test_error_carries_the_resolution(catalog: Catalog, settings: Settings) -> None:
    seed(catalog, json.loads((Path(__file__).parent / "resolve_cases" / "nothing_compatible.json").read_text()))
    with pytest.raises(NoCompatibleVersionError) as info:
        resolve_onto(settings, "acme/p", onto=sha("theta2"))
    assert info.value.exit_code == 3
    assert [c.check for c in info.value.resolution.candidates] == ["fail", "fail"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("acme/p", True), ("acme/p>=1", True), ("acme/p@stable", True), ("acme/p==1.0", False), ("acme/p@1.0", False),
     ("./adapter", False), ("hf://acme/p@1.0", False)],
)  # fmt: skip
def test_needs_resolution(text: str, expected: bool) -> None:
    assert needs_resolution(text) is expected
