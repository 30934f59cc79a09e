"""The Hub remote when things go wrong: server down, 5xx and dropped connections mid-download,
missing or wrong tokens (never printed), and the error table."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hubserver import HubServer
from remotes.helpers import PATCH_NAME, SECRET, make_manifest

from patchctl.errors import AuthError, IntegrityError, InvalidInputError, NotFoundError, RemoteError
from patchctl.remotes import HfHubRemote, open_remote
from patchctl.schemas.manifest import MANIFEST_FILE


def _published(hub: HubServer, llama_adapter: Path, pico_llama: Path, **kw: str) -> HfHubRemote:
    remote = HfHubRemote(PATCH_NAME, endpoint=hub.url, **kw)
    remote.publish(make_manifest(llama_adapter, pico_llama), llama_adapter)
    return remote


def _no_partial_files(remote: HfHubRemote) -> None:
    assert not [p for p in remote.cache_dir.rglob("*") if p.name.endswith(".incomplete")]


def test_server_down_then_retry(hub: HubServer, llama_adapter: Path, pico_llama: Path) -> None:
    remote = _published(hub, llama_adapter, pico_llama)
    hub.stop()
    with pytest.raises(RemoteError) as exc:
        remote.fetch("1.0.0")
    msg = str(exc.value)
    assert "\n" not in msg and f"cannot reach {hub.url}" in msg
    assert exc.value.exit_code == 8
    _no_partial_files(remote)
    hub.start()  # same port, same storage
    assert remote.fetch("1.0.0").manifest.version == "1.0.0"


def test_5xx_mid_download_then_retry(hub: HubServer, llama_adapter: Path, pico_llama: Path) -> None:
    remote = _published(hub, llama_adapter, pico_llama)
    commit = hub.refs(PATCH_NAME)["tags"]["v1.0.0"]
    # patch.json and adapter_config.json come through; the weights fail
    hub.fail_next(status=503, method="GET", route="resolve", path_contains="adapter_model.safetensors")
    with pytest.raises(RemoteError, match="HTTP 503") as exc:
        remote.fetch("1.0.0")
    assert "\n" not in str(exc.value)
    _no_partial_files(remote)
    snap = remote.snapshot_dir(PATCH_NAME, commit)
    assert not snap.exists() or not any(snap.iterdir())  # nothing of this commit left looking fetched
    got = remote.fetch("1.0.0")
    assert got.commit == commit
    assert (got.dir / "adapter_model.safetensors").read_bytes() == (
        llama_adapter / "adapter_model.safetensors"
    ).read_bytes()


def test_dropped_connection_is_retried_by_the_client(hub: HubServer, llama_adapter: Path, pico_llama: Path) -> None:
    remote = _published(hub, llama_adapter, pico_llama)
    hub.reset_counters()
    hub.fail_next(method="GET", route="resolve", path_contains="adapter_model.safetensors", mode="drop")
    got = remote.fetch("1.0.0")  # huggingface_hub retries a body cut short (resuming with Range when it can)
    gets = [r for r in hub.requests_for("resolve", "GET") if "adapter_model" in r.path]
    assert len(gets) == 2
    assert (got.dir / "adapter_model.safetensors").read_bytes() == (
        llama_adapter / "adapter_model.safetensors"
    ).read_bytes()
    _no_partial_files(remote)


def test_5xx_on_the_api_is_a_remote_error(hub: HubServer, llama_adapter: Path, pico_llama: Path) -> None:
    remote = _published(hub, llama_adapter, pico_llama)
    hub.fail_next(status=502, route="refs")
    with pytest.raises(RemoteError, match=r"answered HTTP 502") as exc:
        remote.list_versions()
    assert exc.value.hint
    assert [v.version for v in remote.list_versions()] == ["1.0.0"]


@pytest.mark.parametrize("token", [None, "hf_WrongTokenWrongToken123"])
def test_auth_required_token_missing_or_wrong(
    hub: HubServer,
    llama_adapter: Path,
    pico_llama: Path,
    token: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub.require_token(SECRET)
    caplog.set_level(logging.DEBUG)
    remote = HfHubRemote(PATCH_NAME, endpoint=hub.url, token=token)
    manifest = make_manifest(llama_adapter, pico_llama)
    with pytest.raises(AuthError) as exc:
        remote.publish(manifest, llama_adapter)
    assert exc.value.exit_code == 9
    text = f"{exc.value} {exc.value.hint} {exc.value!r} {remote!r} {caplog.text}"
    assert SECRET not in text
    if token:
        assert token not in text
    assert "401" in str(exc.value) and "\n" not in str(exc.value)
    assert PATCH_NAME not in hub.repos  # nothing was written


def test_token_from_env_and_from_login_file(
    hub: HubServer,
    llama_adapter: Path,
    pico_llama: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub.require_token(SECRET)
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    remote = _published(hub, llama_adapter, pico_llama)
    assert SECRET not in repr(remote)
    monkeypatch.delenv("HF_TOKEN")
    # the token `hf auth login` stores under HF_HOME
    hf_home = tmp_path / "hf-home"
    hf_home.mkdir()
    (hf_home / "token").write_text(SECRET + "\n")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    got = open_remote(f"hf://{PATCH_NAME}").fetch("1.0.0")
    assert got.manifest.name == PATCH_NAME
    assert SECRET not in caplog.text


def test_fetch_by_commit_and_unknown_revision(hub: HubServer, llama_adapter: Path, pico_llama: Path) -> None:
    remote = _published(hub, llama_adapter, pico_llama)
    commit = hub.refs(PATCH_NAME)["tags"]["v1.0.0"]
    assert remote.fetch(commit).manifest.version == "1.0.0"
    with pytest.raises(NotFoundError):
        remote.fetch("c" * 40)
    with pytest.raises(NotFoundError):
        HfHubRemote("acme/missing", endpoint=hub.url).list_versions()


def test_tag_whose_manifest_disagrees_is_refused(hub: HubServer, llama_adapter: Path, pico_llama: Path) -> None:
    remote = _published(hub, llama_adapter, pico_llama)
    # someone tags the 1.0.0 commit as v2.0.0 by hand
    hub.repos[PATCH_NAME].tags["v2.0.0"] = hub.refs(PATCH_NAME)["tags"]["v1.0.0"]
    with pytest.raises(IntegrityError, match=r"says version 1\.0\.0, the tag says 2\.0\.0"):
        remote.fetch("2.0.0")


def test_card_rejected_by_the_hub_writes_nothing(hub: HubServer, llama_adapter: Path, pico_llama: Path) -> None:
    remote = HfHubRemote(PATCH_NAME, endpoint=hub.url)
    manifest = make_manifest(llama_adapter, pico_llama)
    bad = "---\nbase_model: [unclosed\n---\n# card\n"
    with pytest.raises(InvalidInputError, match="rejected the model card metadata"):
        remote.publish(manifest, llama_adapter, card=bad)
    assert hub.refs(PATCH_NAME)["tags"] == {}
    assert hub.commit_count(PATCH_NAME) == 1  # only the repo's initial commit


def test_namespace_remote_maps_patch_names_to_repos(hub: HubServer, llama_adapter: Path, pico_llama: Path) -> None:
    remote = open_remote("hf://acme", endpoint=hub.url)
    assert isinstance(remote, HfHubRemote)
    pub = remote.publish(make_manifest(llama_adapter, pico_llama), llama_adapter)
    assert pub.url == f"hf://{PATCH_NAME}@v1.0.0"
    assert remote.fetch(name=PATCH_NAME).manifest.name == PATCH_NAME
    with pytest.raises(InvalidInputError, match="name a patch"):
        remote.fetch()


def test_commit_has_exactly_the_four_files(hub: HubServer, llama_adapter: Path, pico_llama: Path) -> None:
    _published(hub, llama_adapter, pico_llama)
    repo = hub.repos[PATCH_NAME]
    commit = repo.commits[repo.tags["v1.0.0"]]
    assert sorted(commit.files) == sorted(
        [".gitattributes", "README.md", MANIFEST_FILE, "adapter_config.json", "adapter_model.safetensors"]
    )
    assert commit.files["adapter_model.safetensors"].lfs
    parent = repo.commits[commit.parent] if commit.parent else None
    assert parent is not None and sorted(parent.files) == [".gitattributes"]  # one commit per version


def test_failed_commit_creates_no_version_and_a_retry_publishes(
    hub: HubServer, llama_adapter: Path, pico_llama: Path
) -> None:
    remote = HfHubRemote(PATCH_NAME, endpoint=hub.url)
    manifest = make_manifest(llama_adapter, pico_llama)
    hub.fail_next(status=500, route="commit")
    with pytest.raises(RemoteError, match="HTTP 500"):
        remote.publish(manifest, llama_adapter)
    assert hub.refs(PATCH_NAME)["tags"] == {}
    assert remote.list_versions() == []
    pub = remote.publish(manifest, llama_adapter)
    assert pub.created and hub.refs(PATCH_NAME)["tags"] == {"v1.0.0": pub.commit}


def test_published_url_round_trips_through_open_remote(hub: HubServer, llama_adapter: Path, pico_llama: Path) -> None:
    from patchctl.schemas import HubRef, parse_patch_ref

    remote = _published(hub, llama_adapter, pico_llama)
    ref = parse_patch_ref(remote.list_versions()[0].url)
    assert isinstance(ref, HubRef) and ref.revision == "v1.0.0"
    assert open_remote(str(ref)).fetch(ref.revision).manifest.version == "1.0.0"


@pytest.mark.slow  # the client resumes a timed-out body a few times (~15 s)
def test_stalled_download_is_a_timeout_without_the_token(
    hub: HubServer, llama_adapter: Path, pico_llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Hub that stops answering mid-body (longer than HF_HUB_DOWNLOAD_TIMEOUT): a RemoteError that
    says it timed out, one line, the token nowhere; nothing left looking fetched; the retry works."""
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 1)
    hub.require_token(SECRET)
    remote = _published(hub, llama_adapter, pico_llama, token=SECRET)
    hub.fail_next(20, method="GET", route="resolve", path_contains="adapter_model.safetensors", mode="stall", delay=3)
    with pytest.raises(RemoteError, match="timed out") as exc:
        remote.fetch("1.0.0")
    msg = f"{exc.value} {exc.value.hint}"
    assert "\n" not in msg and SECRET not in msg and exc.value.exit_code == 8
    _no_partial_files(remote)
    hub.faults.clear()
    assert remote.fetch("1.0.0").manifest.version == "1.0.0"
