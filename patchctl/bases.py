"""Reading base checkpoints without loading tensors: safetensors headers and fingerprints.

Fingerprints (DESIGN.md):

- ``weights_sha256``: sha256 over the sorted lines ``"<relative path>\\t<sha256 of file>\\n"`` of the
  base's ``*.safetensors`` files (those named by ``model.safetensors.index.json`` when present).
  On the Hub the per-file sha256 is the LFS oid, so remote bases are fingerprinted from metadata.
- ``structure_sha256``: sha256 of canonical JSON (sorted keys, no spaces) of
  ``{"model_type": ..., "tensors": [[name, [shape...], dtype], ...]}`` with tensors sorted by name.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

from patchctl._fs import HashCache, sha256_file
from patchctl.errors import InvalidInputError, UnsupportedError
from patchctl.schemas._common import check_safe_relpath
from patchctl.schemas.base import BaseFacts, Family, TensorInfo, WeightFile

__all__ = [
    "INDEX_FILE",
    "ITEMSIZE",
    "MAX_HEADER_BYTES",
    "TOKENIZER_FILES",
    "base_facts_from_parts",
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
        quantization=quant,
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
    hasher = hash_cache.sha256 if hash_cache is not None else sha256_file
    base_dir = Path(base_dir).expanduser()
    if not base_dir.is_dir():
        raise InvalidInputError(f"{base_dir}: base directory does not exist")
    config = read_config(base_dir)
    names = weight_file_names(base_dir)
    headers = {name: read_safetensors_header(base_dir / name) for name in names}
    # shards are hashed in parallel: hashlib releases the GIL, so this uses every core
    with ThreadPoolExecutor(max_workers=max(1, min(len(names), os.cpu_count() or 1, 8))) as pool:
        digests = list(pool.map(lambda name: hasher(base_dir / name, progress), names))
    files = [(name, digest, (base_dir / name).stat().st_size) for name, digest in zip(names, digests, strict=True)]
    tok = [(n, sha256_file(base_dir / n)) for n in TOKENIZER_FILES if (base_dir / n).is_file()]
    return base_facts_from_parts(
        source=str(base_dir.resolve()),
        revision=revision,
        config=config,
        files=files,
        headers=headers,
        tokenizer_files=tok,
    )
