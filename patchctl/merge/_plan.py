"""Planning a merge: which base tensor each adapter tensor lands on, shard by shard.

A plan is computed from headers only (the adapter's and the base's safetensors headers plus
``config.json``); nothing is decoded. Everything that cannot be merged exactly is refused here,
before a byte is written.

The install writes θ′ + Δθ and nothing of θ, so the merged model computes what ``PeftModel`` on θ′
computes with the adapter saved with ``save_embedding_layers=False``:

- copies of θ's embedding/head that PEFT saves inside an adapter (``<m>.base_layer.weight``) are
  never written (:attr:`AdapterLayout.written_replacements`);
- on a tied base (``tie_word_embeddings``, no ``lm_head.weight`` in the files), a patch that
  changes one side of the shared matrix (a LoRA or ``modules_to_save`` on the head, or on the
  input embedding) unties them: the output gains its own ``lm_head.weight`` (a copy of θ′'s
  embedding, then the head's changes), the embedding gets only its own changes, and
  ``config.json`` says ``tie_word_embeddings: false`` (:func:`_untie_plan`). PEFT's
  ``merge_and_unload`` would add a one-sided delta to the shared tensor and change both sides.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from math import prod
from pathlib import Path
from typing import Any, Literal

from patchctl.adapter import (
    LM_HEAD,
    TRANSPOSED_EXPERTS,
    AdapterLayout,
    BaseMapping,
    LoraPair,
    ParamPiece,
    Replacement,
    is_lm_head,
    map_to_base,
    param_piece_shape,
    stored_transposed,
    tied_embedding,
)
from patchctl.bases import INDEX_FILE, read_config, read_safetensors_header, weight_file_names
from patchctl.errors import InvalidInputError, UnsupportedError
from patchctl.merge._fp32 import fp32_patterns, load_dtype, matches_fp32

__all__ = ["Action", "MergePlan", "ShardPlan", "TensorPlan", "plan_merge"]

PROVENANCE_FILE = "patchctl.json"

DTYPE_SIZES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "U16": 2,
    "U32": 4,
    "U64": 8,
}
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")

# other weight formats: never copied into a merged directory (they would hold the unmerged base)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx", ".ot")
_WEIGHT_INDEX_SUFFIXES = (".bin.index.json", ".h5.index.json", ".msgpack.index.json", ".safetensors.index.json")


@dataclass(frozen=True)
class Action:
    """One change to a tensor, applied in plan order: replacements first, then LoRA deltas."""

    kind: Literal["replace", "lora", "lora_bias", "copy_of", "lora_param"]
    #: adapter key read (replace), the LoRA pair (lora, lora_bias), or the base tensor copied (copy_of)
    replacement: Replacement | None = None
    pair: LoraPair | None = None
    source: str | None = None
    #: the delta is transposed (a GPT-2 style Conv1D weight, stored as (in, out): fan_in_fan_out);
    #: for ``lora_param``: the fused expert parameter is (experts, in, out)
    transpose: bool = False
    #: ``lora_param``: the part of the parameter this base tensor holds (whole, or one expert's rows)
    piece: ParamPiece | None = None

    def describe(self) -> str:
        if self.kind == "replace" and self.replacement is not None:
            reason = "base_layer" if self.replacement.reason == "embedding_base_layer" else self.replacement.reason
            return f"replace ({reason}) from {self.replacement.key}"
        if self.kind == "lora_param" and self.pair is not None and self.piece is not None:
            p, piece = self.pair, self.piece
            where = "" if piece.expert is None else f" expert {piece.expert} rows {piece.rows}"
            return f"LoRA delta on parameter {p.target}{where} r={p.rank} s={p.scaling:g} experts={p.num_experts}"
        if self.kind in ("lora", "lora_bias") and self.pair is not None:
            p = self.pair
            what = "LoRA delta" if self.kind == "lora" else "LoRA bias"
            return f"{what} {p.kind} r={p.rank} s={p.scaling:g}" + (" fan_in_fan_out" if self.transpose else "")
        return f"copy of {self.source}"


@dataclass(frozen=True)
class TensorPlan:
    name: str
    dtype: str
    shape: tuple[int, ...]
    #: byte range in the base file's data region (None for a tensor the merge adds)
    src_offsets: tuple[int, int] | None
    actions: tuple[Action, ...] = ()
    #: the base's dtype where the output's differs (a half-precision tensor the model class keeps
    #: in fp32, written fp32 as PEFT's merge does: see :mod:`patchctl.merge._fp32`)
    source_dtype: str | None = None

    @property
    def nbytes(self) -> int:
        return prod(self.shape) * DTYPE_SIZES[self.dtype]

    @property
    def src_dtype(self) -> str:
        """The dtype of the tensor's bytes in the base file."""
        return self.source_dtype or self.dtype

    @property
    def touched(self) -> bool:
        return bool(self.actions)


