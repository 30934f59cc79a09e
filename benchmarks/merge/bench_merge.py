"""Benchmark: patchctl's streaming merge vs PEFT's documented merge path vs ``cp -r``.

Generates a synthetic Llama-shaped bf16 base (several shards + index, written tensor by tensor,
no model instantiated) and a rank-16 LoRA on all linear modules (random A/B, fp32, as PEFT saves
it), then runs each contender as a subprocess and records wall time and peak RSS:

  (a) patchctl's engine             ENGINE_CMD below (one line to switch to ``patchctl install``)
  (b) PEFT's documented path        from_pretrained -> PeftModel.from_pretrained -> merge_and_unload -> save_pretrained
  (c) cp -r of the base             the I/O floor

then runs (a) again on a base about 4x larger, to show that peak RSS stays flat. Our output is
checked tensor by tensor against PEFT's saved output (bit-exact).

    python benchmarks/merge/bench_merge.py                 # ~1 GB and ~4 GB bases under $TMPDIR
    python benchmarks/merge/bench_merge.py --small         # seconds; used by the test suite
    python benchmarks/merge/bench_merge.py --json out.json --workdir /big/disk
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from patchctl.merge._io import encode_header, tensor_bytes  # noqa: E402


def engine_cmd(adapter: Path, base: Path | str, out: Path) -> list[str]:
    """The command under test (a): ``patchctl install`` of the adapter directory onto the base,
    checks included (a throwaway catalog beside the output)."""
    home = out.parent / f"{out.name}-home"
    return [
        sys.executable, "-m", "patchctl", "--home", str(home),
        "install", str(adapter), "--onto", str(base), "--out", str(out), "--json",
    ]  # fmt: skip


@dataclass(frozen=True)
class Shape:
    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    shard_bytes: int

    def config(self) -> dict[str, Any]:
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "vocab_size": self.vocab,
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "dtype": "bfloat16",
        }

    def tensors(self) -> list[tuple[str, tuple[int, ...]]]:
        h, kv = self.hidden, self.kv_heads * (self.hidden // self.heads)
        out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (self.vocab, h))]
        for i in range(self.layers):
            p = f"model.layers.{i}"
            out += [
                (f"{p}.input_layernorm.weight", (h,)),
                (f"{p}.self_attn.q_proj.weight", (h, h)),
                (f"{p}.self_attn.k_proj.weight", (kv, h)),
                (f"{p}.self_attn.v_proj.weight", (kv, h)),
                (f"{p}.self_attn.o_proj.weight", (h, h)),
                (f"{p}.post_attention_layernorm.weight", (h,)),
                (f"{p}.mlp.gate_proj.weight", (self.intermediate, h)),
                (f"{p}.mlp.up_proj.weight", (self.intermediate, h)),
                (f"{p}.mlp.down_proj.weight", (h, self.intermediate)),
            ]
        return [*out, ("model.norm.weight", (h,)), ("lm_head.weight", (self.vocab, h))]


SHAPES = {
    # ~1.0 GB bf16 (500M parameters), 3 shards
    "1gb": Shape(
        "1gb", hidden=1024, intermediate=2816, layers=39, heads=16, kv_heads=4, vocab=32000, shard_bytes=400 << 20
    ),
    # ~4.0 GB bf16 (2.0B parameters, TinyLlama widths, 43 layers), 10 shards
    "4gb": Shape(
        "4gb", hidden=2048, intermediate=5632, layers=43, heads=32, kv_heads=4, vocab=32000, shard_bytes=400 << 20
    ),
    # Llama-3-8B: 8.0B parameters, 16.1 GB bf16, 4 shards of ~5 GB as on the Hub
    "llama3-8b": Shape(
        "llama3-8b",
        hidden=4096,
        intermediate=14336,
        layers=32,
        heads=32,
        kv_heads=8,
        vocab=128256,
        shard_bytes=5000 << 20,
    ),
    "small-a": Shape(
        "small-a", hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, vocab=256, shard_bytes=64 << 10
    ),
    "small-b": Shape(
        "small-b", hidden=64, intermediate=128, layers=8, heads=4, kv_heads=2, vocab=256, shard_bytes=64 << 10
    ),
}
LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _write_safetensors(path: Path, specs: list[tuple[str, tuple[int, ...]]], make: Any, dtype: torch.dtype) -> None:
    """Write one safetensors file tensor by tensor (header first, then each tensor's bytes)."""
    size = torch.finfo(dtype).bits // 8
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    off = 0
    names = {torch.bfloat16: "BF16", torch.float32: "F32", torch.float16: "F16"}
    for name, shape in specs:
        n = size
        for d in shape:
            n *= d
        header[name] = {"dtype": names[dtype], "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    with open(path, "wb") as f:
        f.write(encode_header(header))
        for name, shape in specs:
            f.write(tensor_bytes(make(name, shape).to(dtype)))


def make_base(shape: Shape, out: Path, seed: int = 0, *, fast: bool = False) -> Path:
    """``fast``: matrices cut from a pool of random bf16 values instead of drawn one by one (a
    16 GB base in about the time its bytes take to write; the values do not matter for speed)."""
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    pool = (torch.randn(64 << 20, generator=gen) * 0.02).to(torch.bfloat16) if fast else None
    cursor = [0]

    def make(name: str, dims: tuple[int, ...]) -> torch.Tensor:
        if len(dims) == 1:
            return torch.ones(dims) + 0.01 * torch.randn(dims, generator=gen)
        if pool is not None:
            n = 1
            for d in dims:
                n *= d
            parts, left = [], n
            while left:
                start = cursor[0] % pool.numel()
                take = min(left, pool.numel() - start)
                parts.append(pool[start : start + take])
                cursor[0] += take + 4099  # a different phase each time
                left -= take
            return torch.cat(parts).view(dims)
        return torch.randn(dims, generator=gen) * 0.02

    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, dims in shape.tensors():
        n = 2
        for d in dims:
            n *= d
        if shards[-1] and size + n > shape.shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, dims))
        size += n
    weight_map: dict[str, str] = {}
    total = 0
    for i, specs in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        _write_safetensors(out / fname, specs, make, torch.bfloat16)
        for name, dims in specs:
            weight_map[name] = fname
            n = 2
            for d in dims:
                n *= d
            total += n
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    (out / "config.json").write_text(json.dumps(shape.config(), indent=2))
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    return out


