"""The compat report schema: worst status, exit codes, strictness, JSON round trip."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from patchctl.errors import EXIT_CHECK_FAILED, EXIT_CHECK_WARNINGS, EXIT_OK, InvalidInputError
from patchctl.schemas import CheckResult, CompatReport

SHA = "ab" * 32


def _report(*statuses: str) -> CompatReport:
    return CompatReport(
        patch="acme/p@1.0",
        manifest_digest=SHA,
        base_source="hf://org/base",
        base_revision="abc123",
        base_weights_sha256=SHA,
        results=tuple(
            CheckResult(name=f"c{i}", status=s, detail=f"detail {i}", data={"i": i, "xs": [1, 2]})  # type: ignore[arg-type]
            for i, s in enumerate(statuses)
        ),
        tool_version="0.1.0",
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
    )


@pytest.mark.parametrize(
    ("statuses", "status", "code"),
    [
        ((), "pass", EXIT_OK),
        (("pass", "pass"), "pass", EXIT_OK),
        (("pass", "warn", "pass"), "warn", EXIT_CHECK_WARNINGS),
        (("warn", "fail", "pass"), "fail", EXIT_CHECK_FAILED),
        (("fail",), "fail", EXIT_CHECK_FAILED),
    ],
)
def test_status_is_worst_result(statuses: tuple[str, ...], status: str, code: int) -> None:
    report = _report(*statuses)
    assert report.status == status
    assert report.exit_code() == code
    assert (EXIT_CHECK_WARNINGS, EXIT_CHECK_FAILED) == (20, 21)  # the documented codes
    assert report.ok == (status != "fail")


def test_failed_warnings_summary_and_lookup() -> None:
    report = _report("pass", "warn", "fail", "fail")
    assert [r.name for r in report.failed] == ["c2", "c3"]
    assert [r.name for r in report.warnings] == ["c1"]
    assert report.result("c1").detail == "detail 1"
    with pytest.raises(KeyError):
        report.result("nope")
    assert report.summary() == "acme/p@1.0 on hf://org/base: FAIL (1 pass, 1 warn, 2 fail: c2, c3)"
    assert _report("pass").summary().endswith(": PASS (1 pass, 0 warn, 0 fail)")


def test_json_round_trip() -> None:
    report = _report("pass", "warn", "fail")
    text = report.to_json()
    back = CompatReport.from_json(text)
    assert back == report
    assert back.to_json() == text
    assert back.created_at.tzinfo is not None


def test_strict_and_frozen() -> None:
    with pytest.raises(ValidationError):
        CheckResult(name="x", status="ok", detail="")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        CheckResult(name="x", status="pass", detail="", extra=1)  # type: ignore[call-arg]
    result = CheckResult(name="x", status="pass", detail="d")
    with pytest.raises(ValidationError):
        result.status = "fail"  # type: ignore[misc]
    with pytest.raises(InvalidInputError, match="results"):
        CompatReport.from_json('{"patch": "p"}')
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        CompatReport.from_json("{")
    bad = _report("pass").model_dump(mode="json") | {"base_weights_sha256": "XYZ"}
    with pytest.raises(ValidationError):
        CompatReport.model_validate(bad)
