"""``coverage``: every LoRA target and replacement lands on exactly one base tensor.

A patch that would apply only partially must fail: no silent partial application.
"""

from __future__ import annotations

from collections import defaultdict

from patchctl.checks._context import CheckContext, preview, register, result
from patchctl.schemas.report import CheckResult

NAME = "coverage"


@register(NAME)
def check_coverage(ctx: CheckContext) -> CheckResult:
    m = ctx.mapping
    # two different adapter targets resolving to one base tensor (e.g. saved with and without
    # the "model." prefix) would apply twice: as bad as an ambiguous one
    by_base: dict[str, list[str]] = defaultdict(list)
    for target, base_name in m.targets.items():
        by_base[base_name].append(target)
    collisions = {b: sorted(ts) for b, ts in sorted(by_base.items()) if len(ts) > 1}
    wanted = len(m.targets) + len(m.tied) + len(m.params) + len(m.unmatched) + len(m.ambiguous)
    data = {
        "targets": wanted,
        "matched": len(m.targets) + len(m.tied) + len(m.params),
        "parameter_targets": {t: len(pieces) for t, pieces in list(m.params.items())[:50]},
        "tied": dict(m.tied),
        "unmatched": len(m.unmatched),
        "ambiguous": len(m.ambiguous),
        "collisions": len(collisions),
        "unmatched_targets": list(m.unmatched[:50]),
        "ambiguous_targets": {k: list(v[:5]) for k, v in list(m.ambiguous.items())[:50]},
        "colliding_targets": dict(list(collisions.items())[:50]),
    }
    if wanted == 0:
        return result(NAME, "fail", "the adapter changes no base tensor (no LoRA pairs, no replacements)", **data)
    problems = []
    if m.unmatched:
        # a parameter target says why it could not be placed (per-expert storage, expert count)
        missing = [m.param_problems.get(t, t) for t in m.unmatched]
        problems.append(f"{len(m.unmatched)} of {wanted} targets have no base tensor: {preview(missing)}")
    if m.ambiguous:
        amb = [f"{k} ({len(v)} candidates)" for k, v in m.ambiguous.items()]
        problems.append(f"{len(m.ambiguous)} targets match several base tensors: {preview(amb)}")
    if collisions:
        problems.append(f"{len(collisions)} base tensors targeted twice: {preview(list(collisions))}")
    if problems:
        return result(NAME, "fail", "patch cannot be applied fully: " + "; ".join(problems), **data)
    detail = f"all {wanted} targets map to exactly one base tensor"
    if m.tied:
        detail += (
            f"; {', '.join(sorted(m.tied))} is tied to {next(iter(m.tied.values()))}: "
            "the head gets its own tensor (untied)"
        )
    return result(NAME, "pass", detail, **data)
