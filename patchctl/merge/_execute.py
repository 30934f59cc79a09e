"""Executing a merge plan: stream each base shard into its output shard in bounded memory.

The output shard keeps the base's header order and data offsets (its header padded so that
they keep their alignment too), so runs of untouched tensors are one range each. Touched tensors
are read in chunks of rows (no mmap, so the page cache does not show up as our RSS), merged
exactly as PEFT's ``merge_and_unload`` does, and written in place. The output is written with
``O_DIRECT`` where the filesystem allows it (:class:`~patchctl.merge._copy.DirectSink`: no copy
into the page cache and no dirty pages to reclaim and flush, which cost more CPU than the merge),
mostly from the very buffers the pieces were read and merged in; the base is read from the page
cache where it is there (:class:`~patchctl._fs.Residency`), else with ``O_DIRECT``. Elsewhere,
reads and writes go through the cache, untouched ranges are copied in the kernel
(``copy_file_range``), and for a base larger than a quarter of the RAM both are dropped from
the cache behind the merge (:func:`~patchctl._fs.bypasses_page_cache`).

Reading, computing and writing overlap (``_pipeline``: a reader thread, this
thread preparing each piece in order, compute threads, a writer and a hasher thread, a bounded
pool of buffers); LoRA deltas are computed a block of rows at a time where the whole one would
not fit the memory budget (``_blocks``, ``_delta``).

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
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from math import prod
from pathlib import Path
from typing import Any

import torch

from patchctl._fs import Residency, bypasses_page_cache
from patchctl.bases import INDEX_FILE, header_length, parse_safetensors_header, weights_fingerprint
from patchctl.errors import InvalidInputError, UnsupportedError
from patchctl.merge._blocks import Blocking, carries_lora, carries_param
from patchctl.merge._copy import DirectSink, WriteBehind, copy_file
from patchctl.merge._delta import lora_delta, probe
from patchctl.merge._io import TORCH_DTYPES, encode_header, pwrite_all, read_tensor, tensor_bytes
from patchctl.merge._output import FileRecord, MergeResult, atomic_output_dir, write_provenance
from patchctl.merge._pipeline import Call, Copy, Pipeline, Read, StreamHash, Write
from patchctl.merge._plan import DTYPE_SIZES, Action, MergePlan, ShardPlan, TensorPlan
from patchctl.merge._progress import MergeProgress, NullProgress

__all__ = ["execute_merge"]

log = logging.getLogger(__name__)

#: test hook: seconds to sleep after each tensor (lets a test kill a merge half-way)
DELAY_ENV = "PATCHCTL_MERGE_TEST_DELAY"
#: how much of a touched tensor is read, merged and written at once (one pooled buffer)
ROW_CHUNK_BYTES = 2 << 20
#: pooled buffers: reads ahead and writes behind in flight (OVERHEAD in _blocks counts them)
PIPELINE_BUFFERS = 4


class _AdapterTensors:
    """Adapter tensors read one at a time with plain reads (an mmap would count towards RSS)."""

    def __init__(self, path: Path, header: Mapping[str, Any]) -> None:
        self._path = path
        self._header = header
        self.fd = os.open(path, os.O_RDONLY)
        self._data = 8 + header_length(os.pread(self.fd, 8, 0))

    def location(self, key: str) -> _Source:
        info = self._header[key]
        dtype = str(info["dtype"])
        if dtype not in TORCH_DTYPES:
            raise UnsupportedError(f"{self._path}: {key} has dtype {dtype}; adapter tensors must be float")
        return _Source(self.fd, self._data + int(info["data_offsets"][0]), dtype)

    def get(self, key: str) -> torch.Tensor:
        info = self._header[key]
        start, end = (int(x) for x in info["data_offsets"])
        src = self.location(key)
        return read_tensor(src.fd, src.offset, end - start, src.dtype, tuple(int(d) for d in info["shape"]))

    def close(self) -> None:
        os.close(self.fd)


@dataclass(frozen=True)
class _Source:
    """Where a touched tensor's starting values are: raw bytes of ``dtype`` at ``offset`` in ``fd``."""

    fd: int
    offset: int
    dtype: str


@dataclass(frozen=True)
class _Move:
    """Untouched bytes read through the pipeline's buffers and written at ``dst_off`` of ``dst_fd``
    as they are (an O_DIRECT output: see :class:`~patchctl.merge._copy.DirectSink`)."""

    dst_fd: int
    dst_off: int
    tensors: int