@dataclass(frozen=True)
class ShardPlan:
    """One output safetensors file, mirroring the base file of the same name."""

    file: str
    #: tensors in the base header's order, then tensors the merge adds
    tensors: tuple[TensorPlan, ...]
    metadata: dict[str, str]

    @property
    def touched(self) -> tuple[TensorPlan, ...]:
        return tuple(t for t in self.tensors if t.touched)

    @property
    def data_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def output_offsets(self) -> dict[str, tuple[int, int]]:
        """Each tensor's byte range in the output's data region: the base's order and offsets (so runs
        of untouched tensors copy as one range), shifted after a tensor whose size changes (fp32
        kept modules); tensors the merge adds go at the end."""
        out: dict[str, tuple[int, int]] = {}
        end = 0
        for t in sorted((t for t in self.tensors if t.src_offsets), key=lambda t: t.src_offsets or (0, 0)):
            out[t.name] = (end, end + t.nbytes)
            end += t.nbytes
        for t in self.tensors:
            if t.src_offsets is None:
                out[t.name] = (end, end + t.nbytes)
                end += t.nbytes
        return out


@dataclass(frozen=True)
class MergePlan:
    adapter: AdapterLayout
    base_dir: Path
    shards: tuple[ShardPlan, ...]
    #: base files copied verbatim (relative names); config.json is rewritten when config_changes is set
    copied_files: tuple[str, ...]
    #: entries of the base directory left out, with the reason
    skipped: dict[str, str]
    sharded: bool
    config_changes: dict[str, Any] = field(default_factory=dict)
    #: the index's top-level keys other than weight_map (its metadata is updated)
    index_extra: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def total_tensors(self) -> int:
        return sum(len(s.tensors) for s in self.shards)

    @property
    def total_bytes(self) -> int:
        return sum(s.data_bytes for s in self.shards)

    def summary(self) -> dict[str, Any]:
        """A JSON-able description, for ``--dry-run``."""
        touched = [
            {"file": s.file, "tensor": t.name, "dtype": t.dtype, "shape": list(t.shape), "bytes": t.nbytes,
             "changes": [a.describe() for a in t.actions]}
            for s in self.shards
            for t in s.touched
        ]  # fmt: skip
        return {
            "adapter": str(self.adapter.path),
            "base": str(self.base_dir),
            "shards": [
                {
                    "file": s.file,
                    "tensors": len(s.tensors),
                    "touched": len(s.touched),
                    "copied": len(s.tensors) - len(s.touched),
                    "bytes": s.data_bytes,
                    "touched_bytes": sum(t.nbytes for t in s.touched),
                }
                for s in self.shards
            ],
            "tensors_total": self.total_tensors,
            "tensors_touched": len(touched),
            "bytes_to_write": self.total_bytes,
            "touched": touched,
            "files_copied": list(self.copied_files),
            "skipped": dict(self.skipped),
            "index": INDEX_FILE if self.sharded else None,
            "config_changes": dict(self.config_changes),
            "notes": list(self.notes),
        }


def _classify_base_files(base_dir: Path, weight_files: list[str]) -> tuple[list[str], dict[str, str]]:
    copied: list[str] = []
    skipped: dict[str, str] = {}
    weights = set(weight_files)
    for entry in sorted(base_dir.iterdir(), key=lambda p: p.name):
        name = entry.name
        if name in weights:
            continue
        if name == INDEX_FILE:
            continue  # rewritten
        if name == PROVENANCE_FILE:
            skipped[name] = "provenance of an earlier install (rewritten)"
        elif name.startswith("."):
            skipped[name] = "hidden (VCS or download cache metadata)"
        elif entry.is_dir():
            skipped[name] = "subdirectory (not part of a transformers model load)"
        elif name.endswith(_WEIGHT_INDEX_SUFFIXES) or name.endswith(_WEIGHT_SUFFIXES):
            skipped[name] = "weights in another file or format (would hold the unmerged base)"
        elif entry.is_file():
            copied.append(name)
        else:
            skipped[name] = "not a regular file"
    return copied, skipped


