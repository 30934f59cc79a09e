"""The remote contract, run against both remotes: the Hub (through the unmodified huggingface_hub
client and the test server) and a directory."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from remotes.helpers import PATCH_NAME, Harness, make_manifest

from patchctl._fs import sha256_file
from patchctl.errors import ConflictError, IntegrityError, NotFoundError
from patchctl.remotes import Fetched, Published, Remote
from patchctl.schemas import Manifest
from patchctl.schemas.manifest import MANIFEST_FILE


def test_is_a_remote(harness: Harness) -> None:
    assert isinstance(harness.remote, Remote)


def test_publish_fetch_round_trip(harness: Harness, llama_adapter: Path, pico_llama: Path) -> None:
    manifest = make_manifest(llama_adapter, pico_llama)
    pub = harness.remote.publish(manifest, llama_adapter)
    assert isinstance(pub, Published)
    assert pub.created and pub.version == "1.0.0" and pub.name == PATCH_NAME
    assert pub.revision == ("v1.0.0" if harness.kind == "hub" else "1.0.0")

    got = harness.remote.fetch("1.0.0")
    assert isinstance(got, Fetched)
    assert got.manifest == manifest
    assert got.commit == pub.commit
    for entry in manifest.files:
        assert (got.dir / entry.path).read_bytes() == (llama_adapter / entry.path).read_bytes()
        assert sha256_file(got.dir / entry.path) == entry.sha256
    assert Manifest.read(got.dir / MANIFEST_FILE) == manifest
    card = (got.dir / "README.md").read_text()
    assert card.startswith("---\n") and "base_model_relation: adapter" in card
    assert f"patchctl pull {harness.remote.url}==1.0.0" in card

    versions = harness.remote.list_versions()
    assert [(v.version, v.commit) for v in versions] == [("1.0.0", pub.commit)]


def test_identical_republish_is_a_no_op(harness: Harness, llama_adapter: Path, pico_llama: Path) -> None:
    manifest = make_manifest(llama_adapter, pico_llama)
    first = harness.remote.publish(manifest, llama_adapter)
    before = harness.state()
    again = harness.remote.publish(manifest, llama_adapter)
    assert not again.created
    assert again.commit == first.commit
    assert harness.state() == before  # no new commit, tag or file


def test_conflicting_republish_is_refused(
    harness: Harness, llama_adapter: Path, adapter_b: Path, pico_llama: Path
) -> None:
    a = make_manifest(llama_adapter, pico_llama)
    b = make_manifest(adapter_b, pico_llama)
    assert a.content_digest != b.content_digest
    harness.remote.publish(a, llama_adapter)
    before = harness.state()
    with pytest.raises(ConflictError, match=r"1\.0\.0.*already exists with different content") as exc:
        harness.remote.publish(b, adapter_b)
    assert exc.value.exit_code == 5
    assert harness.state() == before
    assert harness.remote.fetch("1.0.0").manifest.content_digest == a.content_digest


def test_local_files_must_match_the_manifest(
    harness: Harness, llama_adapter: Path, adapter_b: Path, pico_llama: Path
) -> None:
    manifest = make_manifest(llama_adapter, pico_llama)
    before = harness.state()
    with pytest.raises(IntegrityError, match=r"adapter_config\.json"):
        harness.remote.publish(manifest, adapter_b)  # adapter_b's config differs from the manifest
    assert harness.state() == before


def test_version_resolution(harness: Harness, llama_adapter: Path, pico_llama: Path) -> None:
    for v in ("1.0.0", "1.1.0", "2.0.0", "2.1.0rc1"):
        harness.remote.publish(make_manifest(llama_adapter, pico_llama, version=v), llama_adapter)
    assert [v.version for v in harness.remote.list_versions()] == ["1.0.0", "1.1.0", "2.0.0", "2.1.0rc1"]
    assert harness.remote.fetch().manifest.version == "2.0.0"  # newest final release
    assert harness.remote.fetch(SpecifierSet("==1.*")).manifest.version == "1.1.0"
    assert harness.remote.fetch(SpecifierSet("<1.1")).manifest.version == "1.0.0"
    assert harness.remote.fetch(SpecifierSet(">=2.1.0rc1")).manifest.version == "2.1.0rc1"
    assert harness.remote.fetch("1.0").manifest.version == "1.0.0"  # PEP 440 equality
    if harness.kind == "hub":
        assert harness.remote.fetch("v1.1.0").manifest.version == "1.1.0"
    with pytest.raises(NotFoundError, match=r"no version matches >=3.*available: 1\.0\.0, 1\.1\.0"):
        harness.remote.fetch(SpecifierSet(">=3"))
    with pytest.raises(NotFoundError, match=r"9\.9"):
        harness.remote.fetch("9.9")


def test_missing_patch_is_not_found(harness: Harness) -> None:
    with pytest.raises(NotFoundError) as exc:
        harness.remote.fetch()
    assert exc.value.exit_code == 3


def test_corrupted_blob_is_an_integrity_error(harness: Harness, llama_adapter: Path, pico_llama: Path) -> None:
    manifest = make_manifest(llama_adapter, pico_llama)
    harness.remote.publish(manifest, llama_adapter)
    harness.corrupt("1.0.0", "adapter_model.safetensors")
    with pytest.raises(IntegrityError, match=r"adapter_model\.safetensors.*sha256") as exc:
        harness.remote.fetch("1.0.0")
    assert exc.value.exit_code == 7
    if harness.hub is not None:
        # nothing left in the HF cache that looks like a valid copy of this commit
        remote = harness.remote
        commit = harness.hub.refs(PATCH_NAME)["tags"]["v1.0.0"]
        snap = remote.snapshot_dir(PATCH_NAME, commit)  # type: ignore[attr-defined]
        assert not (snap / "adapter_model.safetensors").exists()
        assert not (snap / MANIFEST_FILE).exists()
        blobs = list((snap.parent.parent / "blobs").glob("*"))
        assert all(sha256_file(b) != manifest.file("adapter_model.safetensors").sha256 for b in blobs)
        assert not any(b.name == manifest.file("adapter_model.safetensors").sha256 for b in blobs)
        assert not list(remote.cache_dir.rglob("*.incomplete"))  # type: ignore[attr-defined]
    # the same error every time: no corrupted copy is ever promoted to "fetched"
    with pytest.raises(IntegrityError):
        harness.remote.fetch("1.0.0")


def test_concurrent_publishers_one_wins(harness: Harness, llama_adapter: Path, pico_llama: Path) -> None:
    manifest = make_manifest(llama_adapter, pico_llama)
    results: list[Published] = []
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            results.append(harness.remote.publish(manifest, llama_adapter))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=publish) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a publisher hung"
    assert not errors, errors
    assert len(results) == 3
    assert sum(r.created for r in results) == 1
    assert len({r.commit for r in results}) == 1
    assert [v.version for v in harness.remote.list_versions()] == ["1.0.0"]
    assert harness.remote.fetch().manifest == manifest


def test_search(harness: Harness, llama_adapter: Path, pico_llama: Path) -> None:
    harness.remote.publish(make_manifest(llama_adapter, pico_llama), llama_adapter)
    harness.remote.publish(make_manifest(llama_adapter, pico_llama, version="1.2.0"), llama_adapter)
    found = harness.remote.search(task="sst2")
    assert [(p.name, p.task, p.family, p.latest) for p in found] == [(PATCH_NAME, "sst2", "llama", "1.2.0")]
    assert [p.name for p in harness.remote.search(family="llama")] == [PATCH_NAME]
    assert [p.name for p in harness.remote.search()] == [PATCH_NAME]
    assert harness.remote.search(task="gsm8k") == []
    assert harness.remote.search(family="gpt2") == []