@dataclass(frozen=True)
class _Piece:
    """Rows ``[r0, r1)`` of a touched tensor, inside its delta block ``block``, made of whole
    ``tiles`` (the row ranges its LoRA delta is computed and added in)."""

    tensor: TensorPlan
    source_dtype: str
    r0: int
    r1: int
    block: tuple[int, int]
    dst_fd: int
    dst_off: int
    last: bool
    tiles: tuple[tuple[int, int], ...] = ()


def _delta_param(
    a: Action, lora_a: torch.Tensor, lora_b: torch.Tensor, rows: tuple[int, int] | None = None
) -> torch.Tensor:
    """PEFT's ParamWrapper.get_delta_weight (fp32 adapter weights) where this base tensor lies:
    ``einsum("o r e, e r i -> e o i")`` (``e i o`` for (experts, in, out) parameters) times s, or
    Linear's ``(B @ A) * s`` for a 2-D parameter; for a per-expert checkpoint tensor, that expert's
    rows. (PEFT then casts it to the parameter's dtype and adds: two roundings in half precision.)
    ``rows``: only rows ``[r0, r1)`` of a blockable tensor (:func:`_param_blockable`): those experts
    of a fused experts tensor, those rows of a 2-D parameter's product."""
    assert a.pair is not None and a.piece is not None
    p, piece = a.pair, a.piece
    if p.num_experts == 1:
        return ((lora_b if rows is None else lora_b[rows[0] : rows[1]]) @ lora_a) * p.scaling
    weight_a = lora_a.reshape(p.num_experts, -1, lora_a.shape[-1])
    weight_b = lora_b.reshape(lora_b.shape[0], -1, p.num_experts)
    equation = "o r e, e r i -> e i o" if a.transpose else "o r e, e r i -> e o i"
    if piece.expert is None:
        if rows is not None:
            weight_b, weight_a = weight_b[:, :, rows[0] : rows[1]], weight_a[rows[0] : rows[1]]
        return torch.einsum(equation, weight_b, weight_a) * p.scaling
    e = piece.expert
    delta = torch.einsum(equation, weight_b[:, :, e : e + 1], weight_a[e : e + 1]) * p.scaling
    assert piece.rows is not None
    return delta[0, piece.rows[0] : piece.rows[1]]


def _param_blockable(t: TensorPlan, a: Action) -> bool:
    """A ``target_parameters`` delta that can be computed for a block of the base tensor's rows
    alone: a fused experts tensor (rows = experts, each its own product) or a 2-D parameter."""
    assert a.pair is not None and a.piece is not None
    if a.piece.expert is not None:
        return False  # a per-expert checkpoint tensor: one expert's delta, already bounded
    return (a.pair.num_experts > 1 and len(t.shape) == 3) or (a.pair.num_experts == 1 and len(t.shape) == 2)


@dataclass(frozen=True)
class _TileWork:
    """One LoRA product added tile by tile: PEFT's Linear (``transpose``: ``fan_in_fan_out``) or
    Embedding (``embedding``: the delta rounded to the weight's dtype before the add)."""

    lora_a: torch.Tensor
    lora_b: torch.Tensor
    scaling: float
    transpose: bool
    embedding: bool


class _TileBuffers:
    """Reused tile buffers of each compute thread (allocated on its first tile): the fp32 delta,
    the weight's rows in fp32, the delta rounded to the weight's dtype. Torch would otherwise
    allocate a temporary per tile for a mixed-dtype add (an input cast to fp32, or the output
    computed in fp32 and copied back): tiles of 1-4 MiB are above the mmap threshold, so each
    temporary is mapped, faulted in page by page and unmapped again (measured: the add 1.6-2.4×
    slower per value than in these buffers)."""

    def __init__(self, elems: int) -> None:
        self._elems = elems
        self._local = threading.local()

    def get(self, dtype: torch.dtype = torch.float32, slot: int = 0) -> torch.Tensor:
        bufs: dict[tuple[torch.dtype, int], torch.Tensor] | None = getattr(self._local, "bufs", None)
        if bufs is None:
            bufs = self._local.bufs = {}
        if (dtype, slot) not in bufs:
            bufs[dtype, slot] = torch.empty(self._elems, dtype=dtype)
        return bufs[dtype, slot]


