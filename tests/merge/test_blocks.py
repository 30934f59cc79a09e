"""Bounded memory: LoRA deltas in row blocks, bit-identical to PEFT's whole product; the I/O
pipeline gives the bytes of the sequential path; peak RSS stays under the budget."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from mergeref import DIVERGES_FROM_MERGE_AND_UNLOAD, DTYPES, VARIANTS, Reference

from patchctl.adapter import read_adapter
from patchctl.merge import _execute, execute_merge, plan_merge
from patchctl.merge._blocks import Blocking, block_ranges, parse_size
from patchctl.merge._delta import lora_delta, probe

REPO_ROOT = Path(__file__).resolve().parents[2]
#: blocks of 8 rows on the pico models (hidden 32, vocab 96): every patched matrix is cut in several
PICO_BLOCKS = Blocking(max_memory=3 * 8 * 128, min_block=8, reserved=0, overhead=0, floor=0)


def test_block_ranges_fold_a_short_tail() -> None:
    assert block_ranges(256, 64) == [(0, 64), (64, 128), (128, 192), (192, 256)]
    assert block_ranges(200, 64) == [(0, 64), (64, 128), (128, 200)]  # 8-row tail joins the block before
    assert block_ranges(130, 64) == [(0, 64), (64, 130)]
    assert block_ranges(50, 64) == [(0, 50)]
    assert block_ranges(0, 64) == [(0, 0)]
    for rows in range(1, 400, 7):
        for step in (64, 100, 128):
            ranges = block_ranges(rows, step)
            assert ranges[0][0] == 0 and ranges[-1][1] == rows
            assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
            assert len(ranges) == 1 or all(r1 - r0 >= 64 for r0, r1 in ranges)


def test_parse_size() -> None:
    assert parse_size("512MiB") == 512 << 20
    assert parse_size("2G") == 2 << 30
    assert parse_size("1.5 GiB") == 3 << 29
    assert parse_size("800000") == 800000
    with pytest.raises(ValueError, match="expected a size"):
        parse_size("lots")


@pytest.mark.parametrize("r", [16, 64])
@pytest.mark.parametrize("transpose", [False, True], ids=["rows", "fan_in_fan_out"])
def test_blocked_delta_equals_peft_whole_product(r: int, transpose: bool) -> None:
    """At real widths: B[r0:r1] @ A (or B @ A[:, r0:r1]) gives PEFT's delta bits, tail folded in."""
    gen = torch.Generator().manual_seed(r)
    out_f, in_f = (1000, 4096) if not transpose else (4096, 1000)  # the weight has 1000 rows either way
    lora_a = torch.randn(r, in_f, generator=gen) * 0.02
    lora_b = torch.randn(out_f, r, generator=gen) * 0.02
    s = 2.0
    peft = (lora_b @ lora_a).T * s if transpose else (lora_b @ lora_a) * s  # get_delta_weight
    buffer = torch.empty(300 * 4096)
    for step in (64, 100, 256):
        ranges = block_ranges(1000, step)
        assert probe(lora_a, lora_b, transpose=transpose, ranges=ranges, out=buffer)
        for r0, r1 in ranges:
            block = lora_delta(lora_a, lora_b, s, transpose=transpose, rows=(r0, r1), out=buffer)
            assert torch.equal(block, peft[r0:r1]), (step, r0, r1)
    assert torch.equal(lora_delta(lora_a, lora_b, s, transpose=transpose), peft)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_blocked_merge_equals_peft_merge_and_unload(
    variant: str,
    dtype: str,
    make_typed_base: Callable[[str, str], Path],
    make_variant_adapter: Callable[[str], Path],
    ref: type[Reference],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_execute, "ROW_CHUNK_BYTES", 300)  # chunks of a few rows inside each block
    kind, _ = VARIANTS[variant]
    base = make_typed_base(kind, dtype)
    adapter = make_variant_adapter(variant)
    plan = plan_merge(read_adapter(adapter), base)
    blocked = PICO_BLOCKS.summary(plan)["blocked_tensors"]
    assert blocked, "the budget should cut some delta into blocks"
    result = execute_merge(plan, tmp_path / "out", provenance={}, blocking=PICO_BLOCKS)
    assert result.merged_whole == ()  # every blocking passed its probe

    ours = ref.load_dir_tensors(result.out_dir)
    reference = ref.peft_merged_state_dict(base, adapter, DTYPES[dtype])
    for name in DIVERGES_FROM_MERGE_AND_UNLOAD.get(variant, ()):
        ours.pop(name)
    for name, tensor in ours.items():
        assert torch.equal(tensor, reference[name]), f"{variant}/{dtype}: {name} differs from PEFT"
    assert {b["tensor"] for b in blocked} <= set(ours)


