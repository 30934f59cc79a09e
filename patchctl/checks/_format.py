"""``format``: a plain LoRA adapter in safetensors, A/B shapes consistent with r, every value finite."""

from __future__ import annotations

from patchctl.checks._context import CheckContext, preview, register, result
from patchctl.checks._tensors import FLOAT_DTYPES, nonfinite_count
from patchctl.errors import InvalidInputError
from patchctl.schemas.report import CheckResult

NAME = "format"


def _pair_problems(ctx: CheckContext) -> list[str]:
    cfg = ctx.adapter.config
    problems: list[str] = []
    for p in ctx.adapter.pairs:
        if p.kind == "conv":
            problems.append(f"{p.module}: LoRA on a convolution is not supported")
            continue
        r = cfg.rank_for(p.target if p.kind == "param" else p.module)
        if len(p.a_shape) != 2 or len(p.b_shape) != 2:
            problems.append(f"{p.module}: lora A{list(p.a_shape)} / B{list(p.b_shape)} are not matrices")
            continue
        a_name, b_name = ("lora_embedding_A", "lora_embedding_B") if p.kind == "embedding" else ("lora_A", "lora_B")
        if p.kind == "param":  # target_parameters: lora_A [r·experts, in], lora_B [out, r·experts]
            if p.a_shape[0] % r or p.b_shape[1] != p.a_shape[0]:
                problems.append(f"{p.target}: lora_A{list(p.a_shape)} / lora_B{list(p.b_shape)} disagree with r={r}")
        elif p.a_shape[0] != r or p.b_shape[1] != r:
            problems.append(
                f"{p.module}: {a_name}{list(p.a_shape)} / {b_name}{list(p.b_shape)} disagree with r={r} "
                f"({a_name} must be [r, in], {b_name} [out, r])"
            )
        if p.bias_key is not None:
            bias_shape = tuple(ctx.adapter.header[p.bias_key]["shape"])
            if bias_shape != (p.b_shape[0],):
                problems.append(f"{p.module}: lora_B bias{list(bias_shape)} does not match out={p.b_shape[0]}")
    return problems


#: LoraSpec fields a merge depends on: patch.json must describe the adapter it ships with
_SPEC_FIELDS = ("r", "lora_alpha", "use_rslora", "rank_pattern", "alpha_pattern", "fan_in_fan_out", "lora_pairs")


def _manifest_problems(ctx: CheckContext) -> list[str]:
    if ctx.manifest is None:
        return []
    recorded, actual = ctx.manifest.lora, ctx.adapter.lora_spec()
    return [
        f"patch.json lora.{f}={getattr(recorded, f)!r} but the adapter has {getattr(actual, f)!r}"
        for f in _SPEC_FIELDS
        if getattr(recorded, f) != getattr(actual, f)
    ]


@register(NAME)
def check_format(ctx: CheckContext) -> CheckResult:
    layout = ctx.adapter
    problems = list(layout.config.unsupported_features()) + list(layout.problems)
    if not layout.weights_path.is_file():
        problems.append(f"no {layout.weights_path.name}: patchctl accepts safetensors adapters only")
    problems += _pair_problems(ctx)
    problems += _manifest_problems(ctx)
    tensors = {k: v for k, v in layout.header.items() if k != "__metadata__"}
    bad_dtype = sorted(f"{k} ({v.get('dtype')})" for k, v in tensors.items() if v.get("dtype") not in FLOAT_DTYPES)
    if bad_dtype:
        problems.append(f"non-floating adapter tensors: {preview(bad_dtype)}")
    if layout.weights_path.is_file() and not tensors:
        problems.append("the adapter holds no tensors")
    nonfinite: dict[str, int] = {}
    for key in sorted(tensors):
        info = tensors[key]
        if info.get("dtype") not in FLOAT_DTYPES:
            continue
        try:
            n = nonfinite_count(layout.weights_path, info)
        except InvalidInputError as exc:
            problems.append(f"{key}: {exc}")
            continue
        if n:
            nonfinite[key] = n
    if nonfinite:
        keys = list(nonfinite)
        problems.append(f"{sum(nonfinite.values())} NaN/inf values in {len(keys)} tensor(s): {preview(keys)}")
    data = {
        "pairs": len(layout.pairs),
        "replacements": len(layout.replacements),
        "ranks": sorted({p.rank for p in layout.pairs}),
        "dtypes": sorted({str(v.get("dtype")) for v in tensors.values()}),
        "tensors": len(tensors),
        "nonfinite": nonfinite,
        "problems": problems,
    }
    if problems:
        more = f" (+{len(problems) - 1} more problems)" if len(problems) > 1 else ""
        return result(NAME, "fail", problems[0] + more, **data)
    kinds = sorted({p.kind for p in layout.pairs})
    detail = (
        f"LoRA, safetensors: {len(layout.pairs)} pairs ({', '.join(kinds) or 'none'}), "
        f"{len(layout.replacements)} replacements, {len(tensors)} tensors all finite"
    )
    return result(NAME, "pass", detail, **data)
