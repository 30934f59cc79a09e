"""Shared pydantic building blocks: strict frozen models, safe relative paths, hex digests."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from patchctl.errors import InvalidInputError
from patchctl.schemas._names import check_safe_relpath

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
