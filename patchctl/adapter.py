"""Reading a PEFT LoRA adapter directory without torch: its config, its weight layout, and
how each of its keys maps onto a base model's tensors.

PEFT saves keys as ``base_model.model.<module path>.<part>``:

=================================================  ============================================
``<m>.lora_A.weight`` / ``<m>.lora_B.weight``      a LoRA pair on a Linear/Conv1D module ``m``
``<m>.lora_B.bias``                                LoRA bias (``lora_bias=True``), added to ``m.bias``
``<m>.lora_embedding_A`` / ``<m>.lora_embedding_B``  a LoRA pair on an Embedding ``m``
``<m>.base_layer.weight``                          embedding saved with the adapter (resized vocab):
                                                   replaces the base's ``m.weight`` before the delta
anything else (``lm_head.weight``, ``<m>.bias``)   ``modules_to_save`` copies or trained biases:
                                                   replaces the base tensor of the same name
=================================================  ============================================

The merge engine and the checks both read adapters through :func:`read_adapter`, so a key
that one of them does not understand is refused by both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from math import prod
from pathlib import Path
from typing import Any, Literal

from patchctl.bases import read_safetensors_header
from patchctl.errors import AdapterError, UnsupportedError
from patchctl.schemas.manifest import LoraSpec
from patchctl.schemas.peft_config import ADAPTER_WEIGHTS, AdapterConfig, read_adapter_config

__all__ = [
    "AdapterLayout",
    "BaseMapping",
    "LoraPair",
    "Replacement",
    "is_lm_head",
    "map_to_base",
    "read_adapter",
    "resolve_base_name",
    "tied_embedding",
]

PEFT_PREFIX = "base_model.model."
_PAIR = re.compile(r"^(?P<m>.+)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?\.(?P<p>weight|bias)$")
_EMB = re.compile(r"^(?P<m>.+)\.lora_embedding_(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?$")
_BASE_LAYER = re.compile(r"^(?P<m>.+)\.base_layer\.(?P<p>weight|bias)$")
_LORA_MARK = re.compile(r"\.lora_[A-Za-z_]+")


@dataclass(frozen=True)
class LoraPair:
    """One (A, B) pair: ``delta = B @ A * scaling`` on ``module``'s weight (transposed for fan_in_fan_out)."""

    module: str
    kind: Literal["linear", "embedding", "conv"]
    a_key: str
    b_key: str
    a_shape: tuple[int, ...]
    b_shape: tuple[int, ...]
    dtype: str
    rank: int
    scaling: float
    bias_key: str | None = None

    @property
    def target(self) -> str:
        """The base tensor name (relative to the model) the delta is added to."""
        return f"{self.module}.weight"

    @property
    def bias_target(self) -> str:
        return f"{self.module}.bias"


@dataclass(frozen=True)
class Replacement:
    """An adapter tensor that replaces a base tensor as a whole."""

    key: str
    target: str
    shape: tuple[int, ...]
    dtype: str
    reason: Literal["modules_to_save", "bias", "embedding_base_layer"]


@dataclass(frozen=True)
class AdapterLayout:
    path: Path
    config: AdapterConfig
    header: dict[str, Any]
    pairs: tuple[LoraPair, ...]
    replacements: tuple[Replacement, ...]
    #: LoRA-looking keys we could not pair (a lone A, an unknown lora_* part): always a format failure
    problems: tuple[str, ...] = ()

    @property
    def weights_path(self) -> Path:
        return self.path / ADAPTER_WEIGHTS

    @property
    def total_parameters(self) -> int:
        return sum(prod(v["shape"]) for k, v in self.header.items() if k != "__metadata__")

    def lora_spec(self) -> LoraSpec:
        c = self.config
        tm = c.target_modules
        return LoraSpec(
            r=c.r,
            lora_alpha=c.lora_alpha,
            use_rslora=c.use_rslora,
            rank_pattern=dict(c.rank_pattern),
            alpha_pattern=dict(c.alpha_pattern),
            target_modules=tuple(sorted(tm)) if isinstance(tm, list) else tm,
            modules_to_save=tuple(c.modules_to_save or ()),
            fan_in_fan_out=c.fan_in_fan_out,
            bias=c.bias,  # type: ignore[arg-type]
            lora_bias=c.lora_bias,
            lora_pairs=len(self.pairs),
            total_parameters=self.total_parameters,
        )


