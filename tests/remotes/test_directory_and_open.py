"""Directory-remote specifics (layout, atomic immutable version folders), ``open_remote``,
version selection and token resolution."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from remotes.helpers import PATCH_NAME, make_manifest

from patchctl.errors import IntegrityError, InvalidInputError, NotFoundError, RefError
from patchctl.remotes import DirectoryRemote, HfHubRemote, open_remote, select_version
from patchctl.remotes._hf import resolve_token, scrub


def test_directory_layout_is_immutable_and_whole(tmp_path: Path, llama_adapter: Path, pico_llama: Path) -> None:
    remote = open_remote(f"file://{tmp_path}/registry")
    assert isinstance(remote, DirectoryRemote)
    manifest = make_manifest(llama_adapter, pico_llama)
    pub = remote.publish(manifest, llama_adapter)
    vdir = tmp_path / "registry" / PATCH_NAME / "versions" / "1.0.0"
    assert pub.url == f"file://{tmp_path}/registry/{PATCH_NAME}@1.0.0"
    assert sorted(p.name for p in vdir.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "patch.json",
    ]
    assert all(not (p.stat().st_mode & stat.S_IWUSR) for p in vdir.iterdir())  # read-only
    assert not list((vdir.parent).glob(".tmp-*"))  # no temporary folder left behind
    # a registry root needs the patch name; a patch folder URL does not
    with pytest.raises(InvalidInputError, match="name a patch"):
        remote.fetch()
    assert remote.fetch(name=PATCH_NAME).manifest == manifest
    assert open_remote(f"file://{tmp_path}/registry/{PATCH_NAME}").fetch().manifest == manifest
    assert [v.name for v in remote.list_versions()] == [PATCH_NAME]


def test_directory_publish_failure_leaves_nothing(tmp_path: Path, llama_adapter: Path, pico_llama: Path) -> None:
    manifest = make_manifest(llama_adapter, pico_llama)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_bytes((llama_adapter / "adapter_config.json").read_bytes())
    remote = DirectoryRemote(tmp_path / "registry")
    with pytest.raises(IntegrityError, match=r"adapter_model\.safetensors is missing"):
        remote.publish(manifest, broken)
    assert not (tmp_path / "registry" / PATCH_NAME / "versions" / "1.0.0").exists()
    with pytest.raises(NotFoundError):
        remote.fetch(name=PATCH_NAME)


def test_directory_damaged_version_folder(tmp_path: Path, llama_adapter: Path, pico_llama: Path) -> None:
    remote = DirectoryRemote(tmp_path / PATCH_NAME)
    remote.publish(make_manifest(llama_adapter, pico_llama), llama_adapter)
    weights = tmp_path / PATCH_NAME / "versions" / "1.0.0" / "adapter_model.safetensors"
    weights.chmod(0o644)
    weights.write_bytes(weights.read_bytes()[:-4])  # truncated
    with pytest.raises(IntegrityError, match="bytes"):
        remote.fetch()


def test_open_remote() -> None:
    hub = open_remote("hf://acme/sst2-lora@v1.0.0")
    assert isinstance(hub, HfHubRemote) and hub.repo_id == "acme/sst2-lora" and hub.url == "hf://acme/sst2-lora"
    with pytest.raises(RefError):
        open_remote("s3://bucket/x")
    with pytest.raises(RefError):
        open_remote("acme/sst2-lora")


def test_select_version() -> None:
    available = ["1.0.0", "1.1", "2.0.0rc1", "not-a-version"]
    assert select_version(available, None, what="x") == "1.1"
    assert select_version(["2.0.0rc1"], None, what="x") == "2.0.0rc1"
    assert select_version(available, "1.1.0", what="x") == "1.1"
    assert select_version(available, "v1.0", what="x") == "1.0.0"
    assert select_version(available, SpecifierSet(">=2.0.0rc1"), what="x") == "2.0.0rc1"
    assert select_version(available, SpecifierSet("~=1.0"), what="x") == "1.1"
    with pytest.raises(NotFoundError, match=r"available: 1\.0\.0, 1\.1, 2\.0\.0rc1"):
        select_version(available, "3", what="x")
    with pytest.raises(NotFoundError, match="no versions"):
        select_version([], None, what="x")


def test_resolve_token_order(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("hf_FromLoginFile123456\n")
    env = {"HF_HOME": str(tmp_path)}
    assert resolve_token(None, env) == "hf_FromLoginFile123456"
    assert resolve_token(None, {**env, "HUGGING_FACE_HUB_TOKEN": "hf_Legacy1234567"}) == "hf_Legacy1234567"
    assert resolve_token(None, {**env, "HF_TOKEN": "hf_Env12345678", "HUGGING_FACE_HUB_TOKEN": "x"}) == "hf_Env12345678"
    assert resolve_token("hf_Explicit1234567", {**env, "HF_TOKEN": "hf_Env12345678"}) == "hf_Explicit1234567"
    assert resolve_token(None, {"HF_HOME": str(tmp_path / "none")}) is None
    other = tmp_path / "elsewhere"
    other.write_text("hf_TokenPath12345678")
    assert resolve_token(None, {"HF_TOKEN_PATH": str(other)}) == "hf_TokenPath12345678"


def test_scrub_removes_tokens_and_newlines() -> None:
    text = scrub("401 for weird-token-value\nAuthorization: Bearer abc.def hf_AbCdEfGh12345", "weird-token-value")
    assert "weird-token-value" not in text and "hf_AbCdEfGh12345" not in text and "abc.def" not in text
    assert "\n" not in text


def test_import_is_light() -> None:
    """``patchctl.remotes`` imports neither torch nor huggingface_hub until a Hub remote is used."""
    import subprocess
    import sys

    code = (
        "import sys, patchctl.remotes as r; r.DirectoryRemote; "
        "print(sorted(m for m in ('torch', 'transformers', 'huggingface_hub') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
