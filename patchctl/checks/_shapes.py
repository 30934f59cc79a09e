"""``shapes``: each delta (B @ A, transposed for fan_in_fan_out and embeddings) and each
replacement has the shape of the base tensor it lands on."""

from __future__ import annotations

from patchctl.adapter import LoraPair
from patchctl.checks._context import CheckContext, preview, register, result
from patchctl.schemas.report import CheckResult

NAME = "shapes"


def delta_shape(pair: LoraPair, fan_in_fan_out: bool) -> tuple[int, ...]:
    """Shape of the delta PEFT adds to the module's weight (``get_delta_weight``)."""
    out_in = (pair.b_shape[0], pair.a_shape[1])
    if pair.kind == "embedding" or fan_in_fan_out:
        return out_in[::-1]
    return out_in


@register(NAME)
def check_shapes(ctx: CheckContext) -> CheckResult:
    targets = ctx.mapping.targets
    tensors = ctx.base.tensors
    fifo = ctx.adapter.config.fan_in_fan_out
    mismatches: list[str] = []
    compared = 0
    skipped = 0
    for p in ctx.adapter.pairs:
        if p.kind == "conv" or len(p.a_shape) != 2 or len(p.b_shape) != 2:
            skipped += 1  # the format check reports these
            continue
        base_name = targets.get(p.target)
        if base_name is None:
            skipped += 1
            continue
        want = tensors[base_name].shape
        got = delta_shape(p, fifo and p.kind != "embedding")
        compared += 1
        if got != want:
            how = " (fan_in_fan_out)" if fifo and p.kind == "linear" else ""
            mismatches.append(f"{p.module}: delta{list(got)}{how} vs base {base_name}{list(want)}")
        if p.bias_key is not None:
            bias_name = targets.get(p.bias_target)
            if bias_name is not None:
                compared += 1
                bias_shape = tuple(ctx.adapter.header[p.bias_key]["shape"])
                if bias_shape != tensors[bias_name].shape:
                    mismatches.append(
                        f"{p.module}: lora_B bias{list(bias_shape)} vs base {bias_name}{list(tensors[bias_name].shape)}"
                    )
    for r in ctx.adapter.written_replacements:  # carried base_layer copies of θ are never written
        base_name = targets.get(r.target)
        if base_name is None:
            skipped += 1
            continue
        compared += 1
        want = tensors[base_name].shape
        if r.shape != want:
            mismatches.append(f"{r.key}{list(r.shape)} replaces {base_name}{list(want)}")
    data = {"compared": compared, "skipped": skipped, "mismatches": mismatches[:50], "fan_in_fan_out": fifo}
    if mismatches:
        return result(NAME, "fail", f"{len(mismatches)} shape mismatches: {preview(mismatches, 2)}", **data)
    tail = f"; {skipped} not compared (see coverage/format)" if skipped else ""
    return result(NAME, "pass", f"{compared} tensors have the base's shapes{tail}", **data)
