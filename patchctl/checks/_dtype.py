"""``dtype``: the base holds plain floating weights (BF16/F16/F32) that a merge can add to.

Quantized bases (GPTQ, AWQ, bitsandbytes, FP8, ...) are refused with the reason: adding a
delta to packed integer or 8-bit float weights needs a dequantize/requantize patchctl does
not do.
"""

from __future__ import annotations

import re
from collections import Counter

from patchctl.checks._context import CheckContext, preview, register, result
from patchctl.schemas.report import CheckResult

NAME = "dtype"

SUPPORTED = ("BF16", "F16", "F32")
#: tensor names only quantized checkpoints have (GPTQ/AWQ/bitsandbytes/FP8 scales)
_QUANT_NAME = re.compile(
    r"\.(qweight|qzeros|scales|g_idx|weight_scale|weight_scale_inv|input_scale|SCB|absmax|quant_map|"
    r"nested_absmax|nested_quant_map|weight_format|quant_state\.[^.]+)$"
)


@register(NAME)
def check_dtype(ctx: CheckContext) -> CheckResult:
    base = ctx.base
    counts = Counter(t.dtype for t in base.tensors.values())
    target_names = sorted(set(ctx.mapping.targets.values()))
    target_dtypes = Counter(base.tensors[n].dtype for n in target_names)
    data = {
        "base_dtypes": dict(sorted(counts.items())),
        "target_dtypes": dict(sorted(target_dtypes.items())),
        "quantization": base.quantization,
    }
    if base.quantization is not None:
        return result(
            NAME,
            "fail",
            f"quantized base (config.json quantization_config: {base.quantization}): "
            "patchctl merges into BF16/F16/F32 weights only; use the unquantized base",
            **data,
        )
    quant_named = sorted(n for n in base.tensors if _QUANT_NAME.search(n))
    int_weights = sorted(
        n for n, t in base.tensors.items() if n.endswith(".weight") and t.dtype not in (*SUPPORTED, "F64")
    )
    bad_targets = sorted(n for n in target_names if base.tensors[n].dtype not in (*SUPPORTED, "F64"))
    if quant_named or int_weights or bad_targets:
        examples = [f"{n} ({base.tensors[n].dtype})" for n in (bad_targets or int_weights or quant_named)]
        return result(
            NAME,
            "fail",
            f"quantized or integer weights in the base: {preview(examples)}; "
            "patchctl merges into BF16/F16/F32 weights only",
            quantized_tensors=len(quant_named),
            integer_weights=len(int_weights),
            **data,
        )
    f64 = sorted(n for n in target_names if base.tensors[n].dtype == "F64")
    if f64:
        return result(
            NAME, "warn", f"{len(f64)} target tensors are F64 (unusual; merged in F64): {preview(f64)}", **data
        )
    kinds = ", ".join(sorted(target_dtypes)) or "none"
    return result(NAME, "pass", f"target tensors are {kinds}; no quantization", **data)
