"""Remotes: where patch files live (the catalog is the index; remotes hold bytes). No torch.

- :class:`HfHubRemote` — ``hf://org/repo`` on the Hugging Face Hub (``huggingface_hub``), one repo
  per patch, one commit per version tagged ``v<version>``.
- :class:`DirectoryRemote` — ``file:///path`` (e.g. shared NFS), one immutable folder per version.

Both satisfy :class:`Remote`: ``publish`` → :class:`Published`, ``list_versions`` →
[:class:`RemoteVersion`], ``fetch`` → :class:`Fetched` (sha256-verified against ``patch.json``),
``search`` → [:class:`RemotePatch`]. Errors are patchctl's: NotFoundError, ConflictError,
IntegrityError, RemoteError, AuthError (whose text never contains the token).

Hub bases without downloading weights: :func:`remote_base_facts`; :func:`download_base`.
``huggingface_hub`` is imported only when a Hub remote is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from patchctl.errors import RefError
from patchctl.remotes._card import model_card
from patchctl.remotes._directory import DirectoryRemote
from patchctl.remotes._protocol import (
    Fetched,
    Published,
    Remote,
    RemotePatch,
    RemoteVersion,
    VersionWanted,
    select_version,
    verify_files,
)
from patchctl.schemas.refs import HubRef, RemoteRef, parse_patch_ref

if TYPE_CHECKING:
    from patchctl.remotes._bases import download_base, remote_base_facts
    from patchctl.remotes._hub import HfHubRemote

__all__ = [
    "DirectoryRemote",
    "Fetched",
    "HfHubRemote",
    "Published",
    "Remote",
    "RemotePatch",
    "RemoteVersion",
    "VersionWanted",
    "download_base",
    "model_card",
    "open_remote",
    "remote_base_facts",
    "select_version",
    "verify_files",
]

_LAZY = {
    "HfHubRemote": "patchctl.remotes._hub",
    "remote_base_facts": "patchctl.remotes._bases",
    "download_base": "patchctl.remotes._bases",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_remote(url: str, *, token: str | None = None, endpoint: str | None = None) -> Remote:
    """The remote for ``hf://org[/repo]`` or ``file:///path``. A version part of the URL
    (``@1.0``, ``==1.*``) is not part of the remote: pass it to ``fetch``."""
    ref = parse_patch_ref(url) if url.startswith(("hf://", "file://")) else None
    if isinstance(ref, HubRef):
        from patchctl.remotes._hub import HfHubRemote

        return HfHubRemote(ref.repo_id, token=token, endpoint=endpoint)
    if isinstance(ref, RemoteRef):
        return DirectoryRemote(ref.root)
    raise RefError(f"{url!r}: not a remote URL (expected hf://org/name or file:///path)")
