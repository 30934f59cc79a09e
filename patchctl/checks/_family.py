"""``family``: the target base is the architecture the patch was trained for, and what changes
the meaning of a patch is reported.

- fail: another ``model_type`` (a multimodal wrapper and its language model match through the
  wrapper's ``text_config``), hidden size, layer count, attention heads, KV heads, head dim or
  intermediate size — the patched tensors would not mean the same thing, or not fit;
- warn, with old → new: ``rope_theta``, ``rope_scaling``, ``max_position_embeddings``,
  ``sliding_window``, activation, norm eps, the architecture class.

A manifest written before patchctl recorded these details compares only what it recorded (and
says so in the detail).
"""

from __future__ import annotations

import json
from typing import Any

from patchctl.checks._context import CheckContext, register, result
from patchctl.schemas.base import Family, FamilyDetails
from patchctl.schemas.report import CheckResult

NAME = "family"

#: details that change tensor shapes or how a tensor is split into heads: a difference fails
SHAPE_DETAILS = ("num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size")
#: details that change what the same weights compute: a difference warns
SEMANTIC_DETAILS = (
    "rope_theta",
    "rope_scaling",
    "max_position_embeddings",
    "sliding_window",
    "hidden_act",
    "norm_eps",
)


def _show(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, dict):
        short = {k: (f"[{len(v)} values]" if isinstance(v, list) and len(v) > 4 else v) for k, v in value.items()}
        return json.dumps(short, sort_keys=True, separators=(",", ":"))
    if isinstance(value, float) and value.is_integer() and abs(value) >= 1:
        return str(int(value))
    return str(value)


def _text_type(f: Family) -> str:
    return (f.details.text_model_type if f.details is not None else None) or f.model_type


def same_text_model(source: Family, target: Family) -> bool:
    """One model type, or a text model and a multimodal wrapper whose ``text_config`` is that type
    (``mistral`` vs ``mistral3`` wrapping ``mistral``; ``gemma3_text`` vs ``gemma3``)."""
    if source.model_type == target.model_type:
        return True
    return bool({source.model_type, _text_type(source)} & {target.model_type, _text_type(target)})


def family_changes(source: Family, target: Family) -> tuple[list[str], list[str], dict[str, Any]]:
    """``(failures, warnings, changes)``: one-line reasons, and ``{field: [old, new]}`` of every change."""
    fails: list[str] = []
    warns: list[str] = []
    changes: dict[str, Any] = {}
    if not same_text_model(source, target):
        fails.append(f"model_type {source.model_type} → {target.model_type}")
        changes["model_type"] = [source.model_type, target.model_type]
    for field in ("hidden_size", "num_hidden_layers"):
        s, t = getattr(source, field), getattr(target, field)
        if s is not None and t is not None and s != t:
            fails.append(f"{field} {s} → {t}")
            changes[field] = [s, t]
    sd, td = source.details, target.details
    if sd is None or td is None:
        return fails, warns, changes
    for field in SHAPE_DETAILS:
        s, t = getattr(sd, field), getattr(td, field)
        if s is not None and t is not None and s != t:
            fails.append(f"{field} {s} → {t}")
            changes[field] = [s, t]
    for field in SEMANTIC_DETAILS:
        s, t = getattr(sd, field), getattr(td, field)
        if s != t:
            warns.append(f"{field} {_show(s)} → {_show(t)}")
            changes[field] = [s, t]
    return fails, warns, changes


def _describe(target: Family) -> str:
    archs = ", ".join(target.architectures) or "no architectures listed"
    text = ""
    d: FamilyDetails | None = target.details
    if d is not None and d.text_model_type and d.text_model_type != target.model_type:
        text = f", language model {d.text_model_type}"
    return f"{target.model_type} ({archs}{text}), hidden {target.hidden_size}, {target.num_hidden_layers} layers"


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
    data: dict[str, Any] = {"source": source.model_dump(mode="json"), "target": target.model_dump(mode="json")}
    fails, warns, changes = family_changes(source, target)
    data["changes"] = changes
    if fails:
        detail = "patch trained on another architecture: " + "; ".join(fails)
        if warns:
            detail += " (also " + "; ".join(warns) + ")"
        return result(NAME, "fail", detail, **data)
    if source.architectures and target.architectures and set(source.architectures) != set(target.architectures):
        warns.insert(0, f"architectures {', '.join(source.architectures)} → {', '.join(target.architectures)}")
    if source.model_type != target.model_type:
        warns.insert(0, f"model_type {source.model_type} → {target.model_type} (same language model)")
    note = ""
    if source.details is None:
        data["details_compared"] = False
        note = " (the manifest predates heads/rope/context facts: those are not compared)"
    if warns:
        return result(NAME, "warn", f"same architecture, but {'; '.join(warns)}{note}", **data)
    return result(NAME, "pass", _describe(target) + note, **data)
