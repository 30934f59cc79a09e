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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from patchctl.merge._io import encode_header, tensor_bytes  # noqa: E402


def engine_cmd(adapter: Path, base: Path, out: Path) -> list[str]:
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


def make_base(shape: Shape, out: Path, seed: int = 0) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)

    def make(name: str, dims: tuple[int, ...]) -> torch.Tensor:
        if len(dims) == 1:
            return torch.ones(dims) + 0.01 * torch.randn(dims, generator=gen)
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


def make_adapter(shape: Shape, base: Path, out: Path, *, r: int = 16, seed: int = 1) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    specs = []
    for name, dims in shape.tensors():
        module = name.removesuffix(".weight")
        if module.rsplit(".", 1)[-1] in LINEAR:
            out_f, in_f = dims
            specs.append((f"base_model.model.{module}.lora_A.weight", (r, in_f)))
            specs.append((f"base_model.model.{module}.lora_B.weight", (out_f, r)))

    def make(name: str, dims: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(dims, generator=gen) * 0.01

    _write_safetensors(out / "adapter_model.safetensors", sorted(specs), make, torch.float32)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": r,
        "lora_alpha": 2 * r,
        "lora_dropout": 0.0,
        "target_modules": LINEAR,
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


def measure(cmd: list[str]) -> dict[str, float]:
    """Wall seconds and peak RSS (MiB) of one subprocess: /usr/bin/time -v when present, else getrusage."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.perf_counter()
    if Path("/usr/bin/time").exists():
        proc = subprocess.run(["/usr/bin/time", "-v", *cmd], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        m = _TIME_RSS.search(proc.stderr)
        rss_kib = float(m.group(1)) if m else float("nan")
    else:
        import resource

        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        rss_kib = float(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # max over children so far
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    # the engine fsyncs its output; PEFT's save_pretrained and cp do not: also report the time
    # until everything each one wrote is on disk
    synced = time.perf_counter()
    os.sync()
    sync_s = time.perf_counter() - synced
    return {"wall_s": wall, "wall_synced_s": wall + sync_s, "peak_rss_mib": rss_kib / 1024}


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


def run(workdir: Path, small: bool) -> dict[str, Any]:
    first, second = (SHAPES["small-a"], SHAPES["small-b"]) if small else (SHAPES["1gb"], SHAPES["4gb"])
    results: dict[str, Any] = {"rows": []}
    base = make_base(first, workdir / f"base-{first.name}")
    adapter = make_adapter(first, base, workdir / f"lora-{first.name}")
    size = dir_bytes(base)
    print(
        f"base {first.name}: {size / 2**30:.2f} GiB in {len(list(base.glob('*.safetensors')))} shards", file=sys.stderr
    )
    for label, cmd, out in (
        ("patchctl install", engine_cmd(adapter, base, workdir / "out-ours"), workdir / "out-ours"),
        ("PEFT merge_and_unload", peft_cmd(adapter, base, workdir / "out-peft"), workdir / "out-peft"),
        ("cp -r", cp_cmd(base, workdir / "out-cp"), workdir / "out-cp"),
    ):
        shutil.rmtree(out, ignore_errors=True)
        os.sync()  # start each run with no dirty pages from the previous one
        row = {"run": label, "base": first.name, "base_bytes": size, **measure(cmd)}
        print(f"  {label}: {row['wall_s']:.2f} s, {row['peak_rss_mib']:.0f} MiB", file=sys.stderr)
        results["rows"].append(row)
    results["tensors_compared_with_peft"] = compare_outputs(workdir / "out-ours", workdir / "out-peft")
    for out in ("out-ours", "out-peft", "out-cp"):
        shutil.rmtree(workdir / out, ignore_errors=True)
    shutil.rmtree(base)
    shutil.rmtree(adapter)

    big = make_base(second, workdir / f"base-{second.name}")
    big_adapter = make_adapter(second, big, workdir / f"lora-{second.name}")
    big_size = dir_bytes(big)
    print(f"base {second.name}: {big_size / 2**30:.2f} GiB", file=sys.stderr)
    os.sync()
    row = {
        "run": "patchctl install",
        "base": second.name,
        "base_bytes": big_size,
        **measure(engine_cmd(big_adapter, big, workdir / "out-big")),
    }
    print(f"  patchctl install: {row['wall_s']:.2f} s, {row['peak_rss_mib']:.0f} MiB", file=sys.stderr)
    results["rows"].append(row)
    shutil.rmtree(workdir / "out-big", ignore_errors=True)
    shutil.rmtree(big)
    shutil.rmtree(big_adapter)

    ours, peft, cp, ours_big = results["rows"]
    results["ratios"] = {
        "wall_ours_over_peft": ours["wall_s"] / peft["wall_s"],
        "wall_synced_ours_over_peft": ours["wall_synced_s"] / peft["wall_synced_s"],
        "rss_ours_over_peft": ours["peak_rss_mib"] / peft["peak_rss_mib"],
        "wall_ours_over_cp": ours["wall_s"] / cp["wall_s"],
        "rss_big_over_small": ours_big["peak_rss_mib"] / ours["peak_rss_mib"],
    }
    results["targets_met"] = {
        "wall <= 0.5x PEFT": results["ratios"]["wall_ours_over_peft"] <= 0.5,
        "RSS <= 0.3x PEFT": results["ratios"]["rss_ours_over_peft"] <= 0.3,
        "RSS(4x) <= 1.2x RSS(1x)": results["ratios"]["rss_big_over_small"] <= 1.2,
    }
    return results


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| run | base | base size | wall (s) | wall incl. sync (s) | peak RSS (MiB) |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['run']} | {r['base']} | {r['base_bytes'] / 2**30:.2f} GiB | {r['wall_s']:.2f} "
            f"| {r['wall_synced_s']:.2f} | {r['peak_rss_mib']:.0f} |"
        )
    q = results["ratios"]
    lines += [
        "",
        f"- wall, ours / PEFT: **{q['wall_ours_over_peft']:.2f}×** (target ≤ 0.5×); including the final sync: "
        f"{q['wall_synced_ours_over_peft']:.2f}×; ours / cp -r: {q['wall_ours_over_cp']:.2f}×",
        f"- peak RSS, ours / PEFT: **{q['rss_ours_over_peft']:.2f}×** (target ≤ 0.3×)",
        f"- peak RSS, ours at 4× / ours at 1×: **{q['rss_big_over_small']:.2f}×** (target ≤ 1.2×)",
        f"- our output equals PEFT's saved output bit for bit ({results['tensors_compared_with_peft']} tensors compared)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="tiny sizes (seconds), for the test suite")
    parser.add_argument("--workdir", type=Path, default=None, help="where bases and outputs go (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="patchctl-bench-", dir=args.workdir) as tmp:
        results = run(Path(tmp), args.small)
    results["machine"] = {"cpus": os.cpu_count(), "torch": torch.__version__, "python": sys.version.split()[0]}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