def _strip(key: str) -> str:
    return key[len(PEFT_PREFIX) :] if key.startswith(PEFT_PREFIX) else key


def read_adapter(adapter_dir: Path) -> AdapterLayout:
    """Read config and safetensors header of an adapter; pair its LoRA tensors.

    Raises AdapterError for unreadable input, UnsupportedError for pickle-only adapters and
    non-LoRA or unsupported LoRA variants.
    """
    adapter_dir = Path(adapter_dir).expanduser()
    if not adapter_dir.is_dir():
        raise AdapterError(f"{adapter_dir}: adapter directory does not exist")
    config = read_adapter_config(adapter_dir)
    config.require_lora()
    weights = adapter_dir / ADAPTER_WEIGHTS
    if not weights.is_file():
        if (adapter_dir / "adapter_model.bin").is_file():
            raise UnsupportedError(
                f"{adapter_dir}: adapter_model.bin is a pickle file; patchctl accepts safetensors only "
                "(re-save with `model.save_pretrained(dir, safe_serialization=True)`)"
            )
        raise AdapterError(f"{adapter_dir}: no {ADAPTER_WEIGHTS}")
    try:
        header = read_safetensors_header(weights)
    except Exception as exc:  # InvalidInputError or OSError: report as an adapter problem
        raise AdapterError(str(exc) if str(weights) in str(exc) else f"{weights}: {exc}") from None
    return layout_from_header(adapter_dir, config, header)


def layout_from_header(adapter_dir: Path, config: AdapterConfig, header: dict[str, Any]) -> AdapterLayout:
    halves: dict[tuple[str, str], dict[str, str]] = {}
    bias_keys: dict[str, str] = {}
    replacements: list[Replacement] = []
    problems: list[str] = []
    for key in sorted(k for k in header if k != "__metadata__"):
        info = header[key]
        name = _strip(key)
        if m := _PAIR.match(name):
            if m["p"] == "bias":
                if m["ab"] == "B":
                    bias_keys[m["m"]] = key
                else:
                    problems.append(f"{key}: lora_A has no bias in LoRA")
                continue
            halves.setdefault(("linear", m["m"]), {})[m["ab"]] = key
        elif m := _EMB.match(name):
            halves.setdefault(("embedding", m["m"]), {})[m["ab"]] = key
        elif m := _BASE_LAYER.match(name):
            replacements.append(
                Replacement(key, f"{m['m']}.{m['p']}", tuple(info["shape"]), info["dtype"], "embedding_base_layer")
            )
        elif _LORA_MARK.search(name):
            problems.append(f"{key}: unknown LoRA tensor (a variant patchctl does not support)")
        else:
            reason: Literal["modules_to_save", "bias"] = "bias" if name.endswith(".bias") else "modules_to_save"
            replacements.append(Replacement(key, name, tuple(info["shape"]), info["dtype"], reason))
    pairs: list[LoraPair] = []
    for (kind, module), parts in sorted(halves.items()):
        if set(parts) != {"A", "B"}:
            missing = ({"A", "B"} - set(parts)).pop()
            problems.append(f"{module}: lora_{missing} is missing (only lora_{next(iter(parts))} present)")
            continue
        a, b = header[parts["A"]], header[parts["B"]]
        a_shape, b_shape = tuple(a["shape"]), tuple(b["shape"])
        real_kind: Literal["linear", "embedding", "conv"] = (
            "embedding" if kind == "embedding" else ("conv" if len(a_shape) > 2 else "linear")
        )
        rank = a_shape[0]
        pairs.append(
            LoraPair(
                module=module,
                kind=real_kind,
                a_key=parts["A"],
                b_key=parts["B"],
                a_shape=a_shape,
                b_shape=b_shape,
                dtype=str(a["dtype"]),
                rank=rank,
                scaling=config.scaling_for(module),
                bias_key=bias_keys.pop(module, None),
            )
        )
    for module, key in bias_keys.items():
        problems.append(f"{key}: lora_B bias without a LoRA pair on {module}")
    return AdapterLayout(
        path=adapter_dir,
        config=config,
        header=header,
        pairs=tuple(pairs),
        replacements=tuple(replacements),
        problems=tuple(problems),
    )


