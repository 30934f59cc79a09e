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

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from patchctl._fs import sha256_file
from patchctl.bases import INDEX_FILE, header_length, weights_fingerprint
from patchctl.errors import InvalidInputError
from patchctl.merge._io import TORCH_DTYPES, copy_range, encode_header, pwrite_all, read_tensor, tensor_bytes
from patchctl.merge._output import MergeResult, atomic_output_dir, write_provenance
from patchctl.merge._plan import Action, MergePlan, ShardPlan, TensorPlan
from patchctl.merge._progress import MergeProgress, NullProgress

__all__ = ["execute_merge"]

#: test hook: seconds to sleep after each tensor (lets a test kill a merge half-way)
DELAY_ENV = "PATCHCTL_MERGE_TEST_DELAY"


class _AdapterTensors:
    def __init__(self, path: Path) -> None:
        self._file: Any = safe_open(str(path), framework="pt")

    def get(self, key: str) -> torch.Tensor:
        return self._file.get_tensor(key)  # type: ignore[no-any-return]


def _delta_linear(a: Action, tensors: _AdapterTensors) -> torch.Tensor:
    assert a.pair is not None
    lora_a = tensors.get(a.pair.a_key).float()
    lora_b = tensors.get(a.pair.b_key).float()
    delta = lora_b @ lora_a
    if a.transpose:
        delta = delta.T
    return delta.mul_(a.pair.scaling)  # in place: the same kernel as PEFT's `* scaling`, one buffer less


def _merged_tensor(
    t: TensorPlan, src_fd: int, src_data: int, shard: ShardPlan, tensors: _AdapterTensors
) -> torch.Tensor:
    dtype = TORCH_DTYPES[t.dtype]
    w: torch.Tensor | None = None
    for a in t.actions:
        if a.kind == "replace":
            assert a.replacement is not None
            w = tensors.get(a.replacement.key).to(dtype).contiguous()
        elif a.kind == "copy_of":
            src = next(s for s in shard.tensors if s.name == a.source)
            assert src.src_offsets is not None
            w = read_tensor(src_fd, src_data + src.src_offsets[0], src.nbytes, src.dtype, src.shape)
        else:
            if w is None:
                assert t.src_offsets is not None
                w = read_tensor(src_fd, src_data + t.src_offsets[0], t.nbytes, t.dtype, t.shape)
            assert a.pair is not None
            if a.kind == "lora_bias":
                assert a.pair.bias_key is not None
                w += tensors.get(a.pair.bias_key).float() * a.pair.scaling
            elif a.pair.kind == "embedding":
                lora_a = tensors.get(a.pair.a_key).float()
                lora_b = tensors.get(a.pair.b_key).float()
                w += (lora_b @ lora_a).T.mul_(a.pair.scaling).to(dtype)
            else:
                w += _delta_linear(a, tensors)
    assert w is not None
    return w


def _write_shard(
    plan: MergePlan, shard: ShardPlan, out: Path, tensors: _AdapterTensors, progress: MergeProgress, delay: float
) -> tuple[int, int]:
    header: dict[str, Any] = {"__metadata__": shard.metadata}
    end = max((t.src_offsets[1] for t in shard.tensors if t.src_offsets), default=0)
    placed: dict[str, tuple[int, int]] = {}
    for t in shard.tensors:
        if t.src_offsets is not None:
            placed[t.name] = t.src_offsets
        else:
            placed[t.name] = (end, end + t.nbytes)
            end += t.nbytes
        header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": list(placed[t.name])}
    head = encode_header(header)
    dst_data = len(head)
    touched = copied = 0
    src_path = plan.base_dir / shard.file
    src_fd = os.open(src_path, os.O_RDONLY)
    try:
        first8 = os.pread(src_fd, 8, 0)
        src_data = 8 + header_length(first8)
        dst_fd = os.open(out / shard.file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            pwrite_all(dst_fd, head, 0)
            run: list[int] = []  # [start, end, count] of pending untouched bytes

            def flush() -> None:
                if run:
                    copy_range(src_fd, dst_fd, run[1] - run[0], src_data + run[0], dst_data + run[0])
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
                        run.extend([t.src_offsets[0], t.src_offsets[1], 1])
                    continue
                flush()
                _write_touched(t, src_fd, src_data, dst_fd, dst_data + t.src_offsets[0], shard, tensors)
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
            os.fsync(dst_fd)
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)
    return touched, copied


def _write_touched(
    t: TensorPlan, src_fd: int, src_data: int, dst_fd: int, dst_off: int, shard: ShardPlan, tensors: _AdapterTensors
) -> None:
    w = _merged_tensor(t, src_fd, src_data, shard, tensors)
    if tuple(w.shape) != t.shape:  # guarded by the plan; a last line of defence against a wrong merge
        raise InvalidInputError(f"{t.name}: merged shape {list(w.shape)} differs from {list(t.shape)}")
    data = tensor_bytes(w)
    if len(data) != t.nbytes:
        raise InvalidInputError(f"{t.name}: merged tensor has {len(data)} bytes, expected {t.nbytes}")
    pwrite_all(dst_fd, data, dst_off)


def _write_config(plan: MergePlan, out: Path) -> None:
    src = plan.base_dir / "config.json"
    config = json.loads(src.read_text(encoding="utf-8"))
    for key, value in plan.config_changes.items():
        config[key] = value
        text = config.get("text_config")
        if isinstance(text, dict) and key in text:
            text[key] = value
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


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
    the base's weights fingerprint (computed here unless ``base_weights_sha256`` is given), the
    sha256 and size of every output file, and the tool version.
    """
    started = time.monotonic()
    progress = progress or NullProgress()
    delay = float(os.environ.get(DELAY_ENV) or 0)
    out_dir = Path(out_dir).expanduser()
    touched = copied = 0
    with atomic_output_dir(out_dir, force=force, protect=(plan.base_dir, plan.adapter.path)) as tmp:
        tensors = _AdapterTensors(plan.adapter.weights_path)
        progress.start(plan.total_tensors, plan.total_bytes)
        try:
            for shard in plan.shards:
                t, c = _write_shard(plan, shard, tmp, tensors, progress, delay)
                touched += t
                copied += c
        finally:
            progress.finish()
        if plan.sharded:
            index = dict(plan.index_extra)
            meta = dict(index.get("metadata") or {})
            meta["total_size"] = plan.total_bytes
            index["metadata"] = meta
            index["weight_map"] = {t.name: s.file for s in plan.shards for t in sorted(s.tensors, key=lambda t: t.name)}
            index["weight_map"] = dict(sorted(index["weight_map"].items()))
            (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        for name in plan.copied_files:
            if name == "config.json" and plan.config_changes:
                _write_config(plan, tmp)
            else:
                _copy_file(plan.base_dir / name, tmp / name)
        if base_weights_sha256 is None:
            base_weights_sha256 = weights_fingerprint(
                (s.file, sha256_file(plan.base_dir / s.file)) for s in plan.shards
            )
        files, doc = write_provenance(
            tmp,
            kind="merged",
            provenance=provenance,
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


def _copy_file(src: Path, dst: Path) -> None:
    """Copy a regular file (following symlinks, as in a Hub cache snapshot), in the kernel where possible."""
    size = src.stat().st_size
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        copy_range(fi.fileno(), fo.fileno(), size, 0, 0)
        os.fsync(fo.fileno())
