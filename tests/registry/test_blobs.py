"""The content store: verified, atomic, immutable blobs; materializing a version's files."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from patchctl.errors import IntegrityError, NotFoundError
from patchctl.registry.blobs import BlobStore, materialize
from patchctl.schemas.manifest import FileEntry


def _file(tmp_path: Path, name: str, data: bytes) -> tuple[Path, FileEntry]:
    p = tmp_path / name
    p.write_bytes(data)
    return p, FileEntry(path=name, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def test_put_file_is_content_addressed_and_read_only(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    src, entry = _file(tmp_path, "a.bin", b"hello" * 1000)
    sha, size = store.put_file(src)
    assert (sha, size) == (entry.sha256, entry.size)
    blob = store.path(sha)
    assert blob == tmp_path / "store" / "sha256" / sha[:2] / sha
    assert blob.read_bytes() == src.read_bytes()
    assert not blob.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert store.put_file(src, expected_sha256=sha) == (sha, size)  # idempotent
    assert list((tmp_path / "store" / "tmp").iterdir()) == []
    store.verify(sha)


def test_put_file_refuses_changed_content_and_leaves_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    src, _ = _file(tmp_path, "a.bin", b"one")
    with pytest.raises(IntegrityError, match="changed while being stored"):
        store.put_file(src, expected_sha256=hashlib.sha256(b"two").hexdigest())
    assert [p for p in (tmp_path / "store").rglob("*") if p.is_file()] == []


def test_put_bytes_and_corruption_detected(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    sha = store.put_bytes(b'{"a": 1}')
    assert store.read_bytes(sha) == b'{"a": 1}'
    blob = store.path(sha)
    os.chmod(blob, 0o644)
    blob.write_bytes(b"tampered")
    with pytest.raises(IntegrityError, match="corrupt"):
        store.verify(sha)
    with pytest.raises(NotFoundError):
        store.read_bytes("0" * 64)


@pytest.mark.parametrize("link", [True, False])
def test_materialize_lays_out_an_adapter_dir(tmp_path: Path, link: bool) -> None:
    store = BlobStore(tmp_path / "store")
    entries = []
    for name, data in [("adapter_config.json", b"{}"), ("adapter_model.safetensors", b"\0" * 64)]:
        src, entry = _file(tmp_path, name, data)
        store.put_file(src)
        entries.append(entry)
    out = materialize(store, entries, tmp_path / "out", link=link, verify=True)
    assert sorted(p.name for p in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert (out / "adapter_model.safetensors").read_bytes() == b"\0" * 64
    same_inode = (out / "adapter_config.json").stat().st_ino == store.path(entries[0].sha256).stat().st_ino
    assert same_inode is link
    # re-materializing over an existing directory replaces the files
    materialize(store, entries, out, link=link)


def test_materialize_missing_blob(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "store")
    entry = FileEntry(path="adapter_config.json", sha256="1" * 64, size=2)
    with pytest.raises(NotFoundError, match="missing from the content store"):
        materialize(store, [entry], tmp_path / "out")


def test_file_names_with_dotdot_never_reach_the_store() -> None:
    from pydantic import ValidationError

    for bad in ("../evil", "a/../../b", "/etc/passwd", "a\\b"):
        with pytest.raises(ValidationError):
            FileEntry(path=bad, sha256="1" * 64, size=1)


def test_manifest_with_dotdot_file_is_a_manifest_error() -> None:
    import json

    from catalogtools import make_manifest

    from patchctl.errors import ManifestError
    from patchctl.schemas.manifest import Manifest

    data = json.loads(make_manifest().to_json())
    data["files"][0]["path"] = "../../etc/cron.d/evil"
    with pytest.raises(ManifestError, match=r"files\.0\.path"):
        Manifest.from_json(json.dumps(data))
