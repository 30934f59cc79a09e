"""The model card (``README.md``) published with every patch version.

YAML metadata follows the Hub's model-card conventions so that the Hub links the patch to its
base (``base_model`` + ``base_model_relation: adapter``) and lists it under PEFT
(``library_name: peft``); ``tags`` carry ``patchctl`` (what ``patchctl search`` filters on),
``lora``, the task and the base's ``model_type``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from patchctl.schemas.manifest import EvalResult, Manifest

__all__ = ["PATCHCTL_TAG", "hub_base_model", "model_card", "tag_slug"]

PATCHCTL_TAG = "patchctl"
_HUB_ID = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?(?:/[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)?$")


def tag_slug(text: str) -> str:
    """A Hub tag for free text: lower case, runs of other characters become ``-``."""
    return re.sub(r"[^a-z0-9._]+", "-", text.strip().lower()).strip("-") or "unknown"


def hub_base_model(repo: str) -> str | None:
    """The Hub repo id of a source base, or None when it is a local path."""
    repo = repo.removeprefix("hf://")
    if "@" in repo:
        repo = repo.split("@", 1)[0]
    if repo.startswith(("/", ".", "~")) or ".." in repo or "--" in repo or not _HUB_ID.fullmatch(repo):
        return None
    return repo


def _q(value: object) -> str:
    """A YAML scalar: JSON strings are valid YAML double-quoted scalars."""
    return json.dumps(value)


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, Mapping):
        return dict(obj)
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        data = dump(mode="json")
        return dict(data) if isinstance(data, Mapping) else {}
    if hasattr(obj, "__dict__"):
        return {k: v for k, v in vars(obj).items() if not k.startswith("_")}
    return {"result": str(obj)}


def _cell(value: Any) -> str:
    text = "" if value is None else str(getattr(value, "value", value))
    return text.replace("|", "\\|").replace("\n", " ")


def _compat_section(reports: Iterable[Any]) -> list[str]:
    lines: list[str] = []
    for report in reports:
        d = _as_dict(report)
        base = d.get("base") or d.get("base_source") or d.get("base_repo") or d.get("base_weights_sha256") or "?"
        if isinstance(base, Mapping):
            base = base.get("source") or base.get("repo") or base.get("weights_sha256") or "?"
        verdict = d.get("verdict") or d.get("status") or d.get("result") or d.get("overall")
        lines.append(f"**{_cell(base)}**" + (f": {_cell(verdict)}" if verdict is not None else ""))
        lines.append("")
        checks = d.get("checks") or d.get("results") or []
        if checks:
            lines += ["| check | result | detail |", "|---|---|---|"]
            for c in checks:
                cd = _as_dict(c)
                status = cd.get("status") or cd.get("result") or cd.get("outcome")
                lines.append(f"| {_cell(cd.get('name'))} | {_cell(status)} | {_cell(cd.get('detail'))} |")
            lines.append("")
    return lines


def _eval_rows(evals: Iterable[Any]) -> list[str]:
    rows = []
    for e in evals:
        d = e.model_dump(mode="json") if isinstance(e, EvalResult) else _as_dict(e)
        base = d.get("base_weights_sha256")
        rows.append(
            f"| {_cell(d.get('task'))} | {_cell(d.get('metric'))} | {_cell(d.get('value'))} | "
            f"{_cell(d.get('n'))} | {_cell(base[:12] + '…' if isinstance(base, str) else base)} |"
        )
    return rows


def model_card(
    manifest: Manifest,
    compat_reports: Iterable[Any] = (),
    evals: Iterable[Any] = (),
    *,
    remote_url: str | None = None,
) -> str:
    """The README.md of a published patch version: Hub YAML metadata, then task, lineage, ranks,
    compatibility reports (mappings or objects with ``base``/``verdict``/``checks``) and eval
    results (:class:`EvalResult` or mappings; the manifest's own evals come first).
    ``remote_url`` (``hf://org/name``) goes into the usage example."""
    src = manifest.source_base
    fam = src.family
    base_model = hub_base_model(src.repo)
    tags = list(dict.fromkeys([PATCHCTL_TAG, "lora", tag_slug(manifest.task), tag_slug(fam.model_type)]))
    meta = []
    if base_model:
        meta += [f"base_model: {_q(base_model)}", "base_model_relation: adapter"]
    meta += [
        "library_name: peft",
        f"license: {_q(manifest.license or 'unknown')}",
        "tags:",
        *[f"- {_q(t)}" for t in tags],
        "patchctl:",
        f"  name: {_q(manifest.name)}",
        f"  version: {_q(manifest.version)}",
        f"  task: {_q(manifest.task)}",
        f"  model_type: {_q(fam.model_type)}",
        f"  content_digest: {_q(manifest.content_digest)}",
    ]
    lora = manifest.lora
    tm = lora.target_modules
    targets = ", ".join(tm) if isinstance(tm, tuple) else (tm or "—")
    body = [
        f"# {manifest.name} {manifest.version}",
        "",
        f"A LoRA patch (PEFT adapter) for `{src.repo}`, managed with "
        "[patchctl](https://github.com/patchctl/patchctl): apply it to the base it was trained on or to "
        "an updated release of that base.",
        "",
    ]
    if manifest.description:
        body += [manifest.description, ""]
    body += [
        "## Task",
        "",
        manifest.task,
        "",
        "## Lineage",
        "",
        f"- Trained on: `{src.repo}`" + (f" at revision `{src.revision}`" if src.revision else ""),
        f"- Base weights fingerprint: `{src.weights_sha256}`",
        f"- Base structure fingerprint: `{src.structure_sha256}`",
        f"- Family: `{fam.model_type}`"
        + (f" ({', '.join(fam.architectures)})" if fam.architectures else "")
        + (f", hidden size {fam.hidden_size}" if fam.hidden_size else "")
        + (f", {fam.num_hidden_layers} layers" if fam.num_hidden_layers else "")
        + (f", vocabulary {fam.vocab_size}" if fam.vocab_size else ""),
    ]
    if src.tokenizer_sha256:
        body.append(f"- Tokenizer fingerprint: `{src.tokenizer_sha256}`")
    body += [
        "",
        "## LoRA",
        "",
        f"- Rank r = {lora.r}, alpha = {lora.lora_alpha:g}" + (" (rsLoRA)" if lora.use_rslora else ""),
        f"- Target modules: {targets}",
        f"- LoRA pairs: {lora.lora_pairs}, parameters: {lora.total_parameters:,}",
    ]
    if lora.rank_pattern:
        body.append("- Rank pattern: " + ", ".join(f"`{k}`: {v}" for k, v in sorted(lora.rank_pattern.items())))
    if lora.alpha_pattern:
        body.append("- Alpha pattern: " + ", ".join(f"`{k}`: {v:g}" for k, v in sorted(lora.alpha_pattern.items())))
    if lora.modules_to_save:
        body.append("- Modules saved whole: " + ", ".join(lora.modules_to_save))
    body += ["", "| file | sha256 | bytes |", "|---|---|---|"]
    body += [f"| {f.path} | `{f.sha256}` | {f.size} |" for f in manifest.files]
    body.append("")
    compat = _compat_section(compat_reports)
    body += ["## Compatibility", ""]
    body += compat if compat else ["No compatibility reports recorded yet.", ""]
    rows = _eval_rows([*manifest.evals, *evals])
    body += ["## Evaluation", ""]
    if rows:
        body += ["| task | metric | value | n | base weights |", "|---|---|---|---|---|", *rows, ""]
    else:
        body += ["No evaluation results recorded yet.", ""]
    body += [
        "## Usage",
        "",
        "```sh",
        f"patchctl pull {remote_url or manifest.name}=={manifest.version}",
        f"patchctl install {manifest.name}=={manifest.version} --onto <base>",
        "```",
        "",
    ]
    return "---\n" + "\n".join(meta) + "\n---\n\n" + "\n".join(body)
