"""Hub bases known without downloading weights: the facts equal the local reader's for the same
files, and a header check of a ~100 MB base moves well under 1 MB."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
from hubserver import HubServer

from patchctl.bases import read_local_base
from patchctl.errors import NotFoundError, UnsupportedError
from patchctl.remotes import download_base, remote_base_facts
from patchctl.schemas import BaseFacts, HubRef

BIG = 100_000_000


def _same(remote: BaseFacts, local: BaseFacts) -> None:
    assert remote.weights_sha256 == local.weights_sha256
    assert remote.structure_sha256 == local.structure_sha256
    assert remote.tensors == local.tensors
    assert remote.family == local.family
    assert remote.tokenizer_sha256 == local.tokenizer_sha256
    assert remote.tokenizer == local.tokenizer and local.tokenizer is not None
    assert remote.weight_files == local.weight_files
    assert remote.config == local.config
    assert remote.quantization == local.quantization


def _big_safetensors(path: Path, nbytes: int = BIG) -> None:
    """A valid safetensors file of ``nbytes`` zero data, written sparse (instant)."""
    header = json.dumps(
        {
            "__metadata__": {"format": "pt"},
            "extra.big": {"dtype": "F32", "shape": [nbytes // 4], "data_offsets": [0, nbytes]},
        }
    ).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + nbytes)


def test_facts_equal_local(hub: HubServer, pico_llama: Path) -> None:
    commit = hub.seed_repo("acme/pico-llama", pico_llama)
    facts = remote_base_facts(HubRef("acme/pico-llama"))
    _same(facts, read_local_base(pico_llama))
    assert facts.source == "hf://acme/pico-llama" and facts.revision == commit


def test_sharded_facts_equal_local(hub: HubServer, pico_llama_sharded: Path) -> None:
    hub.seed_repo("acme/pico-llama-sharded", pico_llama_sharded)
    facts = remote_base_facts(HubRef("acme/pico-llama-sharded"), endpoint=hub.url)
    local = read_local_base(pico_llama_sharded)
    assert len(local.weight_files) > 1
    _same(facts, local)


def test_revision_is_pinned(hub: HubServer, pico_llama: Path, pico_gpt2: Path) -> None:
    first = hub.seed_repo("acme/base", pico_llama, tag="v1")
    hub.seed_repo("acme/base", pico_gpt2)  # a later commit on main replaces the files
    assert remote_base_facts(HubRef("acme/base", revision="v1")).revision == first
    assert (
        remote_base_facts(HubRef("acme/base", revision=first)).weights_sha256
        == read_local_base(pico_llama).weights_sha256
    )
    assert remote_base_facts(HubRef("acme/base")).family.model_type == "gpt2"


def test_header_check_of_a_100mb_base_moves_under_1mb(hub: HubServer, pico_llama: Path, tmp_path: Path) -> None:
    base = tmp_path / "big-base"
    shutil.copytree(pico_llama, base)
    _big_safetensors(base / "model-extra.safetensors")
    hub.seed_repo("acme/big", base)
    hub.reset_counters()
    facts = remote_base_facts(HubRef("acme/big"))
    served = hub.bytes_served
    print(f"header check of a {BIG} byte base: {served} bytes served")
    assert served < 1_000_000, f"{served} bytes served"
    assert sum(f.size for f in facts.weight_files) > BIG
    assert facts.tensors["extra.big"].shape == (BIG // 4,)
    # every weight read was a range read
    weight_gets = [r for r in hub.requests_for("resolve", "GET") if r.path.endswith(".safetensors")]
    assert weight_gets and all(r.range and r.status == 206 for r in weight_gets)
    _same(facts, read_local_base(base))


def test_download_base(hub: HubServer, pico_llama_sharded: Path) -> None:
    commit = hub.seed_repo("acme/sharded", pico_llama_sharded)
    path = download_base(HubRef("acme/sharded"), progress=False)
    assert path.name == commit
    _same(read_local_base(path), read_local_base(pico_llama_sharded))


def test_missing_and_pickle_only_bases(hub: HubServer, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        remote_base_facts(HubRef("acme/nope"))
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (legacy / "pytorch_model.bin").write_bytes(b"\x80\x02pickle")
    hub.seed_repo("acme/legacy", legacy)
    with pytest.raises(UnsupportedError, match="safetensors only"):
        remote_base_facts(HubRef("acme/legacy"))
