"""Moving patches between the catalog and remotes: publish on push, pull, search.

The catalog never claims a remote copy that does not exist: a publisher runs before the
catalog transaction and only its success is recorded. ``pull`` verifies every file against
``patch.json`` (the remote does, and the content store does again) before anything is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from patchctl.errors import InvalidInputError
from patchctl.registry.records import RemoteCopy, VersionInfo
from patchctl.schemas.manifest import Manifest
from patchctl.schemas.refs import HubRef, PatchRef, RemoteRef, parse_patch_ref
from patchctl.settings import Settings

if TYPE_CHECKING:
    from patchctl._session import Publisher
    from patchctl.remotes import RemotePatch, VersionWanted

__all__ = ["PullResult", "publisher_for", "pull", "remote_url_for", "search"]


def remote_url_for(settings: Settings, to: str | None) -> str | None:
    """The remote a push publishes to: ``--to``, else the configured default, else none."""
    return to or settings.default_remote


def publisher_for(url: str) -> Publisher:
    """A :data:`~patchctl._session.Publisher` that publishes to ``url`` (hf://org/repo, hf://org, file:///dir)."""
    from patchctl._session import PublishedCopy
    from patchctl.remotes import model_card, open_remote

    remote = open_remote(url)

    def publish(manifest: Manifest, staged: Path) -> PublishedCopy:
        published = remote.publish(manifest, staged, card=model_card(manifest))
        return PublishedCopy(url=published.url, revision=published.commit)

    return publish


@dataclass(frozen=True)
class PullResult:
    version: VersionInfo
    #: False: the catalog already had this exact version (only the remote copy was recorded)
    created: bool
    remote: RemoteCopy
    commit: str


def _remote_and_wanted(settings: Settings, text: str) -> tuple[str, VersionWanted, str | None]:
    ref = parse_patch_ref(text)
    if isinstance(ref, HubRef):
        return f"hf://{ref.repo_id}", ref.spec if ref.spec is not None else ref.revision, None
    if isinstance(ref, RemoteRef):
        return f"file://{ref.root}", ref.spec if ref.spec is not None else ref.version, ref.name
    if isinstance(ref, PatchRef):
        if settings.default_remote is None:
            raise InvalidInputError(
                f"{text!r}: pull needs a remote (hf://org/repo[@version], file:///dir) or a configured default_remote"
            )
        if ref.alias:
            raise InvalidInputError(f"{text!r}: aliases live in the catalog; pull a version or a specifier")
        return settings.default_remote, ref.spec if ref.spec is not None else ref.version, ref.name
    raise InvalidInputError(f"{text!r}: pull takes a remote reference (hf://org/repo, file:///dir), not a path")


def pull(settings: Settings, text: str, *, progress: bool = True) -> PullResult:
    """Fetch a version from a remote, verify it, store its files and record it with its origin."""
    from patchctl._session import catalog, checked_adapter
    from patchctl.registry.blobs import BlobStore
    from patchctl.remotes import open_remote

    url, wanted, name = _remote_and_wanted(settings, text)
    remote = open_remote(url)
    fetched = remote.fetch(wanted, name=name)
    manifest = fetched.manifest
    checked_adapter(fetched.dir)  # a damaged or hostile adapter is never recorded (exit 4)
    store = BlobStore(settings.store_dir)
    with catalog(settings) as cat:
        for f in manifest.files:  # verified again while copying into the store
            store.put_file(fetched.dir / f.path, expected_sha256=f.sha256)
        manifest_sha = store.put_bytes(manifest.to_json().encode())
        result = cat.add_version(manifest, manifest_sha256=manifest_sha, remote=(fetched.url, fetched.commit))
        copy = next(r for r in cat.list_remotes(manifest.name, manifest.version) if r.url == fetched.url)
    return PullResult(result.version, result.created, copy, fetched.commit)


def search(
    settings: Settings, url: str | None, *, task: str | None = None, family: str | None = None
) -> list[RemotePatch]:
    """Patches a remote offers (the Hub: models tagged ``patchctl``), filtered by task and family."""
    from patchctl.remotes import open_remote

    url = url or settings.default_remote
    if not url:
        raise InvalidInputError("search needs --remote URL (hf://org, file:///dir) or a configured default_remote")
    return open_remote(url).search(task=task, family=family)
