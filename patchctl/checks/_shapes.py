"""``shapes``: each delta (B @ A, transposed where the base stores the weight as (in, out), and
for embeddings) and each written replacement has the shape of the base tensor it lands on.

The layout of each target comes from the base (:func:`patchctl.adapter.stored_transposed`, the
rule the merge uses too); the adapter's ``fan_in_fan_out`` flag is only compared with it.
"""

from __future__ import annotations

from patchctl.adapter import TRANSPOSED_EXPERTS, LoraPair, param_piece_shape, stored_transposed
from patchctl.checks._context import CheckContext, preview, register, result
from patchctl.schemas.report import CheckResult

NAME = "shapes"


def delta_shape(pair: LoraPair, transposed: bool) -> tuple[int, ...]:
    """Shape of the delta PEFT adds to the module's weight (``get_delta_weight``)."""
    out_in = (pair.b_shape[0], pair.a_shape[1])
    if pair.kind == "embedding" or transposed:
        return out_in[::-1]
    return out_in


def _flag_note(fifo: bool, layouts: dict[str, bool]) -> tuple[str, bool]:
    """How the config's ``fan_in_fan_out`` compares with the layouts read from the base:
    ``(note, warn)``. PEFT saves the flag of the last module it wrapped, so a mixed adapter
    (GPT-2 ``c_attn`` + ``lm_head``) agrees with some targets only: noted, not a problem. A flag
    that agrees with no target at all (an edited config, or one made for another architecture)
    is a warning."""
    if not layouts:
        return "", False
    disagree = sorted(m for m, t in layouts.items() if t != fifo)
    if not disagree:
        return "", False
    kind = "Conv1D (in, out)" if not fifo else "Linear (out, in)"
    note = (
        f"adapter_config fan_in_fan_out={str(fifo).lower()} but the base stores {preview(disagree, 2)} as {kind}; "
        "the layout is taken from the base"
    )
    return note, len(disagree) == len(layouts)


@register(NAME)
def check_shapes(ctx: CheckContext) -> CheckResult:
    targets = ctx.mapping.targets
    tensors = ctx.base.tensors
    model_type = ctx.base.config.get("model_type")
    fifo = ctx.adapter.config.fan_in_fan_out
    mismatches: list[str] = []
    layouts: dict[str, bool] = {}
    compared = 0
    skipped = 0
    in_out = str(model_type) in TRANSPOSED_EXPERTS
    for p in ctx.adapter.pairs:
        if p.kind == "param":  # target_parameters: each expert's slice against its base tensor
            pieces = ctx.mapping.params.get(p.target)
            if not pieces:
                skipped += 1
                continue
            for piece in pieces:
                compared += 1
                want_p, got_p = tensors[piece.base_name].shape, param_piece_shape(p, piece, in_out)
                if want_p != got_p:
                    mismatches.append(f"{p.target}: delta{list(got_p)} vs base {piece.base_name}{list(want_p)}")
            continue
        if p.kind == "conv" or len(p.a_shape) != 2 or len(p.b_shape) != 2:
            skipped += 1  # the format check reports these
            continue
        # a LoRA on the head of a tied base lands on the shared embedding's shape (the head is untied)
        base_name = targets.get(p.target) or ctx.mapping.tied.get(p.target)
        if base_name is None:
            skipped += 1
            continue
        want = tensors[base_name].shape
        transposed = stored_transposed(model_type, targets.get(p.target, p.target), p.kind)
        if p.kind == "linear":
            layouts[p.module] = transposed
        got = delta_shape(p, transposed)
        compared += 1
        if got != want:
            how = " (Conv1D: stored as (in, out))" if transposed else ""
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
        base_name = targets.get(r.target) or ctx.mapping.tied.get(r.target)
        if base_name is None:
            skipped += 1
            continue
        compared += 1
        want = tensors[base_name].shape
        if r.shape != want:
            mismatches.append(f"{r.key}{list(r.shape)} replaces {base_name}{list(want)}")
    note, flag_warn = _flag_note(fifo, layouts)
    data = {
        "compared": compared,
        "skipped": skipped,
        "mismatches": mismatches[:50],
        "fan_in_fan_out": fifo,
        "transposed_targets": sorted(m for m, t in layouts.items() if t),
        "fan_in_fan_out_note": note or None,
    }
    if mismatches:
        return result(NAME, "fail", f"{len(mismatches)} shape mismatches: {preview(mismatches, 2)}", **data)
    tail = f"; {skipped} not compared (see coverage/format)" if skipped else ""
    detail = f"{compared} tensors have the base's shapes{tail}" + (f"; {note}" if note else "")
    return result(NAME, "warn" if flag_warn else "pass", detail, **data)