def resolve_base_name(name: str, base_names: Iterable[str] | set[str]) -> tuple[str | None, list[str]]:
    """The base tensor that ``name`` (a model-relative tensor name from an adapter) refers to.

    Exact match first; otherwise a unique suffix match in either direction (a checkpoint saved
    with or without the ``model.``/``transformer.`` prefix). Returns ``(match, candidates)``:
    ``match`` is None when there is no candidate or more than one.
    """
    names = base_names if isinstance(base_names, set) else set(base_names)
    if name in names:
        return name, [name]
    cands = sorted(b for b in names if b.endswith("." + name) or name.endswith("." + b))
    return (cands[0] if len(cands) == 1 else None), cands


LM_HEAD = "lm_head.weight"
#: input-embedding tensor names of common architectures, for tied lm_head handling
EMBEDDING_SUFFIXES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight")


def is_lm_head(target: str) -> bool:
    return target == LM_HEAD or target.endswith("." + LM_HEAD)


def _ties_word_embeddings(config: Mapping[str, Any]) -> bool:
    text = config.get("text_config")
    for src in (config, text if isinstance(text, Mapping) else {}):
        if "tie_word_embeddings" in src:
            return bool(src["tie_word_embeddings"])
    return True  # transformers' PretrainedConfig default


def tied_embedding(config: Mapping[str, Any], base_names: Iterable[str]) -> str | None:
    """The input-embedding tensor that also serves as the output head (a tied base stores no
    ``lm_head.weight``), or None if the base is not tied."""
    names = set(base_names)
    if any(is_lm_head(n) for n in names) or not _ties_word_embeddings(config):
        return None
    cands = sorted(n for n in names if n.endswith(EMBEDDING_SUFFIXES))
    return cands[0] if len(cands) == 1 else None


@dataclass(frozen=True)
class BaseMapping:
    """Where each adapter tensor lands in a base. ``targets`` maps adapter target → base tensor name;
    ``tied`` maps an ``lm_head`` target of a tied base (no lm_head tensor) → the shared embedding
    tensor: the merge gives the head its own tensor (untied), as the adapter behaves in PeftModel."""

    targets: dict[str, str] = field(default_factory=dict)
    unmatched: tuple[str, ...] = ()
    ambiguous: dict[str, tuple[str, ...]] = field(default_factory=dict)
    tied: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.unmatched and not self.ambiguous


def map_to_base(
    layout: AdapterLayout, base_names: Iterable[str], config: Mapping[str, Any] | None = None
) -> BaseMapping:
    """Map every LoRA target (weight, and bias for lora_bias) and every replacement onto base tensors.

    With the base's ``config`` an ``lm_head`` target on a tied base maps through ``tied``."""
    names = set(base_names)
    wanted: list[str] = []
    for p in layout.pairs:
        wanted.append(p.target)
        if p.bias_key:
            wanted.append(p.bias_target)
    wanted.extend(r.target for r in layout.replacements)
    targets: dict[str, str] = {}
    unmatched: list[str] = []
    ambiguous: dict[str, tuple[str, ...]] = {}
    for t in wanted:
        match, cands = resolve_base_name(t, names)
        if match is not None:
            targets[t] = match
        elif cands:
            ambiguous[t] = tuple(cands)
        else:
            unmatched.append(t)
    tied: dict[str, str] = {}
    shared = tied_embedding(config, names) if config is not None else None
    if shared is not None:
        tied = {t: shared for t in unmatched if is_lm_head(t)}
        unmatched = [t for t in unmatched if t not in tied]
    return BaseMapping(targets=targets, unmatched=tuple(unmatched), ambiguous=ambiguous, tied=tied)
