"""What every check sees (:class:`CheckContext`) and the registry of named checks."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from patchctl.adapter import AdapterLayout, BaseMapping, map_to_base
from patchctl.schemas.base import BaseFacts
from patchctl.schemas.manifest import Manifest, SourceBase
from patchctl.schemas.report import CheckResult, CheckStatus

__all__ = ["CHECKS", "Check", "CheckContext", "is_vocab_tensor", "register", "result"]

#: modules whose rows are token ids (input embeddings, output heads), by name, any architecture
_VOCAB_MODULE = re.compile(
    r"(^|\.)(embed_tokens|wte|word_embeddings|shared|embed_in|embed_out|lm_head|output_layer|tok_embeddings)$|^output$"
)
#: per-token tensors that are not a module's weight (BART's ``final_logits_bias``)
_VOCAB_TENSOR = re.compile(r"(^|\.)final_logits_bias$")


def is_vocab_tensor(base_name: str) -> bool:
    """A tensor indexed by token id: the weight or bias of an embedding / output head, by name."""
    module, _, part = base_name.rpartition(".")
    return bool(_VOCAB_TENSOR.search(base_name)) or (part in ("weight", "bias") and bool(_VOCAB_MODULE.search(module)))


@dataclass(frozen=True)
class CheckContext:
    """A patch (adapter layout, optional manifest) and a target base, as the checks read them."""

    adapter: AdapterLayout
    base: BaseFacts
    manifest: Manifest | None = None
    target_ancestors: frozenset[str] = frozenset()

    @property
    def source(self) -> SourceBase | None:
        """The base the patch was trained on, when a manifest says so."""
        return self.manifest.source_base if self.manifest is not None else None

    @cached_property
    def mapping(self) -> BaseMapping:
        return map_to_base(self.adapter, self.base.tensors, self.base.config)

    @cached_property
    def vocab_targets(self) -> tuple[str, ...]:
        """Base tensors indexed by token id that the patch changes: an embedding LoRA's target, and
        any patched tensor of an input embedding or output head found by module name (``embed_tokens``,
        ``wte``, ``word_embeddings``, ``shared``, ``lm_head``, ``embed_out``...), including an
        ``lm_head`` target that lands on a tied embedding. Never by shape: an MLP as wide as the
        vocabulary is not an embedding."""
        hits: set[str] = set()
        patched = [(p.target, p.kind == "embedding") for p in self.adapter.pairs]
        patched += [(p.bias_target, False) for p in self.adapter.pairs if p.bias_key]
        patched += [(r.target, False) for r in self.adapter.written_replacements]
        for target, is_embedding in patched:
            base_name = self.mapping.targets.get(target) or self.mapping.tied.get(target) or target
            if is_embedding or is_vocab_tensor(base_name) or is_vocab_tensor(target):
                hits.add(base_name)
        return tuple(sorted(hits))


Check = Callable[[CheckContext], CheckResult]

#: every named check, in the order reports list them
CHECKS: dict[str, Check] = {}


def register(name: str) -> Callable[[Check], Check]:
    """Add a check under ``name`` (decorator)."""

    def deco(fn: Check) -> Check:
        if name in CHECKS:
            raise RuntimeError(f"check {name!r} registered twice")
        CHECKS[name] = fn
        return fn

    return deco


def result(name: str, status: CheckStatus, detail: str, **data: Any) -> CheckResult:
    return CheckResult(name=name, status=status, detail=detail, data=data)


def preview(items: list[str] | tuple[str, ...], n: int = 3) -> str:
    """``a, b, c (+4 more)`` for details that must stay one line."""
    head = ", ".join(items[:n])
    return head + (f" (+{len(items) - n} more)" if len(items) > n else "")
