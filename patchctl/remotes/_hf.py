"""Talking to the Hugging Face Hub through ``huggingface_hub``: endpoint, token and cache resolved
at call time (never at import), and the one table that turns its errors into ours.

``huggingface_hub`` reads ``HF_ENDPOINT``/``HF_HOME``/the token path into module constants when it
is imported; patchctl resolves them itself when a remote is opened, so settings changed after
import (tests, long-running processes) are honoured.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from patchctl._secrets import redact
from patchctl.errors import (
    AuthError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PatchctlError,
    RemoteError,
)

__all__ = ["DEFAULT_ENDPOINT", "hf_cache_dir", "hf_endpoint", "hf_home", "hub_errors", "resolve_token", "scrub"]

DEFAULT_ENDPOINT = "https://huggingface.co"


def hf_home(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser()
    xdg = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface"


def hf_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where the HF cache lives now: ``HF_HUB_CACHE`` > ``HF_HOME/hub`` > ``~/.cache/huggingface/hub``."""
    env = os.environ if env is None else env
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    return Path(explicit).expanduser() if explicit else hf_home(env) / "hub"


def hf_endpoint(explicit: str | None = None, env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return (explicit or env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def resolve_token(explicit: str | None = None, env: Mapping[str, str] | None = None) -> str | None:
    """explicit > ``HF_TOKEN`` > ``HUGGING_FACE_HUB_TOKEN`` > the token ``hf auth login`` stored
    (``HF_TOKEN_PATH`` or ``HF_HOME/token``). None when there is none."""
    if explicit:
        return explicit.strip()
    env = os.environ if env is None else env
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        value = (env.get(var) or "").strip()
        if value:
            return value
    path = Path(env.get("HF_TOKEN_PATH") or hf_home(env) / "token").expanduser()
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return value or None


def scrub(text: str, token: str | None) -> str:
    """One line, with the token (and anything that looks like one) replaced by ``***``."""
    if token:
        text = text.replace(token, "***")
    text = redact(text)
    return " ".join(text.split())


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def _server_message(exc: BaseException) -> str | None:
    msg = getattr(exc, "server_message", None)
    if isinstance(msg, str) and msg.strip():
        return msg.strip().splitlines()[0]
    return None


def translate(exc: BaseException, what: str, endpoint: str, token: str | None) -> PatchctlError | None:
    """Our error for an exception raised by huggingface_hub (or its HTTP stack); None if unknown."""
    import httpx2
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, ValueError) and str(exc).startswith("Invalid metadata in README.md"):
        # the client validates README.md metadata with the Hub before uploading anything
        detail = "; ".join(ln.lstrip("- ").strip() for ln in str(exc).splitlines()[1:] if ln.strip())
        return InvalidInputError(scrub(f"{what}: the Hub rejected the model card metadata ({detail})", token))
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for e in chain:
        if isinstance(e, HfHubHTTPError) and _status(e) is not None:
            status = _status(e)
            server_detail = _server_message(e)
            suffix = f": {server_detail}" if server_detail else ""
            if status in (401, 403):
                return AuthError(
                    scrub(f"{what}: {endpoint} refused the credentials (HTTP {status}){suffix}", token),
                    hint="set HF_TOKEN or run `hf auth login` with a token that can access this repo"
                    if token is None
                    else "check that the token is valid and has access to this repo (it was not printed)",
                )
            if isinstance(e, RevisionNotFoundError):
                return NotFoundError(scrub(f"{what}: revision not found on {endpoint}", token))
            if isinstance(e, RemoteEntryNotFoundError):
                return NotFoundError(scrub(f"{what}: file not found on {endpoint}", token))
            if isinstance(e, RepositoryNotFoundError) or status == 404:
                return NotFoundError(scrub(f"{what}: repository not found on {endpoint}", token))
            if status in (409, 412):
                return ConflictError(
                    scrub(f"{what}: the repository changed concurrently (HTTP {status}){suffix}", token),
                    hint="retry; published versions are immutable, so a retry cannot overwrite one",
                )
            if status == 400:
                return InvalidInputError(scrub(f"{what}: {endpoint} rejected the request{suffix}", token))
            return RemoteError(
                scrub(f"{what}: {endpoint} answered HTTP {status}{suffix}", token),
                hint="the Hub may be having trouble; retry later",
            )
        if isinstance(e, (httpx2.TimeoutException, TimeoutError)):
            return RemoteError(
                scrub(f"{what}: {endpoint} timed out ({type(e).__name__}: {_first_line(e)})", token),
                hint="the Hub stopped answering; retry later (HF_HUB_DOWNLOAD_TIMEOUT sets the limit)",
            )
        if isinstance(e, (httpx2.TransportError, OfflineModeIsEnabled, ConnectionError)):
            return RemoteError(
                scrub(f"{what}: cannot reach {endpoint} ({type(e).__name__}: {_first_line(e)})", token),
                hint="check the network, HF_ENDPOINT and HF_HUB_OFFLINE",
            )
    for e in chain:
        if isinstance(e, LocalEntryNotFoundError):
            return RemoteError(
                scrub(f"{what}: cannot reach {endpoint} and the file is not in the local cache", token),
                hint="check the network, HF_ENDPOINT and HF_HUB_OFFLINE",
            )
        if isinstance(e, OSError) and "Consistency check failed" in str(e):
            return RemoteError(scrub(f"{what}: download from {endpoint} was cut short; retry", token))
    return None


@contextmanager
def hub_errors(what: str, endpoint: str, token: str | None) -> Iterator[None]:
    """Turn huggingface_hub's errors into patchctl's one tree (one line, token never shown)."""
    try:
        yield
    except PatchctlError:
        raise
    except Exception as exc:
        mapped = translate(exc, what, endpoint, token)
        if mapped is None:
            raise
        raise mapped from None
