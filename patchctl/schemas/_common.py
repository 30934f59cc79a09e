"""Shared pydantic building blocks: strict frozen models, safe relative paths, hex digests."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from patchctl.errors import InvalidInputError

__all__ = [
    "SafeRelPath",
    "Sha256",
    "StrictModel",
    "check_safe_relpath",
    "format_validation_error",
]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class StrictModel(BaseModel):
    """Our own formats: frozen, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_sha256(value: str) -> str:
    if not _SHA256.fullmatch(value):
        raise ValueError("must be 64 lowercase hex characters (a sha256 digest)")
    return value


def check_safe_relpath(value: str) -> str:
    """A relative POSIX path that cannot escape its directory (no '..', no absolute, no backslash)."""
    if not value or value != value.strip():
        raise ValueError("must be a non-empty relative path without surrounding spaces")
    if "\\" in value or "\x00" in value or ":" in value:
        raise ValueError(f"{value!r}: backslashes, colons and NUL are not allowed in file names")
    if value.startswith("/"):
        raise ValueError(f"{value!r}: must be relative, not absolute")
    parts = value.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{value!r}: '.', '..' and empty path segments are not allowed")
    return value


Sha256 = Annotated[str, AfterValidator(_check_sha256)]
SafeRelPath = Annotated[str, AfterValidator(check_safe_relpath)]


def format_validation_error(exc: ValidationError, what: str) -> str:
    """One line: ``<what>: field.path: problem; other.field: problem``."""
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        problems.append(f"{loc}: {err['msg']}")
    return f"{what}: " + "; ".join(problems)


def raise_invalid(exc: ValidationError, what: str, error: type[InvalidInputError]) -> None:
    raise error(format_validation_error(exc, what)) from None
