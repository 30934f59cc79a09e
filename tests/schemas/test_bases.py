import hashlib
import json
import shutil
from pathlib import Path

import pytest

from patchctl.bases import (
    parse_safetensors_header,
    read_local_base,
    read_safetensors_header,
    structure_fingerprint,
)
from patchctl.errors import InvalidInputError, UnsupportedError


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fingerprints_follow_the_design(pico_llama_sharded: Path) -> None:
    facts = read_local_base(pico_llama_sharded)
    index = json.loads((pico_llama_sharded / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    lines = "".join(sorted(f"{s}\t{_sha(pico_llama_sharded / s)}\n" for s in shards))
    assert facts.weights_sha256 == hashlib.sha256(lines.encode()).hexdigest()
    rows = []
    for s in shards:
        for name, info in read_safetensors_header(pico_llama_sharded / s).items():
            if name != "__metadata__":
                rows.append([name, info["shape"], info["dtype"]])
    doc = json.dumps({"model_type": "llama", "tensors": sorted(rows)}, sort_keys=True, separators=(",", ":"))
    assert facts.structure_sha256 == hashlib.sha256(doc.encode()).hexdigest()
    assert set(facts.tensors) == set(index["weight_map"])
    assert facts.family.model_type == "llama" and facts.family.num_hidden_layers == 2
    assert facts.tokenizer_sha256 is not None


def test_same_structure_different_weights(pico_llama: Path, tmp_path: Path) -> None:
    import picomodels

    other = picomodels.make_base(tmp_path / "other", "llama", seed=5)
    a, b = read_local_base(pico_llama), read_local_base(other)
    assert a.structure_sha256 == b.structure_sha256
    assert a.weights_sha256 != b.weights_sha256


def test_structure_fingerprint_is_order_independent() -> None:
    t = [("a", (2, 3), "F32"), ("b", (4,), "BF16")]
    assert structure_fingerprint("llama", t) == structure_fingerprint("llama", reversed(t))
    assert structure_fingerprint("llama", t) != structure_fingerprint("mistral", t)


def test_stray_safetensors_outside_the_index_are_ignored(pico_llama_sharded: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(pico_llama_sharded, copy)
    before = read_local_base(copy).weights_sha256
    first = sorted(copy.glob("model-*.safetensors"))[0]
    shutil.copy(first, copy / "unrelated.safetensors")
    assert read_local_base(copy).weights_sha256 == before


def test_pickle_only_base_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(UnsupportedError, match="safetensors only"):
        read_local_base(tmp_path)


@pytest.mark.parametrize(
    "files",
    [
        {},
        {"config.json": "{not json"},
        {"config.json": '{"no_model_type": 1}', "model.safetensors": b"\x00" * 16},
    ],
)
def test_bad_base_dirs(tmp_path: Path, files: dict[str, object]) -> None:
    for name, content in files.items():
        p = tmp_path / name
        p.write_bytes(content if isinstance(content, bytes) else str(content).encode())
    with pytest.raises(InvalidInputError):
        read_local_base(tmp_path)


def test_header_parser_rejects_garbage() -> None:
    with pytest.raises(InvalidInputError):
        parse_safetensors_header(b"\x01")
    with pytest.raises(InvalidInputError, match="implausible"):
        parse_safetensors_header((2**60).to_bytes(8, "little"))
    with pytest.raises(InvalidInputError, match="truncated"):
        parse_safetensors_header((100).to_bytes(8, "little") + b"{}")
