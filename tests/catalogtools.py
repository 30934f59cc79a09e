"""Test helpers for the catalog: synthetic manifests, snapshots of catalog + store, a CLI runner.

Importable from any test (``pythonpath = ["tests"]``).
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from sqlalchemy import select

from patchctl.registry.db import make_engine
from patchctl.registry.models import Base
from patchctl.schemas.base import BaseFacts, Family, TensorInfo, WeightFile
from patchctl.schemas.manifest import FileEntry, LoraSpec, Manifest, SourceBase
from patchctl.settings import Settings

FAMILY = Family(model_type="llama", architectures=("LlamaForCausalLM",), hidden_size=32, num_hidden_layers=2)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def make_manifest(
    name: str = "acme/sst2", version: str = "1.0.0", *, content: str = "a", base: str = "base0", task: str = "sst2"
) -> Manifest:
    """A valid manifest whose file digests derive from ``content`` (same content → same digest)."""
    return Manifest(
        name=name,
        version=version,
        task=task,
        created_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        patchctl_version="0.1.0",
        lora=LoraSpec(r=4, lora_alpha=8, target_modules=("q_proj", "v_proj"), lora_pairs=4, total_parameters=896),
        source_base=SourceBase(
            repo=f"/models/{base}", weights_sha256=sha(base), structure_sha256=sha("structure"), family=FAMILY
        ),
        files=(
            FileEntry(path="adapter_config.json", sha256=sha(content + "cfg"), size=100),
            FileEntry(path="adapter_model.safetensors", sha256=sha(content + "w"), size=4608),
        ),
    )


def snapshot_db(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every catalog table (sorted), to assert that a failed operation changed nothing."""
    engine = make_engine(url)
    try:
        out: dict[str, list[tuple[Any, ...]]] = {}
        with engine.connect() as conn:
            for table in Base.metadata.sorted_tables:
                rows = conn.execute(select(table)).all()
                out[table.name] = sorted((tuple(repr(v) for v in r) for r in rows), key=repr)
        return out
    finally:
        engine.dispose()


def snapshot_store(settings: Settings) -> list[tuple[str, int]]:
    root = settings.store_dir
    if not root.exists():
        return []
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*") if p.is_file())


def snapshot(settings: Settings) -> tuple[Any, ...]:
    return snapshot_db(settings.database_url), snapshot_store(settings)


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(args: list[str], env: dict[str, str] | None = None) -> CliResult:
    """Run ``patchctl ARGS`` through the real entry point's error handler (exit codes, messages)."""
    from patchctl.cli import cli
    from patchctl.cli._errors import run_with_error_handling

    runner = CliRunner()
    with runner.isolation(env=env) as (out, err, _):
        try:
            code = run_with_error_handling(cli, [str(a) for a in args], prog_name="patchctl")
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
    return CliResult(code, out.getvalue().decode(), err.getvalue().decode())


def settings_for(home: Path, db_url: str) -> Settings:
    return Settings(home=home, database_url=db_url)


def base_facts(name: str) -> BaseFacts:
    """Facts of a synthetic base whose weights fingerprint is ``sha(name)`` (one tensor, llama family)."""
    return BaseFacts(
        source=f"/models/{name}",
        weights_sha256=sha(name),
        structure_sha256=sha("structure"),
        family=FAMILY,
        config={"model_type": "llama"},
        weight_files=(WeightFile(path="model.safetensors", sha256=sha(name + "file"), size=1),),
        tensors={"w": TensorInfo(dtype="F32", shape=(2, 2), file="model.safetensors")},
    )


BENCH_CATALOG = Path(__file__).resolve().parents[1] / "benchmarks" / "catalog" / "bench_catalog.py"


def load_bench_catalog() -> Any:
    """``benchmarks/catalog/bench_catalog.py`` imported as a module (it is a script, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_catalog", BENCH_CATALOG)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_catalog"] = mod
    spec.loader.exec_module(mod)
    return mod