def _add_tile(rows: torch.Tensor, delta: torch.Tensor, embedding: bool, buffers: _TileBuffers) -> None:
    """PEFT's ``W += delta`` (Linear: computed in fp32, one rounding) or ``W += delta.to(W.dtype)``
    (Embedding: two roundings) on these rows, with no temporary (see :class:`_TileBuffers`):
    ``delta += float(W)`` (the same fp32 sum: IEEE addition commutes), then ``W.copy_(delta)``
    (the same rounding to W's dtype)."""
    if rows.dtype == delta.dtype:
        rows += delta
    elif embedding:
        half = buffers.get(rows.dtype)[: delta.numel()].view(delta.shape)
        half.copy_(delta)  # delta.to(W.dtype)
        rows += half
    else:
        up = buffers.get(torch.float32, 1)[: rows.numel()].view(rows.shape)
        up.copy_(rows)
        delta += up
        rows.copy_(delta)


@dataclass(frozen=True)
class _PieceWork:
    """What a piece's computation needs, taken in job order: the fp32 addends of its block (see
    :meth:`_Deltas.addends`) and its tiled LoRA products (:meth:`_Deltas.tile_work`)."""

    addends: list[tuple[torch.Tensor, bool, int]]
    tiles: tuple[_TileWork, ...]


