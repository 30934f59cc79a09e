"""``lineage``: how the target base relates to the one the patch was trained on.

identical fingerprint → pass; a recorded descendant (θ → θ′ in the catalog) → pass; an
unrelated base of the same family → warn (PortLLM transfer is plausible but unvalidated);
another family → fail.
"""

from __future__ import annotations

from patchctl.checks._context import CheckContext, register, result
from patchctl.checks._family import same_text_model
from patchctl.schemas.report import CheckResult

NAME = "lineage"


@register(NAME)
def check_lineage(ctx: CheckContext) -> CheckResult:
    target = ctx.base
    data: dict[str, object] = {"target_weights_sha256": target.weights_sha256}
    if ctx.source is None:
        return result(
            NAME, "warn", "no manifest: the source base is unknown, lineage not checked", relation="unknown", **data
        )
    source = ctx.source
    data["source_weights_sha256"] = source.weights_sha256
    short = source.weights_sha256[:12]
    if target.weights_sha256 == source.weights_sha256:
        return result(NAME, "pass", f"identical base (weights {short})", relation="identical", **data)
    if source.weights_sha256 in ctx.target_ancestors:
        return result(
            NAME,
            "pass",
            f"recorded descendant of the source base {source.repo} ({short})",
            relation="descendant",
            **data,
        )
    if target.structure_sha256 == source.structure_sha256 or same_text_model(source.family, target.family):
        relation = "same_structure" if target.structure_sha256 == source.structure_sha256 else "same_family"
        return result(
            NAME,
            "warn",
            f"unrelated base of the same family ({target.family.model_type}), not a recorded descendant of "
            f"{source.repo}: validate before use",
            relation=relation,
            **data,
        )
    return result(
        NAME,
        "fail",
        f"different family: patch trained on {source.family.model_type} ({source.repo}), "
        f"base is {target.family.model_type}",
        relation="different_family",
        **data,
    )
