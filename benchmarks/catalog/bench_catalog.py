"""Benchmark: the catalog at scale (100,000 versions, 1,000 patches, 200 bases, 1,000,000 check reports).

Seeds a fresh catalog (migrated with Alembic, then bulk inserts: ``executemany`` on SQLite, ``COPY``
on PostgreSQL), then times each read many times with random arguments and reports p50 / p99:

  resolve (specifier)   Catalog.resolve("org/name>=2.5,<7")
  resolve (alias)       Catalog.resolve("org/name@stable")
  resolve (for a base)  the resolver for a base given by fingerprint (ranks, cached reports)
  list                  a page of 100 patches (patchctl list)
  show                  what `patchctl show` reads (latest report per base, 20 installs)
  search                patches whose name contains a string
  lineage               the lineage graph around a patch (every version, its bases, results)

and the CLI end to end (a fresh ``python -m patchctl`` process per run) for list, show, resolve
and lineage.

    nice -n 10 python benchmarks/catalog/bench_catalog.py --db sqlite:////tmp/cat.db
    nice -n 10 python benchmarks/catalog/bench_catalog.py --db postgresql+psycopg://user@host/newdb
    python benchmarks/catalog/bench_catalog.py --small        # seconds; used by the test suite
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from sqlalchemy import Table, text  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from patchctl import __version__  # noqa: E402
from patchctl.registry import models as m  # noqa: E402
from patchctl.registry.db import make_engine, upgrade  # noqa: E402
from patchctl.registry.resolver import NoCompatibleVersionError, version_sort_key  # noqa: E402
from patchctl.registry.store import Catalog  # noqa: E402
from patchctl.resolving import ResolveTarget, resolve_with_catalog  # noqa: E402
from patchctl.schemas.refs import PatchRef, parse_patch_ref  # noqa: E402
from patchctl.settings import Settings  # noqa: E402

TARGET_MS = 20.0
CLI_TARGET_S = 0.5


@dataclass(frozen=True)
class Size:
    patches: int
    versions_per_patch: int
    chains: int  # base lineages (families of generations)
    generations: int  # bases per chain
    reports: int
    repeat: int
    spec: str  # the specifier timed by "resolve (specifier)"

    @property
    def versions(self) -> int:
        return self.patches * self.versions_per_patch

    @property
    def bases(self) -> int:
        return self.chains * self.generations


FULL = Size(
    patches=1000, versions_per_patch=100, chains=20, generations=10, reports=1_000_000, repeat=300, spec=">=2.5,<7"
)
SMALL = Size(patches=20, versions_per_patch=10, chains=4, generations=5, reports=2_000, repeat=20, spec=">=0.2,<0.8")


def _sha(i: str) -> str:
    import hashlib

    return hashlib.sha256(i.encode()).hexdigest()


NOW = datetime(2026, 11, 29, tzinfo=timezone.utc)
FAMILY = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "num_hidden_layers": 32,
          "vocab_size": 128256, "dtype": "bfloat16", "tie_word_embeddings": False}  # fmt: skip


def _manifest(name: str, version: str, base_sha: str) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "name": name,
        "version": version,
        "task": "bench",
        "description": "",
        "license": None,
        "created_at": NOW.isoformat(),
        "patchctl_version": __version__,
        "lora": {
            "r": 16,
            "lora_alpha": 32.0,
            "use_rslora": False,
            "target_modules": ["q_proj", "v_proj"],
            "lora_pairs": 64,
            "total_parameters": 1000,
        },
        "source_base": {
            "repo": "/models/base",
            "revision": None,
            "weights_sha256": base_sha,
            "structure_sha256": _sha("structure"),
            "family": FAMILY,
        },
        "files": [
            {"path": "adapter_config.json", "sha256": _sha(name + version + "c"), "size": 100},
            {"path": "adapter_model.safetensors", "sha256": _sha(name + version + "w"), "size": 4096},
        ],
    }


def _valid_manifest_template() -> dict[str, Any]:
    """Fill the template from the real schema, so that show can parse every seeded manifest."""
    from patchctl.schemas.manifest import Manifest

    doc = _manifest("bench/p00000", "1.0.0", _sha("b"))
    try:
        return Manifest.model_validate(doc).model_dump(mode="json")
    except Exception:
        sys.path.insert(0, str(REPO_ROOT / "tests"))
        from catalogtools import make_manifest

        return make_manifest("bench/p00000", "1.0.0").model_dump(mode="json")


def base_sha(chain: int, gen: int) -> str:
    return _sha(f"base-{chain}-{gen}")


def seed(engine: Engine, size: Size, *, progress: bool = True) -> None:
    """Bulk-insert a catalog of ``size`` (the schema must be at head and empty)."""
    template = _valid_manifest_template()
    rng = random.Random(0)
    pg = engine.url.get_backend_name() == "postgresql"
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        if progress:
            print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    bases = []
    edges = []
    for c in range(size.chains):
        for g in range(size.generations):
            bid = c * size.generations + g + 1
            bases.append({"id": bid, "source": f"hf://org/base-{c}", "revision": f"r{g}",
                          "weights_sha256": base_sha(c, g), "structure_sha256": _sha("structure"),
                          "family": FAMILY, "created_at": NOW})  # fmt: skip
            if g:
                edges.append({"child_id": bid, "parent_id": bid - 1, "relation": "update", "created_at": NOW})
    patches, versions, aliases, installs, validations = [], [], [], [], []
    vid = 0
    version_chain: list[tuple[int, int]] = []  # per version: (chain, generation of source)
    for p in range(size.patches):
        name = f"bench/p{p:05d}"
        chain = p % size.chains
        patches.append({"id": p + 1, "namespace": "bench", "name": name, "created_at": NOW})
        for j in range(size.versions_per_patch):
            vid += 1
            ver = f"{j // 10}.{j % 10}.0"
            gen = min(size.generations - 1, j * size.generations // size.versions_per_patch)
            bsha = base_sha(chain, gen)
            mf = dict(template, name=name, version=ver)
            mf["source_base"] = dict(template["source_base"], weights_sha256=bsha)
            versions.append({"id": vid, "patch_id": p + 1, "version": ver, "sort_key": version_sort_key(ver),
                             "content_digest": _sha(name + ver), "manifest_sha256": _sha(name + ver + "m"),
                             "manifest": mf, "task": "bench", "source_weights_sha256": bsha,
                             "yanked": j % 17 == 5, "yank_reason": None, "created_at": NOW})  # fmt: skip
            version_chain.append((chain, gen))
        aliases.append({"patch_id": p + 1, "alias": "stable", "version_id": vid - 3, "updated_at": NOW})
        validations.append({"version_id": vid - 1, "base_weights_sha256": base_sha(chain, size.generations - 1),
                            "scores": {"acc": 0.9}, "verdict": "pass", "thresholds": {"acc": 0.8},
                            "created_at": NOW})  # fmt: skip
        for k in range(5):
            installs.append({"version_id": vid - k, "base_weights_sha256": base_sha(chain, size.generations - 1),
                             "out_path": f"/srv/out/{p}/{k}", "format": "merged", "forced": False,
                             "report_id": None, "decision": None, "created_at": NOW})  # fmt: skip

    def reports() -> Iterator[dict[str, Any]]:
        for i in range(size.reports):
            v = rng.randrange(1, vid + 1)
            chain, gen = version_chain[v - 1]
            target = rng.randrange(gen, size.generations)
            status = "pass" if rng.random() < 0.8 else rng.choice(("warn", "fail"))
            yield {"version_id": v, "base_weights_sha256": base_sha(chain, target), "status": status,
                   "report": {"results": []}, "tool_version": __version__, "created_at": NOW}  # fmt: skip
            if i and i % 200_000 == 0:
                log(f"{i} reports")

    tables: list[tuple[Table, Any]] = [
        (m.BaseModel.__table__, bases), (m.BaseLineage.__table__, edges), (m.Patch.__table__, patches),
        (m.Version.__table__, versions), (m.Alias.__table__, aliases), (m.Validation.__table__, validations),
        (m.Install.__table__, installs), (m.CompatReport.__table__, reports()),
    ]  # type: ignore[list-item]  # fmt: skip
    for table, rows in tables:
        if pg:
            _copy(engine, table, rows)
        else:
            _executemany(engine, table, rows)
        log(f"{table.name} seeded")
    if pg:
        with engine.begin() as conn:
            for table, _ in tables:
                if "id" in table.c:
                    conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                                      f"(SELECT COALESCE(MAX(id), 1) FROM {table.name}))"))  # fmt: skip
            conn.execute(text("ANALYZE"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    log("analyzed")


def _executemany(engine: Engine, table: Table, rows: Any, chunk: int = 50_000) -> None:
    batch: list[dict[str, Any]] = []
    with engine.begin() as conn:
        for row in rows:
            batch.append(row)
            if len(batch) >= chunk:
                conn.execute(table.insert(), batch)
                batch = []
        if batch:
            conn.execute(table.insert(), batch)


def _copy(engine: Engine, table: Table, rows: Any) -> None:
    """PostgreSQL COPY ... FROM STDIN (text rows through psycopg's copy protocol)."""
    cols: list[str] | None = None
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        it = iter(rows)
        first = next(it, None)
        if first is None:
            return
        cols = list(first)
        with cur.copy(f"COPY {table.name} ({', '.join(cols)}) FROM STDIN") as copy:  # type: ignore[attr-defined]
            for r in itertools.chain([first], it):
                copy.write_row([json.dumps(v) if isinstance(v, (dict, list)) else v for v in r.values()])
        raw.commit()
    finally:
        raw.close()


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * len(values)) - 1))]