def plan_merge(adapter: AdapterLayout, base_dir: Path, *, cache_dir: Path | None = None) -> MergePlan:
    """Plan merging ``adapter`` into the base in ``base_dir`` (headers and config only); ``cache_dir``
    keeps the model class's dtype plan across processes (:mod:`patchctl.merge._fp32`).

    Raises UnsupportedError for what cannot be merged exactly (conv LoRA, non-float tensors,
    two deltas on one tensor) and InvalidInputError for inputs that do not fit (unmatched or
    ambiguous keys, shape mismatches, unpaired LoRA tensors).

    The steps, in order: refuse adapters the engine cannot merge (:func:`_check_adapter`); read
    the base's headers (:func:`_read_headers`); map the adapter onto the base's tensors and apply
    the tied-embedding rules (:func:`_refuse_tied_head_tying`, :func:`_untie_plan`); refuse what
    does not map (:func:`_refuse_unmapped`); build each output tensor's changes
    (:func:`_add_adapter_actions`) and validate them (:func:`_order_and_check_actions`); choose
    the fp32-kept tensors (:func:`_fp32_kept`); assemble the shards (:func:`_shard_plan`) and the
    rest of the output directory (:func:`_classify_base_files`, :func:`_index_extra`).
    """
    base_dir = Path(base_dir).expanduser()
    _check_adapter(adapter, base_dir)
    config = read_config(base_dir)
    files = weight_file_names(base_dir)
    sharded = (base_dir / INDEX_FILE).is_file()
    headers, where = _read_headers(base_dir, files)

    names = set(where)
    mapping = map_to_base(adapter, names, config)
    tied = tied_embedding(config, names)
    _refuse_tied_head_tying(adapter, tied)
    targets = dict(mapping.targets)
    untie = _untie_plan(adapter, mapping, tied)
    targets.update(untie.targets)
    added = dict(untie.added)  # a tensor the output gains -> the tied base tensor it starts from
    actions: dict[str, list[Action]] = {k: list(v) for k, v in untie.actions.items()}  # output tensor -> changes
    config_changes: dict[str, Any] = dict(untie.config_changes)
    notes: list[str] = list(untie.notes)
    for r in adapter.carried_base_layers:
        notes.append(
            f"{r.key} is a copy of the source base's {r.target} (PEFT save_embedding_layers): not written; "
            "this base's own tensor is used"
        )
    _refuse_unmapped(adapter, base_dir, mapping)

    _add_adapter_actions(adapter, config, mapping, targets, actions)
    _order_and_check_actions(adapter, actions, added, headers, where)

    fp32 = _fp32_kept(base_dir, config, headers, actions, notes, cache_dir)
    shards = [_shard_plan(f, headers[f], where, added, actions, fp32) for f in files]
    copied, skipped = _classify_base_files(base_dir, files)
    return MergePlan(
        adapter=adapter,
        base_dir=base_dir,
        shards=tuple(shards),
        copied_files=tuple(copied),
        skipped=skipped,
        sharded=sharded,
        config_changes=config_changes,
        index_extra=_index_extra(base_dir) if sharded else {},
        notes=tuple(notes),
    )


def _check_adapter(adapter: AdapterLayout, base_dir: Path) -> None:
    """Refuse a missing base directory, a non-LoRA adapter, an adapter with problems (unpaired
    tensors...) and LoRA on a convolution, before anything of the base is read."""
    if not base_dir.is_dir():
        raise InvalidInputError(f"{base_dir}: base directory does not exist")
    adapter.config.require_lora()
    if adapter.problems:
        raise InvalidInputError(f"{adapter.path}: " + "; ".join(adapter.problems))
    for p in adapter.pairs:
        if p.kind == "conv":
            raise UnsupportedError(f"{p.module}: LoRA on a convolution is not supported by the merge engine")


