"""``vocab``: token ids mean the same tokens on the target as on the source; exactly so when the
patch changes a token-indexed tensor (an embedding or the output head: a row is a token id).

Compared: what gives tokens their ids (:mod:`patchctl.tokenids`: the vocabulary, merges or piece
scores, added tokens with their ids), never the files' bytes. Verdicts:

- token ids differ, or cannot be verified: fail when embeddings/head are patched, else warn;
- tokens added at new ids (every source id keeps its token): warn;
- vocabulary size (embedding rows) differs: fail when embeddings/head are patched, else warn (a
  q/v patch from a 32,000-token release onto a 32,768-token one merges exactly);
- special-token roles moved (``eos`` 2 → 32000): warn;
- anything else (chat template, ``model_max_length``, new tokenizer_config keys): information,
  in the detail of a pass.

When the adapter carries a copy of θ's embedding/head (PEFT saves ``*.base_layer.weight`` with
``save_embedding_layers``), one line says that the copy is not written onto θ′: the install keeps
θ′'s own tensor and adds only the LoRA delta.
"""

from __future__ import annotations

from typing import Any

from patchctl.checks._context import CheckContext, preview, register, result
from patchctl.schemas.report import CheckResult, CheckStatus
from patchctl.tokenids import compare_tokenizers

NAME = "vocab"


def _show_id(value: int | tuple[int, ...] | None) -> str:
    return "unset" if value is None else str(list(value) if isinstance(value, tuple) else value)


def _special_ids(ctx: CheckContext) -> list[str]:
    """config.json's bos/eos/pad ids that moved (generation stops or pads on another token)."""
    assert ctx.source is not None
    sd, td = ctx.source.family.details, ctx.base.family.details
    if sd is None or td is None:
        return []
    out = []
    for role in sorted(set(sd.special_token_ids) | set(td.special_token_ids)):
        s, t = sd.special_token_ids.get(role), td.special_token_ids.get(role)
        if s != t:
            out.append(f"config {role}_token_id {_show_id(s)} → {_show_id(t)}")
    return out


@register(NAME)
def check_vocab(ctx: CheckContext) -> CheckResult:
    target_rows = ctx.base.family.vocab_size
    touched = list(ctx.vocab_targets)
    data: dict[str, Any] = {
        "target_vocab_size": target_rows,
        "target_tokenizer": ctx.base.tokenizer.model_dump(mode="json", exclude={"added_tokens"})
        if ctx.base.tokenizer is not None
        else None,
        "vocab_tensors_patched": touched,
    }
    carried = sorted(r.target for r in ctx.adapter.replacements if r.reason == "embedding_base_layer")
    carried_line = (
        f"the adapter carries a copy of θ's {preview(carried)} (PEFT save_embedding_layers); it is not written "
        "onto this base: the install keeps this base's own tensor and adds only the LoRA delta"
        if carried
        else ""
    )
    if carried:
        data["embedding_base_layers_carried"] = carried
    patched = f"token-indexed tensors are patched ({preview(touched)})"
    if ctx.source is None:
        why = f"{patched}, but" if touched else "the patch does not touch embeddings or the output head, but"
        detail = f"no manifest: {why} the source tokenizer and vocabulary are unknown; not compared"
        return result(NAME, "warn", "; ".join(x for x in (detail, carried_line) if x), **data)

    fails: list[str] = []
    warns: list[str] = []
    infos: list[str] = []
    source_rows = ctx.source.family.vocab_size
    data["source_vocab_size"] = source_rows
    if source_rows is not None and target_rows is not None and source_rows != target_rows:
        if touched:
            fails.append(f"vocabulary size {source_rows} → {target_rows}")
        else:
            warns.append(
                f"vocabulary size {source_rows} → {target_rows}; the patch does not touch embeddings or the output "
                "head, so its tensors keep their shapes"
            )
    elif source_rows is None or target_rows is None:
        warns.append("vocabulary size unknown on one side")

    src_tok, dst_tok = ctx.source.tokenizer, ctx.base.tokenizer
    relation: str
    if src_tok is not None and dst_tok is not None:
        diff = compare_tokenizers(src_tok, dst_tok)
        relation = diff.relation
        data.update(token_ids=relation, token_id_changes=list(diff.reasons), info=list(diff.info))
        warns.extend(diff.roles)
        infos.extend(diff.info)
        if diff.relation == "differs":
            what = "token ids differ from the source's: " + "; ".join(diff.reasons)
            if touched:
                fails.append(what)
            else:
                warns.append(f"{what} (embeddings and the output head are not patched)")
        elif diff.relation == "extends":
            warns.append(f"{'; '.join(diff.reasons)}; every id of the source keeps its token")
    else:
        legacy_same = (
            src_tok is None
            and ctx.source.tokenizer_sha256 is not None
            and ctx.source.tokenizer_sha256 == ctx.base.tokenizer_sha256
        )
        if legacy_same:
            relation = "same"  # a manifest without the token-id fingerprint, byte-identical files
        else:
            relation = "unknown"
            if dst_tok is None:
                why = "the target base has no tokenizer patchctl can read"
            elif ctx.source.tokenizer_sha256 is None:
                why = "the source tokenizer is unknown (the manifest recorded none)"
            else:
                why = (
                    "the source's token ids are unknown (the manifest predates token-id fingerprints; "
                    "push the patch again with this patchctl) and the tokenizer files differ"
                )
            if touched:
                fails.append(f"{why}: the token ids cannot be verified")
            else:
                warns.append(f"{why}; token ids not compared")
        data["token_ids"] = relation
    warns.extend(_special_ids(ctx))
    if carried_line:
        infos.append(carried_line)

    status: CheckStatus = "fail" if fails else ("warn" if warns else "pass")
    if fails:
        head = f"{patched}, but " + "; ".join(fails) + ": their rows would not mean the source's tokens"
        if warns:
            head += " (also " + "; ".join(warns) + ")"
    elif warns:
        head = "; ".join(warns)
    else:
        scope = "exact token ids required and matched" if touched else "same token ids"
        head = f"vocabulary {target_rows}, {scope}"
    if infos:
        head += " (information: " + "; ".join(infos) + ")"
    return result(NAME, status, head, **data)