class _GcClock:
    """Time spent in the cyclic garbage collector (``gc.callbacks``), to tell its pauses from the
    reads' own time in the slow runs."""

    def __init__(self) -> None:
        self.ms = 0.0
        self.collections = 0
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.ms += (time.perf_counter() - self._t0) * 1000
            self.collections += 1


#: per operation: collections during its timed runs, their total ms, and the p99 of wall time
#: with each run's collection time taken out (filled by :func:`_timed`)
GC_STATS: dict[str, dict[str, float]] = {}


def _timed(fn: Callable[[], Any], repeat: int, label: str = "") -> tuple[float, float, float, float]:
    """p50 and p99 of wall time, and p50 and p99 of this process's CPU time (ms). On a loaded
    machine wall time includes waiting for a core; CPU time does not (for PostgreSQL it leaves
    out the server's work)."""
    import gc

    fn()  # warm caches (first query plans)
    clock = _GcClock()
    gc.callbacks.append(clock)
    wall, cpu, no_gc = [], [], []
    try:
        for _ in range(repeat):
            before = clock.ms
            t, c = time.perf_counter(), time.process_time()
            fn()
            wall.append((time.perf_counter() - t) * 1000)
            cpu.append((time.process_time() - c) * 1000)
            no_gc.append(wall[-1] - (clock.ms - before))
    finally:
        gc.callbacks.remove(clock)
    GC_STATS[label] = {"collections": clock.collections, "ms": round(clock.ms, 2),
                       "p99_wall_without_gc_ms": round(_pct(no_gc, 0.99), 2)}  # fmt: skip
    return statistics.median(wall), _pct(wall, 0.99), statistics.median(cpu), _pct(cpu, 0.99)


