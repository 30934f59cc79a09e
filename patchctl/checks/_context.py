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

__all__ = ["CHECKS", "Check", "CheckContext", "register", "result"]

#: names of base tensors that hold the vocabulary (input embeddings, output head), any architecture
_VOCAB_NAME = re.compile(r"(^|\.)(embed_tokens|wte|lm_head|embed_in|embed_out|word_embeddings|shared)(\.|$)")


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
        """Base tensors the patch changes that hold the vocabulary (embeddings, lm_head).

        An embedding LoRA pair; or any patched base tensor (pair or replacement) that is 2-D with
        ``vocab_size`` rows (``nn.Embedding`` and the output ``nn.Linear`` both are) or that is
        named like an embedding / head.
        """
        vocab = {v for v in (self.base.family.vocab_size, _source_vocab(self)) if v}
        hits: set[str] = set()
        patched = [(p.target, p.kind == "embedding") for p in self.adapter.pairs]
        patched += [(r.target, r.reason == "embedding_base_layer") for r in self.adapter.replacements]
        for target, is_embedding in patched:
            base_name = self.mapping.targets.get(target, target)
            info = self.base.tensors.get(base_name)
            by_shape = info is not None and len(info.shape) == 2 and info.shape[0] in vocab
            if is_embedding or by_shape or _VOCAB_NAME.search(base_name):
                hits.add(base_name)
        return tuple(sorted(hits))


def _source_vocab(ctx: CheckContext) -> int | None:
    return ctx.source.family.vocab_size if ctx.source is not None else None


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