def make_adapter(shape: Shape, base: Path, out: Path, *, r: int = 16, seed: int = 1, embedding: bool = False) -> Path:
    """A rank-``r`` LoRA on every linear module (and with ``embedding``, on ``embed_tokens``)."""
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    specs = []
    for name, dims in shape.tensors():
        module = name.removesuffix(".weight")
        if module.rsplit(".", 1)[-1] in LINEAR:
            out_f, in_f = dims
            specs.append((f"base_model.model.{module}.lora_A.weight", (r, in_f)))
            specs.append((f"base_model.model.{module}.lora_B.weight", (out_f, r)))
        elif embedding and module.endswith("embed_tokens"):
            vocab, hidden = dims
            specs.append((f"base_model.model.{module}.lora_embedding_A", (r, vocab)))
            specs.append((f"base_model.model.{module}.lora_embedding_B", (hidden, r)))

    def make(name: str, dims: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(dims, generator=gen) * 0.01

    _write_safetensors(out / "adapter_model.safetensors", sorted(specs), make, torch.float32)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": r,
        "lora_alpha": 2 * r,
        "lora_dropout": 0.0,
        "target_modules": [*LINEAR, "embed_tokens"] if embedding else LINEAR,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "base_model_name_or_path": str(base),
        "inference_mode": True,
    }
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return out


_PEFT_SCRIPT = """
import sys, torch
from transformers import AutoModelForCausalLM
from peft import PeftModel
base, adapter, out = sys.argv[1:4]
model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
model.save_pretrained(out)
"""