def measure(url: str, size: Size, *, seed_rng: int = 1) -> dict[str, tuple[float, float, float, float]]:
    """p50 / p99 (ms) of each read, on an open catalog (as a long-running service or a test holds it)."""
    rng = random.Random(seed_rng)
    engine = make_engine(url)
    cat = Catalog(engine)
    settings = Settings(home=Path(tempfile.mkdtemp(prefix="bench-home-")), database_url=url)
    names = [f"bench/p{p:05d}" for p in range(size.patches)]

    def ref(text_: str) -> PatchRef:
        r = parse_patch_ref(text_)
        assert isinstance(r, PatchRef)
        return r

    def resolve_spec() -> None:
        cat.resolve(ref(rng.choice(names) + size.spec))

    def resolve_alias() -> None:
        cat.resolve(ref(rng.choice(names) + "@stable"))

    def resolve_base() -> None:
        p = rng.randrange(size.patches)
        target = base_sha(p % size.chains, rng.randrange(size.generations))
        with contextlib.suppress(NoCompatibleVersionError):
            resolve_with_catalog(settings, cat, names[p], ResolveTarget(target, None, target))

    def list_page() -> None:
        after = rng.choice([None, *names[: max(1, size.patches - 100)]])
        assert cat.list_patches(limit=100, after=after)

    def show() -> None:
        v = cat.resolve(ref(rng.choice(names))).version
        sb = v.manifest.source_base.weights_sha256
        cat.get_base(sb)
        cat.list_version_rows(v.name)
        cat.list_aliases(v.name)
        cat.ancestors(sb)
        cat.list_remotes(v.name, v.version)
        cat.list_compat_reports(v.name, v.version, latest_per_base=True, limit=20)
        cat.list_validations(v.name, v.version)
        cat.list_installs(v.name, v.version, limit=20)

    def search() -> None:
        assert cat.search_patches(f"p{rng.randrange(size.patches):05d}", limit=20)

    def lineage() -> None:
        g = cat.lineage_graph(name=rng.choice(names))
        assert g.versions

    ops = {
        "resolve (specifier)": resolve_spec,
        "resolve (alias)": resolve_alias,
        "resolve (for a base)": resolve_base,
        "list (page of 100)": list_page,
        "show": show,
        "search": search,
        "lineage (a patch)": lineage,
    }
    try:
        return {name: _timed(fn, size.repeat, name) for name, fn in ops.items()}
    finally:
        cat.close()


