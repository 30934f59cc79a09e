"""The delta arithmetic of PEFT's ``merge_and_unload``, whole or a block of rows at a time.

PEFT (``peft/tuners/lora/layer.py``, adapter weights upcast to fp32):

- Linear / Conv1D: ``delta = transpose(B @ A, fan_in_fan_out) * s``, then ``W += delta`` (one rounding);
- Embedding: ``delta = transpose(B @ A, True) * s``, then ``W += delta.to(W.dtype)`` (two roundings).

:func:`lora_delta` gives rows ``[r0, r1)`` of that ``delta`` (of the weight's rows: columns of
``B @ A`` where the weight is stored transposed), computed as ``B[r0:r1] @ A`` or
``B @ A[:, r0:r1]``; :func:`probe` checks on the real matrices that a blocking gives the whole
product's bits before the engine relies on it. Also used to apply a patch in memory.
"""

from __future__ import annotations

import torch

__all__ = ["lora_delta", "probe"]


def lora_delta(
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    scaling: float,
    *,
    transpose: bool,
    rows: tuple[int, int] | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rows ``rows`` (default: all) of ``transpose(B @ A, transpose) * scaling`` in fp32.

    ``lora_a`` (r, in) and ``lora_b`` (out, r) must already be fp32. ``out``, when given, is a
    flat fp32 buffer the product is written into (no allocation); the result may be a
    transposed view of it.
    """
    if transpose:
        cols = lora_a.shape[1]
        c0, c1 = rows if rows is not None else (0, cols)
        a = lora_a if (c0, c1) == (0, cols) else lora_a[:, c0:c1]
        shape = (lora_b.shape[0], c1 - c0)
        prod = torch.mm(lora_b, a, out=out[: shape[0] * shape[1]].view(shape)) if out is not None else lora_b @ a
        # in place: the same kernel as PEFT's `* scaling`, one buffer less; x * 1.0 is x (IEEE), skipped
        return prod.T if scaling == 1.0 else prod.T.mul_(scaling)
    r0, r1 = rows if rows is not None else (0, lora_b.shape[0])
    b = lora_b if (r0, r1) == (0, lora_b.shape[0]) else lora_b[r0:r1]
    shape = (r1 - r0, lora_a.shape[1])
    prod = torch.mm(b, lora_a, out=out[: shape[0] * shape[1]].view(shape)) if out is not None else b @ lora_a
    return prod if scaling == 1.0 else prod.mul_(scaling)


def probe(
    lora_a: torch.Tensor, lora_b: torch.Tensor, *, transpose: bool, ranges: list[tuple[int, int]], out: torch.Tensor
) -> bool:
    """Whether computing in these blocks gives the whole product's bits, checked on the real
    matrices cut to the first block and the last block's height: their product computed whole
    (as PEFT computes it, from contiguous operands) against the same rows computed as two blocks
    (views of the real operands, as the engine computes them). ``out`` holds one block."""
    if len(ranges) < 2:
        return True
    first = ranges[0][1] - ranges[0][0]
    last = ranges[-1][1] - ranges[-1][0]
    n = first + last
    if transpose:
        whole = lora_b @ lora_a[:, :n].contiguous()
        parts = [(0, first), (first, n)]
        for c0, c1 in parts:
            block = torch.mm(lora_b, lora_a[:, c0:c1], out=out[: lora_b.shape[0] * (c1 - c0)].view(-1, c1 - c0))
            if not torch.equal(block, whole[:, c0:c1]):
                return False
        return True
    whole = lora_b[:n].contiguous() @ lora_a
    for r0, r1 in [(0, first), (first, n)]:
        block = torch.mm(lora_b[r0:r1], lora_a, out=out[: (r1 - r0) * lora_a.shape[1]].view(r1 - r0, -1))
        if not torch.equal(block, whole[r0:r1]):
            return False
    return True