@dataclass
class _Deltas:
    """What the pieces of the tensor being merged add, taken in job order on the thread that plans
    them: the block deltas that are not tiled (a ``lora_bias``, a ``target_parameters`` block, a
    tensor merged whole), the LoRA factors of the tiled ones, and each blocking probed once
    against the whole product (in ``buffer``, a tile's size: the probes run on this thread)."""

    tensors: _AdapterTensors
    blocking: Blocking
    buffer: torch.Tensor
    #: (tensor name, r0, r1) -> fp32 addends for those rows: (values, cast to the tensor's dtype first)
    current: tuple[tuple[str, int, int], list[tuple[torch.Tensor, bool]]] | None = None
    probes: dict[tuple[Any, ...], bool] = field(default_factory=dict)
    #: tensors whose delta was computed whole because a probe differed
    whole: list[str] = field(default_factory=list)
    _lora: tuple[str, torch.Tensor, torch.Tensor] | None = None
    #: the whole delta of a `target_parameters` (MoE) tensor, computed once and sliced per block
    _param: tuple[str, torch.Tensor] | None = None

    def _ab(self, t: TensorPlan, a: Action) -> tuple[torch.Tensor, torch.Tensor]:
        if self._lora is None or self._lora[0] != t.name:
            assert a.pair is not None
            # adapter weights upcast to fp32, as PEFT's autocast_adapter_dtype does
            self._lora = (t.name, self.tensors.get(a.pair.a_key).float(), self.tensors.get(a.pair.b_key).float())
        return self._lora[1], self._lora[2]

    def addends(self, p: _Piece) -> list[tuple[torch.Tensor, bool, int]]:
        """The fp32 addends for ``p``'s rows: (values of a block, cast first, the block's first row)."""
        t = p.tensor
        key = self.current[0] if self.current else None
        if key is None or key[0] != t.name or not (key[1] <= p.r0 and p.r1 <= key[2]):
            b0, b1 = p.block
            if t.name in self.whole:
                b0, b1 = 0, t.shape[0]
            self.current = ((t.name, b0, b1), self._compute(t, b0, b1))
        assert self.current is not None
        (_, b0, _), adds = self.current
        return [(d, cast, b0) for d, cast in adds]

    def _compute(self, t: TensorPlan, b0: int, b1: int) -> list[tuple[torch.Tensor, bool]]:
        adds: list[tuple[torch.Tensor, bool]] = []
        rows = t.shape[0] if t.shape else 1
        for a in t.actions:
            if a.kind == "lora_bias":
                assert a.pair is not None and a.pair.bias_key is not None
                adds.append((self.tensors.get(a.pair.bias_key).float() * a.pair.scaling, False))
            elif a.kind == "lora_param":
                # ParamWrapper: delta.to(W.dtype), then W += delta (PEFT's arithmetic). A fused
                # experts tensor (or a 2-D parameter) in row blocks: the delta of experts [b0, b1)
                # only, once the blocking is probed; else (a per-expert tensor: one expert's delta,
                # or a probe that differs) the delta of the whole tensor, sliced per block
                if (b0, b1) != (0, rows) and t.name not in self.whole and _param_blockable(t, a):
                    if self._param_probed(t, a):
                        adds.append((_delta_param(a, *self._ab(t, a), rows=(b0, b1)), True))
                        continue
                    self.whole.append(t.name)
                    log.warning("%s: expert blocks differ from the whole product on this BLAS; merged whole", t.name)
                if self._param is None or self._param[0] != t.name:
                    self._param = (t.name, _delta_param(a, *self._ab(t, a)))
                adds.append((self._param[1][b0:b1] if t.shape else self._param[1], True))
            elif a.kind == "lora":
                assert a.pair is not None
                lora_a, lora_b = self._ab(t, a)
                # PEFT's Embedding.merge: W += (transpose(B @ A, True) * s).to(W.dtype): two roundings;
                # Linear.merge: W += transpose(B @ A, fan_in_fan_out) * s: one rounding
                embedding = a.pair.kind == "embedding"
                transpose = embedding or a.transpose
                if t.name not in self.whole:
                    if self._probed(t, lora_a, lora_b, transpose):
                        continue  # computed and added tile by tile (:meth:`add_tiles`)
                    self.whole.append(t.name)
                    log.warning("%s: row blocks differ from the whole product on this BLAS; merged whole", t.name)
                b0, b1 = 0, rows  # the whole product, in a fresh tensor (over the budget)
                delta = lora_delta(lora_a, lora_b, a.pair.scaling, transpose=transpose, rows=(b0, b1))
                if tuple(delta.shape[1:]) != t.shape[1:] or delta.shape[0] != b1 - b0:  # guarded by the plan
                    raise InvalidInputError(f"{t.name}: delta shape {list(delta.shape)} differs from {list(t.shape)}")
                adds.append((delta, embedding))
        return adds

    def _param_probed(self, t: TensorPlan, a: Action) -> bool:
        """Whether the blocks give the whole delta's bits: the first block and the last block's
        height, computed as two blocks, against the same rows computed at once."""
        ranges = self.blocking.ranges(t)
        first, last = ranges[0][1] - ranges[0][0], ranges[-1][1] - ranges[-1][0]
        sig = ("param", t.name, first, last)
        if sig not in self.probes:
            lora_a, lora_b = self._ab(t, a)
            n = min(t.shape[0], first + last)
            head = min(first, n)
            whole = _delta_param(a, lora_a, lora_b, rows=(0, n))
            self.probes[sig] = torch.equal(_delta_param(a, lora_a, lora_b, rows=(0, head)), whole[:head]) and (
                n <= first or torch.equal(_delta_param(a, lora_a, lora_b, rows=(first, n)), whole[first:n])
            )
        return self.probes[sig]

    def tile_work(self, p: _Piece) -> tuple[_TileWork, ...]:
        """The LoRA products whose delta is computed and added tile by tile on ``p``'s rows (none
        for a tensor whose tiling was refused by its probe: it got its whole delta from
        :meth:`addends`). Taken in job order, on the thread that plans the pieces."""
        t = p.tensor
        if t.name in self.whole or not p.tiles:
            return ()
        work = []
        for a in t.actions:
            if a.kind == "lora":
                assert a.pair is not None
                lora_a, lora_b = self._ab(t, a)
                embedding = a.pair.kind == "embedding"
                work.append(_TileWork(lora_a, lora_b, a.pair.scaling, embedding or a.transpose, embedding))
        return tuple(work)

    def _probed(self, t: TensorPlan, lora_a: torch.Tensor, lora_b: torch.Tensor, transpose: bool) -> bool:
        """Whether this tensor's tiles give the whole product's bits: each tile height that occurs
        (the tile, a block's folded tail, the last block's) probed after a full tile."""
        rows = t.shape[0]
        tiles = [tile for block in self.blocking.ranges(t) for tile in self.blocking.tiles(t, block)]
        heights = sorted({t1 - t0 for t0, t1 in tiles})
        first = tiles[0][1] - tiles[0][0]
        if heights == [rows]:  # one tile: the whole product itself
            return True
        for h in heights:
            sig = (transpose, tuple(lora_a.shape), tuple(lora_b.shape), first, h)
            if sig not in self.probes:
                head = min(first, rows - h)
                self.probes[sig] = probe(
                    lora_a, lora_b, transpose=transpose, ranges=[(0, head), (head, head + h)], out=self.buffer
                )
            if not self.probes[sig]:
                return False
        return True


