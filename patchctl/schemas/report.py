"""The compat report: the named check results of one patch against one base.

Produced by :func:`patchctl.checks.run_checks`, printed by ``patchctl check``, stored in the
catalog. Strict and frozen like every patchctl format; ``to_json``/``from_json`` round-trip.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, ValidationError

from patchctl.errors import EXIT_CHECK_FAILED, EXIT_CHECK_WARNINGS, EXIT_OK, InvalidInputError
from patchctl.schemas._common import Sha256, StrictModel, format_validation_error

__all__ = ["STATUS_ORDER", "CheckResult", "CheckStatus", "CompatReport", "worst_status"]

CheckStatus = Literal["pass", "warn", "fail"]
#: severity order: the status of a report is its worst result
STATUS_ORDER: dict[str, int] = {"pass": 0, "warn": 1, "fail": 2}


def worst_status(statuses: list[CheckStatus] | tuple[CheckStatus, ...]) -> CheckStatus:
    """The most severe of ``statuses`` (``pass`` for none)."""
    worst: CheckStatus = "pass"
    for s in statuses:
        if STATUS_ORDER[s] > STATUS_ORDER[worst]:
            worst = s
    return worst


class CheckResult(StrictModel):
    """One named check: its status, a one-line human detail and structured data (JSON values)."""

    name: str = Field(min_length=1)
    status: CheckStatus
    detail: str
    data: dict[str, Any] = Field(default_factory=dict)


class CompatReport(StrictModel):
    """Every check of ``patch`` against the base ``base_source`` (at ``base_revision``)."""

    patch: str
    manifest_digest: Sha256 | None = None
    base_source: str
    base_revision: str | None = None
    base_weights_sha256: Sha256
    results: tuple[CheckResult, ...]
    tool_version: str
    created_at: datetime

    @property
    def status(self) -> CheckStatus:
        return worst_status(tuple(r.status for r in self.results))

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.status == "fail")

    @property
    def warnings(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.status == "warn")

    @property
    def ok(self) -> bool:
        """No check failed (warnings allowed)."""
        return not self.failed

    def result(self, name: str) -> CheckResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)

    def exit_code(self) -> int:
        """0 when every check passes, 20 when some warn, 21 when some fail (``patchctl check``)."""
        return {"pass": EXIT_OK, "warn": EXIT_CHECK_WARNINGS, "fail": EXIT_CHECK_FAILED}[self.status]

    def summary(self) -> str:
        """One line, e.g. ``acme/x@1.0 on /models/b: FAIL (5 pass, 1 warn, 1 fail: coverage)``."""
        counts = {s: sum(1 for r in self.results if r.status == s) for s in ("pass", "warn", "fail")}
        parts = [f"{counts['pass']} pass", f"{counts['warn']} warn", f"{counts['fail']} fail"]
        names = [r.name for r in self.failed] or [r.name for r in self.warnings]
        tail = f": {', '.join(names)}" if names else ""
        return f"{self.patch} on {self.base_source}: {self.status.upper()} ({', '.join(parts)}{tail})"

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "compat report") -> CompatReport:
        try:
            data = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInputError(f"{source}: not valid JSON ({exc})") from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidInputError(format_validation_error(exc, source)) from None
