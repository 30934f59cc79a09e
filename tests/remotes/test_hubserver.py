"""The test server answers the unmodified huggingface_hub client the way the Hub does."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hubserver import HubServer
from huggingface_hub.errors import HfHubHTTPError


def test_routes_through_the_client(hub: HubServer, tmp_path: Path) -> None:
    import httpx2
    from huggingface_hub import CommitOperationAdd, HfApi, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import (
        HfHubHTTPError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    api = HfApi(endpoint=hub.url, token=False)
    url = api.create_repo("acme/r")
    assert url == f"{hub.url}/acme/r"
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_repo("acme/r")
    assert exc.value.response.status_code == 409 and exc.value.response.json()["url"] == f"{hub.url}/acme/r"
    assert api.create_repo("acme/r", exist_ok=True) == url

    weights = b"\x00\x01" * 3000
    ops = [
        CommitOperationAdd("w.safetensors", weights),
        CommitOperationAdd("sub/notes.txt", b"hello"),
    ]
    commit = api.create_commit("acme/r", ops, commit_message="add").oid
    api.create_tag("acme/r", tag="v1", revision=commit)
    refs = api.list_repo_refs("acme/r")
    assert [t.target_commit for t in refs.tags] == [commit]
    assert [b.target_commit for b in refs.branches] == [commit]

    tree = {e.path: e for e in api.list_repo_tree("acme/r", revision="v1", recursive=True)}
    assert set(tree) == {".gitattributes", "w.safetensors", "sub", "sub/notes.txt"}
    assert tree["w.safetensors"].lfs.sha256 == hashlib.sha256(weights).hexdigest()  # type: ignore[union-attr]
    top = [e.path for e in api.list_repo_tree("acme/r", revision=commit[:7])]
    assert top == [".gitattributes", "sub", "w.safetensors"] or sorted(top) == [
        ".gitattributes",
        "sub",
        "w.safetensors",
    ]
    info = api.get_paths_info("acme/r", ["sub/notes.txt", "missing"], revision="main")
    assert [i.path for i in info] == ["sub/notes.txt"]

    meta = get_hf_file_metadata(hf_hub_url("acme/r", "w.safetensors", revision="v1", endpoint=hub.url), token=False)
    assert meta.commit_hash == commit
    assert meta.etag == hashlib.sha256(weights).hexdigest() and meta.size == len(weights)
    meta = get_hf_file_metadata(hf_hub_url("acme/r", "sub/notes.txt", endpoint=hub.url), token=False)
    assert meta.etag == hashlib.sha1(b"blob 5\0hello").hexdigest()  # git blob id for regular files

    r = httpx2.get(f"{hub.url}/acme/r/resolve/v1/w.safetensors", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == weights[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(weights)}"

    with pytest.raises(RepositoryNotFoundError):
        api.model_info("acme/none")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("acme/r", revision="v9")
    with pytest.raises(RemoteEntryNotFoundError):
        get_hf_file_metadata(hf_hub_url("acme/r", "nope.bin", endpoint=hub.url), token=False)


def test_yaml_validation_and_auth(hub: HubServer) -> None:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url, token=False)
    api._validate_yaml("---\nlicense: mit\ntags: [a]\nbase_model: org/x\nbase_model_relation: adapter\n---\n")
    for bad in (
        "---\ntags: [a\n---\n",
        "---\ntags: a-string\n---\n",
        "---\nbase_model_relation: adapter\n---\n",
        "---\nbase_model: 'not a repo id!'\n---\n",
        "---\n- a list\n---\n",
    ):
        with pytest.raises(ValueError, match=r"Invalid metadata in README\.md"):
            api._validate_yaml(bad)
    hub.require_token("hf_ServerSecret1234567")
    with pytest.raises(HfHubHTTPError, match="401"):
        api.list_repo_refs("acme/x")
    assert HfApi(endpoint=hub.url, token="hf_ServerSecret1234567").whoami()["name"] == "patchctl-tester"
