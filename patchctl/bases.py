"""Reading base checkpoints without loading tensors: safetensors headers and fingerprints.

Fingerprints (DESIGN.md):

- ``weights_sha256``: sha256 over the sorted lines ``"<relative path>\\t<sha256 of file>\\n"`` of the
  base's ``*.safetensors`` files (those named by ``model.safetensors.index.json`` when present).
  On the Hub the per-file sha256 is the LFS oid, so remote bases are fingerprinted from metadata.
- ``structure_sha256``: sha256 of canonical JSON (sorted keys, no spaces) of
  ``{"model_type": ..., "tensors": [[name, [shape...], dtype], ...]}`` with tensors sorted by name.
- ``tensors_sha256`` (local bases): sha256 over the sorted lines ``"<tensor>\t<dtype>\t<shape>\t<sha256
  of its bytes>\n"``: the same for identical weights re-sharded or re-uploaded with other file
  metadata. The per-tensor sha256 are computed in the same read that hashes each file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

from patchctl._fs import (
    CHUNK,
    CachedHashing,
    HashCache,
    atomic_write_text,
    bypasses_page_cache,
    read_chunks,
    sha256_file,
)
from patchctl.errors import InvalidInputError, UnsupportedError
from patchctl.schemas._common import check_safe_relpath
from patchctl.schemas.base import BaseFacts, Family, FamilyDetails, TensorInfo, TokenizerFacts, WeightFile
from patchctl.tokenids import read_local_tokenizer

__all__ = [
    "INDEX_FILE",
    "ITEMSIZE",
    "MAX_HEADER_BYTES",
    "TOKENIZER_FILES",
    "base_facts_from_parts",
    "family_details",
    "family_from_config",
    "header_length",
    "parse_safetensors_header",
    "read_config",
    "read_local_base",
    "read_safetensors_header",
    "structure_fingerprint",
    "tensor_nbytes",
    "tokenizer_fingerprint",
    "validate_safetensors_header",
    "weight_file_names",
    "weights_fingerprint",
]

INDEX_FILE = "model.safetensors.index.json"
MAX_HEADER_BYTES = 100 * 1024 * 1024
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
)


#: safetensors dtype → bytes per value (the dtypes safetensors defines)
ITEMSIZE: dict[str, int] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "F4": 1, "F6_E2M3": 1, "F6_E3M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
#: sub-byte dtypes: the byte length of a tensor is ceil(values * bits / 8)
_BITS = {"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}
_MAX_DIMS = 16


def tensor_nbytes(dtype: str, shape: Iterable[int]) -> int:
    """The bytes a tensor of ``dtype`` and ``shape`` occupies in a safetensors file."""
    n = 1
    for d in shape:
        n *= int(d)
    if dtype in _BITS:
        return (n * _BITS[dtype] + 7) // 8
    return n * ITEMSIZE[dtype]


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate_safetensors_header(header: Mapping[str, Any], *, data_size: int | None, source: str) -> None:
    """Refuse (InvalidInputError) a header the safetensors format does not allow: every entry a
    known dtype, a shape of non-negative integers and ``data_offsets`` holding exactly
    dtype × shape bytes; the tensors' byte ranges contiguous from 0, never overlapping, and
    (when ``data_size``, the file size minus ``8 + N``, is known) ending exactly at the end of
    the file. This is what the safetensors library checks before it loads a file."""
    meta = header.get("__metadata__")
    if meta is not None and not (
        isinstance(meta, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    ):
        raise InvalidInputError(f"{source}: safetensors __metadata__ must map strings to strings")
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise InvalidInputError(f"{source}: tensor {name!r}: header entry is not an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in ITEMSIZE:
            raise InvalidInputError(f"{source}: tensor {name!r}: unknown safetensors dtype {dtype!r}")
        if (
            not isinstance(shape, list)
            or len(shape) > _MAX_DIMS
            or not all(_is_int(d) and 0 <= d < 2**63 for d in shape)
        ):
            raise InvalidInputError(f"{source}: tensor {name!r}: shape {shape!r} is not a list of sizes")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) and o >= 0 for o in offsets)):
            raise InvalidInputError(f"{source}: tensor {name!r}: data_offsets {offsets!r} are not two byte offsets")
        begin, end = offsets
        expected = tensor_nbytes(dtype, shape)
        if end < begin or end - begin != expected:
            raise InvalidInputError(
                f"{source}: tensor {name!r}: data_offsets [{begin}, {end}] do not hold {dtype}{shape} "
                f"({expected} bytes)"
            )
        spans.append((begin, end, name))
    spans.sort()
    position = 0
    for begin, end, name in spans:
        if begin < position:
            raise InvalidInputError(f"{source}: tensor {name!r} overlaps another tensor's bytes (offset {begin})")
        if begin > position:
            raise InvalidInputError(f"{source}: tensor {name!r}: a gap before offset {begin} (data not contiguous)")
        position = end
    if data_size is not None and position != data_size:
        what = "truncated" if position > data_size else "has trailing bytes"
        raise InvalidInputError(
            f"{source}: file {what}: the header describes {position} data bytes, the file holds {data_size}"
        )


def parse_safetensors_header(prefix: bytes, *, source: str = "<bytes>") -> dict[str, Any]:
    """Parse the JSON header given the file's first ``8 + N`` bytes. ``__metadata__`` is kept as is.

    The entries are validated (:func:`validate_safetensors_header`) except against the file size,
    which the caller checks when it knows it."""
    if len(prefix) < 8:
        raise InvalidInputError(f"{source}: not a safetensors file (shorter than 8 bytes)")
    (n,) = struct.unpack("<Q", prefix[:8])
    if n > MAX_HEADER_BYTES:
        raise InvalidInputError(f"{source}: not a safetensors file (header length {n} is implausible)")
    if len(prefix) < 8 + n:
        raise InvalidInputError(f"{source}: truncated safetensors header")
    try:
        header = json.loads(prefix[8 : 8 + n], parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidInputError(f"{source}: safetensors header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise InvalidInputError(f"{source}: safetensors header is not a JSON object")
    validate_safetensors_header(header, data_size=None, source=source)
    return header


def _refuse_constant(name: str) -> Any:
    """``json.loads`` hook: ``NaN``/``Infinity`` are not JSON (Python's json writes them anyway)."""
    raise ValueError(f"non-finite number {name} (every number must be finite)")


def header_length(first8: bytes) -> int:
    (n,) = struct.unpack("<Q", first8[:8])
    return int(n)


def _read_header_from(f: BinaryIO, source: str) -> dict[str, Any]:
    first = f.read(8)
    if len(first) < 8:
        raise InvalidInputError(f"{source}: not a safetensors file (shorter than 8 bytes)")
    n = header_length(first)
    if n > MAX_HEADER_BYTES:
        raise InvalidInputError(f"{source}: not a safetensors file (header length {n} is implausible)")
    return parse_safetensors_header(first + f.read(n), source=source)


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The header of a local safetensors file: ``{name: {dtype, shape, data_offsets}, "__metadata__"?}``,
    validated completely: entries, contiguous in-bounds byte ranges, and the file's exact size."""
    with open(path, "rb") as f:
        header = _read_header_from(f, str(path))
        data_size = os.fstat(f.fileno()).st_size - f.tell()
    validate_safetensors_header(header, data_size=data_size, source=str(path))
    return header


def weights_fingerprint(files: Iterable[tuple[str, str]]) -> str:
    lines = sorted(f"{path}\t{sha}\n" for path, sha in files)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


tokenizer_fingerprint = weights_fingerprint


def structure_fingerprint(model_type: str, tensors: Iterable[tuple[str, Iterable[int], str]]) -> str:
    rows = sorted([name, [int(d) for d in shape], str(dtype)] for name, shape, dtype in tensors)
    doc = {"model_type": model_type, "tensors": rows}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def tensors_fingerprint(tensors: Mapping[str, TensorInfo], digests: Mapping[str, str]) -> str | None:
    """The tensor-content fingerprint (module docstring); None unless every tensor has a digest."""
    if set(digests) != set(tensors):
        return None
    lines = sorted(
        f"{name}\t{t.dtype}\t{','.join(map(str, t.shape))}\t{digests[name]}\n" for name, t in tensors.items()
    )
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def hash_file_and_tensors(
    path: Path,
    header: Mapping[str, Any],
    progress: Callable[[int], None] | None = None,
    *,
    chunk_size: int = CHUNK,
    direct: bool = False,
) -> tuple[str, dict[str, str]]:
    """One sequential read of a safetensors file: its sha256 and the sha256 of each tensor's bytes
    (``direct``: past the page cache, see :func:`~patchctl._fs.read_chunks`)."""
    with open(path, "rb") as f:
        data_start = 8 + header_length(f.read(8))
    spans = sorted(
        (int(info["data_offsets"][0]) + data_start, int(info["data_offsets"][1]) + data_start, name)
        for name, info in header.items()
        if name != "__metadata__"
    )
    whole = hashlib.sha256()
    per = {name: hashlib.sha256() for _, _, name in spans}
    pos, i = 0, 0
    if direct:
        # bytes read past the page cache are in no CPU cache: both hashes on this thread, a piece
        # at a time once it is in this core's cache (CachedHashing); read_local_base reads more
        # files at once instead. 16 GB base: 13.8-14.3 s and 25 s of CPU, against 16.4-16.7 s and
        # 30 s with the file's hash on another thread
        cached = CachedHashing()
        for chunk in read_chunks(path, chunk_size, direct=True):
            for piece in cached.pieces(chunk):
                whole.update(piece)
                pos, i = _hash_spans(piece, pos, i, spans, per)
            if progress is not None:
                progress(len(chunk))
        return whole.hexdigest(), {name: h.hexdigest() for name, h in per.items()}
    # the file's hash on another thread, the tensors' on this one (hashlib releases the GIL): each
    # byte is hashed twice, and two streams per file keep the cores busy when the shards differ
    # in size (a 1 GB last shard beside 5 GB ones)
    helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="patchctl-hash-file")
    pending: Future[None] | None = None
    try:
        for chunk in read_chunks(path, chunk_size, direct=direct):
            pending = helper.submit(whole.update, chunk)
            pos, i = _hash_spans(chunk, pos, i, spans, per)
            pending.result()  # the chunk's buffer is reused once the next one is taken
            pending = None
            if progress is not None:
                progress(len(chunk))
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                pending.result()
        helper.shutdown(wait=True)
    return whole.hexdigest(), {name: h.hexdigest() for name, h in per.items()}


