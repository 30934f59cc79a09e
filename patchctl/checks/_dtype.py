"""``dtype``: the base tensors the patch changes are plain floating weights (BF16/F16/F32) that a
merge can add to.

Only the patch's targets are judged: a quantized target (a non-float dtype, or quantization
companions such as ``qweight``/``weight_scale`` on the target's module) is refused with the
reason, since adding a delta to packed integer or 8-bit float weights needs a
dequantize/requantize patchctl does not do. A base whose ``config.json`` declares a
``quantization_config`` is refused as a whole (its loader would re-quantize every module).
Non-float tensors elsewhere (an integer ``position_ids`` buffer, a quantized module the patch
does not touch) are copied as they are and do not fail the check.
"""

from __future__ import annotations

import re
from collections import Counter

from patchctl.checks._context import CheckContext, preview, register, result
from patchctl.schemas.report import CheckResult

NAME = "dtype"

SUPPORTED = ("BF16", "F16", "F32")
_MERGEABLE = (*SUPPORTED, "F64")
#: tensor names only quantized checkpoints have (GPTQ/AWQ/bitsandbytes/FP8 scales); group 1 is the module
_QUANT_NAME = re.compile(
    r"^(.*)\.(qweight|qzeros|scales|g_idx|weight_scale|weight_scale_inv|input_scale|SCB|absmax|quant_map|"
    r"nested_absmax|nested_quant_map|weight_format|quant_state\.[^.]+|weight\.quant_state\.[^.]+|"
    r"weight\.absmax|weight\.quant_map)$"
)


def _module(tensor: str) -> str:
    return tensor.rsplit(".", 1)[0] if "." in tensor else ""


@register(NAME)
def check_dtype(ctx: CheckContext) -> CheckResult:
    base = ctx.base
    counts = Counter(t.dtype for t in base.tensors.values())
    target_names = sorted({*ctx.mapping.targets.values(), *ctx.mapping.tied.values()} & set(base.tensors))
    target_dtypes = Counter(base.tensors[n].dtype for n in target_names)
    data: dict[str, object] = {
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
    quant_modules: dict[str, list[str]] = {}
    for n in base.tensors:
        m = _QUANT_NAME.match(n)
        if m:
            quant_modules.setdefault(m.group(1), []).append(n)
    target_modules = {_module(n) for n in target_names}
    bad = [f"{n} ({base.tensors[n].dtype})" for n in target_names if base.tensors[n].dtype not in _MERGEABLE]
    bad += [
        f"{m} (quantized: {preview(sorted(quant_modules[m]), 2)})" for m in sorted(target_modules & set(quant_modules))
    ]
    elsewhere_quant = sorted(set(quant_modules) - target_modules)
    other_non_float = sorted(n for n, t in base.tensors.items() if t.dtype not in _MERGEABLE and n not in target_names)
    data.update(quantized_targets=len(bad), quantized_modules_elsewhere=len(elsewhere_quant))
    data["non_float_untouched"] = other_non_float[:20]
    if bad:
        return result(
            NAME,
            "fail",
            f"the patch targets quantized or integer tensors: {preview(bad)}; "
            "patchctl merges into BF16/F16/F32 weights only; use the unquantized base",
            **data,
        )
    notes = []
    f64 = [n for n in target_names if base.tensors[n].dtype == "F64"]
    if f64:
        notes.append(f"{len(f64)} target tensors are F64 (unusual; merged in F64): {preview(f64)}")
    if elsewhere_quant:
        notes.append(
            f"{len(elsewhere_quant)} modules the patch does not touch are quantized ({preview(elsewhere_quant)}); "
            "they are copied as they are"
        )
    if notes:
        return result(NAME, "warn", "; ".join(notes), **data)
    kinds = ", ".join(sorted(target_dtypes)) or "none"
    tail = f"; {len(other_non_float)} non-float tensors elsewhere are untouched" if other_non_float else ""
    return result(NAME, "pass", f"target tensors are {kinds}; no quantized target{tail}", **data)
