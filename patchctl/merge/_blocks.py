"""Row blocks for touched tensors: how a delta ``s·B·A`` is computed in bounded memory (no torch).

A LoRA delta is an fp32 tensor as large as the weight it lands on (an embedding LoRA on a
128,256 × 4,096 vocabulary: 2 GiB). The engine computes it a block of the weight's rows at a
time instead: ``B[r0:r1] @ A`` where the weight is ``B @ A`` (Linear), ``(B @ A[:, r0:r1]).T``
where it is stored transposed (``fan_in_fan_out`` Conv1D, embeddings). With the CPU BLAS torch
ships (MKL), such products equal the whole product's rows bit for bit for blocks of 64 rows or
more (measured here from 4 rows on), but not for a single row (a matrix-vector kernel): blocks
are never smaller than
:data:`MIN_BLOCK` rows, a short tail is folded into the block before it, and every blocking is
probed at run time (``_delta.probe``) before it is used; where a probe differs, that tensor's
delta is computed whole (over the budget, said in the result).

:class:`Blocking` decides the block height of each tensor from the memory budget and says
what a plan will do (``--dry-run``); :func:`block_ranges` cuts the rows.

Inside a block, the delta is computed and added a *tile* of rows at a time (:meth:`Blocking.tiles`:
about :data:`TILE_BYTES` of fp32, :data:`MIN_BLOCK` rows at least), so that the product, its
scaling and the add into the weight's rows happen while the tile is in the CPU's cache: 2.5-3.5×
faster than one pass per operation over a large block, and the same bits (tiles are blocks, and
probed as such).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from patchctl.merge._plan import MergePlan, TensorPlan

__all__ = ["DEFAULT_MAX_MEMORY", "MIN_BLOCK", "Blocking", "block_ranges", "carries_lora", "carries_param", "parse_size"]

MiB = 1 << 20
#: the default ``--max-memory``: peak RSS of an install stays under this whatever the tensor sizes
DEFAULT_MAX_MEMORY = 512 * MiB
#: what the interpreter, torch, the catalog and the checks take before the merge starts
#: (measured: ~290 MiB for the engine alone, ~340 MiB in ``patchctl install``), with a margin;
#: the merge itself measures its RSS when it starts (:func:`current_rss`) and takes the larger
RESERVED = 352 * MiB
#: besides the deltas: the I/O pipeline's buffers and their temporaries, thread arenas
OVERHEAD = 80 * MiB
#: the smallest block the engine computes (the BLAS matrix-vector path starts at 1 row)
MIN_BLOCK = 64
#: below this the budget is not honoured: blocks of MIN_BLOCK rows, whatever they take
FLOOR = 8 * MiB
#: fp32 delta per tile: product, scaling and add stay in the CPU's L2 cache
TILE_BYTES = 256 << 10

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"512MiB"``, ``"2G"``, ``"1.5 GiB"``, ``"800000000"`` → bytes (K/M/G/T are powers of 1024)."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"{text!r}: expected a size such as 512MiB, 2GiB or a number of bytes")
    power = "_kmgt".index(m.group(2).lower()) if m.group(2) else 0
    return int(float(m.group(1)) * 1024**power)


@dataclass(frozen=True)
class Blocking:
    """The memory policy of one merge: ``max_memory`` bytes of peak RSS, of which ``reserved`` is
    taken before the merge starts; blocks of at least ``min_block`` rows."""

    max_memory: int = DEFAULT_MAX_MEMORY
    min_block: int = MIN_BLOCK
    #: taken before the merge starts (None: measured when it starts, RESERVED in plans)
    reserved: int | None = None
    overhead: int = OVERHEAD
    floor: int = FLOOR

    def measured(self) -> Blocking:
        """This policy with ``reserved`` set to what the process takes now, RESERVED at least:
        under memory pressure the kernel evicts pages of the libraries (clean, file-backed), so
        the resident figure can read low and would size blocks too large once they come back."""
        return self if self.reserved is not None else replace(self, reserved=max(RESERVED, current_rss()))

    def delta_budget(self) -> int:
        """Bytes of fp32 delta one block may take. A block's probe holds two blocks' worth of
        reference values besides the block itself (see ``_delta.probe``), hence the third."""
        reserved = RESERVED if self.reserved is None else self.reserved
        return max(self.floor, (self.max_memory - reserved - self.overhead) // 3)

    def _min_block(self, t: TensorPlan) -> int:
        """A fused experts tensor is cut between experts (each its own product): one at least."""
        return 1 if carries_param(t) and len(t.shape) == 3 else self.min_block

    def block_rows(self, t: TensorPlan) -> int:
        """Rows of ``t`` per delta block: all of them when the whole fp32 delta fits the budget."""
        rows = t.shape[0] if t.shape else 1
        row_bytes = 4 * (_prod(t.shape[1:]) if t.shape else 1)
        fit = self.delta_budget() // max(1, row_bytes)
        if fit >= rows:
            return rows
        return min(rows, max(self._min_block(t), fit))

    def ranges(self, t: TensorPlan) -> list[tuple[int, int]]:
        rows = t.shape[0] if t.shape else 1
        return block_ranges(rows, self.block_rows(t), self._min_block(t))

    def tile_rows(self, t: TensorPlan) -> int:
        """Rows of ``t`` per tile (see the module doc)."""
        row_bytes = 4 * (_prod(t.shape[1:]) if t.shape else 1)
        return max(self.min_block, TILE_BYTES // max(1, row_bytes))

    def tiles(self, t: TensorPlan, block: tuple[int, int]) -> list[tuple[int, int]]:
        """The tiles of the block ``[b0, b1)`` of ``t``'s rows (a short tail joins the tile before it)."""
        b0, b1 = block
        return [(b0 + r0, b0 + r1) for r0, r1 in block_ranges(b1 - b0, self.tile_rows(t), self.min_block)]

    def summary(self, plan: MergePlan) -> dict[str, Any]:
        """What the engine will do: the tensors whose delta is computed in row blocks, for the
        plan output. Each blocking is probed against the whole product when it runs; where it
        differs, that delta is computed whole (the result says so)."""
        rows: list[dict[str, Any]] = []
        for shard in plan.shards:
            for t in shard.tensors:
                if not (carries_lora(t) or carries_param(t)) or len(t.shape) < 2:
                    continue
                ranges = self.ranges(t)
                if len(ranges) > 1:
                    rows.append(
                        {
                            "tensor": t.name,
                            "shape": list(t.shape),
                            "blocks": len(ranges),
                            "block_rows": ranges[0][1] - ranges[0][0],
                            "delta_bytes_whole": 4 * _prod(t.shape),
                            "delta_bytes_block": 4 * _prod(t.shape[1:]) * max(r1 - r0 for r0, r1 in ranges),
                        }
                    )
        return {
            "max_memory": self.max_memory,
            "reserved": RESERVED if self.reserved is None else self.reserved,
            "delta_budget": self.delta_budget(),
            "blocked_tensors": rows,
            "verified": "at run time: each blocking is probed against the whole product first; "
            "a tensor whose probe differs is merged whole (over the budget; the result lists it)",
        }