def _source(t: TensorPlan, shard: ShardPlan, src_fd: int, src_data: int, tensors: _AdapterTensors) -> _Source:
    """Where ``t``'s starting values are read: the base tensor, the adapter tensor that replaces it,
    or (for a tensor the merge adds) the base tensor it is a copy of."""
    source = _Source(src_fd, src_data + t.src_offsets[0], t.src_dtype) if t.src_offsets else None
    for a in t.actions:
        if a.kind == "replace":
            assert a.replacement is not None
            source = tensors.location(a.replacement.key)
        elif a.kind == "copy_of":
            src = next(s for s in shard.tensors if s.name == a.source)
            assert src.src_offsets is not None
            source = _Source(src_fd, src_data + src.src_offsets[0], src.src_dtype)
    assert source is not None
    return source


def _tensor_reads(
    t: TensorPlan,
    source: _Source,
    dst_fd: int,
    dst_off: int,
    blocking: Blocking,
    chunk_bytes: int,
    direct_fd: int | None = None,
    resident: Residency | None = None,
) -> Iterator[Read]:
    """The chunks of rows of a touched tensor, each inside one delta block, as reads of its source
    (through ``direct_fd``, the source opened with ``O_DIRECT``, when given)."""
    rows = t.shape[0] if t.shape else 1
    row_elems = prod(t.shape[1:]) if t.shape else 1
    in_size, out_size = DTYPE_SIZES[source.dtype], DTYPE_SIZES[t.dtype]
    step = max(1, chunk_bytes // max(1, row_elems * max(in_size, out_size)))
    tiled = carries_lora(t) and len(t.shape) >= 2
    blocks = blocking.ranges(t) if tiled or (carries_param(t) and len(t.shape) >= 2) else [(0, rows)]
    for b0, b1 in blocks:
        # pieces of whole tiles (a tile is never split between two reads), ~step rows each
        tiles = blocking.tiles(t, (b0, b1)) if tiled else [(r0, min(b1, r0 + step)) for r0 in range(b0, b1, step)]
        group: list[tuple[int, int]] = []
        for i, tile in enumerate(tiles):
            group.append(tile)
            if i + 1 < len(tiles) and tiles[i + 1][1] - group[0][0] <= step:
                continue
            r0, r1 = group[0][0], group[-1][1]
            piece = _Piece(
                t,
                source.dtype,
                r0,
                r1,
                (b0, b1),
                dst_fd,
                dst_off + r0 * row_elems * out_size,
                r1 == rows,
                tuple(group) if tiled else (),
            )
            group = []
            offset = source.offset + r0 * row_elems * in_size
            yield Read(source.fd, offset, (r1 - r0) * row_elems * in_size, piece, direct_fd, resident)
    if rows == 0:
        yield Read(source.fd, source.offset, 0, _Piece(t, source.dtype, 0, 0, (0, 0), dst_fd, dst_off, True))


def _merge_piece(p: _Piece, buf: memoryview, work: _PieceWork, buffers: _TileBuffers) -> tuple[torch.Tensor, bool]:
    """Rows of a touched tensor, merged: (values in the tensor's dtype, whether they live in ``buf``).
    Runs on a compute thread; touches only ``buf``, ``work`` and this thread's tile buffer."""
    t = p.tensor
    dtype = TORCH_DTYPES[t.dtype]
    row_elems = prod(t.shape[1:]) if t.shape else 1
    n = (p.r1 - p.r0) * row_elems
    shape = (p.r1 - p.r0, *t.shape[1:]) if t.shape else ()
    src_dtype = TORCH_DTYPES[p.source_dtype]
    w = torch.frombuffer(buf, dtype=src_dtype, count=n).reshape(shape) if n else torch.empty(shape, dtype=src_dtype)
    in_buf = n > 0
    if src_dtype != dtype:
        w = w.to(dtype)
        in_buf = False
    for d, cast, b0 in work.addends:
        part = d[p.r0 - b0 : p.r1 - b0] if t.shape else d
        w += part.to(dtype) if cast else part
    if work.tiles:
        out = buffers.get()  # fp32
        for tw in work.tiles:
            for t0, t1 in p.tiles:
                delta = lora_delta(tw.lora_a, tw.lora_b, tw.scaling, transpose=tw.transpose, rows=(t0, t1), out=out)
                _add_tile(w[t0 - p.r0 : t1 - p.r0], delta, tw.embedding, buffers)
    return w, in_buf


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


@dataclass
class _Run:
    """State shared by the reader's job generator and the writer's end-of-shard calls."""

    plan: MergePlan
    out: Path
    tensors: _AdapterTensors
    blocking: Blocking
    chunk_bytes: int
    progress: MergeProgress
    pool: ThreadPoolExecutor
    wait_for_shard: Callable[[str, threading.Event], Path] | None
    overlap: bool = True
    #: set when the merge stops early (an error, Ctrl-C): a wait for a shard gives up
    stopped: threading.Event = field(default_factory=threading.Event)
    open_fds: set[int] = field(default_factory=set)
    finished: list[Future[FileRecord]] = field(default_factory=list)
    #: output shard fd -> its sha256 as written (no second read when written front to back)
    hashes: dict[int, StreamHash] = field(default_factory=dict)
    #: output shard fd -> its write-behind (sent to disk as written; dropped from the cache when streaming)
    behind: dict[int, WriteBehind] = field(default_factory=dict)
    #: output shard fd -> its O_DIRECT writer (written around the page cache)
    sinks: dict[int, DirectSink] = field(default_factory=dict)
    #: O_DIRECT: the output written around the page cache, the base read around it where not cached
    direct: bool = True
    #: a base larger than the page cache comfortably holds: what goes through the cache is dropped behind
    drop: bool = False
    #: set when this filesystem refused to open a file for O_DIRECT writes
    no_direct_writes: bool = False
    #: residency maps of the base files (unmapped when their shard is done, or at the end)
    maps: list[Residency] = field(default_factory=list)

    def _open(self, path: Path, flags: int, mode: int = 0o644) -> int:
        fd = os.open(path, flags, mode)
        self.open_fds.add(fd)
        return fd

    def _open_direct(self, path: Path) -> int | None:
        """``path`` opened for O_DIRECT reads, where the platform and filesystem allow it."""
        flag = getattr(os, "O_DIRECT", 0)
        if not flag:
            return None
        try:
            return self._open(path, os.O_RDONLY | flag)
        except OSError:  # EINVAL: tmpfs and others
            return None

    def _sink(self, path: Path, fd: int) -> DirectSink | None:
        """An O_DIRECT writer of ``path`` (just created and open as ``fd``), where the platform and
        filesystem allow it."""
        flag = getattr(os, "O_DIRECT", 0)
        if not flag or self.no_direct_writes:
            return None
        try:
            return DirectSink(self._open(path, os.O_WRONLY | flag), fallback=fd)
        except OSError:  # EINVAL: tmpfs and others
            self.no_direct_writes = True
            return None

    def close(self, fd: int) -> None:
        if fd in self.open_fds:
            self.open_fds.discard(fd)
            os.close(fd)

    def jobs(self) -> Iterator[Read | Copy | Call]:
        for i, shard in enumerate(self.plan.shards):
            yield from self._shard_jobs(i, shard)

    def _shard_jobs(self, index: int, shard: ShardPlan) -> Iterator[Read | Copy | Call]:
        header: dict[str, Any] = {"__metadata__": shard.metadata}
        placed = shard.output_offsets()  # the base's offsets, shifted after a tensor written in another dtype
        end = max((e for _, e in placed.values()), default=0)
        for t in shard.tensors:
            header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": list(placed[t.name])}
        # a base that is still arriving (hf://) is merged shard by shard, as each one is verified
        if self.wait_for_shard is not None:
            src_path = self.wait_for_shard(shard.file, self.stopped)
        else:
            src_path = self.plan.base_dir / shard.file
        begin = getattr(self.progress, "begin_shard", None)
        if begin is not None:
            yield Call(lambda: begin(shard.file, index, len(self.plan.shards)))
        src_fd = self._open(src_path, os.O_RDONLY)
        direct_fd = self._open_direct(src_path) if self.direct else None
        resident = Residency.of(src_fd) if direct_fd is not None else None
        if resident is not None:
            self.maps.append(resident)
        first8 = os.pread(src_fd, 8, 0)
        src_data = 8 + header_length(first8)
        _check_unchanged(src_path, parse_safetensors_header(first8 + os.pread(src_fd, src_data - 8, 8)), shard)
        head = encode_header(header, like=src_data)  # the base's data offsets modulo the block size
        dst_data = len(head)
        dst_path = self.out / shard.file
        dst_fd = self._open(dst_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        sink = self._sink(dst_path, dst_fd) if direct_fd is not None else None
        if sink is not None:
            self.sinks[dst_fd] = sink
            sink.write(0, memoryview(head))
        else:
            pwrite_all(dst_fd, head, 0)
            self.behind[dst_fd] = WriteBehind(dst_fd, drop=self.drop, start=len(head))
        self.hashes[dst_fd] = StreamHash(head)
        run: list[int] = []  # [start, end, count, output start] of pending untouched bytes

        def flush() -> Iterator[Copy | Read]:
            if not run:
                return
            length, src_off, dst_off, count = run[1] - run[0], src_data + run[0], dst_data + run[3], run[2]
            run.clear()
            if sink is None:
                yield Copy(src_fd, dst_fd, length, src_off, dst_off, count)
                return
            # through the pipeline's buffers (read from the cache or with O_DIRECT, written with
            # O_DIRECT, hashed from memory): no copy_file_range into a file written around the cache
            for done in range(0, length, self.chunk_bytes):
                n = min(self.chunk_bytes, length - done)
                last = done + n == length
                move = _Move(dst_fd, dst_off + done, count if last else 0)
                yield Read(src_fd, src_off + done, n, move, direct_fd, resident)

        for t in sorted((t for t in shard.tensors if t.src_offsets), key=lambda t: t.src_offsets or (0, 0)):
            assert t.src_offsets is not None
            if not t.touched:
                if run and run[1] == t.src_offsets[0]:
                    run[1] = t.src_offsets[1]
                    run[2] += 1
                else:
                    yield from flush()
                    run.extend([t.src_offsets[0], t.src_offsets[1], 1, placed[t.name][0]])
                continue
            yield from flush()
            source = _source(t, shard, src_fd, src_data, self.tensors)
            direct = (direct_fd, resident) if source.fd == src_fd else (None, None)
            yield from _tensor_reads(
                t, source, dst_fd, dst_data + placed[t.name][0], self.blocking, self.chunk_bytes, *direct
            )
        yield from flush()
        for t in shard.tensors:
            if t.src_offsets is None:
                source = _source(t, shard, src_fd, src_data, self.tensors)
                yield from _tensor_reads(
                    t, source, dst_fd, dst_data + placed[t.name][0], self.blocking, self.chunk_bytes
                )

        def finish() -> None:
            if (done := self.sinks.pop(dst_fd, None)) is not None:
                self.open_fds.discard(done.fd)
                done.close()
            os.ftruncate(dst_fd, dst_data + end)
            stream = self.hashes.pop(dst_fd, None)
            self.behind.pop(dst_fd, None)
            digest = stream.hexdigest(dst_data + end) if stream is not None else None
            self.close(dst_fd)
            self.close(src_fd)
            if direct_fd is not None:
                self.close(direct_fd)
            if resident is not None:
                resident.close()
            self.finished.append(self.pool.submit(_finish_file, self.out / shard.file, shard.file, digest))

        yield Call(finish)


def _largest_tile(plan: MergePlan, blocking: Blocking) -> tuple[int, int]:
    """The largest delta tile: (its elements: the reused fp32 buffer's size, the bytes of its rows
    as read or written: a piece is whole tiles, so one may pass the chunk size)."""
    elems = nbytes = 0
    for shard in plan.shards:
        for t in shard.tensors:
            if carries_lora(t) and t.shape:
                row = prod(t.shape[1:])
                size = max(DTYPE_SIZES[t.dtype], DTYPE_SIZES[t.src_dtype])
                for block in blocking.ranges(t):
                    rows = max(t1 - t0 for t0, t1 in blocking.tiles(t, block))
                    elems, nbytes = max(elems, rows * row), max(nbytes, rows * row * size)
    return elems, nbytes


def compute_threads() -> int:
    """Compute threads of a merge: one per core, 4 at most (each piece's work is a few
    milliseconds of memory-bound torch ops; the reader and the writer's hashing need CPU too)."""
    return max(1, min(4, os.cpu_count() or 1))


def _merge_shards(run: _Run, delay: float, workers: int) -> list[str]:
    """Run the pipeline over every shard; returns the tensors whose delta had to be computed whole."""
    most, tile_bytes = _largest_tile(run.plan, run.blocking)
    deltas = _Deltas(run.tensors, run.blocking, torch.empty(most))  # its buffer: probes, on this thread
    buffers = _TileBuffers(most)
    pipe = Pipeline(
        buffers=PIPELINE_BUFFERS + 2 * workers,
        buffer_bytes=max(run.chunk_bytes, tile_bytes),
        advance=run.progress.advance,
        threads=run.overlap,
        stop=run.stopped,
        hashes=run.hashes,
        behind=run.behind,
        sinks=run.sinks,
        drop_reads=run.drop,
    )

    def step(job: Read, buf: memoryview) -> Callable[[], Write]:
        p = job.payload
        if isinstance(p, _Move):
            return lambda: Write(p.dst_fd, p.dst_off, buf, tensors=p.tensors, release=buf)
        assert isinstance(p, _Piece)
        work = _PieceWork(deltas.addends(p), deltas.tile_work(p))  # in job order: block deltas, probes

        def compute() -> Write:
            w, in_buf = _merge_piece(p, buf, work, buffers)
            if not in_buf:
                pipe.release(buf)
            if p.last and delay:
                time.sleep(delay)
            return Write(p.dst_fd, p.dst_off, tensor_bytes(w), tensors=int(p.last), release=buf if in_buf else None)

        return compute

    pipe.run(run.jobs(), step, workers=workers)
    return deltas.whole


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


def _fixed_mmap_threshold() -> None:
    """Have glibc map every allocation of 1 MiB or more on its own and unmap it when freed. By
    default the threshold rises to the largest block freed so far, after which the chunk-sized
    temporaries of mixed-dtype adds come from the heap and fragment it: +40-100 MiB of RSS."""
    import ctypes
    import platform

    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD


def _finish_file(path: Path, name: str, digest: str | None = None) -> FileRecord:
    """fsync a written file and hash it, unless it was hashed as it was written (``digest``)
    (runs in a worker thread, overlapping the next shard)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return FileRecord(name, digest or _sha256(path), path.stat().st_size)


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
    blocking: Blocking | None = None,
    wait_for_shard: Callable[[str, threading.Event], Path] | None = None,
    overlap: bool = True,
    threads: int | None = None,
    direct: bool = True,
) -> MergeResult:
    """Write the merged model described by ``plan`` to ``out_dir`` (atomically; see the module doc).

    ``provenance`` (patch ref, manifest digest, ...) is recorded in ``patchctl.json`` together with
    the base's weights fingerprint (computed here unless ``base_weights_sha256`` is given, e.g.
    from the checks' ``BaseFacts``), the sha256 and size of every output file, and the tool version.
    ``blocking`` sets the memory budget (default: 512 MiB of peak RSS). ``wait_for_shard(file, stopped)``,
    when given, is called before a base shard is read and returns its path once it is there
    (a base still downloading); it is called in plan order, from another thread, and should
    give up (raise) once ``stopped`` is set (the merge failed or was interrupted). ``overlap=False``
    reads, computes and writes in turn on this thread (same bytes; the reference for tests).
    ``threads``: compute threads (default :func:`compute_threads`; the bytes do not depend on it).
    ``direct``: write the output with ``O_DIRECT`` and read what of the base the page cache does not
    hold with it too, where the filesystem allows it (see the module doc; False: everything through
    the cache, as for a filesystem that refuses it). The bytes do not depend on it.
    """
    started = time.monotonic()
    progress = progress or NullProgress()
    workers = max(1, threads or compute_threads()) if overlap else 1
    _fixed_mmap_threshold()
    blocking = (blocking or Blocking()).measured()
    delay = float(os.environ.get(DELAY_ENV) or 0)
    out_dir = Path(out_dir).expanduser()
    touched = sum(len(s.touched) for s in plan.shards)
    copied = plan.total_tensors - touched
    if wait_for_shard is not None and base_weights_sha256 is None:
        raise InvalidInputError("a base that is still arriving needs its weights fingerprint from its metadata")
    with (
        atomic_output_dir(out_dir, force=force, protect=(plan.base_dir, plan.adapter.path)) as tmp,
        ThreadPoolExecutor(max_workers=2, thread_name_prefix="patchctl-merge") as pool,
        _torch_threads(1 if workers > 1 else max(1, min(4, (os.cpu_count() or 2) - 2))),
    ):
        base_hashes: list[tuple[str, Future[str]]] = []
        if base_weights_sha256 is None:
            base_hashes = [(s.file, pool.submit(_sha256, plan.base_dir / s.file)) for s in plan.shards]
        tensors = _AdapterTensors(plan.adapter.weights_path, plan.adapter.header)
        run = _Run(
            plan,
            tmp,
            tensors,
            blocking,
            ROW_CHUNK_BYTES,
            progress,
            pool,
            wait_for_shard,
            overlap,
            direct=direct,
            drop=bypasses_page_cache(plan.total_bytes),
        )
        progress.start(plan.total_tensors, plan.total_bytes)
        try:
            merged_whole = _merge_shards(run, delay, workers)
        finally:
            progress.finish()
            for fd in list(run.open_fds):
                run.close(fd)
            for resident in run.maps:
                resident.close()
            tensors.close()
        finished = run.finished
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
        merged_whole=tuple(merged_whole),
    )
