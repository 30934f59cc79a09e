"""``install --onto hf://``: each shard is merged as soon as it is downloaded and verified; only
the shards the index names and the small non-weight files are fetched (test Hub server)."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
from catalogtools import CliResult, run_cli
from hubserver import HubServer

from patchctl.adapter import read_adapter
from patchctl.bases import INDEX_FILE, read_local_base
from patchctl.merge import execute_merge, plan_merge
from patchctl.remotes import remote_base_facts
from patchctl.remotes._bases import stream_base
from patchctl.schemas.refs import HubRef

NAME = "acme/sst2-lora"


def cli(home: Path, *args: object) -> CliResult:
    return run_cli(["--home", str(home), *[str(a) for a in args]])


@pytest.fixture
def base_with_consolidated(pico_llama_sharded: Path, pico_llama: Path, tmp_path: Path) -> Path:
    """A sharded base that also carries the whole model as ``consolidated.safetensors`` (as some
    Hub repos do), a README and a file in a subfolder: none of these is needed for a merge."""
    base = tmp_path / "base"
    shutil.copytree(pico_llama_sharded, base)
    shutil.copy(pico_llama / "model.safetensors", base / "consolidated.safetensors")
    (base / "README.md").write_text("# a base\n")
    (base / "original").mkdir()
    shutil.copy(pico_llama / "model.safetensors", base / "original" / "model.safetensors")
    return base


def test_install_onto_hub_fetches_only_index_shards_and_equals_local(
    hub: HubServer, base_with_consolidated: Path, llama_adapter: Path, pico_llama_sharded: Path, tmp_path: Path
) -> None:
    base = base_with_consolidated
    hub.seed_repo("acme/base", base)
    home = tmp_path / "home"
    r = cli(home, "push", llama_adapter, "--name", NAME, "--version", "1.0.0", "--task", "sst2", "--base", base)
    assert r.code == 0, r.stderr
    hub.reset_counters()
    r = cli(home, "install", NAME, "--onto", "hf://acme/base", "--out", tmp_path / "remote-out", "--json")
    assert r.code == 0, r.stderr
    assert r.stderr.strip() == ""  # --json: no progress
    whole_reads = [q for q in hub.requests_for("resolve", "GET") if not q.range]
    fetched = sorted(q.path.rsplit("/", 1)[-1] for q in whole_reads)
    shards = sorted(set(json.loads((base / INDEX_FILE).read_text())["weight_map"].values()))
    assert [f for f in fetched if f.endswith(".safetensors")] == shards  # each index shard once, nothing else
    assert "README.md" not in fetched and not any("original" in q.path for q in whole_reads)
    # not a byte of the copy of the weights beside the shards, nor of the subfolder (checks included)
    assert not [q for q in hub.requests_for("resolve") if "consolidated" in q.path or "/original/" in q.path]
    shard_bytes = sum((base / s).stat().st_size for s in shards)
    full = sum(q.bytes_out for q in whole_reads if q.path.endswith(".safetensors"))
    assert shard_bytes <= full < shard_bytes + 4096  # each shard once (plus HTTP headers)

    r = cli(home, "install", NAME, "--onto", base, "--out", tmp_path / "local-out")
    assert r.code == 0, r.stderr
    for s in shards:  # the same bytes as a local install
        assert (tmp_path / "remote-out" / s).read_bytes() == (tmp_path / "local-out" / s).read_bytes(), s
    assert not (tmp_path / "remote-out" / "consolidated.safetensors").exists()
    assert not (tmp_path / "local-out" / "consolidated.safetensors").exists()
    assert pico_llama_sharded.is_dir()


def test_each_shard_is_merged_as_soon_as_it_is_verified(
    hub: HubServer, pico_llama_sharded: Path, llama_adapter: Path, tmp_path: Path
) -> None:
    """The download of the second shard is held until the merge has begun writing the first: a
    merge that waited for the whole snapshot would never begin (the gate times out)."""
    hub.seed_repo("acme/base", pico_llama_sharded)
    facts = remote_base_facts(HubRef("acme/base"))
    weights = sorted((f.path, f.sha256, f.size) for f in facts.weight_files)
    assert len(weights) >= 2
    first_written = threading.Event()
    events: list[str] = []

    def on_file(name: str) -> None:
        events.append(f"download {name}")
        if name != weights[0][0] and not first_written.wait(30):
            events.append("gate timed out")

    class Recorder:
        def start(self, total_tensors: int, total_bytes: int) -> None:
            pass

        def begin_shard(self, name: str, index: int, count: int) -> None:
            events.append(f"merge {name}")
            if index == 0:
                first_written.set()

        def advance(self, tensors: int, nbytes: int) -> None:
            pass

        def finish(self) -> None:
            pass

    pinned = HubRef("acme/base", revision=facts.revision)
    arriving = stream_base(pinned, weights, on_file=on_file)
    try:
        import dataclasses

        plan = plan_merge(read_adapter(llama_adapter), arriving.skeleton)
        plan = dataclasses.replace(plan, base_dir=arriving.snapshot)
        result = execute_merge(
            plan,
            tmp_path / "out",
            provenance={},
            progress=Recorder(),
            base_weights_sha256=facts.weights_sha256,
            wait_for_shard=arriving.wait,
        )
    finally:
        arriving.close()
    assert "gate timed out" not in events
    assert events.index(f"merge {weights[0][0]}") < events.index(f"merge {weights[1][0]}")
    assert (arriving.snapshot / weights[1][0]).is_file()  # the shards stay in the HF cache for reuse
    assert not arriving.skeleton.exists()
    local = execute_merge(
        plan_merge(read_adapter(llama_adapter), pico_llama_sharded), tmp_path / "local", provenance={}
    )
    for name, _, _ in weights:
        assert (result.out_dir / name).read_bytes() == (local.out_dir / name).read_bytes()
    assert read_local_base(arriving.snapshot).weights_sha256 == facts.weights_sha256


def test_a_damaged_second_shard_stops_the_merge_and_leaves_nothing(
    hub: HubServer, pico_llama_sharded: Path, llama_adapter: Path, tmp_path: Path
) -> None:
    hub.seed_repo("acme/base", pico_llama_sharded)
    home = tmp_path / "home"
    r = cli(
        home, "push", llama_adapter, "--name", NAME, "--version", "1.0.0", "--task", "sst2", "--base",
        pico_llama_sharded,
    )  # fmt: skip
    assert r.code == 0, r.stderr
    shards = sorted(p.name for p in pico_llama_sharded.glob("*.safetensors"))
    blob = hub.blob_path(hub.file_at("acme/base", shards[-1]).sha256)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # past the header: the checks pass, the download does not verify
    blob.write_bytes(bytes(data))
    r = cli(home, "install", NAME, "--onto", "hf://acme/base", "--out", tmp_path / "out")
    assert r.code == 7, (r.code, r.stderr)
    assert "sha256 mismatch" in r.stderr and shards[-1] in r.stderr
    assert not (tmp_path / "out").exists()
    assert not any(p.name.startswith(".out.patchctl") for p in tmp_path.iterdir())


def test_a_failed_merge_does_not_wait_for_the_rest_of_the_download(
    hub: HubServer, pico_llama_sharded: Path, llama_adapter: Path, tmp_path: Path
) -> None:
    """The merge of the first shard fails while the second is still downloading (held here):
    the error comes back at once, not when the download ends, and nothing is written."""
    import time

    hub.seed_repo("acme/base", pico_llama_sharded)
    facts = remote_base_facts(HubRef("acme/base"))
    weights = sorted((f.path, f.sha256, f.size) for f in facts.weight_files)
    release = threading.Event()

    def on_file(name: str) -> None:
        if name != weights[0][0]:
            release.wait(60)

    class Broken:  # fails as the writes of the first shard begin (on the writer thread)
        def start(self, total_tensors: int, total_bytes: int) -> None:
            pass

        def begin_shard(self, name: str, index: int, count: int) -> None:
            raise RuntimeError("merge failed")

        def advance(self, tensors: int, nbytes: int) -> None:
            pass

        def finish(self) -> None:
            pass

    arriving = stream_base(HubRef("acme/base", revision=facts.revision), weights, on_file=on_file)
    started = time.monotonic()
    try:
        import dataclasses

        plan = dataclasses.replace(
            plan_merge(read_adapter(llama_adapter), arriving.skeleton), base_dir=arriving.snapshot
        )
        with pytest.raises(RuntimeError, match="merge failed"):
            execute_merge(
                plan,
                tmp_path / "out",
                provenance={},
                progress=Broken(),
                base_weights_sha256=facts.weights_sha256,
                wait_for_shard=arriving.wait,
            )
        assert time.monotonic() - started < 30
    finally:
        release.set()
        arriving.close()
    assert not (tmp_path / "out").exists()
