"""Many processes writing one catalog at once (CI matrix jobs): no lost rows, one winner per version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from patchctl.registry.store import Catalog

_WORKER = textwrap.dedent(
    """
    import json, sys
    sys.path[:0] = [{tests!r}]
    from catalogtools import make_manifest, sha
    from patchctl.errors import ConflictError
    from patchctl.registry.db import make_engine
    from patchctl.registry.store import Catalog

    url, worker, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    cat = Catalog(make_engine(url))
    import os, time
    while not os.path.exists(go):  # start together: every process is imported and connected
        time.sleep(0.005)
    out = {{"created": 0, "noop": 0, "conflict": 0}}
    jobs = [("acme/own-%d" % worker, "1.0.%d" % i, "own%d-%d" % (worker, i)) for i in range(3)]
    jobs += [("acme/shared", "1.0.0", "same")]                  # identical content from everyone
    jobs += [("acme/contested", "2.0.0", "w%d" % worker)]       # different content: one winner
    for name, version, content in jobs:
        mf = make_manifest(name, version, content=content, base="base-%d" % (worker % 2))
        try:
            res = cat.add_version(mf, manifest_sha256=sha(mf.to_json()))
            out["created" if res.created else "noop"] += 1
        except ConflictError:
            out["conflict"] += 1
    cat.set_alias("acme/shared", "stable", "1.0.0")
    cat.close()
    print(json.dumps(out))
    """
)


def test_concurrent_pushes_from_several_processes(catalog: Catalog, tmp_path: Path) -> None:
    n = 6
    script = tmp_path / "worker.py"
    script.write_text(_WORKER.format(tests=str(Path(__file__).parents[1])))
    url = catalog.engine.url.render_as_string(hide_password=False)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), url, str(w), str(tmp_path / "go")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for w in range(n)
    ]
    time.sleep(1.0)
    (tmp_path / "go").touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-3000:]
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    total = {k: sum(r[k] for r in results) for k in ("created", "noop", "conflict")}
    # 3 own versions per worker + 1 shared + 1 contested winner; everyone else no-op or conflict
    assert total["created"] == 3 * n + 2
    assert total["noop"] == n - 1
    assert total["conflict"] == n - 1
    names = {p.name: p.versions for p in catalog.list_patches()}
    assert names == {**{f"acme/own-{w}": 3 for w in range(n)}, "acme/shared": 1, "acme/contested": 1}
    assert len(catalog.list_bases()) == 0  # add_version without base facts records none
    assert [a.version for a in catalog.list_aliases("acme/shared")] == ["1.0.0"]


@pytest.mark.parametrize("n", [4])
def test_concurrent_base_adds_are_idempotent(catalog: Catalog, tmp_path: Path, n: int) -> None:
    script = tmp_path / "bases.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path[:0] = [{str(Path(__file__).parents[1])!r}]
            from catalogtools import sha
            from patchctl.registry.db import make_engine
            from patchctl.registry.store import Catalog
            from patchctl.schemas.base import BaseFacts, Family
            cat = Catalog(make_engine(sys.argv[1]))
            for tag in ("t0", "t1", "t2"):
                cat.add_base(BaseFacts(source="/m/" + tag, weights_sha256=sha(tag), structure_sha256=sha("s"),
                             family=Family(model_type="llama"), config={{}}, weight_files=(), tensors={{}}))
            cat.add_lineage(sha("t1"), sha("t0"))
            cat.add_lineage(sha("t2"), sha("t1"))
            cat.close()
            """
        )
    )
    url = catalog.engine.url.render_as_string(hide_password=False)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")]),
    }
    procs = [subprocess.Popen([sys.executable, str(script), url], stderr=subprocess.PIPE, env=env) for _ in range(n)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-3000:]
    assert len(catalog.list_bases()) == 3
    assert len(catalog.list_lineage()) == 2
