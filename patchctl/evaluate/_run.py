"""validate and the push baseline: checks, one base load, unpatched and patched scores, verdicts, catalog rows.

One :class:`_Session` holds a loaded base and its lm-eval scorer. Each patch is checked
(refused on failure unless forced, recorded either way), applied in memory with the merge
engine's arithmetic, scored, and removed (the base's tensors restored bit for bit), so K
patches cost one base load and K evaluations. Unpatched scores are cached per eval set
(same files, tasks and limit), so patches that share an eval set score the base once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchctl import __version__
from patchctl._session import catalog
from patchctl.errors import CheckFailedError, InvalidInputError, NotFoundError, PatchctlError
from patchctl.evaluate._spec import read_eval_folder, refuse_untrusted_code
from patchctl.evaluate._verdict import TaskVerdict, Verdict, judge_task, overall_verdict
from patchctl.schemas.manifest import EVAL_DIR, EvalBaseline, EvalSpec, EvalTaskSpec, Manifest
from patchctl.schemas.report import CompatReport
from patchctl.settings import Settings

__all__ = [
    "ValidationOutcome",
    "record_baseline",
    "score_baseline",
    "validate",
    "validated_check",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValidationOutcome:
    patch: str
    base: str
    base_weights_sha256: str
    verdict: Verdict
    tasks: tuple[TaskVerdict, ...]
    validation_id: int | None
    check_status: str
    forced: bool
    limit: int | None
    duration_s: float
    lm_eval_version: str

    def to_json(self) -> dict[str, Any]:
        """The shape ``validate --json`` prints (see the README)."""
        keys = (
            "task",
            "metric",
            "patched",
            "unpatched",
            "baseline_patched",
            "baseline_unpatched",
            "retained",
            "verdict",
        )
        return {
            "patch": self.patch,
            "base": self.base,
            "verdict": self.verdict,
            "tasks": [{k: getattr(t, k) for k in keys} for t in self.tasks],
            "validation_id": self.validation_id,
        }


class _Session:
    """A base loaded once, an lm-eval scorer over it, and the base's scores per eval set."""

    def __init__(self, base_dir: Path, *, device: str, batch_size: int) -> None:
        from patchctl.evaluate._score import Scorer, load_base

        self.base_dir = base_dir
        self.loaded = load_base(base_dir, device=device)
        self.scorer = Scorer(self.loaded, batch_size=batch_size)
        self._unpatched: dict[tuple[Any, ...], dict[str, float]] = {}

    def unpatched(self, folder: Path, spec: EvalSpec, limit: int | None, progress: bool) -> dict[str, float]:
        key = (tuple((f.path, f.sha256) for f in spec.files), tuple(t.result_key + t.task for t in spec.tasks), limit)
        if key not in self._unpatched:
            self._unpatched[key] = self.scorer.score(
                folder, spec.tasks, limit=limit, label="scoring the base", progress=progress
            )
        return self._unpatched[key]

    def patched(
        self,
        adapter_dir: Path,
        folder: Path,
        spec: EvalSpec,
        limit: int | None,
        progress: bool,
        *,
        base_weights_sha256: str,
        label: str,
    ) -> dict[str, float]:
        from patchctl.evaluate._apply import applied_patch, merged_tensors

        merged = merged_tensors(adapter_dir, self.base_dir, base_weights_sha256=base_weights_sha256)
        with applied_patch(self.loaded.model, merged):
            return self.scorer.score(folder, spec.tasks, limit=limit, label=label, progress=progress)


def _eval_folder(adapter_dir: Path, manifest: Manifest | None, ref: str, *, trust: bool) -> tuple[Path, EvalSpec]:
    if manifest is None or manifest.eval is None:
        raise NotFoundError(f"{ref} carries no eval set", hint="push it with --eval EVAL_DIR (an lm-eval task folder)")
    folder = adapter_dir / EVAL_DIR
    found = read_eval_folder(folder)  # the files as they are on disk, not the manifest's flag
    refuse_untrusted_code(found.code, where=f"{ref}: eval/", trust=trust)
    return folder, manifest.eval


def _baselines(settings: Settings, source: Any, spec: EvalSpec) -> dict[str, tuple[float, float]]:
    """(patched, unpatched) on the source base by task: the newest validation recorded in the
    catalog on the source base's exact weights, else the manifest's baseline from push."""
    out: dict[str, tuple[float, float]] = {}
    for t in spec.tasks:
        if t.baseline is not None:
            out[t.task] = (t.baseline.patched, t.baseline.unpatched)
    if source.version is None or source.manifest is None:
        return out

    with catalog(settings) as cat:
        rows = cat.list_validations(
            source.version.name,
            source.version.version,
            base_weights_sha256=source.manifest.source_base.weights_sha256,
        )
    found: set[str] = set()
    for row in rows:  # newest first
        for item in row.scores.get("tasks", []):
            name = item.get("task")
            if name in found or name not in {t.task for t in spec.tasks}:
                continue
            if item.get("patched") is None or item.get("unpatched") is None:
                continue
            found.add(name)
            out[name] = (float(item["patched"]), float(item["unpatched"]))
    return out


