"""What gives tokens their ids: a fingerprint of a base's tokenizer files, and how two compare.

The ``vocab`` check compares this, not the files' bytes: a release that changes only its chat
template or ``model_max_length``, or re-saves its tokenizer with new keys, keeps every token id.

Read, in this order of preference (the first present decides ``kind``):

- ``tokenizer.json`` (🤗 tokenizers): ``model.vocab`` (BPE/WordPiece/WordLevel dict, Unigram list),
  ``model.merges`` (either saved form), ``added_tokens`` (id, content);
- ``tokenizer.model`` (sentencepiece ``ModelProto``): the ``pieces`` field (piece, score, type),
  read with a minimal protobuf reader (no sentencepiece or protobuf import);
- ``vocab.json`` + ``merges.txt`` (slow GPT-2 style tokenizers).

Added tokens come from ``tokenizer.json``, else ``tokenizer_config.json``'s
``added_tokens_decoder`` and ``added_tokens.json``; special-token roles (bos/eos/pad/unk...) from
``tokenizer_config.json``, resolved to ids. Everything else in ``tokenizer_config.json`` (chat
template, ``model_max_length``, new keys...) and the tokenizer.json pipeline (normalizer,
pre-tokenizer...) is ``info``: reported, never a failure.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from patchctl.errors import InvalidInputError
from patchctl.schemas.base import TokenizerFacts

log = logging.getLogger(__name__)

__all__ = [
    "TokenizerDiff",
    "compare_tokenizers",
    "read_local_tokenizer",
    "readable_tokenizer_facts",
    "sentencepiece_pieces",
    "tokenizer_facts",
]

#: files read for the fingerprint (besides tokenizer_config.json's chat template file)
TOKEN_ID_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)
#: added tokens kept by id in the facts up to this many (past it, their sha256 only)
MAX_LISTED_ADDED = 4096
_ROLES = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")
_INFO_MAX = 200


def _sha(obj: Any) -> str:
    return hashlib.sha256(
        json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    ).hexdigest()


# -- sentencepiece: a minimal protobuf reader for ModelProto.pieces --------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        if not b & 0x80:
            return out, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """``(field number, wire type, value)`` of one protobuf message; bytes for length-delimited."""
    out: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated message")
        out.append((num, wire, value))
    return out


def sentencepiece_pieces(data: bytes) -> list[tuple[str, float, int]]:
    """``(piece, score, type)`` of every piece of a sentencepiece ``tokenizer.model``, in id order
    (type: 1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte)."""
    pieces = []
    for num, wire, value in _fields(data):
        if num != 1 or wire != 2:
            continue
        piece, score, kind = "", 0.0, 1
        for pnum, pwire, pvalue in _fields(value):
            if pnum == 1 and pwire == 2:
                piece = pvalue.decode("utf-8")
            elif pnum == 2 and pwire == 5:
                (score,) = struct.unpack("<f", pvalue)
            elif pnum == 3 and pwire == 0:
                kind = pvalue
        pieces.append((piece, score, kind))
    return pieces


# -- the fingerprint ---------------------------------------------------------------------------


def _json(raw: bytes, name: str) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{name}: not valid JSON ({exc})") from None


def _table(vocab: Mapping[str, Any]) -> list[str | None]:
    ids = {int(i): str(tok) for tok, i in vocab.items() if isinstance(i, int)}
    table: list[str | None] = [None] * (max(ids) + 1 if ids else 0)
    for i, tok in ids.items():
        table[i] = tok
    return table


def _merges(merges: Any) -> list[list[str]]:
    out = []
    for m in merges or ():
        out.append(m.split(" ", 1) if isinstance(m, str) else [str(x) for x in m] if isinstance(m, list) else [str(m)])
    return out


def _info_value(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= _INFO_MAX else "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def tokenizer_facts(read: Callable[[str], bytes | None], *, source: str = "tokenizer") -> TokenizerFacts | None:
    """The fingerprint of the tokenizer files ``read(name)`` returns (None for an absent file);
    None when no vocabulary file is there."""
    config_raw = read("tokenizer_config.json")
    config = _json(config_raw, f"{source}/tokenizer_config.json") if config_raw is not None else {}
    if not isinstance(config, dict):
        config = {}
    info: dict[str, str] = {}
    added: dict[int, str] = {}
    segmentation: Any = None
    raw = read("tokenizer.json")
    if raw is not None:
        tok = _json(raw, f"{source}/tokenizer.json")
        model = tok.get("model") if isinstance(tok, dict) else None
        if not isinstance(model, dict):
            raise InvalidInputError(f"{source}/tokenizer.json: no 'model' section")
        mtype = str(model.get("type") or "BPE")
        kind = f"tokenizer.json:{mtype}"
        vocab = model.get("vocab")
        if isinstance(vocab, list):  # Unigram: [[piece, score], ...]
            table: list[str | None] = [str(v[0]) for v in vocab]
            segmentation = {"scores": [v[1] for v in vocab], "byte_fallback": model.get("byte_fallback")}
        elif isinstance(vocab, dict):
            table = _table(vocab)
            if mtype == "BPE":
                segmentation = {
                    "merges": _merges(model.get("merges")),
                    **{k: model.get(k) for k in ("byte_fallback", "continuing_subword_prefix", "end_of_word_suffix")},
                }
            elif mtype == "WordPiece":
                segmentation = {"continuing_subword_prefix": model.get("continuing_subword_prefix")}
        else:
            raise InvalidInputError(f"{source}/tokenizer.json: model.vocab is neither a dict nor a list")
        for t in tok.get("added_tokens") or ():
            if isinstance(t, dict) and isinstance(t.get("id"), int):
                added[t["id"]] = str(t.get("content"))
        for part in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
            if tok.get(part) is not None:
                info[f"tokenizer.json {part}"] = _info_value(tok[part])
    elif (raw := read("tokenizer.model")) is not None:
        kind = "sentencepiece"
        try:
            pieces = sentencepiece_pieces(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"{source}/tokenizer.model: not a sentencepiece model ({exc})") from None
        table = [p for p, _, _ in pieces]
        segmentation = {"scores": [s for _, s, _ in pieces], "types": [t for _, _, t in pieces]}
    elif (raw := read("vocab.json")) is not None:
        kind = "vocab.json"
        vocab = _json(raw, f"{source}/vocab.json")
        table = _table(vocab if isinstance(vocab, dict) else {})
        merges_raw = read("merges.txt")
        if merges_raw is not None:
            lines = merges_raw.decode("utf-8").splitlines()
            segmentation = {"merges": [m.split(" ", 1) for m in lines if m and not m.startswith("#version")]}
    else:
        return None
    if not added:
        decoder = config.get("added_tokens_decoder")
        if isinstance(decoder, dict):
            for i, t in decoder.items():
                if str(i).isdigit():
                    added[int(i)] = str(t.get("content") if isinstance(t, dict) else t)
        extra = read("added_tokens.json")
        if extra is not None:
            extra_map = _json(extra, f"{source}/added_tokens.json")
            for content, i in extra_map.items() if isinstance(extra_map, dict) else ():
                if isinstance(i, int):
                    added.setdefault(i, str(content))
    by_content = {tok: i for i, tok in enumerate(table) if tok is not None}
    by_content.update({c: i for i, c in added.items()})
    specials: dict[str, int] = {}
    for role in _ROLES:
        value = config.get(role)
        content = value.get("content") if isinstance(value, dict) else value
        if isinstance(content, str) and content in by_content:
            specials[role.removesuffix("_token")] = by_content[content]
    for key, value in sorted(config.items()):
        if key in (*_ROLES, "added_tokens_decoder", "chat_template"):
            continue
        if value is None or isinstance(value, (str, int, float, bool)):
            info[key] = _info_value(value)
        else:
            info[key] = _info_value(value)
    template = config.get("chat_template")
    jinja = read("chat_template.jinja")
    if jinja is not None:
        template = jinja.decode("utf-8", errors="replace")
    if template is not None:
        info["chat_template"] = "sha256:" + _sha(template)[:16]
    num = max(len(table), max(added) + 1 if added else 0)
    return TokenizerFacts(
        kind=kind,
        num_tokens=num,
        vocab_sha256=_sha(table),
        segmentation_sha256=_sha(segmentation) if segmentation is not None else None,
        added_tokens_sha256=_sha(sorted(added.items())),
        added_tokens=dict(sorted(added.items())) if len(added) <= MAX_LISTED_ADDED else None,
        special_tokens=specials,
        info=info,
    )


def readable_tokenizer_facts(read: Callable[[str], bytes | None], *, source: str) -> TokenizerFacts | None:
    """:func:`tokenizer_facts`, or None with a logged warning when the files cannot be read as a
    tokenizer: the ``vocab`` check then says the ids are unknown (a failure only for patches that
    change token-indexed tensors), instead of the whole base being refused."""
    try:
        return tokenizer_facts(read, source=source)
    except InvalidInputError as exc:
        log.warning("token ids not fingerprinted: %s", exc)
        return None


def read_local_tokenizer(base_dir: Path) -> TokenizerFacts | None:
    """:func:`readable_tokenizer_facts` of a local model directory."""

    def read(name: str) -> bytes | None:
        path = Path(base_dir) / name
        return path.read_bytes() if path.is_file() else None

    return readable_tokenizer_facts(read, source=str(base_dir))


# -- comparing two -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenizerDiff:
    """How a target tokenizer relates to a source's.

    ``relation``: ``same`` (every id means the same token, text splits the same), ``extends``
    (that, plus tokens added at new ids), ``differs`` (some id means another token, or text splits
    differently). ``reasons``: what differs (``differs``) or what was added (``extends``).
    ``roles``: special-token roles whose id changed (``eos 2 → 32000``). ``info``: everything
    else that changed, as information.
    """

    relation: Literal["same", "extends", "differs"]
    reasons: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    info: tuple[str, ...] = field(default_factory=tuple)


def _id_span(ids: list[int]) -> str:
    ids = sorted(ids)
    if not ids:
        return ""
    return str(ids[0]) if len(ids) == 1 else f"{ids[0]}–{ids[-1]}"


def compare_tokenizers(source: TokenizerFacts, target: TokenizerFacts) -> TokenizerDiff:
    """Compare what gives tokens their ids (see :class:`TokenizerDiff`)."""
    reasons: list[str] = []
    new_tokens: list[int] = []
    if source.vocab_sha256 != target.vocab_sha256:
        kinds = source.kind if source.kind == target.kind else f"{source.kind} → {target.kind}"
        reasons.append(f"vocabulary differs ({source.num_tokens} → {target.num_tokens} ids, {kinds})")
    same_kind = source.kind == target.kind
    if same_kind and source.segmentation_sha256 != target.segmentation_sha256:
        what = "merges" if "BPE" in source.kind or source.kind == "vocab.json" else "piece scores/types"
        reasons.append(f"{what} differ (text splits into other tokens)")
    if source.added_tokens_sha256 != target.added_tokens_sha256:
        s_add, t_add = source.added_tokens, target.added_tokens
        if s_add is None or t_add is None:
            reasons.append("added tokens differ")
        else:
            changed = sorted(i for i, c in s_add.items() if t_add.get(i) != c)
            if changed:
                examples = ", ".join(f"{i}: {s_add[i]!r} → {t_add.get(i)!r}" for i in changed[:3])
                more = f" (+{len(changed) - 3} more)" if len(changed) > 3 else ""
                reasons.append(f"{len(changed)} added tokens changed id or content ({examples}{more})")
            new_tokens = sorted(i for i in t_add if i not in s_add)
    roles = []
    for role in sorted(set(source.special_tokens) | set(target.special_tokens)):
        s, t = source.special_tokens.get(role), target.special_tokens.get(role)
        if s != t:
            roles.append(f"{role} token id {s if s is not None else 'unset'} → {t if t is not None else 'unset'}")
    info = []
    for key in sorted(set(source.info) | set(target.info)):
        s_i, t_i = source.info.get(key), target.info.get(key)
        if s_i == t_i:
            continue
        if key == "chat_template" or (s_i or "").startswith("sha256:") or (t_i or "").startswith("sha256:"):
            info.append(f"{key} {'changed' if s_i and t_i else ('added' if t_i else 'removed')}")
        elif s_i is None:
            info.append(f"new key {key}")
        elif t_i is None:
            info.append(f"{key} removed")
        else:
            info.append(f"{key} {s_i} → {t_i}")
    if not same_kind:
        info.append(f"token ids read from {source.kind} vs {target.kind}: segmentation not compared")
    if reasons:
        return TokenizerDiff("differs", tuple(reasons), tuple(roles), tuple(info))
    if new_tokens:
        added = f"{len(new_tokens)} tokens added at new ids ({_id_span(new_tokens)})"
        return TokenizerDiff("extends", (added,), tuple(roles), tuple(info))
    return TokenizerDiff("same", (), tuple(roles), tuple(info))
