"""``hf://org/repo``: the Hugging Face Hub remote, on the unmodified ``huggingface_hub`` client.

One model repo per patch. Each version is ONE commit holding ``adapter_config.json``,
``adapter_model.safetensors``, ``patch.json`` and ``README.md`` (the model card), tagged
``v<version>``. A tag is created only after its commit succeeded; an existing tag is never moved.
Fetching resolves the tag to its commit, downloads into the HF cache at that commit, and
verifies every file's sha256 against ``patch.json`` before anything is reported as fetched.
"""

from __future__ import annotations

import contextlib
import re
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.specifiers import SpecifierSet

from patchctl.errors import ConflictError, IntegrityError, InvalidInputError, ManifestError, NotFoundError
from patchctl.remotes._card import PATCHCTL_TAG, model_card, tag_slug
from patchctl.remotes._hf import hf_cache_dir, hf_endpoint, hub_errors, resolve_token
from patchctl.remotes._protocol import (
    CARD_FILE,
    Fetched,
    Published,
    RemotePatch,
    RemoteVersion,
    VersionWanted,
    select_version,
    tag_for,
    verify_files,
    version_from_tag,
)
from patchctl.schemas.manifest import MANIFEST_FILE, Manifest

if TYPE_CHECKING:
    from huggingface_hub import HfApi

__all__ = ["HfHubRemote"]

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_PUBLISH_ATTEMPTS = 5


