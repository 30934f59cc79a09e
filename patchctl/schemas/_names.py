"""The rules for patch names, versions and relative paths, without pydantic: the catalog's read
path (``patchctl list``) uses them without loading the models, which use them too."""

from __future__ import annotations

import re

from packaging.version import InvalidVersion, Version

__all__ = ["check_patch_name", "check_safe_relpath", "normalize_version"]

_NAME_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_NAME = re.compile(rf"^{_NAME_PART}/{_NAME_PART}$")


def check_patch_name(value: str) -> str:
    """``namespace/name``: letters, digits, '.', '_' and '-', each part 1-96 chars (Hub repo id rules)."""
    if not _NAME.fullmatch(value) or ".." in value or "--" in value:
        raise ValueError(
            f"{value!r}: a patch name is 'namespace/name' (letters, digits, '.', '_', '-'; "
            "no '..' or '--'; each part at most 96 characters)"
        )
    return value


def normalize_version(value: str) -> str:
    """PEP 440 normal form of a version string (``1.0`` stays ``1.0``; ``v1.0.0`` → ``1.0.0``)."""
    try:
        return str(Version(value))
    except InvalidVersion:
        raise ValueError(f"{value!r} is not a valid PEP 440 version (e.g. 1.0.0, 1.2rc1)") from None


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