def _read_headers(base_dir: Path, files: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The safetensors header of each weight file, and the file each tensor is in (a tensor in
    two files is refused)."""
    headers = {f: read_safetensors_header(base_dir / f) for f in files}
    where: dict[str, str] = {}
    for f, h in headers.items():
        for name in h:
            if name != "__metadata__":
                if name in where:
                    raise InvalidInputError(f"{base_dir}: tensor {name} appears in both {where[name]} and {f}")
                where[name] = f
    return headers, where


def _refuse_tied_head_tying(adapter: AdapterLayout, tied: str | None) -> None:
    """``ensure_weight_tying`` asks PEFT to keep a patched head tied to the embedding: refused on a
    tied base whose head the patch changes (the engine unties instead)."""
    if (
        adapter.config.raw.get("ensure_weight_tying")
        and tied
        and (
            any(is_lm_head(r.target) for r in adapter.written_replacements)
            or any(is_lm_head(p.target) for p in adapter.pairs)
        )
    ):
        raise UnsupportedError("ensure_weight_tying with a patched tied lm_head is not supported by the merge engine")


def _refuse_unmapped(adapter: AdapterLayout, base_dir: Path, mapping: BaseMapping) -> None:
    """Refuse adapter targets without a base tensor, or with several (the first five of each)."""
    unmatched = list(mapping.unmatched)
    if unmatched or mapping.ambiguous:
        parts = []
        if unmatched:
            missing = [mapping.param_problems.get(t, t) for t in unmatched[:5]]
            parts.append(f"{len(unmatched)} adapter target(s) have no tensor in the base: {', '.join(missing)}")
        for t, cands in list(mapping.ambiguous.items())[:5]:
            parts.append(f"{t} matches several base tensors ({', '.join(cands)})")
        raise InvalidInputError(f"{adapter.path} onto {base_dir}: " + "; ".join(parts))


def _add_adapter_actions(
    adapter: AdapterLayout,
    config: Mapping[str, Any],
    mapping: BaseMapping,
    targets: Mapping[str, str],
    actions: dict[str, list[Action]],
) -> None:
    """Add to ``actions`` (output tensor -> changes) what each written replacement and each LoRA
    pair does: a replacement, a delta (transposed where the base stores the weight so), a delta
    on each piece of a parameter (experts), a bias delta."""
    for r in adapter.written_replacements:
        actions.setdefault(targets[r.target], []).append(Action("replace", replacement=r))
    for p in adapter.pairs:
        if p.kind == "param":
            in_out = str(config.get("model_type")) in TRANSPOSED_EXPERTS
            for piece in mapping.params[p.target]:
                actions.setdefault(piece.base_name, []).append(
                    Action("lora_param", pair=p, transpose=in_out, piece=piece)
                )
            continue
        transpose = stored_transposed(config.get("model_type"), targets[p.target], p.kind)
        actions.setdefault(targets[p.target], []).append(Action("lora", pair=p, transpose=transpose))
        if p.bias_key:
            actions.setdefault(targets[p.bias_target], []).append(Action("lora_bias", pair=p))


#: the order changes apply in on one tensor: replace (or start from a copy), then delta, then bias
_ACTION_ORDER = {"replace": 0, "copy_of": 0, "lora": 1, "lora_param": 1, "lora_bias": 2}


def _order_and_check_actions(
    adapter: AdapterLayout,
    actions: dict[str, list[Action]],
    added: Mapping[str, str],
    headers: Mapping[str, Mapping[str, Any]],
    where: Mapping[str, str],
) -> None:
    """Put each tensor's changes in the order they apply (a replacement wins over a copy), refuse
    two deltas or two replacements on one tensor, and check every change's shape against the
    base tensor (for an added tensor: the tied tensor it starts from)."""
    for name, acts in actions.items():
        if any(a.kind == "replace" for a in acts):  # e.g. a saved base_layer for an untied lm_head
            acts[:] = [a for a in acts if a.kind != "copy_of"]
        acts.sort(key=lambda a: _ACTION_ORDER[a.kind])
        if (
            sum(a.kind in ("lora", "lora_param") for a in acts) > 1
            or sum(a.kind in ("replace", "copy_of") for a in acts) > 1
        ):
            raise UnsupportedError(f"{name}: more than one adapter tensor lands on it (tied modules?)")
        src = added.get(name, name)
        _check_shapes(name, headers[where[src]][src], acts, adapter)


def _shard_plan(
    f: str,
    h: Mapping[str, Any],
    where: Mapping[str, str],
    added: Mapping[str, str],
    actions: Mapping[str, list[Action]],
    fp32: set[str],
) -> ShardPlan:
    """The output file mirroring base file ``f`` (header ``h``): its tensors in the header's order
    with their changes (fp32-kept ones widened), then the tensors the merge adds beside their tied
    source; dtypes patchctl cannot copy, or cannot merge into, are refused."""
    tensors: list[TensorPlan] = []
    for name, info in h.items():
        if name == "__metadata__":
            continue
        base_dtype = str(info["dtype"])
        tensors.append(
            TensorPlan(
                name=name,
                dtype="F32" if name in fp32 else base_dtype,
                shape=tuple(int(d) for d in info["shape"]),
                src_offsets=(int(info["data_offsets"][0]), int(info["data_offsets"][1])),
                actions=tuple(actions.get(name, ())),
                source_dtype=base_dtype if name in fp32 else None,
            )
        )
    for new_name, beside in sorted(added.items()):
        if where[beside] == f:
            info = h[beside]
            shape = tuple(int(d) for d in info["shape"])
            tensors.append(TensorPlan(new_name, str(info["dtype"]), shape, None, tuple(actions[new_name])))
    for tp in tensors:
        if tp.dtype not in DTYPE_SIZES:
            raise UnsupportedError(f"{f}: tensor {tp.name} has dtype {tp.dtype}, which patchctl cannot copy")
        if tp.touched and tp.dtype not in FLOAT_DTYPES:
            raise UnsupportedError(
                f"{tp.name}: dtype {tp.dtype} (a quantized base?) cannot be merged; use a float16/bfloat16/float32 base"
            )
    meta = h.get("__metadata__")
    metadata = {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}
    metadata.setdefault("format", "pt")
    return ShardPlan(file=f, tensors=tuple(tensors), metadata=metadata)


def _index_extra(base_dir: Path) -> dict[str, Any]:
    """The base index's top-level keys other than ``weight_map`` (kept in the output's index)."""
    try:
        index = json.loads((base_dir / INDEX_FILE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{base_dir / INDEX_FILE}: not valid JSON ({exc})") from None
    return {k: v for k, v in index.items() if k != "weight_map"}


def _fp32_kept(
    base_dir: Path,
    config: Mapping[str, Any],
    headers: Mapping[str, Mapping[str, Any]],
    actions: Mapping[str, list[Action]],
    notes: list[str],
    cache_dir: Path | None = None,
) -> set[str]:
    """Touched half-precision tensors the model class keeps in fp32 when loaded (T5's ``wo``):
    PEFT merges them in fp32 and writes fp32, so the output does too."""
    dtypes = {n: str(i["dtype"]) for h in headers.values() for n, i in h.items() if n != "__metadata__"}
    touched_half = [n for n, acts in actions.items() if acts and dtypes.get(n) in ("F16", "BF16")]
    if not touched_half:
        return set()
    dtype = load_dtype(config, list(dtypes.values()))
    patterns, problem = fp32_patterns(base_dir, config, dtype, cache_dir=cache_dir)
    if problem is not None:
        notes.append(f"{problem}; touched tensors keep the base's dtype")
    kept = {n for n in touched_half if matches_fp32(patterns, n)}
    if kept:
        notes.append(
            f"{len(kept)} touched tensor(s) the model class keeps in fp32 ({', '.join(patterns)}) are merged "
            "and written in fp32, as PEFT's merge of the base loaded in its dtype does"
        )
    return kept


@dataclass(frozen=True)
class _Untie:
    """What a tied base (``tie_word_embeddings``, no head tensor in the files) needs when the
    patch changes one side of the shared matrix."""

    targets: dict[str, str] = field(default_factory=dict)
    added: dict[str, str] = field(default_factory=dict)
    actions: dict[str, tuple[Action, ...]] = field(default_factory=dict)
    config_changes: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def _untie_plan(adapter: AdapterLayout, mapping: BaseMapping, tied: str | None) -> _Untie:
    """Untie where the patch changes the head or the input embedding of a tied base.

    In ``PeftModel`` a LoRA (or ``modules_to_save``) on one side of a tied matrix changes that
    side only: the other keeps using the shared base tensor. So the output gains its own
    ``lm_head.weight`` (starting as a copy of θ′'s embedding), each side gets its own changes,
    and ``config.json`` says ``tie_word_embeddings: false``. (PEFT's ``merge_and_unload`` adds
    the delta to the shared tensor instead, changing both sides: a model that no longer computes
    what the adapter computes.)
    """
    if tied is None:
        return _Untie()
    head_targets = sorted(mapping.tied)
    embedding_changed = any(mapping.targets.get(p.target) == tied for p in adapter.pairs) or any(
        mapping.targets.get(r.target) == tied for r in adapter.written_replacements
    )
    if not head_targets and not embedding_changed:
        return _Untie()
    head = head_targets[0] if head_targets else LM_HEAD
    if len(head_targets) > 1:
        raise UnsupportedError(f"{', '.join(head_targets)}: several head targets on one tied embedding {tied}")
    head_replaced = any(r.target == head for r in adapter.written_replacements)
    head_lora = any(p.target == head for p in adapter.pairs)
    changed = [
        what
        for what, yes in (("the head", head_replaced or head_lora), ("the input embedding", embedding_changed))
        if yes
    ]
    note = (
        f"{head} was tied to {tied}; the patch changes {' and '.join(changed)}: the output unties them "
        f"({head} gets its own tensor), as the adapter behaves in PeftModel"
    )
    return _Untie(
        targets={head: head},
        added={head: tied},
        actions={} if head_replaced else {head: (Action("copy_of", source=tied),)},
        config_changes={"tie_word_embeddings": False},
        notes=(note,),
    )


def _check_shapes(base_name: str, info: Mapping[str, Any], acts: list[Action], adapter: AdapterLayout) -> None:
    shape = tuple(int(d) for d in info["shape"])
    for a in acts:
        if a.kind == "replace" and a.replacement is not None:
            if a.replacement.shape != shape:
                raise InvalidInputError(
                    f"{a.replacement.key}: shape {list(a.replacement.shape)} differs from the base's "
                    f"{base_name} {list(shape)} (resized vocabulary?)"
                )
        elif a.kind == "lora_param" and a.pair is not None and a.piece is not None:
            want = param_piece_shape(a.pair, a.piece, a.transpose)
            if want != shape:
                raise InvalidInputError(
                    f"{a.pair.target}: LoRA delta{'' if a.piece.expert is None else f' of expert {a.piece.expert}'} "
                    f"has shape {list(want)} but the base's {base_name} is {list(shape)}"
                )
        elif a.pair is not None:
            p = a.pair
            if len(p.a_shape) != 2 or len(p.b_shape) != 2 or p.a_shape[0] != p.rank or p.b_shape[1] != p.rank:
                raise InvalidInputError(f"{p.module}: LoRA shapes A{list(p.a_shape)} B{list(p.b_shape)} do not agree")
            want_rank = adapter.config.rank_for(p.module)
            if want_rank != p.rank:
                raise InvalidInputError(
                    f"{p.module}: LoRA rank {p.rank} differs from the config's r={want_rank} (rank_pattern?)"
                )
            if a.kind == "lora_bias":
                if shape != (p.b_shape[0],):
                    raise InvalidInputError(
                        f"{p.module}: LoRA bias length {p.b_shape[0]} differs from {base_name} {list(shape)}"
                    )
                continue
            if p.kind == "embedding":
                # lora_embedding_A: (r, num_embeddings), lora_embedding_B: (embedding_dim, r)
                want = (p.a_shape[1], p.b_shape[0])
            else:
                want = (p.b_shape[0], p.a_shape[1])
                if a.transpose:
                    want = (want[1], want[0])
            if want != shape:
                raise InvalidInputError(
                    f"{p.module}: LoRA delta has shape {list(want)} but the base's {base_name} is {list(shape)}"
                    + (" (fan_in_fan_out: a Conv1D weight)" if a.transpose else "")
                )