def _hash_spans(
    chunk: memoryview, pos: int, i: int, spans: list[tuple[int, int, str]], per: Mapping[str, Any]
) -> tuple[int, int]:
    """Feed ``chunk`` (the file's bytes from ``pos``) to the hashes of the tensors it overlaps,
    from span ``i`` on; returns the position after it and the first span it may not have ended."""
    end = pos + len(chunk)
    j = i
    while j < len(spans) and spans[j][0] < end:
        a, b, name = spans[j]
        lo, hi = max(a, pos), min(b, end)
        if hi > lo:
            per[name].update(chunk[lo - pos : hi - pos])  # a view: no copy
        if b > end:
            break
        j += 1
    return end, j


class _TensorHashCache:
    """File and per-tensor sha256 remembered by (real path, device, inode, size, mtime), beside the
    file hash cache (``<cache>/tensors/``): a second read of an unchanged base reads no weights."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _entry(self, path: Path, st: os.stat_result) -> Path:
        ident = f"{os.path.realpath(path)}\0{st.st_dev}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}"
        key = hashlib.sha256(ident.encode()).hexdigest()
        return self.root / key[:2] / f"{key}.json"

    def hashes(
        self, path: Path, header: Mapping[str, Any], progress: Callable[[int], None] | None, *, direct: bool = False
    ) -> tuple[str, dict[str, str]]:
        st = os.stat(path)
        entry = self._entry(path, st)
        try:
            cached = json.loads(entry.read_text(encoding="utf-8"))
            if progress is not None:
                progress(st.st_size)
            return str(cached["sha256"]), {str(k): str(v) for k, v in cached["tensors"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
        digest, tensors = hash_file_and_tensors(path, header, progress, direct=direct)
        if time.time() - st.st_mtime_ns / 1e9 > 2 and os.stat(path).st_mtime_ns == st.st_mtime_ns:
            with contextlib.suppress(OSError):
                atomic_write_text(entry, json.dumps({"sha256": digest, "tensors": tensors}, sort_keys=True))
        return digest, tensors


def family_from_config(config: Mapping[str, Any], *, source: str = "config.json") -> Family:
    """The family facts of a transformers ``config.json`` (text configs nested in ``text_config`` too)."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise InvalidInputError(f"{source}: no 'model_type' (is this a transformers model config?)")
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}

    def pick(*keys: str) -> Any:
        for key in keys:
            for src in (config, text):
                if isinstance(src, Mapping) and src.get(key) is not None:
                    return src[key]
        return None

    def size(*keys: str) -> int | None:
        value = pick(*keys)
        if value is not None and not (_is_int(value) and 0 < value < 2**63):
            raise InvalidInputError(f"{source}: {keys[0]} = {value!r} is not a positive integer")
        return value  # type: ignore[no-any-return]

    archs = config.get("architectures") or ()
    if not isinstance(archs, (list, tuple)) or not all(isinstance(a, str) for a in archs):
        raise InvalidInputError(f"{source}: architectures = {archs!r} is not a list of class names")
    dtype = pick("dtype", "torch_dtype")
    if dtype is not None and not isinstance(dtype, str):
        raise InvalidInputError(f"{source}: dtype = {dtype!r} is not a dtype name")
    tie = pick("tie_word_embeddings")
    if tie is not None and not isinstance(tie, bool):
        raise InvalidInputError(f"{source}: tie_word_embeddings = {tie!r} is not true or false")
    return Family(
        model_type=model_type,
        architectures=tuple(archs),
        hidden_size=size("hidden_size", "n_embd", "d_model"),
        num_hidden_layers=size("num_hidden_layers", "n_layer", "num_layers"),
        vocab_size=size("vocab_size"),
        dtype=dtype,
        tie_word_embeddings=tie,
        details=family_details(config, text),
    )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _rope(config: Mapping[str, Any]) -> tuple[float | None, dict[str, Any] | None]:
    """``(rope_theta, rope_scaling)`` normalised, from ``rope_theta``/``rope_scaling`` or the
    transformers-5 ``rope_parameters`` (per layer type where it is keyed by layer type)."""
    theta = _float(config.get("rope_theta"))
    scaling = config.get("rope_scaling")
    params = config.get("rope_parameters")
    if isinstance(params, Mapping):
        if params and all(isinstance(v, Mapping) for v in params.values()):  # {"full_attention": {...}, ...}
            per_type = {k: _rope({"rope_parameters": v}) for k, v in sorted(params.items())}
            thetas = {t for t, _ in per_type.values() if t is not None}
            if theta is None and len(thetas) == 1:
                theta = thetas.pop()
            elif theta is None and thetas:
                scaling = {k: {"rope_theta": t, **(sc or {})} for k, (t, sc) in per_type.items()}
                return None, scaling
            scalings = {k: sc for k, (_, sc) in per_type.items() if sc}
            return theta, scalings or None
        if theta is None:
            theta = _float(params.get("rope_theta"))
        if scaling is None:
            scaling = {k: v for k, v in params.items() if k != "rope_theta"}
    if not isinstance(scaling, Mapping):
        return theta, None
    norm = {("rope_type" if k == "type" else str(k)): v for k, v in scaling.items() if k != "rope_theta"}
    if theta is None:
        theta = _float(scaling.get("rope_theta"))
    if not norm or norm == {"rope_type": "default"}:
        return theta, None
    return theta, dict(sorted(norm.items()))