def peft_cmd(adapter: Path, base: Path, out: Path) -> list[str]:
    return [sys.executable, "-c", _PEFT_SCRIPT, str(base), str(adapter), str(out)]


def cp_cmd(base: Path, out: Path) -> list[str]:
    return ["cp", "-r", str(base), str(out)]


_TIME_RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")
_TIME_CPU = re.compile(r"(?:User|System) time \(seconds\): ([\d.]+)")


def child_env() -> dict[str, str]:
    """This environment with the checkout first on PYTHONPATH (the commands run this tree's patchctl)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}


class TreeRss:
    """The peak of the summed RSS of a process and all its descendants (``patchctl install`` merges
    in a child process: /usr/bin/time and getrusage give the largest single process), sampled
    every 20 ms from /proc (Linux; elsewhere 0). Shared pages count once per process: an upper bound."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sum(self) -> int:
        total, todo = 0, [self.pid]
        while todo:
            pid = todo.pop()
            try:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
                for task in os.listdir(f"/proc/{pid}/task"):
                    todo += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
            except (OSError, ValueError, IndexError):
                continue
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_bytes = max(self.peak_bytes, self._sum())

    def stop(self) -> float:
        """Stop sampling; the peak in MiB."""
        self._stop.set()
        self._thread.join()
        return self.peak_bytes / 2**20


