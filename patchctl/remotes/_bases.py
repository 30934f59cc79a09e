"""Bases on the Hub, known without downloading their weights.

:func:`remote_base_facts` builds the same :class:`BaseFacts` as ``patchctl.bases.read_local_base``
would for the same files, from:

- per-file sha256: the LFS oid in the repo metadata (``model_info(files_metadata=True)``); small
  non-LFS files are downloaded and hashed;
- ``config.json`` (and ``model.safetensors.index.json`` for sharded bases): downloaded, small;
- safetensors headers: HTTP range reads of the first ``8 + N`` bytes of each weight file;
- the tokenizer fingerprint: LFS oid of each tokenizer file, else its downloaded bytes; the
  token-id fingerprint (``patchctl.tokenids``) from the tokenizer files, downloaded (small).

:func:`download_base` downloads a base (config, weights, tokenizer) at a resolved commit into
the HF cache; :func:`stream_base` does it shard by shard in the background, each shard verified
as it lands, so that an install merges each one as soon as it is here.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import struct
import tempfile
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patchctl.bases import (
    INDEX_FILE,
    MAX_HEADER_BYTES,
    TOKENIZER_FILES,
    base_facts_from_parts,
    header_length,
    parse_safetensors_header,
    validate_safetensors_header,
)
from patchctl.errors import IntegrityError, InvalidInputError, UnsupportedError
from patchctl.remotes._hf import hf_cache_dir, hf_endpoint, hub_errors, resolve_token
from patchctl.schemas.base import BaseFacts
from patchctl.schemas.refs import HubRef
from patchctl.tokenids import readable_tokenizer_facts

if TYPE_CHECKING:
    from huggingface_hub.hf_api import RepoSibling

__all__ = ["BASE_FILE_PATTERNS", "ArrivingBase", "download_base", "remote_base_facts", "stream_base"]

#: the files a merge needs from a base: config, weights (+ index), tokenizer, generation config
BASE_FILE_PATTERNS = ("*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken")
_FIRST_READ = 64 * 1024


class _HubBase:
    def __init__(self, ref: HubRef, token: str | None, endpoint: str | None) -> None:
        self.repo_id = ref.repo_id
        self.revision = ref.revision or "main"
        self.endpoint = hf_endpoint(endpoint)
        self.token = resolve_token(token)
        self.what = f"hf://{self.repo_id}@{self.revision}"

    def errors(self, what: str) -> AbstractContextManager[None]:
        return hub_errors(f"{self.what}: {what}", self.endpoint, self.token)

    def headers(self) -> dict[str, str]:
        from huggingface_hub.utils._headers import build_hf_headers

        return dict(build_hf_headers(token=self.token or False, library_name="patchctl"))

    def url(self, commit: str, filename: str) -> str:
        from huggingface_hub import hf_hub_url

        return str(hf_hub_url(self.repo_id, filename, revision=commit, endpoint=self.endpoint))

    def read(self, commit: str, filename: str, *, start: int = 0, length: int | None = None) -> bytes:
        """Bytes ``[start, start+length)`` of a file (the whole file when length is None), streamed:
        if the server ignores the Range header, reading stops after ``length`` bytes anyway."""
        from huggingface_hub import constants
        from huggingface_hub.utils._http import get_session, hf_raise_for_status

        headers = self.headers()
        if length is not None:
            headers["Range"] = f"bytes={start}-{start + length - 1}"
        out = bytearray()
        with (
            self.errors(f"read {filename}"),
            # the client's session has no timeout: a stalled Hub would hang here for good
            get_session().stream(
                "GET", self.url(commit, filename), headers=headers, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT
            ) as response,
        ):
            if response.status_code >= 400:
                response.read()
            hf_raise_for_status(response)
            skip = start if (length is not None and response.status_code == 200) else 0
            for chunk in response.iter_bytes():
                if skip:
                    dropped = min(skip, len(chunk))
                    chunk, skip = chunk[dropped:], skip - dropped
                out += chunk
                if length is not None and len(out) >= length:
                    break
        return bytes(out[:length] if length is not None else out)

    def header(self, commit: str, filename: str, *, file_size: int | None = None) -> dict[str, Any]:
        """The file's safetensors header (range reads); validated against ``file_size`` when the
        Hub lists one (a truncated upload is refused like a truncated local file)."""
        source = f"{self.what}/{filename}"
        head = self.read(commit, filename, length=_FIRST_READ)
        if len(head) < 8:
            raise InvalidInputError(f"{source}: not a safetensors file (shorter than 8 bytes)")
        n = header_length(head[:8])
        if n > MAX_HEADER_BYTES:
            raise InvalidInputError(f"{source}: not a safetensors file (header length {n} is implausible)")
        if len(head) < 8 + n:
            head += self.read(commit, filename, start=len(head), length=8 + n - len(head))
        header = parse_safetensors_header(head[: 8 + n], source=source)
        if file_size:
            validate_safetensors_header(header, data_size=file_size - 8 - n, source=source)
        return header

    def json_file(self, commit: str, filename: str) -> dict[str, Any]:
        raw = self.read(commit, filename)
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInputError(f"{self.what}/{filename}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise InvalidInputError(f"{self.what}/{filename}: expected a JSON object")
        return data

    def sha256(self, commit: str, sibling: RepoSibling) -> str:
        if sibling.lfs is not None:
            return str(sibling.lfs.sha256)
        return hashlib.sha256(self.read(commit, sibling.rfilename)).hexdigest()


def remote_base_facts(ref: HubRef, *, token: str | None = None, endpoint: str | None = None) -> BaseFacts:
    """Facts of a Hub base at ``ref.revision`` (default ``main``, resolved to a commit) without
    downloading its weights: equal to ``read_local_base`` of the same files except ``source``
    (``hf://repo``) and ``revision`` (the commit id)."""
    from huggingface_hub import HfApi

    hub = _HubBase(ref, token, endpoint)
    api = HfApi(endpoint=hub.endpoint, token=hub.token or False, library_name="patchctl")
    with hub.errors("repo info"):
        info = api.model_info(hub.repo_id, revision=hub.revision, files_metadata=True)
    commit = str(info.sha)
    siblings = {s.rfilename: s for s in info.siblings or ()}
    if "config.json" not in siblings:
        raise InvalidInputError(f"{hub.what}: no config.json (is this a transformers model repo?)")
    config = hub.json_file(commit, "config.json")
    if INDEX_FILE in siblings:
        try:
            weight_map = hub.json_file(commit, INDEX_FILE)["weight_map"]
            names = sorted(set(weight_map.values()))
        except (KeyError, TypeError, AttributeError) as exc:
            raise InvalidInputError(f"{hub.what}/{INDEX_FILE}: not a valid safetensors index ({exc})") from None
        missing = [n for n in names if n not in siblings]
        if missing:
            raise InvalidInputError(f"{hub.what}/{INDEX_FILE}: names missing shard(s): {', '.join(missing)}")
    else:
        names = sorted(n for n in siblings if n.endswith(".safetensors") and "/" not in n)
        if not names:
            if any(n.endswith((".bin", ".pt")) and "/" not in n for n in siblings):
                raise UnsupportedError(
                    f"{hub.what}: only pickle weights (*.bin/*.pt) found; patchctl reads safetensors only"
                )
            raise InvalidInputError(f"{hub.what}: no *.safetensors weights found")
    files = []
    headers = {}
    for name in names:
        s = siblings[name]
        size = s.size if s.size is not None else (s.lfs.size if s.lfs is not None else 0)
        headers[name] = hub.header(commit, name, file_size=int(size) or None)
        files.append((name, hub.sha256(commit, s), int(size)))
    tok = [(n, hub.sha256(commit, siblings[n])) for n in TOKENIZER_FILES if n in siblings]
    # token ids need the tokenizer files themselves (small next to the weights)
    tokenizer = readable_tokenizer_facts(lambda n: hub.read(commit, n) if n in siblings else None, source=hub.what)
    return base_facts_from_parts(
        source=f"hf://{hub.repo_id}",
        revision=commit,
        config=config,
        files=files,
        headers=headers,
        tokenizer_files=tok,
        tokenizer=tokenizer,
    )


def download_base(
    ref: HubRef,
    *,
    progress: bool = True,
    token: str | None = None,
    endpoint: str | None = None,
    cache_dir: Path | None = None,
    allow_patterns: tuple[str, ...] = BASE_FILE_PATTERNS,
) -> Path:
    """Download the files a merge needs (config, safetensors weights, tokenizer) at the commit
    ``ref.revision`` resolves to, into the HF cache; returns the snapshot directory."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.utils.tqdm import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    hub = _HubBase(ref, token, endpoint)
    api = HfApi(endpoint=hub.endpoint, token=hub.token or False, library_name="patchctl")
    with hub.errors("repo info"):
        info = api.model_info(hub.repo_id, revision=hub.revision)
    commit = str(info.sha)
    names = [s.rfilename for s in info.siblings or ()]
    if not any(n.endswith(".safetensors") for n in names):
        raise UnsupportedError(f"{hub.what}: no *.safetensors weights; patchctl reads safetensors only")
    was_disabled = are_progress_bars_disabled()
    if not progress:
        disable_progress_bars()
    try:
        with hub.errors("download"):
            path = snapshot_download(
                hub.repo_id,
                revision=commit,
                cache_dir=cache_dir or hf_cache_dir(),
                endpoint=hub.endpoint,
                token=hub.token or False,
                allow_patterns=list(allow_patterns),
                library_name="patchctl",
            )
    finally:
        if not progress and not was_disabled:
            enable_progress_bars()
    return Path(path)


#: the non-weight files a merge needs from a base (config, index, tokenizer, generation config)
SMALL_FILE_PATTERNS = ("*.json", "*.model", "*.txt", "*.tiktoken")


class _Counted:
    """A stand-in for tqdm that huggingface_hub's downloads report to (``tqdm_class``): it draws
    nothing and forwards the bytes to a callback, so that one rich display shows everything."""

    advance: Callable[[int], None] = staticmethod(lambda n: None)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.n = int(kwargs.get("initial") or 0)
        self.total = kwargs.get("total")

    def __enter__(self) -> _Counted:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: float | None = 1) -> None:
        self.n += int(n or 0)
        type(self).advance(int(n or 0))

    def close(self) -> None:
        return None


class ArrivingBase:
    """A Hub base at a pinned commit, arriving in the HF cache shard by shard on a background
    thread: :meth:`wait` returns a weight file's path once it is downloaded and its sha256 is the
    one the checks saw (a damaged file is removed from the cache and raises IntegrityError).

    ``skeleton`` is a directory to plan the merge from before the weights are here: links to the
    small files in the snapshot, and each weight file's safetensors header (its first bytes);
    ``snapshot`` is the HF cache snapshot directory the weights land in."""

    def __init__(
        self,
        hub: _HubBase,
        commit: str,
        weights: Sequence[tuple[str, str, int]],
        cache_dir: Path,
        skeleton: Path,
        snapshot: Path,
        on_bytes: Callable[[int], None] | None,
        on_file: Callable[[str], None] | None,
    ) -> None:
        self.skeleton = skeleton
        self.snapshot = snapshot
        self._hub = hub
        self._commit = commit
        self._weights = list(weights)
        self._cache_dir = cache_dir
        self._on_bytes = on_bytes
        self._on_file = on_file
        self._done: dict[str, threading.Event] = {name: threading.Event() for name, _, _ in self._weights}
        self._paths: dict[str, Path] = {}
        self._errors: dict[str, BaseException] = {}
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="patchctl-download", daemon=True)

    def start(self) -> ArrivingBase:
        self._thread.start()
        return self

    def _run(self) -> None:
        """Download the files one after another; each one is hashed on a second thread while
        the next one downloads."""
        from concurrent.futures import ThreadPoolExecutor

        from huggingface_hub import hf_hub_download

        counted = type("_CountedBytes", (_Counted,), {"advance": staticmethod(self._on_bytes or (lambda n: None))})
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="patchctl-verify") as verifier:
            for name, sha256, _ in self._weights:
                try:
                    if self._errors or self._cancel.is_set():
                        raise next(iter(self._errors.values()), None) or InvalidInputError("download cancelled")
                    if self._on_file is not None:
                        self._on_file(name)
                    with self._hub.errors(f"download {name}"):
                        path = Path(
                            hf_hub_download(
                                self._hub.repo_id,
                                name,
                                revision=self._commit,
                                cache_dir=self._cache_dir,
                                endpoint=self._hub.endpoint,
                                token=self._hub.token or False,
                                library_name="patchctl",
                                tqdm_class=counted,  # type: ignore[arg-type]
                            )
                        )
                except BaseException as exc:
                    self._errors.setdefault(name, exc)
                    self._done[name].set()
                    continue
                verifier.submit(self._verify, name, sha256, path)

    def _verify(self, name: str, sha256: str, path: Path) -> None:
        from patchctl._fs import sha256_file

        try:
            if sha256_file(path) != sha256:
                if path.is_symlink():
                    path.resolve().unlink(missing_ok=True)
                path.unlink(missing_ok=True)
                raise IntegrityError(
                    f"{self._hub.what}: sha256 mismatch after download ({name}): not the bytes the Hub lists; "
                    "nothing merged",
                    hint="the damaged file was removed from the HF cache; retry, and report it to the repo "
                    "owner if it recurs",
                )
            self._paths[name] = path
        except BaseException as exc:
            self._errors[name] = exc
        finally:
            self._done[name].set()

    def wait(self, name: str, stopped: threading.Event | None = None) -> Path:
        """The verified local path of weight file ``name`` (blocks until it is downloaded, or
        raises once ``stopped`` is set: the merge waiting for it has given up)."""
        while not self._done[name].wait(0.2):
            if stopped is not None and stopped.is_set():
                raise InvalidInputError(f"{self._hub.what}: merge stopped while {name} was downloading")
        if name in self._errors:
            raise self._errors[name]
        return self._paths[name]

    def close(self) -> None:
        """Stop after the file being downloaded (what is complete stays in the HF cache)."""
        self._cancel.set()
        if self._thread.is_alive():
            self._thread.join()
        shutil.rmtree(self.skeleton, ignore_errors=True)


def stream_base(
    ref: HubRef,
    weights: Sequence[tuple[str, str, int]],
    *,
    token: str | None = None,
    endpoint: str | None = None,
    cache_dir: Path | None = None,
    on_bytes: Callable[[int], None] | None = None,
    on_file: Callable[[str], None] | None = None,
    start: bool = True,
) -> ArrivingBase:
    """Start downloading a base at the commit ``ref.revision`` into the HF cache, shard by shard.

    ``weights`` are the (file, sha256, size) the checks saw, in the order the merge reads them:
    only those are fetched (the shards an index names; not a ``consolidated.safetensors`` beside
    them), plus the base's small non-weight files (config, index, tokenizer), which are here when
    this returns. ``on_bytes(n)`` is called as weight bytes arrive, ``on_file(name)`` as each file
    starts. With ``start=False`` the weights wait for :meth:`ArrivingBase.start` (plan from the
    skeleton first: a refused plan then downloads nothing). Call :meth:`ArrivingBase.close` when done."""
    from huggingface_hub import HfApi, hf_hub_download

    hub = _HubBase(ref, token, endpoint)
    api = HfApi(endpoint=hub.endpoint, token=hub.token or False, library_name="patchctl")
    with hub.errors("repo info"):
        info = api.model_info(hub.repo_id, revision=hub.revision)
    commit = str(info.sha)
    cache = cache_dir or hf_cache_dir()
    wanted = {name for name, _, _ in weights}
    small = sorted(
        s.rfilename
        for s in info.siblings or ()
        if "/" not in s.rfilename
        and s.rfilename not in wanted
        and not s.rfilename.endswith(".safetensors")
        and any(fnmatch.fnmatch(s.rfilename, p) for p in SMALL_FILE_PATTERNS)
    )
    skeleton = Path(tempfile.mkdtemp(prefix="patchctl-base-plan-"))
    try:
        snapshot: Path | None = None
        for name in small:
            with hub.errors(f"download {name}"):
                path = Path(
                    hf_hub_download(
                        hub.repo_id,
                        name,
                        revision=commit,
                        cache_dir=cache,
                        endpoint=hub.endpoint,
                        token=hub.token or False,
                        library_name="patchctl",
                        tqdm_class=_Counted,  # type: ignore[arg-type]
                    )
                )
            snapshot = path.parent
            (skeleton / name).symlink_to(path)
        for name, _, _ in weights:
            head = hub.header(commit, name)
            raw = json.dumps(head, separators=(",", ":")).encode("utf-8")
            (skeleton / name).write_bytes(struct.pack("<Q", len(raw)) + raw)
            # a sparse file of the real size (no disk used), so the header reads as complete
            data = max((int(v["data_offsets"][1]) for k, v in head.items() if k != "__metadata__"), default=0)
            os.truncate(skeleton / name, 8 + len(raw) + data)
    except BaseException:
        shutil.rmtree(skeleton, ignore_errors=True)
        raise
    if snapshot is None:  # no small file at all: where hf_hub_download puts this commit's files
        snapshot = cache / f"models--{hub.repo_id.replace('/', '--')}" / "snapshots" / commit
    arriving = ArrivingBase(hub, commit, weights, cache, skeleton, snapshot, on_bytes, on_file)
    return arriving.start() if start else arriving
