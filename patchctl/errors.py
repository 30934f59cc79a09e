"""The one exception tree of patchctl.

Every error that patchctl raises on purpose derives from :class:`PatchctlError` and carries
the process exit code the CLI uses for it (the table in README.md, "Exit codes")::

    PatchctlError                      1   (base; never raised bare)
    ├── UsageError                     2   a missing or contradictory option (as click's usage errors)
    ├── NotFoundError(LookupError)     3   patch, version, alias, base, file or remote object missing
    ├── InvalidInputError(ValueError)  4   bad flag values, refs, manifests, adapters, base directories
    │   ├── RefError                       a patch/base reference that does not parse
    │   ├── AdapterError                   a PEFT adapter directory we cannot read
    │   └── ManifestError                  a patch.json that does not validate
    ├── ConflictError                  5   immutable version re-pushed with other content, destination exists
    ├── UnsupportedError               6   a valid input patchctl refuses to handle (DoRA, quantized bases, ...)
    ├── IntegrityError                 7   a file's sha256 differs from the one recorded
    ├── RemoteError                    8   the Hub or a directory remote failed (network, 5xx, bad answer)
    │   └── AuthError                  9   missing or rejected credentials
    ├── CatalogError                  10   the catalog database cannot be used
    │   └── StaleSchemaError               schema older/newer than this patchctl; message has the fix
    ├── OSFailureError(OSError)       11   the operating system refused: disk full, name too long,
    │                                       permission denied, read-only file system (see os_error)
    └── CheckFailedError              21   compatibility checks failed (install without --force)

``validate`` and ``ci`` exit 22 (:data:`EXIT_REGRESSED`) when a patch scored below its thresholds.

``patchctl check`` itself exits 0 when every check passes, 20 when some warn, 21 when some fail.
Unknown exceptions are bugs: the CLI prints their traceback and exits 1.
"""

from __future__ import annotations

import errno

__all__ = [
    "EXIT_CHECK_FAILED",
    "EXIT_CHECK_WARNINGS",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_REGRESSED",
    "EXIT_SYSTEM",
    "EXIT_USAGE",
    "AdapterError",
    "AuthError",
    "CatalogError",
    "CheckFailedError",
    "ConflictError",
    "IntegrityError",
    "InvalidInputError",
    "ManifestError",
    "NotFoundError",
    "OSFailureError",
    "PatchctlError",
    "RefError",
    "RemoteError",
    "StaleSchemaError",
    "UnsupportedError",
    "UsageError",
    "os_error",
]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_SYSTEM = 11
EXIT_CHECK_WARNINGS = 20
EXIT_CHECK_FAILED = 21
#: validate / ci: a patch regressed on the base (scores below its thresholds)
EXIT_REGRESSED = 22
EXIT_INTERRUPTED = 130


class PatchctlError(Exception):
    """Base of every error patchctl raises on purpose. ``hint`` is an optional next step."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(PatchctlError):
    exit_code = EXIT_USAGE


class NotFoundError(PatchctlError, LookupError):
    exit_code = 3


class InvalidInputError(PatchctlError, ValueError):
    exit_code = 4


class RefError(InvalidInputError):
    pass


class AdapterError(InvalidInputError):
    pass


class ManifestError(InvalidInputError):
    pass


class ConflictError(PatchctlError):
    exit_code = 5


class UnsupportedError(PatchctlError):
    exit_code = 6


class IntegrityError(PatchctlError):
    exit_code = 7


class RemoteError(PatchctlError):
    exit_code = 8


class AuthError(RemoteError):
    exit_code = 9


class CatalogError(PatchctlError):
    exit_code = 10


class StaleSchemaError(CatalogError):
    pass


class OSFailureError(PatchctlError, OSError):
    """The operating system refused an operation for a reason the user can fix (disk full, a name
    too long, no permission...): not a bug. Built from an OSError by :func:`os_error`."""

    exit_code = EXIT_SYSTEM


#: errno → what to say; only conditions of the machine, never ones that would hide a bug
_OS_REASONS: dict[int, str] = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file system",
    errno.ENAMETOOLONG: "file name too long",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.EMFILE: "too many open files",
    errno.ENFILE: "too many open files in the system",
    errno.EIO: "input/output error (a failing disk or network file system?)",
    errno.ENOMEM: "out of memory",
}


def os_error(exc: OSError) -> OSFailureError | None:
    """A clear error for an OSError that is a condition of the machine, else None (a bug)."""
    reason = _OS_REASONS.get(exc.errno) if exc.errno is not None else None
    if reason is None:
        return None
    where = exc.filename if exc.filename is not None else None
    if where is not None and exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    hint = {
        errno.ENOSPC: "free some space (or write --out to another disk) and run the command again",
        errno.EDQUOT: "free some space and run the command again",
        errno.ENAMETOOLONG: "choose a shorter output path",
    }.get(exc.errno or 0)
    return OSFailureError(f"{reason}" + (f": {where}" if where else ""), hint=hint)


class CheckFailedError(PatchctlError):
    """Raised by install when checks fail; ``report`` is the CompatReport, for rendering."""

    exit_code = EXIT_CHECK_FAILED

    def __init__(self, message: str, *, hint: str | None = None, report: object = None) -> None:
        super().__init__(message, hint=hint)
        self.report = report
