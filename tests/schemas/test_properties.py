"""Property tests (hypothesis) for the rules issue 8 hardened: reference parsing never fails
other than cleanly and round-trips, and the safetensors header validator agrees with the
safetensors library itself on mutated files (accepts what it loads, refuses what it refuses)."""

from __future__ import annotations

import contextlib
import json
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from packaging.version import Version

from patchctl.bases import read_safetensors_header
from patchctl.errors import InvalidInputError, PatchctlError
from patchctl.schemas.refs import PatchRef, parse_base_ref, parse_patch_ref

_part = st.from_regex(r"[a-z][a-z0-9_-]{0,15}", fullmatch=True).filter(lambda s: not s.endswith(("-", "_")))
_versions = st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(0, 50)).map(lambda t: ".".join(map(str, t)))


@given(st.text(max_size=60))
@example("~0")  # found by this property: pathlib's expanduser raised RuntimeError for an unknown user
@example("~\x00")  # found by this property: expanduser raised ValueError (embedded null byte)
@example("./a\x00b")
def test_any_text_parses_or_is_a_clean_error(text: str) -> None:
    with contextlib.suppress(PatchctlError):  # anything else (a traceback) fails the test
        parse_patch_ref(text)
    with contextlib.suppress(PatchctlError):
        parse_base_ref(text)


@given(_part, _part, _versions)
def test_exact_refs_round_trip(org: str, name: str, version: str) -> None:
    try:
        ref = parse_patch_ref(f"{org}/{name}=={version}")
    except PatchctlError:
        pytest.skip("a name patchctl refuses")  # pragma: no cover - the strategy stays inside the rules
    assert isinstance(ref, PatchRef) and ref.name == f"{org}/{name}"
    assert ref.spec is not None and Version(version) in ref.spec
    pinned = parse_patch_ref(f"{org}/{name}@{version}")
    assert isinstance(pinned, PatchRef) and pinned.version == str(Version(version))


# -- safetensors headers: our validator against the safetensors library ----------------------

_DTYPES = {"F32": np.float32, "F16": np.float16, "I8": np.int8, "F64": np.float64}


def _file(tensors: dict[str, tuple[str, tuple[int, ...]]]) -> tuple[dict[str, Any], bytes]:
    header: dict[str, Any] = {}
    data = b""
    for name, (dtype, shape) in tensors.items():
        raw = np.zeros(shape, dtype=_DTYPES[dtype]).tobytes()
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return header, data


def _write(path: Path, header: dict[str, Any], data: bytes) -> None:
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)


_tensor_sets = st.dictionaries(
    st.from_regex(r"[a-z]{1,6}(\.[a-z]{1,6}){0,2}", fullmatch=True),
    st.tuples(st.sampled_from(sorted(_DTYPES)), st.lists(st.integers(0, 4), max_size=3).map(tuple)),
    min_size=1,
    max_size=5,
)
_mutations = st.one_of(
    st.just(("none",)),
    st.tuples(st.just("offset"), st.integers(0, 4), st.integers(0, 1), st.integers(-8, 8)),
    st.tuples(st.just("truncate"), st.integers(1, 16)),
    st.tuples(st.just("append"), st.integers(1, 16)),
    st.tuples(st.just("shape"), st.integers(0, 4), st.integers(0, 5)),
    st.tuples(st.just("dtype"), st.integers(0, 4), st.sampled_from(["F32", "BF16", "U8", "X9", "F64"])),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_tensor_sets, _mutations)
def test_header_validator_agrees_with_the_safetensors_library(
    tensors: dict[str, tuple[str, tuple[int, ...]]], mutation: tuple[Any, ...]
) -> None:
    from safetensors import SafetensorError, safe_open

    header, data = _file(tensors)
    names = sorted(header)
    kind = mutation[0]
    if kind == "offset":
        _, i, j, delta = mutation
        header[names[i % len(names)]]["data_offsets"][j] += delta
    elif kind == "truncate":
        data = data[: max(0, len(data) - mutation[1])]
    elif kind == "append":
        data += b"\0" * mutation[1]
    elif kind == "shape":
        _, i, d = mutation
        header[names[i % len(names)]]["shape"] = [d]
    elif kind == "dtype":
        _, i, dtype = mutation
        header[names[i % len(names)]]["dtype"] = dtype
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.safetensors"
        _write(path, header, data)
        try:
            read_safetensors_header(path)
            ours = True
        except InvalidInputError:
            ours = False
        try:
            with safe_open(str(path), framework="numpy") as f:
                for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                    f.get_slice(key)
            theirs = True
        except (SafetensorError, ValueError, TypeError):
            theirs = False
    if kind == "none":
        assert ours and theirs
    # never accept what the library refuses (a later load would crash or read the wrong bytes)
    assert not (ours and not theirs), (mutation, header, len(data))
