"""The one exception tree of patchctl.

Every error that patchctl raises on purpose derives from :class:`PatchctlError` and carries
the process exit code the CLI uses for it (the table in README.md, "Exit codes")::

    PatchctlError                      1   (base; never raised bare)
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
    └── CheckFailedError              21   compatibility checks failed (install without --force)

``validate`` and ``ci`` exit 22 (:data:`EXIT_REGRESSED`) when a patch scored below its thresholds.

``patchctl check`` itself exits 0 when every check passes, 20 when some warn, 21 when some fail.
Unknown exceptions are bugs: the CLI prints their traceback and exits 1.
"""

from __future__ import annotations

__all__ = [
    "EXIT_CHECK_FAILED",
    "EXIT_CHECK_WARNINGS",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_REGRESSED",
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
    "PatchctlError",
    "RefError",
    "RemoteError",
    "StaleSchemaError",
    "UnsupportedError",
]

EXIT_OK = 0
EXIT_USAGE = 2
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


class CheckFailedError(PatchctlError):
    """Raised by install when checks fail; ``report`` is the CompatReport, for rendering."""

    exit_code = EXIT_CHECK_FAILED

    def __init__(self, message: str, *, hint: str | None = None, report: object = None) -> None:
        super().__init__(message, hint=hint)
        self.report = report
