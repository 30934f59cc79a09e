"""patchctl lineage: the tree of bases, versions on their source base, checks and validations on bases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from catalogtools import base_facts, make_manifest, run_cli, sha

from patchctl.lineage import lineage
from patchctl.registry.store import Catalog
from patchctl.settings import Settings


def _seed(catalog: Catalog) -> None:
    for name in ("theta", "theta1", "theta2", "fork", "other"):
        catalog.add_base(base_facts(name))
    catalog.add_lineage(sha("theta1"), sha("theta"), "update")
    catalog.add_lineage(sha("theta2"), sha("theta1"), "continued-pretraining")
    catalog.add_lineage(sha("fork"), sha("theta"), "finetune")
    for version, base in [("1.0.0", "theta"), ("2.0.0", "theta1"), ("3.0.0", "other")]:
        mf = make_manifest("acme/p", version, content=version, base=base)
        catalog.add_version(mf, manifest_sha256=sha(mf.to_json()))
    mf = make_manifest("acme/q", "0.1.0", content="q", base="theta2")
    catalog.add_version(mf, manifest_sha256=sha(mf.to_json()))
    catalog.record_compat_report("acme/p", "1.0.0", base_weights_sha256=sha("theta2"), status="fail", report={},
                                 tool_version="x")  # fmt: skip
    catalog.record_compat_report("acme/p", "1.0.0", base_weights_sha256=sha("theta2"), status="warn", report={},
                                 tool_version="x")  # fmt: skip
    catalog.record_validation("acme/p", "2.0.0", base_weights_sha256=sha("theta2"), scores={}, verdict="pass",
                              thresholds={})  # fmt: skip


def test_lineage_of_a_base(catalog: Catalog, settings: Settings) -> None:
    _seed(catalog)
    g = lineage(settings, sha("theta2"))
    assert {b.source for b in g.bases} == {"/models/theta", "/models/theta1", "/models/theta2", "/models/fork"}
    assert {(e.child, e.parent, e.relation) for e in g.edges} == {
        (sha("theta1"), sha("theta"), "update"),
        (sha("theta2"), sha("theta1"), "continued-pretraining"),
        (sha("fork"), sha("theta"), "finetune"),
    }
    assert {(v.ref, v.source_weights_sha256) for v in g.versions} == {
        ("acme/p==1.0.0", sha("theta")),
        ("acme/p==2.0.0", sha("theta1")),
        ("acme/q==0.1.0", sha("theta2")),
    }
    assert {(r.ref, r.base_weights_sha256, r.kind, r.status) for r in g.results} == {
        ("acme/p==1.0.0", sha("theta2"), "check", "warn"),  # the newest report of the pair
        ("acme/p==2.0.0", sha("theta2"), "validation", "pass"),
    }


def test_lineage_of_a_patch_and_cli(catalog: Catalog, settings: Settings) -> None:
    _seed(catalog)
    g = lineage(settings, "acme/p")
    assert {v.ref for v in g.versions} == {"acme/p==1.0.0", "acme/p==2.0.0", "acme/p==3.0.0"}
    assert "/models/other" in {b.source for b in g.bases}
    db = ["--home", str(settings.home), "--db", settings.database_url]
    r = run_cli([*db, "lineage", "acme/p"])
    assert r.code == 0, r.stderr
    out = r.stdout
    # theta2 hangs under theta1 under theta; the versions under the base they were made on
    assert out.index(sha("theta")[:12]) < out.index("patch acme/p==1.0.0") < out.index(sha("theta1")[:12])
    assert out.index(sha("theta1")[:12]) < out.index("--continued-pretraining--> " + sha("theta2")[:12])
    assert "checked acme/p==1.0.0: warn" in out and "validated acme/p==2.0.0: pass" in out
    r = run_cli([*db, "lineage", sha("fork")[:12], "--json"])
    data = json.loads(r.stdout)
    assert {b["source"] for b in data["bases"]} == {"/models/theta", "/models/theta1", "/models/theta2", "/models/fork"}
    r = run_cli([*db, "lineage", "acme/nothing"])
    assert r.code == 3


def test_per_base_limit(catalog: Catalog, settings: Settings) -> None:
    catalog.add_base(base_facts("theta"))
    for i in range(5):
        mf = make_manifest("acme/p", f"1.0.{i}", content=str(i), base="theta")
        catalog.add_version(mf, manifest_sha256=sha(mf.to_json()))
    g = lineage(settings, sha("theta"), per_base_limit=2)
    assert [v.ref for v in g.versions] == ["acme/p==1.0.4", "acme/p==1.0.3"]
    assert g.more_versions == {sha("theta"): 3}


_PROBE = """
import sys
from patchctl.cli import cli
from patchctl.cli._errors import run_with_error_handling
code = run_with_error_handling(cli, sys.argv[1:], prog_name="patchctl")
heavy = sorted(m for m in ("torch", "transformers", "peft") if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
sys.exit(code)
"""


def test_resolve_and_lineage_do_not_import_torch(tmp_path: Path, pico_llama: Path) -> None:
    env = {**os.environ, "PATCHCTL_HOME": str(tmp_path / "home"), "PYTHONPATH": str(Path(__file__).parents[2])}
    for args in (
        ["resolve", "acme/none", "--onto", str(pico_llama)],
        ["lineage", "acme/none"],
        ["lineage", str(pico_llama)],
    ):
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env=env, timeout=120
        )
        assert proc.returncode in (0, 3), proc.stderr
        assert "HEAVY=\n" in proc.stderr, (args, proc.stderr)
