"""The Hub-compatible server: storage model, routes, fault injection, byte accounting.

Storage: blobs live on disk under a temporary directory, keyed by sha256 (LFS objects and
regular files alike); repos, commits, branches and tags live in memory. A commit id is the
sha1 of its parent, message and file table (content-addressed). Revisions resolve by
branch, tag, full commit id or a unique commit-id prefix (>= 7 characters).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import socket
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

LFS_SUFFIXES = (
    ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf", ".model",
    ".npy", ".npz", ".pkl", ".pickle", ".tar", ".gz", ".zip", ".zst", ".arrow", ".parquet", ".tflite",
)  # fmt: skip
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES).encode()
REPO_KEYWORDS = {"preupload", "commit", "tag", "refs", "revision", "tree", "paths-info", "branch", "commits"}
BASE_MODEL_RELATIONS = {"adapter", "merge", "quantized", "finetune"}
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class StoredFile:
    path: str
    sha256: str
    size: int
    lfs: bool
    #: git blob id: sha1 of the content (regular) or of the LFS pointer (LFS)
    git_oid: str

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid


@dataclass
class Commit:
    oid: str
    parent: str | None
    files: dict[str, StoredFile]
    title: str
    date: str


@dataclass
class Repo:
    repo_id: str
    private: bool = False
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    created_at: str = ""

    def resolve(self, rev: str) -> Commit | None:
        oid = self.branches.get(rev) or self.tags.get(rev)
        if oid is None and rev in self.commits:
            oid = rev
        if oid is None and len(rev) >= 7 and re.fullmatch(r"[0-9a-f]+", rev):
            cands = [c for c in self.commits if c.startswith(rev)]
            oid = cands[0] if len(cands) == 1 else None
        return self.commits.get(oid) if oid else None


@dataclass
class Fault:
    """One injected failure. ``mode``: ``status`` (answer ``status`` with a JSON error), ``drop``
    (send headers, then half the body, then close the connection), ``reset`` (close at once),
    ``stall`` (hold the answer ``delay`` seconds: a file download sends its headers and half the body
    first, any other route sends nothing; then the connection is closed) — longer than the client's
    timeout, it is a Hub that stops answering mid-request."""

    status: int = 500
    method: str | None = None
    path_contains: str | None = None
    route: str | None = None
    mode: str = "status"
    remaining: int = 1
    delay: float = 5.0

    def matches(self, method: str, path: str, route: str) -> bool:
        return (
            self.remaining > 0
            and (self.method is None or self.method == method)
            and (self.path_contains is None or self.path_contains in unquote(path))
            and (self.route is None or self.route == route)
        )


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    route: str
    status: int
    bytes_out: int
    range: str | None = None


class HttpError(Exception):
    def __init__(self, status: int, message: str, *, code: str | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.body = body


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def split_front_matter(content: str) -> tuple[str | None, str]:
    """(YAML text, body) of a model card; (None, content) when it has no front matter."""
    if not content.startswith("---"):
        return None, content
    m = re.match(r"^---[ \t]*\r?\n(.*?)(?:\r?\n)?^---[ \t]*(?:\r?\n|$)", content, flags=re.S | re.M)
    if m is None:
        return None, content
    return m.group(1), content[m.end() :]


def validate_card_metadata(content: str) -> tuple[dict[str, Any], list[str]]:
    """Parse and validate the YAML metadata of a README.md like the Hub does: (metadata, errors)."""
    text, _ = split_front_matter(content)
    if text is None:
        return {}, []
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return {}, [f"Invalid YAML in metadata: {str(exc).splitlines()[0]}"]
    if data is None:
        return {}, []
    if not isinstance(data, dict):
        return {}, ["Metadata must be a YAML mapping"]
    errors = []
    if "license" in data and not isinstance(data["license"], str):
        errors.append('"license" must be a string')
    if "library_name" in data and not isinstance(data["library_name"], str):
        errors.append('"library_name" must be a string')
    if "tags" in data and not (isinstance(data["tags"], list) and all(isinstance(t, str) for t in data["tags"])):
        errors.append('"tags" must be an array of strings')
    if "base_model" in data:
        bm = data["base_model"]
        ids = bm if isinstance(bm, list) else [bm]
        if not ids or not all(isinstance(b, str) and _REPO_ID.fullmatch(b) for b in ids):
            errors.append('"base_model" must be a valid model id or a list of model ids')
    if "base_model_relation" in data:
        if data["base_model_relation"] not in BASE_MODEL_RELATIONS:
            errors.append(f'"base_model_relation" must be one of {sorted(BASE_MODEL_RELATIONS)}')
        if "base_model" not in data:
            errors.append('"base_model_relation" requires "base_model"')
    return data, errors


class HubServer:
    """Start with :meth:`start`; ``url`` is the endpoint to give the client."""

    def __init__(self, storage_dir: Path | None = None) -> None:
        self._tmp = None if storage_dir else tempfile.TemporaryDirectory(prefix="hubserver-")
        self.root = Path(storage_dir or self._tmp.name)  # type: ignore[union-attr]
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.repos: dict[str, Repo] = {}
        self.lock = threading.RLock()
        self.faults: list[Fault] = []
        self.records: list[RequestRecord] = []
        self.token: str | None = None
        self.port = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._upload_secret = secrets.token_hex(8)
        self.connections: set[socket.socket] = set()
        self.stopping = threading.Event()  # set by stop(): stalled answers end at once

    # ---- lifecycle ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HubServer:
        hub = self

        class Handler(_Handler):
            server_hub = hub

        ThreadingHTTPServer.allow_reuse_address = True
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.stopping.clear()
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (the storage is kept: :meth:`start` again serves the same repos on the same port)."""
        self.stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        with self.lock:  # kept-alive client connections go down with the server
            for conn in list(self.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self.connections.clear()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    @property
    def running(self) -> bool:
        return self._httpd is not None

    # ---- test controls --------------------------------------------------------------------
    def require_token(self, token: str | None) -> None:
        """Every request (except the presigned LFS upload) must carry ``Authorization: Bearer <token>``."""
        self.token = token

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 500,
        method: str | None = None,
        path_contains: str | None = None,
        route: str | None = None,
        mode: str = "status",
        delay: float = 5.0,
    ) -> Fault:
        fault = Fault(status, method, path_contains, route, mode, count, delay)
        with self.lock:
            self.faults.append(fault)
        return fault

    def reset_counters(self) -> None:
        with self.lock:
            self.records.clear()

    @property
    def bytes_served(self) -> int:
        with self.lock:
            return sum(r.bytes_out for r in self.records)

    def bytes_for(self, route: str | None = None, method: str | None = None) -> int:
        with self.lock:
            return sum(
                r.bytes_out
                for r in self.records
                if (route is None or r.route == route) and (method is None or r.method == method)
            )

    def requests_for(self, route: str | None = None, method: str | None = None) -> list[RequestRecord]:
        with self.lock:
            return [
                r
                for r in self.records
                if (route is None or r.route == route) and (method is None or r.method == method)
            ]

    # ---- storage helpers ------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def store_bytes(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        p = self.blob_path(sha)
        if not p.exists():
            tmp = p.with_name(p.name + f".{secrets.token_hex(4)}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, p)
        return sha

    def store_file(self, src: Path) -> tuple[str, int]:
        h = hashlib.sha256()
        tmp = self.root / "blobs" / f".in.{secrets.token_hex(6)}"
        with open(src, "rb") as f, open(tmp, "wb") as out:
            while chunk := f.read(8 << 20):
                h.update(chunk)
                out.write(chunk)
        sha = h.hexdigest()
        size = tmp.stat().st_size
        if self.blob_path(sha).exists():
            tmp.unlink()
        else:
            os.replace(tmp, self.blob_path(sha))
        return sha, size

    def make_stored_file(self, path: str, sha256: str, size: int, *, lfs: bool | None = None) -> StoredFile:
        if lfs is None:
            lfs = is_lfs_path(path, size)
        if lfs:
            return StoredFile(path, sha256, size, True, git_blob_sha1(lfs_pointer(sha256, size)))
        return StoredFile(path, sha256, size, False, git_blob_sha1(self.blob_path(sha256).read_bytes()))

    def create_repo(self, repo_id: str, *, private: bool = False) -> Repo:
        with self.lock:
            if repo_id in self.repos:
                raise HttpError(409, "You already created this model repo", body={"url": f"{self.url}/{repo_id}"})
            repo = Repo(repo_id, private=private, created_at=_now())
            sha = self.store_bytes(GITATTRIBUTES)
            files = {".gitattributes": self.make_stored_file(".gitattributes", sha, len(GITATTRIBUTES), lfs=False)}
            commit = self.new_commit(repo, None, files, "initial commit")
            repo.branches["main"] = commit.oid
            self.repos[repo_id] = repo
            return repo

    def new_commit(self, repo: Repo, parent: str | None, files: dict[str, StoredFile], title: str) -> Commit:
        table = sorted((f.path, f.sha256, f.size, f.lfs) for f in files.values())
        oid = hashlib.sha1(json.dumps([parent, title, table, len(repo.commits)]).encode()).hexdigest()
        commit = Commit(oid, parent, dict(files), title, _now())
        repo.commits[oid] = commit
        return commit

    def seed_repo(self, repo_id: str, src_dir: Path, *, tag: str | None = None, message: str = "upload") -> str:
        """Store every file of ``src_dir`` as one commit on main (no HTTP); returns the commit id."""
        with self.lock:
            repo = self.repos.get(repo_id) or self.create_repo(repo_id)
            head = repo.commits[repo.branches["main"]]
            files = dict(head.files)
            for p in sorted(Path(src_dir).rglob("*")):
                if p.is_file():
                    rel = p.relative_to(src_dir).as_posix()
                    sha, size = self.store_file(p)
                    files[rel] = self.make_stored_file(rel, sha, size)
            commit = self.new_commit(repo, head.oid, files, message)
            repo.branches["main"] = commit.oid
            if tag:
                repo.tags[tag] = commit.oid
            return commit.oid

    def file_at(self, repo_id: str, path: str, revision: str = "main") -> StoredFile:
        with self.lock:
            commit = self.repos[repo_id].resolve(revision)
            assert commit is not None, revision
            return commit.files[path]

    def corrupt(self, repo_id: str, path: str, revision: str = "main") -> None:
        """Flip bytes of the stored blob of ``path`` at ``revision`` (same size; metadata still claims the old sha)."""
        stored = self.file_at(repo_id, path, revision)
        blob = self.blob_path(stored.sha256)
        data = bytearray(blob.read_bytes())
        for i in range(0, len(data), max(1, len(data) // 16)):
            data[i] ^= 0xFF
        blob.write_bytes(bytes(data))

    def refs(self, repo_id: str) -> dict[str, dict[str, str]]:
        with self.lock:
            repo = self.repos[repo_id]
            return {"branches": dict(repo.branches), "tags": dict(repo.tags)}

    def commit_count(self, repo_id: str) -> int:
        with self.lock:
            return len(self.repos[repo_id].commits)


def is_lfs_path(path: str, size: int) -> bool:
    return path.endswith(LFS_SUFFIXES) or size >= LFS_SIZE_THRESHOLD


def _card_tags(meta: dict[str, Any]) -> list[str]:
    tags = [t for t in meta.get("tags") or [] if isinstance(t, str)]
    if isinstance(meta.get("library_name"), str):
        tags.append(meta["library_name"])
    if isinstance(meta.get("license"), str):
        tags.append(f"license:{meta['license']}")
    bm = meta.get("base_model")
    if isinstance(bm, str):
        rel = meta.get("base_model_relation")
        tags.append(f"base_model:{rel}:{bm}" if isinstance(rel, str) else f"base_model:{bm}")
    return list(dict.fromkeys(tags))


class _Handler(BaseHTTPRequestHandler):
    server_hub: HubServer
    protocol_version = "HTTP/1.1"
    _body: bytes = b""
    _stall: float | None = None

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        with self.hub.lock:
            self.hub.connections.add(self.connection)

    def finish(self) -> None:
        with self.hub.lock:
            self.hub.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    # ---- plumbing -------------------------------------------------------------------------
    @property
    def hub(self) -> HubServer:
        return self.server_hub

    def _read_body(self) -> bytes:
        return self._body

    def _read_raw_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                line = self.rfile.readline()
                n = int(line.split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(n)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _record(self, route: str, status: int, nbytes: int) -> None:
        with self.hub.lock:
            self.hub.records.append(
                RequestRecord(self.command, self.path, route, status, nbytes, self.headers.get("Range"))
            )

    def _send(
        self,
        status: int,
        body: bytes = b"",
        *,
        route: str,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
        length: int | None = None,
    ) -> None:
        self.send_response(status)
        hdrs = {"Content-Type": content_type, **(headers or {})}
        for k, v in hdrs.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        written = 0
        if self.command != "HEAD" and body:
            self.wfile.write(body)
            written = len(body)
        self._record(route, status, written + sum(len(k) + len(v) + 4 for k, v in hdrs.items()))

    def _json(self, status: int, data: Any, *, route: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), route=route, headers=headers)

    def _error(self, exc: HttpError, route: str) -> None:
        headers = {"X-Error-Message": exc.message}
        if exc.code:
            headers["X-Error-Code"] = exc.code
        body = {"error": exc.message, **(exc.body or {})}
        self._json(exc.status, body, route=route, headers=headers)

    def _fault(self, route: str) -> Fault | None:
        with self.hub.lock:
            for fault in self.hub.faults:
                if fault.matches(self.command, self.path, route):
                    fault.remaining -= 1
                    return fault
        return None

    def _check_auth(self, route: str) -> None:
        if self.hub.token is None or route == "lfs-upload":
            return
        auth = self.headers.get("Authorization") or ""
        if not auth:
            raise HttpError(401, "Invalid username or password.", code="RepoNotFound" if route != "whoami" else None)
        if auth != f"Bearer {self.hub.token}":
            raise HttpError(401, "Invalid credentials in Authorization header")

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        segs = [unquote(s) for s in parts.path.strip("/").split("/")] if parts.path.strip("/") else []
        query = parse_qs(parts.query)
        route, handler, args = self._route(segs)
        self._body = self._read_raw_body() if self.command in ("POST", "PUT") else b""
        try:
            fault = self._fault(route)
            if fault is not None and fault.mode == "reset":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                self._record(route, 0, 0)
                return
            if fault is not None and fault.mode == "status":
                raise HttpError(fault.status, f"Injected failure ({fault.status})")
            self._stall = fault.delay if fault is not None and fault.mode == "stall" else None
            if self._stall is not None and not (route == "resolve" and self.command == "GET"):
                self.hub.stopping.wait(self._stall)
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                self._record(route, 0, 0)
                return
            self._check_auth(route)
            if handler is None:
                raise HttpError(404, f"Not found: {parts.path}")
            handler(*args, query=query, drop=fault is not None and fault.mode == "drop")
        except HttpError as exc:
            self._error(exc, route)

    def _route(self, segs: list[str]) -> tuple[str, Any, tuple[Any, ...]]:
        m = self.command
        if segs[:2] == ["api", "repos"] and segs[2:] == ["create"] and m == "POST":
            return "create-repo", self.h_create_repo, ()
        if segs[:2] == ["api", "validate-yaml"] and m == "POST":
            return "validate-yaml", self.h_validate_yaml, ()
        if segs[:2] == ["api", "whoami-v2"]:
            return "whoami", self.h_whoami, ()
        if segs[:2] == ["api", "models"]:
            rest = segs[2:]
            if not rest:
                return "list-models", self.h_list_models, ()
            if len(rest) >= 3 and rest[2] in REPO_KEYWORDS:
                repo_id, action, tail = "/".join(rest[:2]), rest[2], rest[3:]
            elif len(rest) >= 2 and rest[1] in REPO_KEYWORDS:
                repo_id, action, tail = rest[0], rest[1], rest[2:]
            else:
                return "model-info", self.h_model_info, ("/".join(rest), None)
            table = {
                ("preupload", "POST"): ("preupload", self.h_preupload),
                ("commit", "POST"): ("commit", self.h_commit),
                ("tag", "POST"): ("tag", self.h_tag),
                ("refs", "GET"): ("refs", self.h_refs),
                ("revision", "GET"): ("model-info", self.h_model_info),
                ("tree", "GET"): ("tree", self.h_tree),
                ("paths-info", "POST"): ("paths-info", self.h_paths_info),
                ("commits", "GET"): ("commits", self.h_commits),
            }
            name, h = table.get((action, m), (action, None))
            if h is None:
                return name, None, ()
            if action == "refs":
                return name, h, (repo_id,)
            if action == "revision":
                return name, h, (repo_id, tail[0] if tail else None)
            return name, h, (repo_id, tail[0] if tail else "main", "/".join(tail[1:]))
        if segs[:1] == ["lfs-upload"] and m == "PUT":
            return "lfs-upload", self.h_lfs_upload, (segs[1] if len(segs) > 1 else "",)
        if segs[:1] == ["lfs-verify"] and m == "POST":
            return "lfs-verify", self.h_lfs_verify, ()
        for i, s in enumerate(segs[:2]):
            if s.endswith(".git") and segs[i + 1 : i + 5] == ["info", "lfs", "objects", "batch"] and m == "POST":
                return "lfs-batch", self.h_lfs_batch, ("/".join([*segs[:i], s[:-4]]),)
        for n in (2, 1):
            if len(segs) > n + 2 and segs[n] == "resolve" and m in ("GET", "HEAD"):
                return "resolve", self.h_resolve, ("/".join(segs[:n]), segs[n + 1], "/".join(segs[n + 2 :]))
        return "unknown", None, ()

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    # ---- helpers --------------------------------------------------------------------------
    def _repo(self, repo_id: str) -> Repo:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            raise HttpError(404, "Repository not found", code="RepoNotFound")
        return repo

    def _commit(self, repo: Repo, rev: str) -> Commit:
        commit = repo.resolve(rev)
        if commit is None:
            raise HttpError(404, f"Invalid rev id: {rev}", code="RevisionNotFound")
        return commit

    def _json_body(self) -> Any:
        raw = self._read_body()
        try:
            return json.loads(raw or b"{}")
        except json.JSONDecodeError:
            raise HttpError(400, "Invalid JSON body") from None

    def _entry(self, f: StoredFile) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "oid": f.git_oid, "size": f.size, "path": f.path}
        if f.lfs:
            entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
        return entry

    def _card_meta(self, commit: Commit) -> dict[str, Any]:
        f = commit.files.get("README.md")
        if f is None:
            return {}
        meta, _ = validate_card_metadata(self.hub.blob_path(f.sha256).read_bytes().decode("utf-8", "replace"))
        return meta

    def _info(self, repo: Repo, commit: Commit, *, blobs: bool, card: bool = True) -> dict[str, Any]:
        meta = self._card_meta(commit)
        siblings = []
        for f in sorted(commit.files.values(), key=lambda f: f.path):
            s: dict[str, Any] = {"rfilename": f.path}
            if blobs:
                s.update(size=f.size, blobId=f.git_oid)
                if f.lfs:
                    s["lfs"] = {"size": f.size, "sha256": f.sha256, "pointerSize": f.pointer_size}
            siblings.append(s)
        info: dict[str, Any] = {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": _card_tags(meta),
            "library_name": meta.get("library_name"),
            "siblings": siblings,
        }
        if card:
            info["cardData"] = meta or None
        return info

    # ---- routes -------------------------------------------------------------------------
    def h_whoami(self, *, query: dict[str, list[str]], drop: bool) -> None:
        if not self.headers.get("Authorization"):
            raise HttpError(401, "Invalid credentials in Authorization header")
        self._json(200, {"type": "user", "name": "patchctl-tester", "orgs": []}, route="whoami")

    def h_create_repo(self, *, query: dict[str, list[str]], drop: bool) -> None:
        payload = self._json_body()
        name, org = payload.get("name"), payload.get("organization")
        if payload.get("type") not in (None, "model"):
            raise HttpError(400, "This test server only hosts model repos")
        repo_id = f"{org}/{name}" if org else f"patchctl-tester/{name}"
        if not isinstance(name, str) or not _REPO_ID.fullmatch(repo_id):
            raise HttpError(400, f"Invalid repo name: {repo_id}")
        private = payload.get("private") is True or payload.get("visibility") == "private"
        with self.hub.lock:
            self.hub.create_repo(repo_id, private=private)
        self._json(200, {"url": f"{self.hub.url}/{repo_id}", "name": repo_id, "id": repo_id}, route="create-repo")

    def h_validate_yaml(self, *, query: dict[str, list[str]], drop: bool) -> None:
        payload = self._json_body()
        _, errors = validate_card_metadata(str(payload.get("content", "")))
        status = 400 if errors else 200
        body = {"errors": [{"message": e} for e in errors], "warnings": []}
        headers = {"X-Error-Message": errors[0]} if errors else None
        self._json(status, body, route="validate-yaml", headers=headers)

    def h_model_info(self, repo_id: str, rev: str | None, *, query: dict[str, list[str]], drop: bool) -> None:
        with self.hub.lock:
            repo = self._repo(repo_id)
            commit = self._commit(repo, rev or "main")
            info = self._info(repo, commit, blobs="blobs" in query and query["blobs"][0].lower() in ("1", "true"))
        self._json(200, info, route="model-info")

    def h_list_models(self, *, query: dict[str, list[str]], drop: bool) -> None:
        filters = query.get("filter", [])
        search = (query.get("search") or [""])[0].lower()
        author = (query.get("author") or [None])[0]
        limit = int((query.get("limit") or ["1000"])[0])
        out = []
        with self.hub.lock:
            for repo in sorted(self.hub.repos.values(), key=lambda r: r.repo_id):
                commit = repo.commits[repo.branches["main"]]
                info = self._info(repo, commit, blobs=False, card="cardData" in query)
                del info["siblings"]
                if author and info["author"] != author:
                    continue
                if search and search not in repo.repo_id.lower():
                    continue
                if not all(f in info["tags"] or f == repo.repo_id for f in filters):
                    continue
                out.append(info)
        self._json(200, out[:limit], route="list-models")

    def h_refs(self, repo_id: str, *, query: dict[str, list[str]], drop: bool) -> None:
        with self.hub.lock:
            repo = self._repo(repo_id)
            data = {
                "branches": [
                    {"name": n, "ref": f"refs/heads/{n}", "targetCommit": c} for n, c in sorted(repo.branches.items())
                ],
                "converts": [],
                "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": c} for n, c in sorted(repo.tags.items())],
                "pullRequests": [],
            }
        self._json(200, data, route="refs")

    def h_commits(self, repo_id: str, rev: str, _tail: str, *, query: dict[str, list[str]], drop: bool) -> None:
        """``list_repo_commits``: the history of ``rev``, newest first (one page)."""
        with self.hub.lock:
            repo = self._repo(repo_id)
            commit: Commit | None = self._commit(repo, rev)
            out = []
            while commit is not None:
                out.append({"id": commit.oid, "title": commit.title, "message": "", "authors": [], "date": commit.date})
                commit = repo.commits.get(commit.parent) if commit.parent else None
        self._json(200, out, route="commits")

    def h_tag(self, repo_id: str, rev: str, _tail: str, *, query: dict[str, list[str]], drop: bool) -> None:
        payload = self._json_body()
        tag = payload.get("tag")
        if not isinstance(tag, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", tag):
            raise HttpError(400, f"Invalid tag name: {tag!r}")
        with self.hub.lock:
            repo = self._repo(repo_id)
            commit = self._commit(repo, rev)
            if tag in repo.tags or tag in repo.branches:
                raise HttpError(409, f"Tag {tag} already exists")
            repo.tags[tag] = commit.oid
        self._json(200, {}, route="tag")

    def h_preupload(self, repo_id: str, rev: str, _tail: str, *, query: dict[str, list[str]], drop: bool) -> None:
        payload = self._json_body()
        with self.hub.lock:
            repo = self._repo(repo_id)
            commit = self._commit(repo, rev)
            files = []
            for f in payload.get("files", []):
                path, size = f["path"], int(f["size"])
                sample = base64.b64decode(f.get("sample", ""))
                lfs = is_lfs_path(path, size) or b"\x00" in sample
                existing = commit.files.get(path)
                oid = None
                if existing is not None:
                    oid = existing.sha256 if existing.lfs else existing.git_oid
                files.append(
                    {"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
                )
        self._json(200, {"files": files, "commitOid": commit.oid}, route="preupload")

    def h_lfs_batch(self, repo_id: str, *, query: dict[str, list[str]], drop: bool) -> None:
        payload = self._json_body()
        with self.hub.lock:
            self._repo(repo_id)
        if payload.get("operation") != "upload":
            raise HttpError(400, "Only uploads are supported")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if not self.hub.blob_path(oid).exists():
                sig = hashlib.sha256(f"{self.hub._upload_secret}{oid}{size}".encode()).hexdigest()[:16]
                entry["actions"] = {
                    "upload": {"href": f"{self.hub.url}/lfs-upload/{oid}?size={size}&sig={sig}"},
                    "verify": {"href": f"{self.hub.url}/lfs-verify"},
                }
            objects.append(entry)
        self._json(200, {"transfer": "basic", "objects": objects}, route="lfs-batch")

    def h_lfs_upload(self, oid: str, *, query: dict[str, list[str]], drop: bool) -> None:
        size = int((query.get("size") or ["-1"])[0])
        sig = (query.get("sig") or [""])[0]
        expected = hashlib.sha256(f"{self.hub._upload_secret}{oid}{size}".encode()).hexdigest()[:16]
        data = self._read_body()
        if sig != expected:
            raise HttpError(403, "Invalid upload signature")
        if len(data) != size or hashlib.sha256(data).hexdigest() != oid:
            raise HttpError(400, "Uploaded content does not match its oid and size")
        self.hub.store_bytes(data)
        self._send(200, b"", route="lfs-upload")

    def h_lfs_verify(self, *, query: dict[str, list[str]], drop: bool) -> None:
        payload = self._json_body()
        p = self.hub.blob_path(str(payload.get("oid")))
        if not p.exists() or p.stat().st_size != payload.get("size"):
            raise HttpError(404, "LFS object not found")
        self._json(200, {"success": True}, route="lfs-verify")

    def h_commit(self, repo_id: str, rev: str, _tail: str, *, query: dict[str, list[str]], drop: bool) -> None:
        raw = self._read_body()
        try:
            lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
        except json.JSONDecodeError:
            raise HttpError(400, "Invalid NDJSON payload") from None
        if query.get("create_pr"):
            raise HttpError(400, "Pull requests are not supported by the test server")
        with self.hub.lock:
            repo = self._repo(repo_id)
            if rev not in repo.branches:
                raise HttpError(404, f"Invalid rev id: {rev}", code="RevisionNotFound")
            head = repo.commits[repo.branches[rev]]
            files = dict(head.files)
            header: dict[str, Any] = {}
            for item in lines:
                key, value = item.get("key"), item.get("value") or {}
                if key == "header":
                    header = value
                elif key == "file":
                    data = base64.b64decode(value["content"])
                    sha = self.hub.store_bytes(data)
                    files[value["path"]] = self.hub.make_stored_file(value["path"], sha, len(data), lfs=False)
                elif key == "lfsFile":
                    oid = value["oid"]
                    blob = self.hub.blob_path(oid)
                    if not blob.exists():
                        raise HttpError(422, f"LFS object {oid} for {value['path']} was not uploaded")
                    files[value["path"]] = self.hub.make_stored_file(value["path"], oid, blob.stat().st_size, lfs=True)
                elif key == "deletedFile":
                    if value["path"] not in files:
                        raise HttpError(404, "A file with this name doesn't exist", code="EntryNotFound")
                    del files[value["path"]]
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    for p in [p for p in files if p.startswith(prefix)]:
                        del files[p]
                else:
                    raise HttpError(400, f"Unknown commit operation {key!r}")
            parent = header.get("parentCommit")
            if parent and not head.oid.startswith(parent):
                raise HttpError(412, "A commit has happened since. Please refresh and try again.")
            if not header.get("summary"):
                raise HttpError(400, "Commit summary is required")
            readme = files.get("README.md")
            if readme is not None:
                _, errors = validate_card_metadata(self.hub.blob_path(readme.sha256).read_bytes().decode("utf-8"))
                if errors:
                    raise HttpError(400, "Invalid metadata in README.md: " + "; ".join(errors))
            commit = self.hub.new_commit(repo, head.oid, files, header["summary"])
            repo.branches[rev] = commit.oid
        self._json(
            200,
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self.hub.url}/{repo_id}/commit/{commit.oid}",
                "pullRequestUrl": None,
            },
            route="commit",
        )

    def _walk(self, commit: Commit, path: str, recursive: bool) -> Iterator[dict[str, Any]]:
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        if path and path in commit.files:
            raise HttpError(400, f"{path} is a file, not a directory")
        dirs: set[str] = set()
        found = not prefix
        for f in sorted(commit.files.values(), key=lambda f: f.path):
            if not f.path.startswith(prefix):
                continue
            found = True
            rel = f.path[len(prefix) :]
            parts = rel.split("/")
            for i in range(1, len(parts)):
                d = prefix + "/".join(parts[:i])
                if (recursive or i == 1) and d not in dirs:
                    dirs.add(d)
                    yield {"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
            if recursive or len(parts) == 1:
                yield self._entry(f)
        if not found:
            raise HttpError(404, f"{path} does not exist", code="EntryNotFound")

    def h_tree(self, repo_id: str, rev: str, path: str, *, query: dict[str, list[str]], drop: bool) -> None:
        recursive = (query.get("recursive") or ["false"])[0].lower() in ("1", "true")
        with self.hub.lock:
            commit = self._commit(self._repo(repo_id), rev)
            entries = list(self._walk(commit, path, recursive))
        self._json(200, entries, route="tree")

    def h_paths_info(self, repo_id: str, rev: str, _tail: str, *, query: dict[str, list[str]], drop: bool) -> None:
        raw = self._read_body().decode()
        ctype = self.headers.get("Content-Type", "")
        form = json.loads(raw) if "json" in ctype else parse_qs(raw)
        paths = form.get("paths", [])
        with self.hub.lock:
            commit = self._commit(self._repo(repo_id), rev)
            out = []
            for p in paths if isinstance(paths, list) else [paths]:
                p = p.strip("/")
                if p in commit.files:
                    out.append(self._entry(commit.files[p]))
                elif any(f.startswith(p + "/") for f in commit.files):
                    out.append({"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "path": p})
        self._json(200, out, route="paths-info")

    def h_resolve(self, repo_id: str, rev: str, path: str, *, query: dict[str, list[str]], drop: bool) -> None:
        with self.hub.lock:
            repo = self._repo(repo_id)
            commit = self._commit(repo, rev)
            stored = commit.files.get(path)
            if stored is None:
                raise HttpError(404, "Entry not found", code="EntryNotFound")
        headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{stored.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": f'inline; filename="{quote(path.rsplit("/", 1)[-1])}"',
        }
        if stored.lfs:
            headers["X-Linked-Etag"] = f'"{stored.sha256}"'
            headers["X-Linked-Size"] = str(stored.size)
        blob = self.hub.blob_path(stored.sha256)
        size = blob.stat().st_size
        start, end, status = 0, size - 1, 200
        rng = self.headers.get("Range")
        if rng and self.command == "GET":
            m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", rng)
            if m is None or (not m.group(1) and not m.group(2)):
                raise HttpError(416, "Invalid range")
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:
                start, end = max(0, size - int(m.group(2))), size - 1
            if start >= size or start > end:
                headers["Content-Range"] = f"bytes */{size}"
                raise HttpError(416, "Requested range not satisfiable")
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            status = 206
        length = end - start + 1 if size else 0
        self.send_response(status)
        headers["Content-Type"] = "application/octet-stream"
        headers["Content-Length"] = str(length)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        overhead = sum(len(k) + len(v) + 4 for k, v in headers.items())
        if self.command == "HEAD":
            self._record("resolve", status, overhead)
            return
        stall = self._stall
        limit = length // 2 if drop or stall is not None else length
        written = 0
        try:
            with open(blob, "rb") as f:
                f.seek(start)
                while written < limit:
                    chunk = f.read(min(1 << 20, limit - written))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    written += len(chunk)
        finally:
            self._record("resolve", status, overhead + written)
        if stall is not None:
            self.wfile.flush()
            self.hub.stopping.wait(stall)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
        elif drop:
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)


__all__ = ["Fault", "HubServer", "RequestRecord"]
