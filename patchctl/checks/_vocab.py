"""``vocab``: same vocabulary size; the same tokenizer, exactly, when the patch changes
embeddings or the output head (a row of those means a token id)."""

from __future__ import annotations

from patchctl.checks._context import CheckContext, preview, register, result
from patchctl.schemas.report import CheckResult

NAME = "vocab"


@register(NAME)
def check_vocab(ctx: CheckContext) -> CheckResult:
    target_vocab = ctx.base.family.vocab_size
    target_tok = ctx.base.tokenizer_sha256
    touched = list(ctx.vocab_targets)
    data: dict[str, object] = {
        "target_vocab_size": target_vocab,
        "target_tokenizer_sha256": target_tok,
        "vocab_tensors_patched": touched,
    }
    if ctx.source is None:
        if touched:
            why = f"embeddings/lm_head are patched ({preview(touched)}) but"
        else:
            why = "the patch does not touch embeddings or lm_head, but"
        detail = f"no manifest: {why} the source tokenizer and vocabulary are unknown; not compared"
        return result(NAME, "warn", detail, **data)
    source_vocab = ctx.source.family.vocab_size
    source_tok = ctx.source.tokenizer_sha256
    data.update(source_vocab_size=source_vocab, source_tokenizer_sha256=source_tok)
    if source_vocab is not None and target_vocab is not None and source_vocab != target_vocab:
        return result(
            NAME, "fail", f"vocabulary size differs: patch trained on {source_vocab}, base has {target_vocab}", **data
        )
    warnings = []
    if source_vocab is None or target_vocab is None:
        warnings.append("vocabulary size unknown on one side")
    if source_tok is None or target_tok is None:
        side = "source" if source_tok is None else "target"
        if touched:
            return result(
                NAME,
                "fail",
                f"embeddings/lm_head are patched ({preview(touched)}) and the {side} tokenizer is unknown: "
                "an exact tokenizer match cannot be verified",
                **data,
            )
        warnings.append(f"{side} base has no tokenizer files; tokenizers not compared")
    elif source_tok != target_tok:
        if touched:
            return result(
                NAME,
                "fail",
                f"embeddings/lm_head are patched ({preview(touched)}) and the tokenizer differs from the source's: "
                "token rows would mean other tokens",
                **data,
            )
        warnings.append("tokenizer files differ from the source's (embeddings/lm_head are not patched)")
    carried = [r.target for r in ctx.adapter.replacements if r.reason == "embedding_base_layer"]
    if carried and ctx.source.weights_sha256 != ctx.base.weights_sha256:
        data["embedding_base_layers_carried"] = carried
        warnings.append(
            f"the patch carries the source base's embedding matrix ({preview(carried)}, saved by PEFT with "
            "embedding LoRA): installing replaces this base's embedding with θ's, as PEFT does"
        )
    if warnings:
        return result(NAME, "warn", "; ".join(warnings), **data)
    scope = "exact tokenizer required and matched" if touched else "same tokenizer"
    return result(NAME, "pass", f"vocabulary {target_vocab}, {scope}", **data)