def family_details(config: Mapping[str, Any], text: Mapping[str, Any] | None = None) -> FamilyDetails:
    """The facts that change what a patch means (heads, rope, context, activation, norm eps...)."""
    text = text if isinstance(text, Mapping) else {}

    def pick(*keys: str) -> Any:
        for key in keys:
            for src in (text, config):  # a wrapper's language model first
                if src.get(key) is not None:
                    return src[key]
        return None

    heads = _int(pick("num_attention_heads", "n_head", "num_heads", "n_heads"))
    kv = _int(pick("num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num"))
    if kv is None and pick("multi_query") is True:
        kv = 1
    hidden = _int(pick("hidden_size", "n_embd", "d_model"))
    head_dim = _int(pick("head_dim"))
    if head_dim is None and heads and hidden and hidden % heads == 0:
        head_dim = hidden // heads
    theta, scaling = _rope(text if ("rope_theta" in text or "rope_parameters" in text) else config)
    window = _int(pick("sliding_window"))
    if pick("use_sliding_window") is False:
        window = None
    act = pick("hidden_activation", "hidden_act", "activation_function", "activation")
    specials: dict[str, int | tuple[int, ...]] = {}
    for key in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
        v = pick(key)
        if isinstance(v, list) and all(_int(x) is not None for x in v):
            specials[key.removesuffix("_token_id")] = tuple(v) if len(v) != 1 else v[0]
        elif _int(v) is not None:
            specials[key.removesuffix("_token_id")] = v
    text_type = text.get("model_type")
    return FamilyDetails(
        text_model_type=text_type if isinstance(text_type, str) else None,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=head_dim,
        intermediate_size=_int(pick("intermediate_size", "n_inner", "ffn_dim", "d_ff", "ffn_hidden_size")),
        rope_theta=theta,
        rope_scaling=scaling,
        max_position_embeddings=_int(pick("max_position_embeddings", "n_positions", "max_sequence_length")),
        sliding_window=window,
        hidden_act=str(act) if isinstance(act, str) else None,
        norm_eps=_float(pick("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "norm_epsilon", "norm_eps")),
        special_token_ids=specials,
    )


def weight_file_names(base_dir: Path) -> list[str]:
    """The safetensors files of a base: the index's files when an index exists, else ``*.safetensors``."""
    index = base_dir / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"), parse_constant=_refuse_constant)["weight_map"]
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"{index}: not a valid safetensors index ({exc})") from None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise InvalidInputError(f"{index}: weight_map must map tensor names to file names")
        names = sorted(set(weight_map.values()))
        for name in names:  # checked before anything is opened: nothing outside the base directory
            try:
                check_safe_relpath(name)
            except ValueError as exc:
                raise InvalidInputError(f"{index}: weight_map names a file outside the base directory: {exc}") from None
            if not name.endswith(".safetensors"):
                raise InvalidInputError(f"{index}: weight_map names {name!r}, not a .safetensors file")
        missing = [n for n in names if not (base_dir / n).is_file()]
        if missing:
            raise InvalidInputError(f"{index}: names missing shard(s): {', '.join(missing)}")
        return names
    names = sorted(p.name for p in base_dir.glob("*.safetensors") if p.is_file())
    if not names:
        if any(base_dir.glob("*.bin")) or any(base_dir.glob("*.pt")):
            raise UnsupportedError(
                f"{base_dir}: only pickle weights (*.bin/*.pt) found; patchctl reads safetensors only "
                "(convert with `model.save_pretrained(dir, safe_serialization=True)`)"
            )
        raise InvalidInputError(f"{base_dir}: no *.safetensors weights found")
    return names


def base_facts_from_parts(
    *,
    source: str,
    revision: str | None,
    config: Mapping[str, Any],
    files: Iterable[tuple[str, str, int]],
    headers: Mapping[str, Mapping[str, Any]],
    tokenizer_files: Iterable[tuple[str, str]] = (),
    tokenizer: TokenizerFacts | None = None,
    tensor_sha256: Mapping[str, str] | None = None,
) -> BaseFacts:
    """Assemble :class:`BaseFacts` from a config, ``(path, sha256, size)`` of each weight file and
    each file's safetensors header. Shared by local directories and remote (Hub) bases."""
    family = family_from_config(config, source=f"{source}: config.json")
    tensors: dict[str, TensorInfo] = {}
    for fname, header in sorted(headers.items()):
        for tname, info in header.items():
            if tname == "__metadata__":
                continue
            tensors[tname] = TensorInfo(dtype=str(info["dtype"]), shape=tuple(info["shape"]), file=fname)
    wfiles = tuple(WeightFile(path=p, sha256=s, size=n) for p, s, n in sorted(files))
    tok = list(tokenizer_files)
    qcfg = config.get("quantization_config")
    quant = None
    if isinstance(qcfg, Mapping):
        quant = str(qcfg.get("quant_method") or ("bitsandbytes" if "load_in_4bit" in qcfg else "unknown"))
    return BaseFacts(
        source=source,
        revision=revision,
        weights_sha256=weights_fingerprint((f.path, f.sha256) for f in wfiles),
        structure_sha256=structure_fingerprint(family.model_type, ((n, t.shape, t.dtype) for n, t in tensors.items())),
        family=family,
        config=dict(config),
        weight_files=wfiles,
        tensors=tensors,
        tokenizer_sha256=tokenizer_fingerprint(tok) if tok else None,
        tokenizer=tokenizer,
        quantization=quant,
        tensors_sha256=tensors_fingerprint(tensors, tensor_sha256) if tensor_sha256 is not None else None,
    )


def read_config(base_dir: Path) -> dict[str, Any]:
    """A model directory's ``config.json`` as a dict; InvalidInputError if missing or not a JSON object."""
    path = Path(base_dir) / "config.json"
    if not path.is_file():
        raise InvalidInputError(f"{base_dir}: no config.json (is this a transformers model directory?)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidInputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise InvalidInputError(f"{path}: expected a JSON object")
    return config


def read_local_base(
    base_dir: Path,
    *,
    revision: str | None = None,
    progress: Callable[[int], None] | None = None,
    hash_cache: HashCache | None = None,
) -> BaseFacts:
    """Facts of a local base directory. Hashes every weight file (streaming, or from ``hash_cache``
    when the file is unchanged since it was last hashed); never loads tensors."""
    tensor_cache = _TensorHashCache(hash_cache.root.parent / "tensors") if hash_cache is not None else None
    base_dir = Path(base_dir).expanduser()
    if not base_dir.is_dir():
        raise InvalidInputError(f"{base_dir}: base directory does not exist")
    config = read_config(base_dir)
    names = weight_file_names(base_dir)
    headers = {name: read_safetensors_header(base_dir / name) for name in names}
    # shards are hashed in parallel: hashlib releases the GIL, so this uses every core; a base
    # larger than a quarter of the RAM is read past the page cache (it would not stay there)
    direct = bypasses_page_cache(sum((base_dir / name).stat().st_size for name in names))

    def hashes(name: str) -> tuple[str, dict[str, str]]:
        # the file's sha256 and each tensor's, in one read (or none, when remembered)
        if tensor_cache is not None:
            return tensor_cache.hashes(base_dir / name, headers[name], progress, direct=direct)
        return hash_file_and_tensors(base_dir / name, headers[name], progress, direct=direct)

    # one thread per file read past the cache (both of its hashes on that thread: the scheduler
    # then spreads unequal shards over the cores), at most 4 (three 8 MiB buffers each); through
    # the cache, one per core, each with a second thread for the file's own hash
    workers = min(len(names), 4) if direct else min(len(names), os.cpu_count() or 1, 8)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(hashes, names))
    files = [(name, r[0], (base_dir / name).stat().st_size) for name, r in zip(names, results, strict=True)]
    tensor_sha256 = {t: d for _, per in results for t, d in per.items()}
    tok = [(n, sha256_file(base_dir / n)) for n in TOKENIZER_FILES if (base_dir / n).is_file()]
    return base_facts_from_parts(
        source=str(base_dir.resolve()),
        revision=revision,
        config=config,
        files=files,
        headers=headers,
        tokenizer_files=tok,
        tokenizer=read_local_tokenizer(base_dir),
        tensor_sha256=tensor_sha256,
    )