def current_rss() -> int:
    """What this process takes before the merge: the high-water mark of its resident memory
    (``VmHWM``; pages of libraries evicted under memory pressure come back when touched, so the
    current figure alone can read low). Not ``ru_maxrss``: Linux carries that over ``execve``
    from the parent's memory (a subprocess of a large process would seem large)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return max(int(fields[k].split()[0]) * 1024 for k in ("VmHWM", "VmRSS"))
    except (OSError, ValueError, KeyError, IndexError):
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def block_ranges(rows: int, step: int, min_block: int = MIN_BLOCK) -> list[tuple[int, int]]:
    """``[0, rows)`` in blocks of ``step`` rows; a tail shorter than ``min_block`` joins the block
    before it (never a block of a few rows: those take BLAS's matrix-vector path)."""
    if rows <= 0:
        return [(0, 0)]
    step = max(1, min(step, rows))
    out = [(r0, min(rows, r0 + step)) for r0 in range(0, rows, step)]
    if len(out) > 1 and out[-1][1] - out[-1][0] < min_block:
        last = out.pop()
        out[-1] = (out[-1][0], last[1])
    return out


def _prod(dims: tuple[int, ...]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def carries_param(t: TensorPlan) -> bool:
    """Whether ``t`` gets a ``target_parameters`` (MoE experts) delta."""
    return any(a.kind == "lora_param" for a in t.actions)


def carries_lora(t: TensorPlan) -> bool:
    """Whether ``t`` gets a LoRA delta (the only addend that is a matrix product)."""
    return any(a.kind == "lora" for a in t.actions)