def measure(cmd: list[str], env_extra: dict[str, str] | None = None) -> dict[str, float]:
    """Wall seconds and peak RSS (MiB) of one subprocess: /usr/bin/time -v when present, else
    getrusage; where larger, the peak of its process tree's summed RSS (:class:`TreeRss`)."""
    env = child_env()
    env.update(env_extra or {})
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.perf_counter()
    tree_mib = 0.0
    if Path("/usr/bin/time").exists():
        popen = subprocess.Popen(
            ["/usr/bin/time", "-v", *cmd], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        tree = TreeRss(popen.pid)
        out, err = popen.communicate()
        wall = time.perf_counter() - started
        tree_mib = tree.stop()
        proc = subprocess.CompletedProcess(popen.args, popen.returncode, out, err)
        m = _TIME_RSS.search(proc.stderr)
        rss_kib = float(m.group(1)) if m else float("nan")
        cpu = sum(float(x) for x in _TIME_CPU.findall(proc.stderr)) if _TIME_CPU.search(proc.stderr) else float("nan")
    else:
        import resource

        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        rss_kib = float(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # max over children so far
        cpu = float("nan")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    # the engine fsyncs its output; PEFT's save_pretrained and cp do not: also report the time
    # until everything each one wrote is on disk
    synced = time.perf_counter()
    os.sync()
    sync_s = time.perf_counter() - synced
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {
        "wall_s": wall,
        "wall_synced_s": wall + sync_s,
        "peak_rss_mib": max(rss_kib / 1024, tree_mib),
        "peak_rss_tree_mib": tree_mib,
        "cpu_s": cpu,  # user + system of the command (all its threads and children)
        "load_after": load,
    }


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def compare_outputs(ours: Path, peft_out: Path) -> int:
    """Every tensor of our output equals PEFT's saved tensor of the same name; returns the count."""
    from safetensors import safe_open

    def locate(d: Path) -> dict[str, Path]:
        idx = d / "model.safetensors.index.json"
        if idx.exists():
            return {k: d / v for k, v in json.loads(idx.read_text())["weight_map"].items()}
        return {k: d / "model.safetensors" for k in safe_open(str(d / "model.safetensors"), "pt").keys()}  # noqa: SIM118

    a, b = locate(ours), locate(peft_out)
    missing = set(a) ^ set(b)
    if missing:
        raise SystemExit(f"outputs name different tensors: {sorted(missing)[:5]}")
    for name in a:
        with safe_open(str(a[name]), "pt") as fa, safe_open(str(b[name]), "pt") as fb:
            if not torch.equal(fa.get_tensor(name), fb.get_tensor(name)):
                raise SystemExit(f"{name}: our merge differs from PEFT's")
    return len(a)


def register_base(base: Path, out: Path) -> None:
    """What the workflow does before installing onto a new release: ``patchctl base add`` (untimed)
    into the home the engine command for ``out`` uses, so the install finds the base's fingerprint
    in the home's hash cache instead of reading the base once more."""
    home = out.parent / f"{out.name}-home"
    env = child_env()
    subprocess.run(
        [sys.executable, "-m", "patchctl", "--home", str(home), "base", "add", str(base), "--json"],
        env=env,
        check=True,
        capture_output=True,
    )


def _row(label: str, shape: Shape, size: int, cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    os.sync()  # start each run with no dirty pages from the previous one
    row = {"run": label, "base": shape.name, "base_bytes": size, **measure(cmd, env)}
    print(f"  {label}: {row['wall_s']:.2f} s, {row['peak_rss_mib']:.0f} MiB", file=sys.stderr)
    return row


def run_pair(workdir: Path, shape: Shape, results: dict[str, Any]) -> None:
    """patchctl install vs PEFT vs cp -r on one base; our output compared with PEFT's bit for bit."""
    base = make_base(shape, workdir / f"base-{shape.name}")
    adapter = make_adapter(shape, base, workdir / f"lora-{shape.name}")
    size = dir_bytes(base)
    print(
        f"base {shape.name}: {size / 2**30:.2f} GiB in {len(list(base.glob('*.safetensors')))} shards", file=sys.stderr
    )
    # cold: a new home and an empty dtype-plan cache (the install reads the base for its fingerprint
    # and imports the architecture's modeling code); registered: after `patchctl base add` and once
    # the dtype plan of this config is cached (the state of every install after the first)
    cache = {"PATCHCTL_CACHE_DIR": str(workdir / "user-cache")}
    shutil.rmtree(workdir / "user-cache", ignore_errors=True)
    for label, cmd, out, env in (
        ("patchctl install", engine_cmd(adapter, base, workdir / "out-ours"), workdir / "out-ours", cache),
        ("PEFT merge_and_unload", peft_cmd(adapter, base, workdir / "out-peft"), workdir / "out-peft", None),
        ("cp -r", cp_cmd(base, workdir / "out-cp"), workdir / "out-cp", None),
        (
            "patchctl install (base registered)",
            engine_cmd(adapter, base, workdir / "out-reg"),
            workdir / "out-reg",
            cache,
        ),
    ):
        shutil.rmtree(out, ignore_errors=True)
        if out.name == "out-reg":
            shutil.rmtree(workdir / "out-reg-home", ignore_errors=True)
            register_base(base, out)
        results["rows"].append(_row(label, shape, size, cmd, env))
    results["tensors_compared_with_peft"] = compare_outputs(workdir / "out-ours", workdir / "out-peft")
    for out in ("out-ours", "out-peft", "out-cp", "out-ours-home", "out-reg", "out-reg-home", "user-cache"):
        shutil.rmtree(workdir / out, ignore_errors=True)
    shutil.rmtree(base)
    shutil.rmtree(adapter)


def run_scale(workdir: Path, shape: Shape, results: dict[str, Any]) -> None:
    """patchctl install alone on a larger base (peak RSS should stay flat)."""
    big = make_base(shape, workdir / f"base-{shape.name}")
    big_adapter = make_adapter(shape, big, workdir / f"lora-{shape.name}")
    big_size = dir_bytes(big)
    print(f"base {shape.name}: {big_size / 2**30:.2f} GiB", file=sys.stderr)
    results["rows"].append(_row("patchctl install", shape, big_size, engine_cmd(big_adapter, big, workdir / "out-big")))
    for p in (workdir / "out-big", workdir / "out-big-home", big, big_adapter):
        shutil.rmtree(p, ignore_errors=True)


_DOWNLOAD_SCRIPT = """
import json, sys
from huggingface_hub import hf_hub_download
repo, commit, files = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
for name in files:
    path = hf_hub_download(repo, name, revision=commit)
print(path.rsplit("/", 1)[0])
"""


def run_hub(workdir: Path, shape: Shape, results: dict[str, Any]) -> None:
    """Through the test Hub server (tests/hubserver, 127.0.0.1): the download alone (the same
    files, one after the other, with huggingface_hub), a local install onto what was downloaded,
    and ``install --onto hf://`` from a fresh cache (download and merge overlapped)."""
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from hubserver import HubServer

    base = make_base(shape, workdir / f"base-{shape.name}")
    adapter = make_adapter(shape, base, workdir / f"lora-{shape.name}")
    size = dir_bytes(base)
    server = HubServer(workdir / "hub-storage").start()
    try:
        commit = server.seed_repo("acme/base", base)
        shutil.rmtree(base)
        index = json.loads(
            server.blob_path(server.file_at("acme/base", "model.safetensors.index.json").sha256).read_text()
        )
        files = ["config.json", "generation_config.json", "model.safetensors.index.json"]
        files += sorted(set(index["weight_map"].values()))
        env = {"HF_ENDPOINT": server.url, "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        print(f"hub base {shape.name}: {size / 2**30:.2f} GiB", file=sys.stderr)
        cache_a = {**env, "HF_HUB_CACHE": str(workdir / "hf-cache-a")}
        script = [sys.executable, "-c", _DOWNLOAD_SCRIPT, "acme/base", commit, json.dumps(files)]
        results["rows"].append(_row("download alone (hf_hub_download)", shape, size, script, cache_a))
        snapshot = next((workdir / "hf-cache-a").glob("models--acme--base/snapshots/*"))
        local = engine_cmd(adapter, snapshot, workdir / "out-local")
        results["rows"].append(_row("patchctl install (downloaded base)", shape, size, local, cache_a))
        cache_b = {**env, "HF_HUB_CACHE": str(workdir / "hf-cache-b")}
        remote = engine_cmd(adapter, "hf://acme/base", workdir / "out-hub")
        results["rows"].append(_row("patchctl install --onto hf://", shape, size, remote, cache_b))
        for name in sorted(set(index["weight_map"].values())):
            if (workdir / "out-local" / name).read_bytes() != (workdir / "out-hub" / name).read_bytes():
                raise SystemExit(f"{name}: install --onto hf:// differs from the local install")
    finally:
        server.close()
        for p in ("hub-storage", "hf-cache-a", "hf-cache-b", "out-local", "out-hub", "out-local-home", "out-hub-home"):
            shutil.rmtree(workdir / p, ignore_errors=True)
        shutil.rmtree(adapter, ignore_errors=True)


def page_cache(base: Path, *, cached: bool) -> None:
    """Put the base's files in the page cache (read them once) or evict them from it
    (``POSIX_FADV_DONTNEED`` after a sync: no root needed), so that every run of a pair starts
    from the same state. ``cp -r`` reads through the cache; the engine, for a base this large,
    reads what the cache holds from there and the rest with O_DIRECT."""
    os.sync()
    buf = bytearray(16 << 20)
    for f in sorted(base.iterdir()):
        if not f.is_file():
            continue
        fd = os.open(f, os.O_RDONLY)
        try:
            if cached:
                while os.readv(fd, [buf]):
                    pass
            else:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


#: the large base's runs: (label suffix, base in the page cache)
CACHE_STATES = (("in page cache", True), ("not cached", False))


def run_big(workdir: Path, shape: Shape, results: dict[str, Any]) -> None:
    """The Llama-3-8B-shaped base: cp -r, then patchctl install of a rank-16 LoRA on every linear
    module plus an embedding LoRA on embed_tokens (its fp32 delta alone is 2 GiB); each with the
    base in the page cache (as after a download or a first read) and evicted from it."""
    base = make_base(shape, workdir / f"base-{shape.name}", fast=True)
    adapter = make_adapter(shape, base, workdir / f"lora-{shape.name}", embedding=True)
    size = dir_bytes(base)
    print(f"base {shape.name}: {size / 2**30:.2f} GiB", file=sys.stderr)
    cache = {"PATCHCTL_CACHE_DIR": str(workdir / "user-cache-big")}
    shutil.rmtree(workdir / "user-cache-big", ignore_errors=True)
    try:
        for state, cached in CACHE_STATES:
            page_cache(base, cached=cached)
            results["rows"].append(_row(f"cp -r ({state})", shape, size, cp_cmd(base, workdir / "out-cp")))
            shutil.rmtree(workdir / "out-cp")
        page_cache(base, cached=True)
        results["rows"].append(
            _row("patchctl install (in page cache)", shape, size, engine_cmd(adapter, base, workdir / "out-big"), cache)
        )
        shutil.rmtree(workdir / "out-big")
        shutil.rmtree(workdir / "out-big-home")
        register_base(base, workdir / "out-big")
        for state, cached in CACHE_STATES:
            shutil.rmtree(workdir / "out-big", ignore_errors=True)
            page_cache(base, cached=cached)
            cmd = engine_cmd(adapter, base, workdir / "out-big")
            results["rows"].append(_row(f"patchctl install (base registered, {state})", shape, size, cmd, cache))
    finally:
        for p in ("out-cp", "out-big", "out-big-home", "user-cache-big"):
            shutil.rmtree(workdir / p, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(adapter, ignore_errors=True)
    # PEFT's path holds the whole base in memory (bf16), then adds each fp32 delta in place
    largest_delta = 4 * shape.vocab * shape.hidden
    results["peft_memory_need_bytes"] = size + largest_delta


CASES = ("1gb", "4gb", "hub", "llama3-8b")


def run(workdir: Path, small: bool, cases: tuple[str, ...] = ("1gb", "4gb", "hub")) -> dict[str, Any]:
    results: dict[str, Any] = {"rows": []}
    first, second = (SHAPES["small-a"], SHAPES["small-b"]) if small else (SHAPES["1gb"], SHAPES["4gb"])
    if "1gb" in cases:
        run_pair(workdir, first, results)
    if "4gb" in cases:
        run_scale(workdir, second, results)
    if "hub" in cases:
        run_hub(workdir, first, results)
    if "llama3-8b" in cases:
        run_big(workdir, SHAPES["small-b"] if small else SHAPES["llama3-8b"], results)
    rows = {(r["run"], r["base"]): r for r in results["rows"]}
    ratios: dict[str, float] = {}
    targets: dict[str, bool] = {}
    ours, peft, cp = (rows.get((k, first.name)) for k in ("patchctl install", "PEFT merge_and_unload", "cp -r"))
    if ours and peft and cp:
        ratios["wall_ours_over_peft"] = ours["wall_s"] / peft["wall_s"]
        ratios["wall_synced_ours_over_peft"] = ours["wall_synced_s"] / peft["wall_synced_s"]
        ratios["rss_ours_over_peft"] = ours["peak_rss_mib"] / peft["peak_rss_mib"]
        ratios["wall_ours_over_cp"] = ours["wall_s"] / cp["wall_s"]
        targets["1 GB: wall <= 0.3x PEFT"] = ratios["wall_ours_over_peft"] <= 0.3
        targets["1 GB: RSS <= 0.3x PEFT"] = ratios["rss_ours_over_peft"] <= 0.3
    big = rows.get(("patchctl install", second.name))
    if ours and big:
        ratios["rss_big_over_small"] = big["peak_rss_mib"] / ours["peak_rss_mib"]
        targets["RSS(4x) <= 1.2x RSS(1x)"] = ratios["rss_big_over_small"] <= 1.2
    dl = rows.get(("download alone (hf_hub_download)", first.name))
    local = rows.get(("patchctl install (downloaded base)", first.name))
    hub = rows.get(("patchctl install --onto hf://", first.name))
    if dl and local and hub:
        ratios["hub_over_download_plus_local"] = hub["wall_s"] / (dl["wall_s"] + local["wall_s"])
        targets["hf://: wall <= 1.2x (download + local install)"] = ratios["hub_over_download_plus_local"] <= 1.2
    reg = rows.get(("patchctl install (base registered)", first.name))
    if reg and peft:
        ratios["wall_registered_over_peft"] = reg["wall_s"] / peft["wall_s"]
        targets["1 GB (base registered): wall <= 0.3x PEFT"] = ratios["wall_registered_over_peft"] <= 0.3
    name8 = "small-b" if small else "llama3-8b"
    cold8 = rows.get(("patchctl install (in page cache)", name8))
    for state, _ in CACHE_STATES:
        cp8 = rows.get((f"cp -r ({state})", name8))
        reg8 = rows.get((f"patchctl install (base registered, {state})", name8))
        key = state.replace(" ", "_")
        if cp8 and reg8:
            ratios[f"llama3_8b_registered_over_cp_{key}"] = reg8["wall_s"] / cp8["wall_s"]
            ratios[f"llama3_8b_registered_synced_over_cp_synced_{key}"] = reg8["wall_synced_s"] / cp8["wall_synced_s"]
            targets[f"Llama-3-8B (base registered, {state}): wall <= 1.3x cp -r"] = (
                reg8["wall_s"] / cp8["wall_s"] <= 1.3
            )
            targets[f"Llama-3-8B (base registered, {state}): peak RSS <= 600 MiB"] = reg8["peak_rss_mib"] <= 600
        if cp8 and cold8 and state == "in page cache":
            ratios["llama3_8b_wall_over_cp_in_page_cache"] = cold8["wall_s"] / cp8["wall_s"]
            targets["Llama-3-8B (in page cache): wall <= 1.3x cp -r"] = cold8["wall_s"] / cp8["wall_s"] <= 1.3
            targets["Llama-3-8B: peak RSS <= 600 MiB"] = cold8["peak_rss_mib"] <= 600
    results["ratios"] = ratios
    results["targets_met"] = targets
    return results


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| run | base | base size | wall (s) | wall incl. sync (s) | CPU (s) | peak RSS (MiB) | load after |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['run']} | {r['base']} | {r['base_bytes'] / 2**30:.2f} GiB | {r['wall_s']:.2f} "
            f"| {r['wall_synced_s']:.2f} | {r.get('cpu_s', float('nan')):.1f} | {r['peak_rss_mib']:.0f} "
            f"| {r.get('load_after', float('nan')):.1f} |"
        )
    lines.append("")
    for key, value in results["ratios"].items():
        lines.append(f"- {key}: **{value:.2f}**")
    for key, ok in results["targets_met"].items():
        lines.append(f"- target {key}: {'met' if ok else 'NOT met'}")
    if "tensors_compared_with_peft" in results:
        lines.append(
            f"- our output equals PEFT's saved output bit for bit ({results['tensors_compared_with_peft']} tensors)"
        )
    if "peft_memory_need_bytes" in results:
        lines.append(
            f"- PEFT's path on the large base needs at least {results['peft_memory_need_bytes'] / 2**30:.1f} GiB "
            "of RAM (the bf16 model plus the largest fp32 delta): not run here"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="tiny sizes (seconds), for the test suite")
    parser.add_argument("--workdir", type=Path, default=None, help="where bases and outputs go (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument(
        "--cases",
        default="1gb,4gb,hub",
        help=f"comma-separated, from {','.join(CASES)} (llama3-8b writes a 16 GB base: needs ~35 GB of disk)",
    )
    args = parser.parse_args(argv)
    cases = tuple(c.strip() for c in args.cases.split(",") if c.strip())
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="patchctl-bench-", dir=args.workdir) as tmp:
        results = run(Path(tmp), args.small, cases)
    results["machine"] = {"cpus": os.cpu_count(), "torch": torch.__version__, "python": sys.version.split()[0]}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