def _directory_remote(root: Path, patches: int) -> Path:
    """A file:// remote with ``patches`` patches of one version each (patch.json only: search
    reads nothing else), for the ``search`` row."""
    template = _valid_manifest_template()
    for i in range(patches):
        name = f"bench/r{i:05d}"
        vdir = root / name / "versions" / "1.0.0"
        vdir.mkdir(parents=True)
        doc = {**template, "name": name, "version": "1.0.0"}
        (vdir / "patch.json").write_text(json.dumps(doc))
    return root


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else []


def measure_cli(url: str, size: Size, runs: int) -> dict[str, tuple[float, float, float]]:
    """A fresh ``python -m patchctl`` process per run: median wall time, max wall time and median
    CPU time (user + sys, s) of ``runs``. ``--help`` is the floor: interpreter start and imports.

    The processes read patchctl's bytecode from a cache (``PYTHONPYCACHEPREFIX``, written by one
    unmeasured run of each command), as an installed package's ``.pyc`` files are read: without
    it (``PYTHONDONTWRITEBYTECODE=1``, set on the development machine) every run would compile
    the package's sources again."""
    import resource

    home = tempfile.mkdtemp(prefix="bench-cli-home-")
    remote = _directory_remote(Path(tempfile.mkdtemp(prefix="bench-remote-")), 100)
    name = f"bench/p{size.patches // 2:05d}"
    target = base_sha((size.patches // 2) % size.chains, size.generations - 1)
    cmds = {
        "--help (start-up floor)": ["--help"],
        "list": ["list", "--limit", "100"],
        "show": ["show", name],
        "resolve --onto": ["resolve", name, "--onto", target],
        "lineage": ["lineage", name],
        "search (a file:// remote, 100 patches)": ["search", "--remote", f"file://{remote}"],
    }
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env |= {"PYTHONPATH": str(REPO_ROOT), "PYTHONPYCACHEPREFIX": tempfile.mkdtemp(prefix="bench-pycache-")}
    out = {}
    for label, args in cmds.items():
        times, cpu = [], []
        for i in range(runs + 1):
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "patchctl", "--home", home, "--db", url, *args],
                                  capture_output=True, text=True, env=env, cwd=home)  # fmt: skip
            wall = time.perf_counter() - t
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            if proc.returncode not in (0, 3):
                raise RuntimeError(f"patchctl {' '.join(args)} failed: {proc.stderr}")
            if i == 0:
                continue  # the warm-up run writes the bytecode cache
            times.append(wall)
            cpu.append((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
        out[label] = (statistics.median(times), max(times), statistics.median(cpu))
    return out


def table(
    size: Size, url_label: str, results: dict[str, tuple[float, float]], cli: dict[str, tuple[float, float]]
) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [f"{url_label}: {size.versions:,} versions, {size.patches:,} patches, {size.bases} bases, "
             f"{size.reports:,} check reports; {size.repeat} runs each; load average {load:.1f} "
             f"on {os.cpu_count()} cores", "",
             "| operation (in-process) | p50 ms | p99 ms | CPU p50 ms | CPU p99 ms |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    lines += [f"| {k} | {a:.2f} | {b:.2f} | {c:.2f} | {d:.2f} |" for k, (a, b, c, d) in results.items()]
    if cli:
        lines += ["", "| CLI, end to end | median wall s | max wall s | median CPU s |", "|---|---:|---:|---:|"]
        lines += [f"| patchctl {k} | {a:.3f} | {b:.3f} | {c:.3f} |" for k, (a, b, c) in cli.items()]
    return "\n".join(lines)


def _commit() -> str | None:
    """The git commit measured (``+dirty`` when patchctl/ has uncommitted changes)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=REPO_ROOT, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "patchctl"], capture_output=True, text=True,
                               cwd=REPO_ROOT, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", help="catalog URL of an EMPTY database (default: a SQLite file in a temp dir)")
    ap.add_argument("--small", action="store_true", help="a small catalog (seconds; the test suite runs it)")
    ap.add_argument("--no-seed", action="store_true", help="measure an already seeded catalog")
    ap.add_argument("--cli-runs", type=int, default=5, help="fresh processes per CLI command (0: skip)")
    ap.add_argument("--json", dest="json_out", help="write the figures here")
    args = ap.parse_args(argv)
    size = SMALL if args.small else FULL
    url = args.db or f"sqlite:///{tempfile.mkdtemp(prefix='bench-catalog-')}/catalog.db"
    engine = make_engine(url)
    try:
        if not args.no_seed:
            upgrade(engine)
            seed(engine, size, progress=not args.small)
    finally:
        engine.dispose()
    results = measure(url, size)
    print(table(size, url.split(":", 1)[0], results, {}), file=sys.stderr, flush=True)
    load_before = load_average()
    cli = measure_cli(url, size, args.cli_runs) if args.cli_runs else {}
    backend = url.split(":", 1)[0].split("+", 1)[0]
    print(table(size, backend, results, cli))
    data = {"backend": backend, "size": size.__dict__, "in_process_ms": results, "cli_s": cli,
            "targets": {"p99_ms": TARGET_MS, "cli_s": CLI_TARGET_S}, "commit": _commit(),
            "load_average": {"before_cli": load_before, "after_cli": load_average()}, "gc_during_runs": GC_STATS,
            "cpus": os.cpu_count()}  # fmt: skip
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(data, indent=2))
    return data


if __name__ == "__main__":
    main()
