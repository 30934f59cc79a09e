"""Executing a merge plan: stream each base shard into its output shard, one tensor in memory.

Untouched tensors are copied as byte ranges in the kernel (``copy_file_range``): the output
shard keeps the base's header order and data offsets, so runs of untouched tensors are one
copy each. Touched tensors are read with plain reads (no mmap, so the page cache does not show
up as our RSS), merged exactly as PEFT's ``merge_and_unload`` does, and written in place.

PEFT semantics (``peft/tuners/lora/layer.py``, adapter weights loaded as fp32 by default):

- Linear / Conv1D: ``delta = transpose(B @ A, fan_in_fan_out) * s`` in fp32, then ``W += delta``
  (in-place on the base dtype: one rounding);
- Embedding: ``delta = (B @ A).T * s`` in fp32, then ``W += delta.to(W.dtype)`` (two roundings);
- ``lora_bias``: ``b += B.bias * s``;
- ``modules_to_save`` / trained biases / saved embedding ``base_layer``: the adapter tensor,
  cast to the base dtype, replaces the base tensor before any delta is added.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any

import torch

from patchctl.bases import INDEX_FILE, header_length, parse_safetensors_header, weights_fingerprint
from patchctl.errors import InvalidInputError, UnsupportedError
from patchctl.merge._copy import copy_file
from patchctl.merge._io import TORCH_DTYPES, copy_range, encode_header, pwrite_all, read_tensor, tensor_bytes
from patchctl.merge._output import FileRecord, MergeResult, atomic_output_dir, write_provenance
from patchctl.merge._plan import DTYPE_SIZES, Action, MergePlan, ShardPlan, TensorPlan
from patchctl.merge._progress import MergeProgress, NullProgress

__all__ = ["execute_merge"]

#: test hook: seconds to sleep after each tensor (lets a test kill a merge half-way)
DELAY_ENV = "PATCHCTL_MERGE_TEST_DELAY"
#: how much of a touched tensor is read, merged and written at once
ROW_CHUNK_BYTES = 2 << 20


class _AdapterTensors:
    """Adapter tensors read one at a time with plain reads (an mmap would count towards RSS)."""

    def __init__(self, path: Path, header: Mapping[str, Any], max_delta: int) -> None:
        #: reusable buffers (no allocation churn, so no heap growth): row chunks of touched
        #: tensors, and the fp32 delta (sized for the largest one)
        self.scratch = bytearray(2 * ROW_CHUNK_BYTES)
        self._delta = torch.empty(max_delta, dtype=torch.float32)
        self._path = path
        self._header = header
        self._fd = os.open(path, os.O_RDONLY)
        self._data = 8 + header_length(os.pread(self._fd, 8, 0))

    def location(self, key: str) -> _Source:
        info = self._header[key]
        dtype = str(info["dtype"])
        if dtype not in TORCH_DTYPES:
            raise UnsupportedError(f"{self._path}: {key} has dtype {dtype}; adapter tensors must be float")
        return _Source(self._fd, self._data + int(info["data_offsets"][0]), dtype)

    def get(self, key: str) -> torch.Tensor:
        info = self._header[key]
        start, end = (int(x) for x in info["data_offsets"])
        src = self.location(key)
        return read_tensor(src.fd, src.offset, end - start, src.dtype, tuple(int(d) for d in info["shape"]))

    def lora_product(self, a_key: str, b_key: str) -> torch.Tensor:
        """``B @ A`` in fp32 (adapter weights upcast as PEFT's autocast_adapter_dtype does),
        written into the reused delta buffer: the same gemm as ``B @ A``, without a new allocation."""
        lora_a = self.get(a_key).float()
        lora_b = self.get(b_key).float()
        rows, cols = lora_b.shape[0], lora_a.shape[1]
        out = self._delta[: rows * cols].view(rows, cols)
        return torch.mm(lora_b, lora_a, out=out)

    def close(self) -> None:
        os.close(self._fd)


@dataclass(frozen=True)
class _Source:
    """Where a touched tensor's starting values are: raw bytes of ``dtype`` at ``offset`` in ``fd``."""

    fd: int
    offset: int
    dtype: str


def _delta_linear(a: Action, tensors: _AdapterTensors) -> torch.Tensor:
    """PEFT's Linear.get_delta_weight with fp32 adapter weights: transpose(B @ A, fan_in_fan_out) * s."""
    assert a.pair is not None
    delta = tensors.lora_product(a.pair.a_key, a.pair.b_key)
    if a.transpose:
        delta = delta.T
    return delta.mul_(a.pair.scaling)  # in place: the same kernel as PEFT's `* scaling`, one buffer less


def _delta_param(a: Action, tensors: _AdapterTensors) -> torch.Tensor:
    """PEFT's ParamWrapper.get_delta_weight (fp32 adapter weights) where this base tensor lies:
    ``einsum("o r e, e r i -> e o i")`` (``e i o`` for (experts, in, out) parameters) times s, or
    Linear's ``(B @ A) * s`` for a 2-D parameter; for a per-expert checkpoint tensor, that expert's
    rows. (PEFT then casts it to the parameter's dtype and adds: two roundings in half precision.)"""
    assert a.pair is not None and a.piece is not None
    p, piece = a.pair, a.piece
    lora_a, lora_b = tensors.get(p.a_key).float(), tensors.get(p.b_key).float()
    if p.num_experts == 1:
        return (lora_b @ lora_a) * p.scaling
    weight_a = lora_a.reshape(p.num_experts, -1, lora_a.shape[-1])
    weight_b = lora_b.reshape(lora_b.shape[0], -1, p.num_experts)
    equation = "o r e, e r i -> e i o" if a.transpose else "o r e, e r i -> e o i"
    if piece.expert is None:
        return torch.einsum(equation, weight_b, weight_a) * p.scaling
    e = piece.expert
    delta = torch.einsum(equation, weight_b[:, :, e : e + 1], weight_a[e : e + 1]) * p.scaling
    assert piece.rows is not None
    return delta[0, piece.rows[0] : piece.rows[1]]


def _write_touched(
    t: TensorPlan, src_fd: int, src_data: int, dst_fd: int, dst_off: int, shard: ShardPlan, tensors: _AdapterTensors
) -> None:
    """Merge one tensor and write it at ``dst_off``, streaming its rows in chunks.

    The fp32 deltas are whole tensors (a row-blocked matmul is not bit-identical to PEFT's);
    the starting values are read, added to and written ROW_CHUNK_BYTES at a time (elementwise,
    so chunking does not change a bit).
    """
    dtype = TORCH_DTYPES[t.dtype]
    source = _Source(src_fd, src_data + t.src_offsets[0], t.src_dtype) if t.src_offsets else None
    adds: list[tuple[torch.Tensor, bool]] = []  # (fp32 addend shaped like t, cast to t's dtype before adding)
    for a in t.actions:
        if a.kind == "replace":
            assert a.replacement is not None
            source = tensors.location(a.replacement.key)
        elif a.kind == "copy_of":
            src = next(s for s in shard.tensors if s.name == a.source)
            assert src.src_offsets is not None
            source = _Source(src_fd, src_data + src.src_offsets[0], src.src_dtype)
        else:
            assert a.pair is not None
            if a.kind == "lora_bias":
                assert a.pair.bias_key is not None
                adds.append((tensors.get(a.pair.bias_key).float() * a.pair.scaling, False))
            elif a.kind == "lora_param":
                adds.append((_delta_param(a, tensors), True))  # ParamWrapper: delta.to(W.dtype), then W += delta
            elif a.pair.kind == "embedding":
                # PEFT's Embedding.merge: W += (transpose(B @ A, True) * s).to(W.dtype): two roundings
                delta = tensors.lora_product(a.pair.a_key, a.pair.b_key)
                adds.append((delta.T.mul_(a.pair.scaling), True))
            else:
                adds.append((_delta_linear(a, tensors), False))  # Linear.merge: W += delta: one rounding
    assert source is not None
    for d, _ in adds:
        if tuple(d.shape) != t.shape:  # guarded by the plan; a last line of defence against a wrong merge
            raise InvalidInputError(f"{t.name}: delta shape {list(d.shape)} differs from {list(t.shape)}")
    rows = t.shape[0] if t.shape else 1
    row_elems = prod(t.shape[1:]) if t.shape else 1
    in_size, out_size = DTYPE_SIZES[source.dtype], DTYPE_SIZES[t.dtype]
    step = max(1, ROW_CHUNK_BYTES // max(1, row_elems * 4))
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        shape = (r1 - r0, *t.shape[1:]) if t.shape else ()
        n = (r1 - r0) * row_elems
        w = read_tensor(
            source.fd, source.offset + r0 * row_elems * in_size, n * in_size, source.dtype, shape, into=tensors.scratch
        )
        if source.dtype != t.dtype:
            w = w.to(dtype)
        for d, cast in adds:
            part = d[r0:r1] if t.shape else d
            w += part.to(dtype) if cast else part
        pwrite_all(dst_fd, tensor_bytes(w), dst_off + r0 * row_elems * out_size)


def _check_unchanged(path: Path, header: Mapping[str, Any], shard: ShardPlan) -> None:
    """The base file still has the layout the plan was made from (it may have been replaced since)."""
    for t in shard.tensors:
        if t.src_offsets is None:
            continue
        info = header.get(t.name)
        if (
            not isinstance(info, Mapping)
            or str(info.get("dtype")) != t.src_dtype
            or tuple(info.get("shape", ())) != t.shape
            or tuple(info.get("data_offsets", ())) != t.src_offsets
        ):
            raise InvalidInputError(f"{path}: changed since the merge was planned ({t.name}); plan again")


def _write_shard(
    plan: MergePlan, shard: ShardPlan, out: Path, tensors: _AdapterTensors, progress: MergeProgress, delay: float
) -> tuple[int, int]:
    header: dict[str, Any] = {"__metadata__": shard.metadata}
    placed = shard.output_offsets()  # the base's offsets, shifted after a tensor written in another dtype
    end = max((e for _, e in placed.values()), default=0)
    for t in shard.tensors:
        header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": list(placed[t.name])}
    head = encode_header(header)
    dst_data = len(head)
    touched = copied = 0
    src_path = plan.base_dir / shard.file
    src_fd = os.open(src_path, os.O_RDONLY)
    try:
        first8 = os.pread(src_fd, 8, 0)
        src_data = 8 + header_length(first8)
        _check_unchanged(src_path, parse_safetensors_header(first8 + os.pread(src_fd, src_data - 8, 8)), shard)
        dst_fd = os.open(out / shard.file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            pwrite_all(dst_fd, head, 0)
            run: list[int] = []  # [start, end, count, output start] of pending untouched bytes

            def flush() -> None:
                if run:
                    copy_range(src_fd, dst_fd, run[1] - run[0], src_data + run[0], dst_data + run[3])
                    progress.advance(run[2], run[1] - run[0])
                    run.clear()

            for t in sorted((t for t in shard.tensors if t.src_offsets), key=lambda t: t.src_offsets or (0, 0)):
                assert t.src_offsets is not None
                if not t.touched:
                    copied += 1
                    if run and run[1] == t.src_offsets[0]:
                        run[1] = t.src_offsets[1]
                        run[2] += 1
                    else:
                        flush()
                        run.extend([t.src_offsets[0], t.src_offsets[1], 1, placed[t.name][0]])
                    continue
                flush()
                _write_touched(t, src_fd, src_data, dst_fd, dst_data + placed[t.name][0], shard, tensors)
                touched += 1
                progress.advance(1, t.nbytes)
                if delay:
                    time.sleep(delay)
            flush()
            for t in shard.tensors:
                if t.src_offsets is None:
                    _write_touched(t, src_fd, src_data, dst_fd, dst_data + placed[t.name][0], shard, tensors)
                    touched += 1
                    progress.advance(1, t.nbytes)
            os.ftruncate(dst_fd, dst_data + end)
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)
    return touched, copied


def _write_config(plan: MergePlan, out: Path) -> None:
    src = plan.base_dir / "config.json"
    config = json.loads(src.read_text(encoding="utf-8"))
    for key, value in plan.config_changes.items():
        config[key] = value
        text = config.get("text_config")
        if isinstance(text, dict) and key in text:
            text[key] = value
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Few intra-op threads: the ops are small and memory-bound, and the hashing threads need
    the other cores (oversubscribed OpenMP threads spin). The thread count does not change results."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _finish_file(path: Path, name: str) -> FileRecord:
    """fsync and hash a written file (runs in a worker thread, overlapping the next shard)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return FileRecord(name, _sha256(path), path.stat().st_size)


def _sha256(path: Path) -> str:
    """sha256 of a file through one small reused buffer (runs in worker threads: keeps their heaps small)."""
    h = hashlib.sha256()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def execute_merge(
    plan: MergePlan,
    out_dir: Path,
    *,
    force: bool = False,
    progress: MergeProgress | None = None,
    provenance: Mapping[str, Any],
    base_weights_sha256: str | None = None,
) -> MergeResult:
    """Write the merged model described by ``plan`` to ``out_dir`` (atomically; see the module doc).

    ``provenance`` (patch ref, manifest digest, ...) is recorded in ``patchctl.json`` together with
    the base's weights fingerprint (computed here unless ``base_weights_sha256`` is given, e.g.
    from the checks' ``BaseFacts``), the sha256 and size of every output file, and the tool version.
    """
    started = time.monotonic()
    progress = progress or NullProgress()
    delay = float(os.environ.get(DELAY_ENV) or 0)
    out_dir = Path(out_dir).expanduser()
    touched = copied = 0
    with (
        atomic_output_dir(out_dir, force=force, protect=(plan.base_dir, plan.adapter.path)) as tmp,
        ThreadPoolExecutor(max_workers=2, thread_name_prefix="patchctl-merge") as pool,
        _torch_threads(max(1, min(4, (os.cpu_count() or 2) - 2))),
    ):
        base_hashes: list[tuple[str, Future[str]]] = []
        if base_weights_sha256 is None:
            base_hashes = [(s.file, pool.submit(_sha256, plan.base_dir / s.file)) for s in plan.shards]
        finished: list[Future[FileRecord]] = []
        max_delta = max((p.b_shape[0] * p.a_shape[-1] for p in plan.adapter.pairs), default=0)
        tensors = _AdapterTensors(plan.adapter.weights_path, plan.adapter.header, max_delta)
        progress.start(plan.total_tensors, plan.total_bytes)
        try:
            for shard in plan.shards:
                t, c = _write_shard(plan, shard, tmp, tensors, progress, delay)
                touched += t
                copied += c
                finished.append(pool.submit(_finish_file, tmp / shard.file, shard.file))
        finally:
            progress.finish()
            tensors.close()
        if plan.sharded:
            index = dict(plan.index_extra)
            meta = dict(index.get("metadata") or {})
            meta["total_size"] = plan.total_bytes
            index["metadata"] = meta
            index["weight_map"] = dict(sorted((t.name, s.file) for s in plan.shards for t in s.tensors))
            (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        for name in plan.copied_files:
            if name == "config.json" and plan.config_changes:
                _write_config(plan, tmp)
            else:
                copy_file(plan.base_dir / name, tmp / name)
        if base_weights_sha256 is None:
            base_weights_sha256 = weights_fingerprint((name, fut.result()) for name, fut in base_hashes)
        known = {rec.path: rec for rec in (fut.result() for fut in finished)}
        files, doc = write_provenance(
            tmp,
            kind="merged",
            provenance=provenance,
            known=known,
            extra={
                "base": {"path": str(plan.base_dir.resolve()), "weights_sha256": base_weights_sha256},
                "adapter": {
                    "path": str(plan.adapter.path.resolve()),
                    "lora": plan.adapter.lora_spec().model_dump(mode="json"),
                },
                "config_changes": dict(plan.config_changes),
                "tensors_touched": touched,
            },
        )
    return MergeResult(
        out_dir=Path(os.path.abspath(out_dir)),
        format="merged",
        files=files,
        tensors_touched=touched,
        tensors_copied=copied,
        bytes_written=sum(f.size for f in files),
        seconds=time.monotonic() - started,
        provenance=doc,
    )