def _judge(
    spec: EvalSpec, patched: dict[str, float], unpatched: dict[str, float], baselines: dict[str, tuple[float, float]]
) -> tuple[TaskVerdict, ...]:
    out = []
    for t in spec.tasks:
        bp, bu = baselines.get(t.task, (None, None))
        out.append(judge_task(t, patched[t.task], unpatched[t.task], baseline_patched=bp, baseline_unpatched=bu))
    return tuple(out)


def _thresholds(spec: EvalSpec) -> dict[str, Any]:
    return {
        t.task: {
            "metric": t.result_key,
            "min_score": t.min_score,
            "max_drop": t.max_drop,
            "min_retained": t.min_retained,
        }
        for t in spec.tasks
    }


def _validate_one(
    settings: Settings,
    session_for: Callable[[Path], _Session],
    source: Any,
    target: Any,
    *,
    check: Any,
    forced: bool,
    limit: int | None,
    trust_eval_code: bool,
    progress: bool,
) -> ValidationOutcome:
    from patchctl.evaluate._score import lm_eval_version

    folder, spec = _eval_folder(source.adapter_dir, source.manifest, source.ref, trust=trust_eval_code)
    for t in spec.tasks:
        if t.baseline is not None and t.baseline.limit != limit:
            log.warning(
                "%s: the baseline of %s was scored with --limit %s, this run with %s: the scores cover other examples",
                source.ref,
                t.task,
                t.baseline.limit,
                limit,
            )
    started = time.monotonic()
    session = session_for(target.local_dir)
    unpatched = session.unpatched(folder, spec, limit, progress)
    patched = session.patched(
        source.adapter_dir,
        folder,
        spec,
        limit,
        progress,
        base_weights_sha256=target.facts.weights_sha256,
        label=f"scoring {source.ref}",
    )
    tasks = _judge(spec, patched, unpatched, _baselines(settings, source, spec))
    verdict = overall_verdict(tasks)
    duration = time.monotonic() - started
    version = lm_eval_version()
    validation_id = None
    if source.version is not None:
        with catalog(settings) as cat:
            validation_id = cat.record_validation(
                source.version.name,
                source.version.version,
                base_weights_sha256=target.facts.weights_sha256,
                scores={"tasks": [t.to_dict() for t in tasks]},
                verdict=verdict,
                thresholds=_thresholds(spec),
                base_ref=target.ref,
                limit=limit,
                lm_eval_version=version,
                tool_version=__version__,
                duration_s=round(duration, 3),
                check_status=check.report.status,
                forced=forced,
            ).id
    return ValidationOutcome(
        source.ref,
        target.ref,
        target.facts.weights_sha256,
        verdict,
        tasks,
        validation_id,
        check.report.status,
        forced,
        limit,
        duration,
        version,
    )


def _local_base(target: Any, *, progress: bool) -> Any:
    """The target with a local directory: a Hub base is downloaded (after the checks) and verified."""
    if target.local_dir is not None:
        return target
    from dataclasses import replace

    from patchctl.installer import _download_checked_base

    return replace(target, local_dir=_download_checked_base(target, progress=progress))