class HfHubRemote:
    """A Hub repo (``hf://org/name``) or a namespace (``hf://org``: one repo per patch name in it).

    ``token``: explicit > HF_TOKEN > the token stored by ``hf auth login`` (under HF_HOME).
    ``endpoint``: explicit > HF_ENDPOINT > https://huggingface.co. ``cache_dir``: the HF cache
    (HF_HUB_CACHE / HF_HOME/hub), resolved when the remote is opened.
    """

    def __init__(
        self,
        repo_id: str,
        *,
        token: str | None = None,
        endpoint: str | None = None,
        cache_dir: Path | None = None,
        private: bool | None = None,
    ) -> None:
        self.repo_id = repo_id
        self.endpoint = hf_endpoint(endpoint)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else hf_cache_dir()
        self.private = private
        self._token = resolve_token(token)
        self._api: HfApi | None = None

    def __repr__(self) -> str:  # never show the token
        return f"HfHubRemote({self.repo_id!r}, endpoint={self.endpoint!r})"

    @property
    def url(self) -> str:
        return f"hf://{self.repo_id}"

    @property
    def api(self) -> HfApi:
        if self._api is None:
            from huggingface_hub import HfApi

            self._api = HfApi(endpoint=self.endpoint, token=self._token or False, library_name="patchctl")
        return self._api

    def _errors(self, what: str) -> AbstractContextManager[None]:
        return hub_errors(what, self.endpoint, self._token)

    def repo_for(self, name: str | None) -> str:
        """The repo of patch ``name``: this remote's repo, or ``<namespace>/<short name>`` for a namespace remote."""
        if "/" in self.repo_id:
            return self.repo_id
        if name is None:
            raise InvalidInputError(f"{self.url}: name a patch (hf://{self.repo_id}/<name>)")
        return f"{self.repo_id}/{name.rsplit('/', 1)[-1]}"

    # ---- refs ---------------------------------------------------------------------------
    def _refs(self, repo: str) -> tuple[dict[str, str], dict[str, str]]:
        """(tags, branches): name → commit."""
        with self._errors(f"hf://{repo}: list refs"):
            refs = self.api.list_repo_refs(repo)
        return {t.name: t.target_commit for t in refs.tags}, {b.name: b.target_commit for b in refs.branches}

    def list_versions(self, name: str | None = None) -> list[RemoteVersion]:
        repo = self.repo_for(name)
        tags, _ = self._refs(repo)
        out = []
        for tag, commit in tags.items():
            version = version_from_tag(tag)
            if version is not None:
                out.append(RemoteVersion(repo, version, tag, commit, f"hf://{repo}@{tag}"))
        from packaging.version import Version

        return sorted(out, key=lambda v: Version(v.version))

    def _resolve(self, repo: str, wanted: VersionWanted) -> tuple[str, str, str | None]:
        """(revision label, commit, version or None) for what the caller asked."""
        tags, branches = self._refs(repo)
        versions = {v: t for t in tags if (v := version_from_tag(t)) is not None}
        what = f"hf://{repo}"
        if isinstance(wanted, str) and not isinstance(wanted, SpecifierSet):
            commit = None
            if _COMMIT.fullmatch(wanted):
                commit = wanted
            elif wanted in tags and version_from_tag(wanted) is None:
                commit = tags[wanted]
            elif wanted in branches:
                commit = branches[wanted]
            if commit is not None:
                # a commit that a version tag names is that version: one label (and one remote copy
                # in the catalog) however it was asked for
                tagged = next((v for v, t in versions.items() if tags[t] == commit), None)
                return (versions[tagged] if tagged is not None else wanted), commit, tagged
        version = select_version(versions, wanted, what=what)
        tag = versions[version]
        return tag, tags[tag], version

    # ---- publish ------------------------------------------------------------------------
    def publish(self, manifest: Manifest, files_dir: Path, *, card: str | None = None) -> Published:
        from huggingface_hub import CommitOperationAdd

        files_dir = Path(files_dir)
        repo = self.repo_for(manifest.name)
        tag = tag_for(manifest.version)
        what = f"hf://{repo}@{tag}"
        verify_files(manifest, files_dir, what=f"{manifest.name}@{manifest.version} (local files)")
        with self._errors(f"hf://{repo}: create repo"):
            self.api.create_repo(repo, exist_ok=True, private=self.private)
        readme = card if card is not None else model_card(manifest, remote_url=f"hf://{repo}")
        from huggingface_hub.errors import HfHubHTTPError

        for _attempt in range(_PUBLISH_ATTEMPTS):
            tags, branches = self._refs(repo)
            if tag in tags:
                return self._existing(repo, tag, tags[tag], manifest)
            ops = [
                CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=str(files_dir / f.path)) for f in manifest.files
            ]
            ops.append(CommitOperationAdd(path_in_repo=MANIFEST_FILE, path_or_fileobj=manifest.to_json().encode()))
            ops.append(CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=readme.encode()))
            try:
                with self._errors(f"{what}: commit"):
                    info = self.api.create_commit(
                        repo,
                        ops,
                        commit_message=f"{manifest.name} {manifest.version}",
                        commit_description=f"Published with patchctl (content digest {manifest.content_digest}).",
                        parent_commit=branches.get("main"),
                    )
            except ConflictError:  # main moved under us (a concurrent publisher): look again
                continue
            commit = str(info.oid)
            with self._errors(f"{what}: tag"):
                try:
                    self.api.create_tag(repo, tag=tag, revision=commit)
                except HfHubHTTPError as exc:
                    if exc.response is not None and exc.response.status_code == 409:  # a concurrent publisher
                        continue
                    raise
            return Published(
                url=what, name=manifest.name, version=manifest.version, revision=tag, commit=commit, created=True
            )
        raise ConflictError(
            f"{what}: the repository kept changing while publishing ({_PUBLISH_ATTEMPTS} attempts)",
            hint="retry; published versions are immutable, so a retry cannot overwrite one",
        )

    def _existing(self, repo: str, tag: str, commit: str, manifest: Manifest) -> Published:
        what = f"hf://{repo}@{tag}"
        try:
            there = self._download_manifest(repo, commit, what)
        except (NotFoundError, ManifestError):
            raise ConflictError(
                f"{what} already exists and does not hold a patchctl patch",
                hint="published versions are immutable; publish under a new version",
            ) from None
        if there.content_digest != manifest.content_digest:
            raise ConflictError(
                f"{what} already exists with different content "
                f"(digest {there.content_digest[:12]}…, yours {manifest.content_digest[:12]}…)",
                hint="published versions are immutable; publish under a new version",
            )
        return Published(
            url=what, name=manifest.name, version=manifest.version, revision=tag, commit=commit, created=False
        )

    # ---- fetch --------------------------------------------------------------------------
    def _download(self, repo: str, filename: str, commit: str, what: str) -> Path:
        from huggingface_hub import hf_hub_download

        with self._errors(f"{what}: download {filename}"):
            return Path(
                hf_hub_download(
                    repo,
                    filename,
                    revision=commit,
                    cache_dir=self.cache_dir,
                    endpoint=self.endpoint,
                    token=self._token or False,
                    library_name="patchctl",
                )
            )

    def _download_manifest(self, repo: str, commit: str, what: str) -> Manifest:
        path = self._download(repo, MANIFEST_FILE, commit, what)
        return Manifest.from_json(path.read_bytes(), source=f"{what}/{MANIFEST_FILE}")

    def snapshot_dir(self, repo: str, commit: str) -> Path:
        return self.cache_dir / f"models--{repo.replace('/', '--')}" / "snapshots" / commit

    def _purge(self, repo: str, commit: str, paths: list[str], bad: set[str]) -> None:
        """Remove this commit's snapshot entries for ``paths`` (and the blobs of ``bad`` files)."""
        snap = self.snapshot_dir(repo, commit)
        for rel in paths:
            link = snap / rel
            if rel in bad and link.is_symlink():
                link.resolve().unlink(missing_ok=True)
            link.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            snap.rmdir()

    def fetch(self, version: VersionWanted = None, *, name: str | None = None) -> Fetched:
        """Download one version (newest, exact version / tag / commit, or a specifier) at its commit
        and verify it. On any failure nothing of this commit is left looking valid in the cache."""
        repo = self.repo_for(name)
        label, commit, tag_version = self._resolve(repo, version)
        what = f"hf://{repo}@{label}"
        fetched: list[str] = [MANIFEST_FILE]
        try:
            manifest = self._download_manifest(repo, commit, what)
            if tag_version is not None and manifest.version != tag_version:
                raise IntegrityError(
                    f"{what}: {MANIFEST_FILE} says version {manifest.version}, the tag says {tag_version}"
                )
            for entry in manifest.files:
                fetched.append(entry.path)
                self._download(repo, entry.path, commit, what)
            snap = self.snapshot_dir(repo, commit)
            try:
                verify_files(manifest, snap, what=what)
            except IntegrityError as exc:
                bad = {f.path for f in manifest.files if f.path in exc.message}
                self._purge(repo, commit, fetched, bad or set(fetched))
                raise
        except IntegrityError:
            raise
        except BaseException:
            self._purge(repo, commit, fetched, set())
            raise
        with contextlib.suppress(NotFoundError):
            self._download(repo, CARD_FILE, commit, what)
        return Fetched(manifest=manifest, dir=snap, commit=commit, url=what)

    # ---- search -------------------------------------------------------------------------
    def search(self, *, task: str | None = None, family: str | None = None) -> list[RemotePatch]:
        """Patches under this remote's namespace with the ``patchctl`` tag (Hub ``list_models``)."""
        filters = [PATCHCTL_TAG]
        if task:
            filters.append(tag_slug(task))
        if family:
            filters.append(tag_slug(family))
        author = self.repo_id.split("/", 1)[0]
        with self._errors(f"hf://{author}: search"):
            models = list(self.api.list_models(filter=filters, author=author, cardData=True))
        out = []
        for m in models:
            card: dict[str, Any] = dict(m.card_data.to_dict()) if m.card_data is not None else {}  # type: ignore[no-untyped-call]
            raw = card.get("patchctl")
            meta: dict[str, Any] = raw if isinstance(raw, dict) else {}
            out.append(
                RemotePatch(
                    name=str(meta.get("name") or m.id),
                    url=f"hf://{m.id}",
                    task=meta.get("task"),
                    family=meta.get("model_type"),
                    latest=meta.get("version"),
                    tags=tuple(m.tags or ()),
                )
            )
        return out
