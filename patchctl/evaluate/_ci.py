"""ci: re-validate many patches on one loaded base; JUnit XML, Markdown summaries, GitHub matrices.

The base is loaded once (:class:`patchctl.evaluate._run._Session`); each patch is checked
(refused on failure), applied in memory, scored and removed, so K patches cost one base load and
K evaluations. ``promote`` moves an alias to passing versions only, recording the base.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchctl._session import catalog
from patchctl.errors import PatchctlError
from patchctl.evaluate._run import ValidationOutcome, _local_base, _materialize_or_fetch, _Session, _validate_one
from patchctl.settings import Settings

__all__ = ["CiOutcome", "CiResult", "ci", "ci_plan", "junit_xml", "markdown_summary"]


@dataclass(frozen=True)
class CiResult:
    patch: str
    #: pass | regressed | no-baseline | refused (checks failed) | error
    status: str
    validation: ValidationOutcome | None = None
    message: str = ""
    promoted: str | None = None


@dataclass(frozen=True)
class CiOutcome:
    base: str
    base_weights_sha256: str
    results: tuple[CiResult, ...] = field(default_factory=tuple)
    base_loads: int = 0

    @property
    def exit_code(self) -> int:
        from patchctl.errors import EXIT_CHECK_FAILED, EXIT_OK, EXIT_REGRESSED

        statuses = {r.status for r in self.results}
        if "regressed" in statuses:
            return EXIT_REGRESSED
        if "refused" in statuses:
            return EXIT_CHECK_FAILED
        if "error" in statuses:
            return 1
        return EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "base_weights_sha256": self.base_weights_sha256,
            "exit_code": self.exit_code,
            "results": [
                {
                    "patch": r.patch,
                    "status": r.status,
                    "message": r.message,
                    "promoted": r.promoted,
                    "validation": r.validation.to_json() if r.validation else None,
                }
                for r in self.results
            ],
        }


def _candidates(settings: Settings, patches: str | None, family: str | None) -> list[Any]:
    """Newest non-yanked version of every catalog patch matching the glob/family that carries an eval set."""
    from patchctl.schemas.refs import PatchRef

    out = []
    with catalog(settings) as cat:
        for summary in cat.list_patches():
            if patches and not fnmatch.fnmatchcase(summary.name, patches):
                continue
            if summary.latest is None:
                continue
            version = cat.resolve(PatchRef(summary.name)).version
            if version.manifest.eval is None:
                continue
            if family and version.manifest.source_base.family.model_type != family:
                continue
            out.append(version)
    return out


def ci_plan(settings: Settings, *, patches: str | None = None, family: str | None = None) -> dict[str, Any]:
    """A GitHub Actions matrix: one entry per patch to validate (``ci --patches <name>`` each)."""
    return {"include": [{"patch": v.name, "version": v.version} for v in _candidates(settings, patches, family)]}


def ci(
    settings: Settings,
    *,
    onto: str,
    patches: str | None = None,
    family: str | None = None,
    promote: str | None = None,
    limit: int | None = None,
    batch_size: int = 1,
    device: str = "auto",
    force: bool = False,
    trust_eval_code: bool = False,
    progress: bool = True,
) -> CiOutcome:
    """Re-validate every matching patch on ``onto``: the base is loaded once; each patch is
    checked, applied, scored, removed. ``promote`` moves that alias to passing versions only."""
    from patchctl.evaluate._score import LOADS
    from patchctl.installer import PatchSource, _run, _target_base

    if promote is not None:
        from patchctl.registry.store import check_alias_name

        check_alias_name(promote)
    target = _target_base(settings, onto, progress=progress)
    versions = _candidates(settings, patches, family)
    loads_before = len(LOADS)
    sessions: dict[Path, _Session] = {}

    def session_for(base_dir: Path) -> _Session:
        if base_dir not in sessions:
            sessions[base_dir] = _Session(base_dir, device=device, batch_size=batch_size)
        return sessions[base_dir]

    results: list[CiResult] = []
    for version in versions:
        ref = version.ref
        try:
            source = PatchSource(
                ref, _materialize_or_fetch(settings, version, progress=progress), version.manifest, version
            )
            check = _run(settings, source, target)
            if check.report.failed and not force:
                failed = ", ".join(f"{r.name}: {r.detail}" for r in check.report.failed)
                results.append(CiResult(ref, "refused", message=f"checks failed: {failed}"))
                continue
            target = _local_base(target, progress=progress)
            outcome = _validate_one(
                settings,
                session_for,
                source,
                target,
                check=check,
                forced=bool(force and check.report.failed),
                limit=limit,
                trust_eval_code=trust_eval_code,
                progress=progress,
            )
        except PatchctlError as exc:
            results.append(CiResult(ref, "error", message=str(exc)))
            continue
        promoted = None
        if promote is not None and outcome.verdict == "pass":
            with catalog(settings) as cat:
                cat.set_alias(
                    version.name,
                    promote,
                    version.version,
                    validated_on=target.facts.weights_sha256,
                    validation_id=outcome.validation_id,
                )
            promoted = promote
        results.append(CiResult(ref, outcome.verdict, outcome, _scores_message(outcome), promoted))
    return CiOutcome(target.ref, target.facts.weights_sha256, tuple(results), len(LOADS) - loads_before)


def _fmt(x: float | None, digits: int = 4) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _scores_message(outcome: ValidationOutcome) -> str:
    parts = []
    for t in outcome.tasks:
        text = (
            f"{t.task} {t.metric}: patched {_fmt(t.patched)}, unpatched {_fmt(t.unpatched)}, "
            f"baseline patched {_fmt(t.baseline_patched)} / unpatched {_fmt(t.baseline_unpatched)}, "
            f"retained {_fmt(t.retained, 3)} → {t.verdict}"
        )
        if t.reasons:
            text += " (" + "; ".join(t.reasons) + ")"
        parts.append(text)
    return "; ".join(parts)


def junit_xml(outcome: CiOutcome, path: Path) -> None:
    """One JUnit test case per patch (junitparser): failures carry the scores."""
    from junitparser import Error, Failure, JUnitXml, Skipped, TestCase, TestSuite

    suite = TestSuite(f"patchctl ci --onto {outcome.base}")
    for r in outcome.results:
        case = TestCase(r.patch, classname="patchctl.ci", time=r.validation.duration_s if r.validation else 0.0)
        if r.status == "regressed":
            case.result = [Failure(r.message, "regressed")]
        elif r.status == "refused":
            case.result = [Failure(r.message, "checks-failed")]
        elif r.status == "error":
            case.result = [Error(r.message, "error")]
        elif r.status == "no-baseline":
            case.system_out = r.message
            case.result = [Skipped("no baseline to compare with: " + r.message)]
        else:
            case.system_out = r.message
        suite.add_testcase(case)
    xml = JUnitXml()
    xml.add_testsuite(suite)
    xml.write(str(path), pretty=True)


def markdown_summary(outcome: CiOutcome) -> str:
    """A Markdown table for ``$GITHUB_STEP_SUMMARY``."""
    icon = {"pass": "✅", "regressed": "❌", "refused": "⛔", "error": "💥", "no-baseline": "➖"}
    lines = [
        f"## patchctl ci on `{outcome.base}`",
        "",
        f"base weights `{outcome.base_weights_sha256[:12]}` · {len(outcome.results)} patch(es) · exit {outcome.exit_code}",
        "",
        "| patch | verdict | task | metric | patched | unpatched | baseline | retained | promoted |",
        "|---|---|---|---|---:|---:|---:|---:|---|",
    ]
    for r in outcome.results:
        mark = f"{icon.get(r.status, '')} {r.status}"
        if r.validation is None or not r.validation.tasks:
            msg = r.message.replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{r.patch}` | {mark} | {msg} | | | | | | {r.promoted or ''} |")
            continue
        for t in r.validation.tasks:
            lines.append(
                f"| `{r.patch}` | {mark} | {t.task} | {t.metric} | {_fmt(t.patched)} | {_fmt(t.unpatched)} | "
                f"{_fmt(t.baseline_patched)} | {_fmt(t.retained, 3)} | {r.promoted or ''} |"
            )
    return "\n".join(lines) + "\n"