def validate(
    settings: Settings,
    patch: str,
    *,
    onto: str,
    limit: int | None = None,
    batch_size: int = 1,
    device: str = "auto",
    force: bool = False,
    trust_eval_code: bool = False,
    progress: bool = True,
    on_report: Callable[[CompatReport], None] | None = None,
) -> ValidationOutcome:
    """Check ``patch`` against ``onto``, then score its eval set on the base unpatched and patched
    (in memory, the merge engine's arithmetic), judge against the baseline and record the run."""
    from patchctl.installer import _patch_source, _run, _target_base

    if limit is not None and limit < 1:
        raise InvalidInputError("--limit must be at least 1")
    target = _target_base(settings, onto, progress=progress)
    try:
        source = _patch_source(settings, patch, progress=progress)
    except NotFoundError as exc:
        source = _fetched_source(settings, patch, progress=progress, error=exc)
    _eval_folder(source.adapter_dir, source.manifest, source.ref, trust=trust_eval_code)
    check = _run(settings, source, target)
    if on_report is not None:
        on_report(check.report)
    if check.report.failed and not force:
        raise CheckFailedError(
            f"{check.report.summary()}; refusing to validate",
            hint=f"`patchctl check {patch} --onto {onto}` shows every check; --force validates anyway (recorded)",
            report=check.report,
        )
    target = _local_base(target, progress=progress)
    sessions: dict[Path, _Session] = {}

    def session_for(base_dir: Path) -> _Session:
        if base_dir not in sessions:
            sessions[base_dir] = _Session(base_dir, device=device, batch_size=batch_size)
        return sessions[base_dir]

    return _validate_one(
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


def _fetched_source(settings: Settings, patch: str, *, progress: bool, error: NotFoundError) -> Any:
    """A catalog version whose files must first be pulled from its recorded remote copy."""
    from patchctl.installer import PatchSource
    from patchctl.schemas.refs import PatchRef, parse_patch_ref

    ref = parse_patch_ref(patch)
    if not isinstance(ref, PatchRef):
        raise error
    with catalog(settings) as cat:
        version = cat.resolve(ref).version
    return PatchSource(
        version.ref, _materialize_or_fetch(settings, version, progress=progress), version.manifest, version
    )


def _materialize_or_fetch(settings: Settings, version: Any, *, progress: bool) -> Path:
    """The version laid out as an adapter directory; when its files are not in this machine's
    store (a CI runner sharing a PostgreSQL catalog), they are pulled from a recorded remote copy
    first, sha256-verified."""
    from patchctl.installer import _materialized
    from patchctl.sync import pull

    try:
        return _materialized(settings, version)
    except NotFoundError:
        with catalog(settings) as cat:
            copies = cat.list_remotes(version.name, version.version)
        if not copies:
            raise
        last: PatchctlError | None = None
        for copy in copies:
            tail = copy.url.rsplit("/", 1)[-1]
            url = copy.url if "@" in tail else f"{copy.url}@{version.version}"
            try:
                pull(settings, url, progress=progress)
                return _materialized(settings, version)
            except PatchctlError as exc:
                last = exc
        assert last is not None
        raise last from None


def score_baseline(
    adapter_dir: Path,
    base_dir: Path,
    spec: EvalSpec,
    *,
    base_weights_sha256: str,
    limit: int | None = None,
    batch_size: int = 1,
    device: str = "auto",
    eval_dir: Path,
    progress: bool = True,
) -> EvalSpec:
    """Score the eval set on the source base θ unpatched and patched; the spec with baselines."""
    from patchctl.evaluate._score import lm_eval_version

    session = _Session(base_dir, device=device, batch_size=batch_size)
    unpatched = session.unpatched(eval_dir, spec, limit, progress)
    patched = session.patched(
        adapter_dir, eval_dir, spec, limit, progress, base_weights_sha256=base_weights_sha256, label="scoring the patch"
    )
    version = lm_eval_version()
    tasks: list[EvalTaskSpec] = [
        t.model_copy(
            update={
                "baseline": EvalBaseline(
                    base_weights_sha256=base_weights_sha256,
                    patched=patched[t.task],
                    unpatched=unpatched[t.task],
                    limit=limit,
                    lm_eval_version=version,
                )
            }
        )
        for t in spec.tasks
    ]
    return spec.model_copy(update={"tasks": tuple(tasks)})


def record_baseline(cat: Any, manifest: Manifest, *, base_ref: str) -> int | None:
    """Record the baseline scored at push as a validation of the version on its source base."""
    spec = manifest.eval
    if spec is None or not all(t.baseline for t in spec.tasks):
        return None
    patched = {t.task: t.baseline.patched for t in spec.tasks if t.baseline}
    unpatched = {t.task: t.baseline.unpatched for t in spec.tasks if t.baseline}
    tasks = _judge(spec, patched, unpatched, {k: (patched[k], unpatched[k]) for k in patched})
    first = spec.tasks[0].baseline
    assert first is not None
    rec = cat.record_validation(
        manifest.name,
        manifest.version,
        base_weights_sha256=manifest.source_base.weights_sha256,
        scores={"tasks": [t.to_dict() for t in tasks], "baseline": True},
        verdict=overall_verdict(tasks),
        thresholds=_thresholds(spec),
        base_ref=base_ref,
        limit=first.limit,
        lm_eval_version=first.lm_eval_version,
        tool_version=__version__,
        check_status="pass",
    )
    return int(rec.id)


def validated_check(cat: Any, version: Any, base_weights_sha256: str) -> Any:
    """The ``validated`` line of a compat report: the newest validation of this version on this
    exact base (pass when it passed or had no baseline, warn when it regressed); None if never."""
    from patchctl.schemas.report import CheckResult

    rows = cat.list_validations(version.name, version.version, base_weights_sha256=base_weights_sha256)
    if not rows:
        return None
    row = rows[0]
    status = "warn" if row.verdict in ("regressed", "fail") else "pass"
    scores = ", ".join(
        f"{t.get('task')} {t.get('metric')} {t.get('patched'):.4f} (unpatched {t.get('unpatched'):.4f})"
        for t in row.scores.get("tasks", [])
        if isinstance(t.get("patched"), (int, float)) and isinstance(t.get("unpatched"), (int, float))
    )
    when = row.created_at.isoformat(timespec="seconds")
    return CheckResult(
        name="validated",
        status=status,
        detail=f"{row.verdict} on this exact base ({when}, validation {row.id}): {scores or 'no scores'}",
        data={"validation_id": row.id, "verdict": row.verdict, "validations": len(rows)},
    )
