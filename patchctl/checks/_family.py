"""``family``: the target base is the architecture the patch was trained for."""

from __future__ import annotations

from patchctl.checks._context import CheckContext, register, result
from patchctl.schemas.report import CheckResult

NAME = "family"


@register(NAME)
def check_family(ctx: CheckContext) -> CheckResult:
    target = ctx.base.family
    if ctx.source is None:
        return result(
            NAME,
            "warn",
            f"no manifest: the source base is unknown, family not compared (target is {target.model_type})",
            target=target.model_dump(mode="json"),
        )
    source = ctx.source.family
    data = {"source": source.model_dump(mode="json"), "target": target.model_dump(mode="json")}
    mismatches: list[str] = []
    if source.model_type != target.model_type:
        mismatches.append(f"model_type {source.model_type} ≠ {target.model_type}")
    for field in ("hidden_size", "num_hidden_layers"):
        s, t = getattr(source, field), getattr(target, field)
        if s is not None and t is not None and s != t:
            mismatches.append(f"{field} {s} ≠ {t}")
    if mismatches:
        return result(NAME, "fail", "patch trained on another architecture: " + "; ".join(mismatches), **data)
    if source.architectures and target.architectures and set(source.architectures) != set(target.architectures):
        return result(
            NAME,
            "warn",
            f"same model_type {target.model_type} but architectures differ: "
            f"{', '.join(source.architectures)} vs {', '.join(target.architectures)}",
            **data,
        )
    return result(
        NAME,
        "pass",
        f"{target.model_type} ({', '.join(target.architectures) or 'no architectures listed'}), "
        f"hidden {target.hidden_size}, {target.num_hidden_layers} layers",
        **data,
    )