def test_a_blocking_whose_probe_differs_is_merged_whole(
    make_typed_base: Callable[[str, str], Path],
    make_variant_adapter: Callable[[str], Path],
    ref: type[Reference],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base, adapter = make_typed_base("gpt2", "bf16"), make_variant_adapter("fan_in_fan_out")
    monkeypatch.setattr(_execute, "probe", lambda *args, **kwargs: False)  # a BLAS where blocks differ
    plan = plan_merge(read_adapter(adapter), base)
    result = execute_merge(plan, tmp_path / "out", provenance={}, blocking=PICO_BLOCKS)
    assert set(result.merged_whole) == {b["tensor"] for b in PICO_BLOCKS.summary(plan)["blocked_tensors"]}
    assert result.to_dict()["merged_whole"]
    ours, reference = ref.load_dir_tensors(result.out_dir), ref.peft_merged_state_dict(base, adapter, torch.bfloat16)
    assert all(torch.equal(t, reference[n]) for n, t in ours.items())


def test_an_o_direct_merge_writes_the_buffers_it_read_and_merged_in_as_they_are(
    pico_llama_sharded: Path, llama_adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The output's header gets the base's data offset modulo the block size, so the O_DIRECT
    writer writes pieces from the buffers they were read and merged in (no copy); the bytes are
    those of the merge through the page cache."""
    from patchctl.merge._copy import DirectSink

    sinks: list[DirectSink] = []

    class Recorded(DirectSink):
        def __init__(self, fd: int, stage_bytes: int = 1 << 20, *, fallback: int | None = None) -> None:
            super().__init__(fd, stage_bytes, fallback=fallback)
            sinks.append(self)

    monkeypatch.setattr(_execute, "DirectSink", Recorded)
    plan = plan_merge(read_adapter(llama_adapter), pico_llama_sharded)
    a = execute_merge(plan, tmp_path / "cached", provenance={}, direct=False)
    b = execute_merge(plan, tmp_path / "streamed", provenance={}, direct=True)
    if not sinks:
        pytest.skip("this filesystem does not open files for O_DIRECT")
    assert len(sinks) == len(plan.shards)
    assert sum(s.direct_writes for s in sinks) > 0  # (pieces of a block or more; most pico tensors are smaller)
    for f in a.files:
        assert (a.out_dir / f.path).read_bytes() == (b.out_dir / f.path).read_bytes() or f.path == "patchctl.json"


@pytest.mark.parametrize("variant", ["plain", "embedding", "tied_lm_head_lora", "lora_bias"])
def test_overlapped_io_writes_the_bytes_of_the_sequential_path(
    variant: str,
    make_typed_base: Callable[[str, str], Path],
    make_variant_adapter: Callable[[str], Path],
    pico_llama_sharded: Path,
    llama_adapter: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_execute, "ROW_CHUNK_BYTES", 512)
    monkeypatch.setattr(_execute, "PIPELINE_BUFFERS", 2)  # the reader waits for the writer often
    kind, _ = VARIANTS[variant]
    cases = [(make_typed_base(kind, "bf16"), make_variant_adapter(variant)), (pico_llama_sharded, llama_adapter)]
    for i, (base, adapter) in enumerate(cases):
        plan = plan_merge(read_adapter(adapter), base)
        a = execute_merge(plan, tmp_path / f"seq{i}", provenance={}, blocking=PICO_BLOCKS, overlap=False)
        # one and several compute threads; everything through the page cache, and O_DIRECT (the
        # output written with it, the base read from the cache where it is there, else with it):
        # once cached, once evicted first
        for j, (threads, direct) in enumerate([(None, False), (1, False), (3, True), (2, "evicted")]):
            if direct == "evicted":
                for f in base.glob("*.safetensors"):
                    fd = os.open(f, os.O_RDONLY)
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    os.close(fd)
            b = execute_merge(
                plan,
                tmp_path / f"par{i}-{j}",
                provenance={},
                blocking=PICO_BLOCKS,
                threads=threads,
                direct=bool(direct),
            )
            files = sorted(p.name for p in a.out_dir.glob("*.safetensors"))
            assert files and files == sorted(p.name for p in b.out_dir.glob("*.safetensors"))
            for name in files:
                assert (a.out_dir / name).read_bytes() == (b.out_dir / name).read_bytes(), (name, threads, direct)
            assert [(f.path, f.sha256) for f in a.files if f.path != "patchctl.json"] == [
                (f.path, f.sha256) for f in b.files if f.path != "patchctl.json"
            ]


def test_error_in_the_pipeline_leaves_nothing(
    pico_llama_sharded: Path, llama_adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure on the compute thread stops the reader and writer; no output directory appears."""
    calls = {"n": 0}
    real = _execute._merge_piece

    def failing(*args: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(_execute, "_merge_piece", failing)
    monkeypatch.setattr(_execute, "ROW_CHUNK_BYTES", 512)
    plan = plan_merge(read_adapter(llama_adapter), pico_llama_sharded)
    with pytest.raises(RuntimeError, match="boom"):
        execute_merge(plan, tmp_path / "out", provenance={})
    assert list(tmp_path.iterdir()) == []


_RSS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from patchctl.adapter import read_adapter
    from patchctl.merge import execute_merge, plan_merge
    from patchctl.merge._blocks import Blocking, parse_size
    adapter, base, out, budget = sys.argv[1:5]
    plan = plan_merge(read_adapter(Path(adapter)), Path(base))
    blocking = Blocking(max_memory=parse_size(budget))
    result = execute_merge(plan, Path(out), provenance={}, blocking=blocking)
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over execve from the parent (pytest, large)
    hwm = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) * 1024
    print(json.dumps({"peak_rss": hwm,
                      "blocked": blocking.summary(plan)["blocked_tensors"], "whole": list(result.merged_whole)}))
    """
)


def _write_big_embedding_case(tmp: Path, vocab: int, hidden: int, r: int = 16) -> tuple[Path, Path]:
    """A base whose only tensor is a (vocab, hidden) bf16 embedding, and an embedding LoRA on it."""
    from patchctl.merge._io import encode_header, tensor_bytes

    base, adapter = tmp / "base", tmp / "adapter"
    base.mkdir()
    adapter.mkdir()
    nbytes = vocab * hidden * 2
    header = {"model.embed_tokens.weight": {"dtype": "BF16", "shape": [vocab, hidden], "data_offsets": [0, nbytes]}}
    gen = torch.Generator().manual_seed(0)
    rows = 4096
    with open(base / "model.safetensors", "wb") as f:
        f.write(encode_header({"__metadata__": {"format": "pt"}, **header}))
        for r0 in range(0, vocab, rows):
            n = min(rows, vocab - r0)
            f.write(tensor_bytes((torch.randn(n, hidden, generator=gen) * 0.02).to(torch.bfloat16)))
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": vocab,
              "hidden_size": hidden, "num_hidden_layers": 0, "tie_word_embeddings": False}  # fmt: skip
    (base / "config.json").write_text(json.dumps(config))
    a = torch.randn(r, vocab, generator=gen) * 0.02
    b = torch.randn(hidden, r, generator=gen) * 0.02
    lora = {
        "base_model.model.model.embed_tokens.lora_embedding_A": a,
        "base_model.model.model.embed_tokens.lora_embedding_B": b,
    }
    from safetensors.torch import save_file

    save_file(lora, str(adapter / "adapter_model.safetensors"))
    (adapter / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "task_type": "CAUSAL_LM",
                "r": r,
                "lora_alpha": 2 * r,
                "target_modules": ["embed_tokens"],
                "base_model_name_or_path": str(base),
            }
        )
    )
    return base, adapter


@pytest.mark.slow
def test_peak_rss_stays_under_the_budget_for_a_tensor_larger_than_it(tmp_path: Path) -> None:
    """A 600 MiB bf16 embedding (1.2 GiB fp32 delta) merged with a 512 MiB budget: peak RSS of
    the merging process stays under 512 MiB, and the rows equal PEFT's formula."""
    vocab, hidden = 153_600, 2048  # 600 MiB in bf16: the tensor alone exceeds the budget
    base, adapter = _write_big_embedding_case(tmp_path, vocab, hidden)
    out = tmp_path / "out"
    env = {"PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(adapter), str(base), str(out), "512MiB"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    print(f"peak RSS {report['peak_rss'] / 2**20:.0f} MiB; blocks: {report['blocked']}")
    assert report["blocked"] and report["blocked"][0]["blocks"] > 1 and report["whole"] == []
    assert report["peak_rss"] < 512 << 20
    # spot-check rows at the start, the middle and the (folded) tail against PEFT's formula
    from safetensors import safe_open

    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        a = f.get_tensor("base_model.model.model.embed_tokens.lora_embedding_A")
        b = f.get_tensor("base_model.model.model.embed_tokens.lora_embedding_B")
    with safe_open(str(base / "model.safetensors"), "pt") as fb, safe_open(str(out / "model.safetensors"), "pt") as fo:
        w, merged = fb.get_slice("model.embed_tokens.weight"), fo.get_slice("model.embed_tokens.weight")
        for r0, r1 in [(0, 512), (vocab // 2, vocab // 2 + 512), (vocab - 512, vocab)]:
            delta = (b @ a[:, r0:r1].contiguous()).T * 2.0
            assert torch.equal(merged[r0:r1], w[r0:r1] + delta.to(torch.bfloat16))


@pytest.mark.parametrize(
    ("rows", "cols", "budget_rows", "chunk_bytes"),
    [
        (300, 1024, 1000, 2 << 20),
        (300, 1024, 100, 2 << 20),
        (1000, 64, 1000, 4096),
        (65, 4096, 64, 1 << 20),
        (7, 16, 64, 64),
    ],
)
def test_pieces_are_made_of_whole_tiles_covering_every_row(
    rows: int, cols: int, budget_rows: int, chunk_bytes: int
) -> None:
    """The reads of a LoRA'd tensor: each piece is whole tiles (a tile is never split between two
    reads, so each tile's delta is one product), the tiles of the pieces cover every row once, in
    order, inside one delta block each, and no tile is shorter than min_block unless the tensor is."""
    from patchctl.merge._plan import Action, TensorPlan

    blocking = Blocking(max_memory=3 * budget_rows * cols * 4, reserved=0, overhead=0, floor=0)
    t = TensorPlan("w", "BF16", (rows, cols), (0, rows * cols * 2), (Action("lora"),))
    src = _execute._Source(0, 0, "BF16")
    reads = list(_execute._tensor_reads(t, src, 0, 0, blocking, chunk_bytes))
    tiles = [tile for r in reads for tile in r.payload.tiles]
    assert [r0 for r0, _ in tiles] == [0] + [r1 for _, r1 in tiles[:-1]] and tiles[-1][1] == rows
    blocks = blocking.ranges(t)
    for r in reads:
        p = r.payload
        assert (p.r0, p.r1) == (p.tiles[0][0], p.tiles[-1][1]) and p.block in blocks
        assert p.block[0] <= p.r0 and p.r1 <= p.block[1]
        assert r.nbytes == (p.r1 - p.r0) * cols * 2
        assert len(p.tiles) == 1 or r.nbytes <= chunk_bytes
    assert all(t1 - t0 >= min(rows, blocking.min_block) for t0, t1 in tiles)
    assert reads[-1].payload.last and not any(r.payload.last for r in reads[:-1])
