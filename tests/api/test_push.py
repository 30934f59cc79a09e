"""patchctl.api.push end to end on pico models: manifest, store, catalog; bad input changes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from catalogtools import snapshot, snapshot_store

from patchctl import api
from patchctl._fs import sha256_file
from patchctl.adapter import read_adapter
from patchctl.bases import read_local_base
from patchctl.errors import (
    AdapterError,
    ConflictError,
    InvalidInputError,
    PatchctlError,
    RemoteError,
    UnsupportedError,
)
from patchctl.registry.blobs import BlobStore
from patchctl.schemas.manifest import Manifest
from patchctl.settings import Settings


def _push(settings: Settings, adapter: Path, base: Path, **kw: str) -> api.PushResult:
    args = {"name": "acme/sst2", "version": "1.0.0", "task": "sst2 sentiment", **kw}
    return api.push(settings, adapter, base_dir=base, **args)


def test_push_records_manifest_files_and_base(settings: Settings, llama_adapter: Path, pico_llama: Path) -> None:
    res = _push(settings, llama_adapter, pico_llama, description="demo", license="apache-2.0")
    assert res.created
    mf = res.manifest
    facts = read_local_base(pico_llama)
    assert (mf.name, mf.version, mf.task, mf.license) == ("acme/sst2", "1.0.0", "sst2 sentiment", "apache-2.0")
    assert (mf.lora.r, mf.lora.lora_alpha, mf.lora.lora_pairs) == (4, 8, 4)
    assert mf.lora.target_modules == ("q_proj", "v_proj")
    assert mf.source_base.weights_sha256 == facts.weights_sha256
    assert mf.source_base.structure_sha256 == facts.structure_sha256
    assert mf.source_base.tokenizer_sha256 == facts.tokenizer_sha256 is not None
    assert mf.source_base.family.model_type == "llama"
    assert {f.path: f.sha256 for f in mf.files} == {
        "adapter_config.json": sha256_file(llama_adapter / "adapter_config.json"),
        "adapter_model.safetensors": sha256_file(llama_adapter / "adapter_model.safetensors"),
    }
    store = BlobStore(settings.store_dir)
    for f in mf.files:
        store.verify(f.sha256)
    stored = Manifest.from_json(store.read_bytes(res.version.manifest_sha256))
    assert stored == mf == api.resolve(settings, "acme/sst2==1.0.0").manifest
    details = api.show(settings, "acme/sst2")
    assert details.source_base is not None and details.source_base.weights_sha256 == facts.weights_sha256
    assert [v.version for v in details.versions] == ["1.0.0"]


def test_repush_identical_is_a_noop(settings: Settings, llama_adapter: Path, pico_llama: Path) -> None:
    first = _push(settings, llama_adapter, pico_llama)
    before = snapshot(settings)
    again = _push(settings, llama_adapter, pico_llama, version="1.0")  # the same PEP 440 version
    assert not again.created
    assert again.version == first.version
    assert snapshot(settings) == before


def test_conflicting_repush_is_refused_and_changes_nothing(
    settings: Settings, llama_adapter: Path, llama_adapter_v2: Path, pico_llama: Path
) -> None:
    _push(settings, llama_adapter, pico_llama)
    before = snapshot(settings)
    with pytest.raises(ConflictError, match="already exists with different content"):
        _push(settings, llama_adapter_v2, pico_llama)
    assert snapshot(settings) == before
    assert _push(settings, llama_adapter_v2, pico_llama, version="1.0.1").created


def _no_config(d: Path) -> None:
    (d / "adapter_config.json").unlink()


def _bad_json(d: Path) -> None:
    (d / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 4,')


def _no_r(d: Path) -> None:
    cfg = json.loads((d / "adapter_config.json").read_text())
    del cfg["r"]
    (d / "adapter_config.json").write_text(json.dumps(cfg))


def _bin_only(d: Path) -> None:
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(d / "adapter_model.safetensors"), d / "adapter_model.bin")
    (d / "adapter_model.safetensors").unlink()


def _dora(d: Path) -> None:
    cfg = json.loads((d / "adapter_config.json").read_text())
    cfg["use_dora"] = True
    (d / "adapter_config.json").write_text(json.dumps(cfg))


def _garbage_weights(d: Path) -> None:
    (d / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")


BREAKERS: dict[str, tuple[Callable[[Path], None], type[PatchctlError], str]] = {
    "missing-config": (_no_config, AdapterError, "no adapter_config.json"),
    "malformed-config": (_bad_json, AdapterError, "not valid JSON"),
    "config-without-r": (_no_r, AdapterError, "missing required key 'r'"),
    "pickle-only": (_bin_only, UnsupportedError, "safetensors only"),
    "dora": (_dora, UnsupportedError, "DoRA"),
    "garbage-weights": (_garbage_weights, AdapterError, "safetensors"),
}


@pytest.mark.parametrize("case", sorted(BREAKERS))
def test_bad_adapter_is_refused_and_changes_nothing(
    case: str, settings: Settings, adapter_copy: Path, llama_adapter: Path, pico_llama: Path
) -> None:
    _push(settings, llama_adapter, pico_llama, version="0.1")  # a non-empty catalog and store
    before = snapshot(settings)
    breaker, error, message = BREAKERS[case]
    breaker(adapter_copy)
    with pytest.raises(error, match=message):
        _push(settings, adapter_copy, pico_llama)
    assert snapshot(settings) == before


@pytest.mark.parametrize("kind", ["ia3", "lokr"])
def test_non_lora_peft_adapters_are_refused(
    kind: str, request: pytest.FixtureRequest, settings: Settings, pico_llama: Path
) -> None:
    adapter: Path = request.getfixturevalue(f"{kind}_adapter")
    with pytest.raises(UnsupportedError, match="not LoRA"):
        _push(settings, adapter, pico_llama)
    assert snapshot(settings)[0]["versions"] == [] and snapshot_store(settings) == []


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"version": "1.0-beta!x"}, "not a valid PEP 440 version"),
        ({"version": ""}, "not a valid PEP 440 version"),
        ({"name": "sst2"}, "namespace/name"),
        ({"name": "acme/../etc"}, "namespace/name"),
        ({"task": "  "}, "--task must not be empty"),
    ],
)
def test_invalid_flags_are_refused(
    kw: dict[str, str], message: str, settings: Settings, llama_adapter: Path, pico_llama: Path
) -> None:
    before = snapshot(settings)
    with pytest.raises(InvalidInputError, match=message):
        _push(settings, llama_adapter, pico_llama, **kw)
    assert snapshot(settings) == before


def test_adapter_for_another_base_is_refused(
    settings: Settings, gpt2_adapter: Path, pico_llama: Path, tmp_path: Path, llama_adapter: Path
) -> None:
    before = snapshot(settings)
    with pytest.raises(AdapterError, match="does not fit the base"):
        _push(settings, gpt2_adapter, pico_llama)
    with pytest.raises(InvalidInputError, match="base directory does not exist"):
        _push(settings, llama_adapter, tmp_path / "nope")
    assert snapshot(settings) == before


def test_gpt2_fan_in_fan_out_adapter(settings: Settings, gpt2_adapter: Path, pico_gpt2: Path) -> None:
    mf = _push(settings, gpt2_adapter, pico_gpt2, name="acme/gpt2-lora").manifest
    assert mf.lora.fan_in_fan_out and mf.source_base.family.model_type == "gpt2"


def test_publish_callback_records_only_successful_copies(
    settings: Settings, llama_adapter: Path, pico_llama: Path
) -> None:
    seen: list[dict[str, str]] = []

    def publish_ok(manifest: Manifest, staged: Path) -> api.PublishedCopy:
        seen.append({p.name: sha256_file(p) for p in staged.iterdir()})
        return api.PublishedCopy(url=f"file:///remote/{manifest.name}", revision="v1.0.0")

    def publish_fail(manifest: Manifest, staged: Path) -> api.PublishedCopy:
        raise RemoteError("remote said 503")

    before = snapshot(settings)[0]
    with pytest.raises(RemoteError):
        api.push(
            settings,
            llama_adapter,
            name="acme/sst2",
            version="1.0.0",
            task="t",
            base_dir=pico_llama,
            publish=publish_fail,
        )
    after = snapshot(settings)[0]
    assert after == before  # the catalog never claims a copy that failed (blobs may stay: unreferenced)

    res = api.push(
        settings, llama_adapter, name="acme/sst2", version="1.0.0", task="t", base_dir=pico_llama, publish=publish_ok
    )
    assert res.created and res.remote is not None and res.remote.revision == "v1.0.0"
    assert set(seen[0]) == {"adapter_config.json", "adapter_model.safetensors", "patch.json"}
    assert seen[0]["adapter_model.safetensors"] == res.manifest.file("adapter_model.safetensors").sha256
    assert [r.url for r in api.show(settings, "acme/sst2").remotes] == ["file:///remote/acme/sst2"]
    # re-push (no-op in the catalog) still publishes when asked, e.g. to a second remote
    again = api.push(
        settings, llama_adapter, name="acme/sst2", version="1.0.0", task="t", base_dir=pico_llama, publish=publish_ok
    )
    assert not again.created and again.remote is not None


def test_materialize_version_is_a_readable_adapter(
    settings: Settings, llama_adapter: Path, pico_llama: Path, tmp_path: Path
) -> None:
    v = _push(settings, llama_adapter, pico_llama).version
    out = api.materialize_version(settings, v, tmp_path / "patch")
    layout = read_adapter(out)
    assert len(layout.pairs) == 4
    assert (out / "adapter_model.safetensors").read_bytes() == (
        llama_adapter / "adapter_model.safetensors"
    ).read_bytes()
    assert Manifest.read(out / "patch.json") == v.manifest


def test_show_includes_source_base_lineage(
    settings: Settings, llama_adapter: Path, pico_llama: Path, pico_llama_updated: Path
) -> None:
    added = api.base_add(settings, pico_llama_updated, revision="r2", parents=[str(pico_llama)], relation="update")
    assert added.created and len(added.edges) == 1
    theta = read_local_base(pico_llama).weights_sha256
    assert added.edges[0].parent == theta
    res = _push(settings, llama_adapter, pico_llama_updated, base_revision="r2")
    assert res.manifest.source_base.revision == "r2"
    details = api.show(settings, "acme/sst2==1.0.0")
    assert [(a.base.weights_sha256, a.relation, a.depth) for a in details.lineage] == [(theta, "update", 1)]
    listing = api.base_list(settings)
    assert len(listing.bases) == 2 and len(listing.edges) == 1
    # idempotent, and a parent named by fingerprint prefix works too
    again = api.base_add(settings, pico_llama_updated, parents=[theta[:12]])
    assert not again.created and len(api.base_list(settings).edges) == 1
    from patchctl.errors import NotFoundError

    with pytest.raises(NotFoundError, match="no such base"):
        api.base_add(settings, pico_llama_updated, parents=["hf://meta/llama@main"])
