"""The catalog benchmark's small mode runs in the suite: it seeds, migrates, and every timed read works."""

from __future__ import annotations

from pathlib import Path

import pytest
from catalogtools import load_bench_catalog


def test_small_benchmark_runs(db_url: str, tmp_path: Path) -> None:
    bench = load_bench_catalog()
    data = bench.main(["--small", "--db", db_url, "--cli-runs", "0", "--json", str(tmp_path / "out.json")])
    ops = data["in_process_ms"]
    assert set(ops) == {"resolve (specifier)", "resolve (alias)", "resolve (for a base)", "list (page of 100)",
                        "show", "search", "lineage (a patch)"}  # fmt: skip
    assert all(0 < p50 <= p99 and 0 <= cpu50 <= cpu99 for p50, p99, cpu50, cpu99 in ops.values())
    assert (tmp_path / "out.json").is_file()


def test_seeded_catalog_answers_like_the_store_says(tmp_path: Path) -> None:
    """The bulk-seeded rows are valid catalog rows: the resolver for a base ranks a validated version first."""
    bench = load_bench_catalog()
    url = f"sqlite:///{tmp_path / 'c.db'}"
    from patchctl.registry.db import make_engine, upgrade
    from patchctl.registry.store import Catalog
    from patchctl.resolving import ResolveTarget, resolve_with_catalog
    from patchctl.settings import Settings

    engine = make_engine(url)
    upgrade(engine)
    size = bench.SMALL
    bench.seed(engine, size, progress=False)
    cat = Catalog(engine)
    try:
        last = bench.base_sha(0, size.generations - 1)
        res = resolve_with_catalog(
            Settings(home=tmp_path / "h", database_url=url), cat, "bench/p00000", ResolveTarget(last, None, "t")
        )
        by = {c.ref: c for c in res.candidates}
        validated = f"bench/p00000==0.{size.versions_per_patch - 2}.0"
        assert by[validated].rank == 1
        assert cat.list_patches(limit=5)[0].versions == size.versions_per_patch
        assert cat.get_version("bench/p00000", "0.1.0").manifest.name == "bench/p00000"
    finally:
        cat.close()


@pytest.mark.slow
def test_small_benchmark_times_the_cli(tmp_path: Path) -> None:
    """The CLI part: every command row runs (a fresh process each) and reports its times."""
    bench = load_bench_catalog()
    url = f"sqlite:///{tmp_path / 'c.db'}"
    data = bench.main(["--small", "--db", url, "--cli-runs", "1", "--json", str(tmp_path / "out.json")])
    cli = data["cli_s"]
    assert {"--help (start-up floor)", "list", "show", "resolve --onto", "lineage"} <= set(cli)
    assert any(k.startswith("search") for k in cli)
    assert all(0 < median <= worst and cpu > 0 for median, worst, cpu in cli.values())
    assert data["load_average"]["before_cli"] and "commit" in data
