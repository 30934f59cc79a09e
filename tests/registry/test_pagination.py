"""Narrow listings and pages: list, show's reports and installs, base list (catalog and CLI)."""

from __future__ import annotations

import json

from catalogtools import base_facts, make_manifest, run_cli, sha

from patchctl.registry.store import Catalog
from patchctl.settings import Settings


def _add(catalog: Catalog, name: str, version: str, *, yank: bool = False, task: str = "t") -> None:
    mf = make_manifest(name, version, content=name + version, task=task)
    catalog.add_version(mf, manifest_sha256=sha(mf.to_json()))
    if yank:
        catalog.yank(name, version)


def test_list_pages_and_latest(catalog: Catalog) -> None:
    for i in range(5):
        _add(catalog, f"acme/p{i}", "1.0.0")
    _add(catalog, "acme/p0", "2.0.0", task="newer")
    _add(catalog, "acme/p0", "3.0.0", yank=True)
    _add(catalog, "acme/p1", "2.0.0rc1")  # a final release wins over a newer pre-release
    _add(catalog, "acme/p2", "2.0.0rc1")
    catalog.yank("acme/p2", "1.0.0")  # only a pre-release left: it is the latest
    catalog.set_alias("acme/p0", "stable", "1.0.0")
    first = catalog.list_patches(limit=2)
    assert [p.name for p in first] == ["acme/p0", "acme/p1"]
    p0, p1 = first
    assert (p0.latest, p0.task, p0.versions, p0.yanked, p0.aliases) == ("2.0.0", "newer", 3, 1, {"stable": "1.0.0"})
    assert p1.latest == "1.0.0"
    second = catalog.list_patches(limit=2, after="acme/p1")
    assert [p.name for p in second] == ["acme/p2", "acme/p3"] and second[0].latest == "2.0.0rc1"
    assert [p.name for p in catalog.list_patches(limit=2, after="acme/p3")] == ["acme/p4"]
    assert [p.name for p in catalog.search_patches("P3")] == ["acme/p3"]
    assert catalog.search_patches("%") == []


def test_reports_latest_per_base_and_pages(catalog: Catalog) -> None:
    _add(catalog, "acme/p", "1.0.0")
    ids = []
    for base, status in [("a", "fail"), ("a", "pass"), ("b", "warn"), ("a", "warn")]:
        rec = catalog.record_compat_report(
            "acme/p", "1.0.0", base_weights_sha256=sha(base), status=status, report={}, tool_version="x"
        )
        ids.append(rec.id)
    latest = catalog.list_compat_reports("acme/p", "1.0.0", latest_per_base=True)
    assert [(r.base_weights_sha256, r.status) for r in latest] == [(sha("a"), "warn"), (sha("b"), "warn")]
    every = catalog.list_compat_reports("acme/p", "1.0.0")
    assert [r.id for r in every] == ids[::-1]
    page1 = catalog.list_compat_reports("acme/p", "1.0.0", limit=3)
    page2 = catalog.list_compat_reports("acme/p", "1.0.0", limit=3, before=page1[-1].id)
    assert [r.id for r in page1 + page2] == ids[::-1]
    for i in range(3):
        catalog.record_install("acme/p", "1.0.0", base_weights_sha256=sha("a"), out_path=f"/o{i}", format="merged")
    inst = catalog.list_installs("acme/p", limit=2)
    assert [r.out_path for r in inst] == ["/o2", "/o1"]
    assert [r.out_path for r in catalog.list_installs("acme/p", limit=2, before=inst[-1].id)] == ["/o0"]


def test_cli_pages(catalog: Catalog, settings: Settings) -> None:
    for i in range(3):
        _add(catalog, f"acme/p{i}", "1.0.0")
        catalog.add_base(base_facts(f"b{i}"))
    catalog.add_lineage(sha("b2"), sha("b1"))
    for base in ("a", "a", "b"):
        catalog.record_compat_report(
            "acme/p0", "1.0.0", base_weights_sha256=sha(base), status="pass", report={}, tool_version="x"
        )
    db = ["--home", str(settings.home), "--db", settings.database_url]
    r = run_cli([*db, "list", "--limit", "2", "--json"])
    assert [p["name"] for p in json.loads(r.stdout)] == ["acme/p0", "acme/p1"]
    assert "--cursor acme/p1" in r.stderr
    r = run_cli([*db, "list", "--limit", "2", "--cursor", "acme/p1", "--json"])
    assert [p["name"] for p in json.loads(r.stdout)] == ["acme/p2"] and "more:" not in r.stderr
    r = run_cli([*db, "show", "acme/p0", "--json"])
    assert len(json.loads(r.stdout)["compat_reports"]) == 2
    r = run_cli([*db, "show", "acme/p0", "--all-reports", "--json"])
    assert len(json.loads(r.stdout)["compat_reports"]) == 3
    r = run_cli([*db, "show", "acme/p0", "--all-reports", "--limit", "1", "--json"])
    assert len(json.loads(r.stdout)["compat_reports"]) == 1 and "--reports-cursor" in r.stderr
    r = run_cli([*db, "base", "list", "--limit", "2", "--json"])
    data = json.loads(r.stdout)
    assert [b["source"] for b in data["bases"]] == ["/models/b0", "/models/b1"] and data["edges"] == []
    r = run_cli([*db, "base", "list", "--cursor", sha("b1"), "--json"])
    data = json.loads(r.stdout)
    assert [b["source"] for b in data["bases"]] == ["/models/b2"] and len(data["edges"]) == 1
