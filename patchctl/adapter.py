"""Reading a PEFT LoRA adapter directory without torch: its config, its weight layout, and
how each of its keys maps onto a base model's tensors.

PEFT saves keys as ``base_model.model.<module path>.<part>``:

=================================================  ============================================
``<m>.lora_A.weight`` / ``<m>.lora_B.weight``      a LoRA pair on a Linear/Conv1D module ``m``
``<m>.lora_B.bias``                                LoRA bias (``lora_bias=True``), added to ``m.bias``
``<m>.lora_embedding_A`` / ``<m>.lora_embedding_B``  a LoRA pair on an Embedding ``m``
``<m>.base_layer.weight``                          θ's own embedding/head, saved by PEFT next to an
                                                   embedding LoRA (``save_embedding_layers``): kept
                                                   in the layout (checks name it) but never written
                                                   onto θ′ (see :attr:`AdapterLayout.written_replacements`)
``<m>.base_layer.bias``                            a trained bias (``bias="all"/"lora_only"``)
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
    "ParamPiece",
    "Replacement",
    "is_lm_head",
    "language_model_path",
    "map_to_base",
    "param_piece_shape",
    "param_pieces",
    "read_adapter",
    "resolve_base_name",
    "stored_transposed",
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
    kind: Literal["linear", "embedding", "conv", "param"]
    a_key: str
    b_key: str
    a_shape: tuple[int, ...]
    b_shape: tuple[int, ...]
    dtype: str
    rank: int
    scaling: float
    bias_key: str | None = None
    #: ``kind == "param"``: the ``nn.Parameter`` of ``module`` targeted through PEFT's
    #: ``target_parameters`` (``ParamWrapper``), e.g. ``gate_up_proj`` of MoE experts
    parameter: str | None = None

    @property
    def target(self) -> str:
        """The base tensor name (relative to the model) the delta is added to (for a parameter
        target: the model's parameter, which the checkpoint may store per expert)."""
        return f"{self.module}.{self.parameter}" if self.parameter else f"{self.module}.weight"

    @property
    def num_experts(self) -> int:
        """Experts of a parameter target (``lora_A`` is (r·experts, in)); 1 otherwise."""
        return self.a_shape[0] // self.rank if self.kind == "param" and self.rank else 1

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
    def written_replacements(self) -> tuple[Replacement, ...]:
        """Replacements an install writes: everything but the copies of θ's own embedding/head
        (``<m>.base_layer.weight``) that PEFT saves with an embedding LoRA. The install writes
        θ′ + Δθ and nothing of θ, so the patched model is ``PeftModel`` on θ′ with the adapter
        saved with ``save_embedding_layers=False``."""
        return tuple(r for r in self.replacements if r.reason != "embedding_base_layer")

    @property
    def carried_base_layers(self) -> tuple[Replacement, ...]:
        """The copies of θ's tensors the adapter carries (never written onto θ′)."""
        return tuple(r for r in self.replacements if r.reason == "embedding_base_layer")

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
    keys = sorted(k for k in header if k != "__metadata__")
    if stray := [k for k in keys if not k.startswith(PEFT_PREFIX) or k.startswith(PEFT_PREFIX + PEFT_PREFIX)]:
        # PeftModel.from_pretrained loads only keys under one base_model.model. (the rest is dropped
        # with a missing-keys warning, so PEFT's merge leaves θ as it is): never guess their module
        problems.append(
            f"{len(stray)} keys are not under one `{PEFT_PREFIX}` prefix as PEFT saves them ({stray[0]}): "
            "PEFT would load none of them; re-save the adapter with PEFT's `save_pretrained`"
        )
        keys = [k for k in keys if k not in set(stray)]
    for key in keys:
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
            # a trained bias of a LoRA-wrapped module (bias="all"/"lora_only") is saved under base_layer
            # too; a base_layer weight is θ's own embedding/head (save_embedding_layers)
            why: Literal["bias", "embedding_base_layer"] = "bias" if m["p"] == "bias" else "embedding_base_layer"
            replacements.append(Replacement(key, f"{m['m']}.{m['p']}", tuple(info["shape"]), info["dtype"], why))
        elif _LORA_MARK.search(name):
            problems.append(f"{key}: unknown LoRA tensor (a variant patchctl does not support)")
        else:
            reason: Literal["modules_to_save", "bias"] = "bias" if name.endswith(".bias") else "modules_to_save"
            replacements.append(Replacement(key, name, tuple(info["shape"]), info["dtype"], reason))
    params, param_problems = _parameter_targets(config, [m for k, m in halves if k == "linear"])
    problems.extend(param_problems)
    pairs: list[LoraPair] = []
    for (kind, module), parts in sorted(halves.items()):
        if set(parts) != {"A", "B"}:
            missing = ({"A", "B"} - set(parts)).pop()
            problems.append(f"{module}: lora_{missing} is missing (only lora_{next(iter(parts))} present)")
            continue
        a, b = header[parts["A"]], header[parts["B"]]
        a_shape, b_shape = tuple(a["shape"]), tuple(b["shape"])
        real_kind: Literal["linear", "embedding", "conv", "param"] = (
            "embedding" if kind == "embedding" else ("conv" if len(a_shape) > 2 else "linear")
        )
        rank = a_shape[0]
        scaling = config.scaling_for(module)
        parameter = None
        if kind == "linear" and module in params:
            real_kind = "param"
            module, parameter = params[module]
            key = f"{module}.{parameter}"  # PEFT matches rank/alpha patterns against the parameter's key
            rank, scaling = config.rank_for(key), config.scaling_for(key)
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
                scaling=scaling,
                bias_key=bias_keys.pop(module, None),
                parameter=parameter,
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


#: registration order of the parameters of transformers' fused MoE expert modules (Mixtral,
#: Qwen2/3-MoE, gpt-oss, ...): PEFT nests one ParamWrapper per targeted parameter in this order, the
#: first innermost, so the adapter saves the last as ``<m>.lora_A`` and the first as
#: ``<m>.base_layer.…base_layer.lora_A`` (tests/merge/test_moe.py checks it against transformers)
PARAM_ORDER = ("gate_up_proj", "gate_up_proj_bias", "down_proj", "down_proj_bias")


def _parameter_targets(config: AdapterConfig, modules: list[str]) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """Which LoRA pairs are PEFT ``target_parameters`` wrappers: saved module path → (module, parameter).

    ``<m>.base_layer`` × d is the wrapper d levels inside the outermost one on module ``m``."""
    wanted = [t.rpartition(".") for t in (config.target_parameters or [])]
    if not wanted:
        return {}, []
    by_module: dict[str, dict[int, str]] = {}
    for saved in modules:
        real, depth = saved, 0
        while real.endswith(".base_layer"):
            real, depth = real[: -len(".base_layer")], depth + 1
        if any(real == tm or real.endswith("." + tm) or not tm for tm, _, _ in wanted):
            by_module.setdefault(real, {})[depth] = saved
    out: dict[str, tuple[str, str]] = {}
    problems: list[str] = []
    for real, depths in sorted(by_module.items()):
        names = sorted(
            {tp for tm, _, tp in wanted if real == tm or real.endswith("." + tm) or not tm},
            key=lambda n: (PARAM_ORDER.index(n) if n in PARAM_ORDER else len(PARAM_ORDER), n),
        )
        n = len(depths)
        if sorted(depths) != list(range(n)):
            problems.append(f"{real}: parameter LoRA wrappers at depths {sorted(depths)} (expected 0..{n - 1})")
            continue
        if n != len(names) and not (n == 1 and len(names) == 1):
            known = [x for x in names if x in PARAM_ORDER]
            if len(known) != n:
                problems.append(
                    f"{real}: {n} parameter LoRA(s) for target_parameters {names}: cannot tell which is which"
                )
                continue
            names = known
        if any(x not in PARAM_ORDER for x in names) and n > 1:
            problems.append(f"{real}: unknown parameter order of {names} (several parameters of one module)")
            continue
        for depth, saved in depths.items():
            out[saved] = (real, names[n - 1 - depth])
    return out, problems


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
    if not cands:  # a text model's patch on its multimodal wrapper, or the reverse (checks._family)
        text = language_model_path(name)
        cands = sorted(b for b in names if language_model_path(b) == text)
    return (cands[0] if len(cands) == 1 else None), cands


_LANGUAGE_MODEL = re.compile(r"(^|\.)language_model\.")


def language_model_path(name: str) -> str:
    """A tensor name with the multimodal wrapper's ``language_model.`` segment removed:
    ``model.language_model.layers.0...`` (transformers 5) and ``language_model.model.layers.0...``
    (4.x) both become the text model's ``model.layers.0...``."""
    return _LANGUAGE_MODEL.sub(r"\1", name, count=1)


LM_HEAD = "lm_head.weight"
#: input-embedding tensor names of common architectures, for tied lm_head handling
EMBEDDING_SUFFIXES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight")


#: transformers model types whose modules of these names are GPT-2 style ``Conv1D`` (weight stored
#: as (in, out)), read from transformers' modeling files (tests/merge/test_layout.py keeps it in step
#: with the installed transformers). Every other module is an ``nn.Linear`` (weight (out, in)).
CONV1D_MODULES: dict[str, frozenset[str]] = {
    "gpt2": frozenset({"c_attn", "q_attn", "c_proj", "c_fc"}),
    "openai-gpt": frozenset({"c_attn", "c_proj", "c_fc"}),
    "decision_transformer": frozenset({"c_attn", "q_attn", "c_proj", "c_fc"}),
    "imagegpt": frozenset({"c_attn", "q_attn", "c_proj", "c_fc"}),
    "clvp": frozenset({"c_proj", "c_fc"}),
    "clvp_decoder": frozenset({"c_proj", "c_fc"}),
    "clvp_encoder": frozenset({"c_proj", "c_fc"}),
}


def stored_transposed(model_type: object, base_name: str, kind: str = "linear") -> bool:
    """THE layout rule, used by the ``shapes`` check and the merge alike: True when the base stores
    the target's weight as (in, out) — a GPT-2 style ``Conv1D`` — so the delta ``B @ A`` (out, in)
    is added transposed. Decided from the base (its model type and the module's name), never from
    the adapter's ``fan_in_fan_out`` flag: PEFT forces the flag per module kind whatever the config
    says, and saves the value of the last module it wrapped (``fan_in_fan_out=false`` for GPT-2
    ``c_attn`` + ``lm_head``)."""
    if kind != "linear":
        return False
    parts = base_name.split(".")
    module = parts[-2] if len(parts) >= 2 else ""
    return module in CONV1D_MODULES.get(str(model_type), frozenset())


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


#: how checkpoints store the fused expert parameters of transformers' MoE modules (transformers
#: fuses them at load with its conversion mapping and splits them again at save): model type →
#: (in-memory module path part, on-disk part or None, {parameter: per-expert tensors concatenated
#: along the output dimension}); tests/merge/test_moe.py checks it against transformers
EXPERT_STORAGE: dict[str, tuple[str, str | None, dict[str, tuple[str, ...]]]] = {
    "mixtral": (".mlp.experts", ".block_sparse_moe.experts", {"gate_up_proj": ("w1", "w3"), "down_proj": ("w2",)}),
    "qwen2_moe": (".mlp.experts", None, {"gate_up_proj": ("gate_proj", "up_proj"), "down_proj": ("down_proj",)}),
    "qwen3_moe": (".mlp.experts", None, {"gate_up_proj": ("gate_proj", "up_proj"), "down_proj": ("down_proj",)}),
}
#: model types whose fused expert parameters are (experts, in, out) (``is_transposed`` experts);
#: the others are (experts, out, in)
TRANSPOSED_EXPERTS = frozenset({"gpt_oss", "aria", "aria_text", "openai_privacy_filter"})


@dataclass(frozen=True)
class ParamPiece:
    """Where (part of) a parameter target lives in the base: a whole tensor (``expert`` None), or
    rows ``rows`` of expert ``expert``'s delta in a per-expert checkpoint tensor."""

    base_name: str
    expert: int | None = None
    rows: tuple[int, int] | None = None


def param_pieces(pair: LoraPair, base_names: set[str], model_type: object) -> tuple[tuple[ParamPiece, ...], str | None]:
    """The base tensors a parameter LoRA lands on, or ``((), why not)``."""
    match, cands = resolve_base_name(pair.target, base_names)
    if match is not None:
        return (ParamPiece(match),), None
    if cands:
        return (), f"{pair.target} matches several base tensors ({', '.join(cands[:3])})"
    storage = EXPERT_STORAGE.get(str(model_type))
    if storage is None or pair.parameter not in storage[2] or pair.num_experts < 1:
        return (), f"{pair.target}: no such tensor, and how {model_type} checkpoints store it is not known"
    mem, disk, layout = storage
    module = pair.module
    if disk is not None and mem in f".{module}":
        head, _, tail = f".{module}".rpartition(mem)
        module = (head + disk + tail)[1:]
    parts = layout[pair.parameter]
    out = pair.b_shape[0]
    if out % len(parts):
        return (), f"{pair.target}: {out} output rows do not split into {', '.join(parts)}"
    step = out // len(parts)
    pieces: list[ParamPiece] = []
    for e in range(pair.num_experts):
        for j, part in enumerate(parts):
            name, _ = resolve_base_name(f"{module}.{e}.{part}.weight", base_names)
            if name is None:
                return (), f"{pair.target}: expert {e} has no {module}.{e}.{part}.weight in the base"
            pieces.append(ParamPiece(name, e, (j * step, (j + 1) * step)))
    extra, _ = resolve_base_name(f"{module}.{pair.num_experts}.{parts[0]}.weight", base_names)
    if extra is not None:
        return (), f"{pair.target}: the base has more experts than the adapter's {pair.num_experts}"
    return tuple(pieces), None


def param_piece_shape(pair: LoraPair, piece: ParamPiece, in_out: bool) -> tuple[int, ...]:
    """The shape of the delta PEFT's ``ParamWrapper`` adds where ``piece`` lies (``in_out``: the fused
    parameter is (experts, in, out)); a shape no base tensor has when A and B disagree with r."""
    out, inn, e = pair.b_shape[0], pair.a_shape[1], pair.num_experts
    if (
        len(pair.a_shape) != 2
        or len(pair.b_shape) != 2
        or pair.a_shape[0] != pair.rank * e
        or pair.b_shape[1] != pair.rank * e
    ):
        return (-1,)
    if piece.rows is not None:
        return (piece.rows[1] - piece.rows[0], inn)
    if e == 1:
        return (out, inn)
    return (e, inn, out) if in_out else (e, out, inn)


@dataclass(frozen=True)
class BaseMapping:
    """Where each adapter tensor lands in a base. ``targets`` maps adapter target → base tensor name;
    ``tied`` maps an ``lm_head`` target of a tied base (no lm_head tensor) → the shared embedding
    tensor: the merge gives the head its own tensor (untied), as the adapter behaves in PeftModel."""

    targets: dict[str, str] = field(default_factory=dict)
    unmatched: tuple[str, ...] = ()
    ambiguous: dict[str, tuple[str, ...]] = field(default_factory=dict)
    tied: dict[str, str] = field(default_factory=dict)
    #: parameter targets (``target_parameters``) → the base tensors (or per-expert slices) they land on
    params: dict[str, tuple[ParamPiece, ...]] = field(default_factory=dict)
    #: why a parameter target could not be placed (it is also in ``unmatched``)
    param_problems: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.unmatched and not self.ambiguous


def map_to_base(
    layout: AdapterLayout, base_names: Iterable[str], config: Mapping[str, Any] | None = None
) -> BaseMapping:
    """Map every LoRA target (weight, and bias for lora_bias) and every written replacement onto
    base tensors (carried ``base_layer`` copies of θ are not mapped: they are never written).

    With the base's ``config`` an ``lm_head`` target on a tied base maps through ``tied``."""
    names = set(base_names)
    wanted: list[str] = []
    params: dict[str, tuple[ParamPiece, ...]] = {}
    param_problems: dict[str, str] = {}
    model_type = (config or {}).get("model_type")
    for p in layout.pairs:
        if p.kind == "param":
            pieces, why = param_pieces(p, names, model_type)
            if why is None:
                params[p.target] = pieces
            else:
                param_problems[p.target] = why
            continue
        wanted.append(p.target)
        if p.bias_key:
            wanted.append(p.bias_target)
    wanted.extend(r.target for r in layout.written_replacements)
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
    unmatched.extend(param_problems)
    return BaseMapping(
        targets=targets,
        unmatched=tuple(unmatched),
        ambiguous=ambiguous,
        tied=tied,
        params=params,
        param_problems=param_problems,
    )
