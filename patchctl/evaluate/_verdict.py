"""Verdicts: a task's scores on a base against its thresholds and its baseline (pure, no I/O).

- ``min_score``: the patched score must reach it (an absolute floor);
- ``max_drop``: the patched score may fall at most this many points below the baseline's patched
  score (the patch on its source base θ);
- ``min_retained``: (patched − unpatched) on the new base ÷ (patched − unpatched) on θ, the share
  of the patch's gain that survived the port, must reach it.

A task without a baseline can only fail ``min_score``; otherwise it is ``no-baseline``. Scores
where lower is better (perplexity) are compared with the signs flipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from patchctl.schemas.manifest import EvalTaskSpec

__all__ = ["TaskVerdict", "Verdict", "judge_task", "overall_verdict"]

Verdict = Literal["pass", "regressed", "no-baseline"]
#: scores are ratios of small counts: 0.7 - 0.6 is not exactly 0.1; a threshold met up to this is met
_EPS = 1e-9


@dataclass(frozen=True)
class TaskVerdict:
    task: str
    metric: str
    patched: float
    unpatched: float
    baseline_patched: float | None
    baseline_unpatched: float | None
    retained: float | None
    verdict: Verdict
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        return d


def judge_task(
    spec: EvalTaskSpec,
    patched: float,
    unpatched: float,
    *,
    baseline_patched: float | None,
    baseline_unpatched: float | None,
) -> TaskVerdict:
    sign = 1.0 if spec.higher_is_better else -1.0
    reasons: list[str] = []
    if spec.min_score is not None and sign * patched < sign * spec.min_score - _EPS:
        reasons.append(f"patched {patched:.4f} below min_score {spec.min_score:g}")
    retained: float | None = None
    have_baseline = baseline_patched is not None and baseline_unpatched is not None
    if have_baseline:
        assert baseline_patched is not None and baseline_unpatched is not None
        if spec.max_drop is not None and sign * (baseline_patched - patched) > spec.max_drop + _EPS:
            reasons.append(
                f"patched {patched:.4f} dropped {abs(baseline_patched - patched):.4f} from the baseline "
                f"{baseline_patched:.4f} (max_drop {spec.max_drop:g})"
            )
        gain = baseline_patched - baseline_unpatched
        if gain != 0:
            retained = (patched - unpatched) / gain
        if spec.min_retained is not None:
            if retained is None:
                reasons.append("retained gain undefined (the patch gained nothing on its source base)")
            elif retained < spec.min_retained - _EPS:
                reasons.append(f"retained {retained:.3f} of the gain, below min_retained {spec.min_retained:g}")
    verdict: Verdict = "regressed" if reasons else ("pass" if have_baseline else "no-baseline")
    return TaskVerdict(
        spec.task,
        spec.metric,
        patched,
        unpatched,
        baseline_patched,
        baseline_unpatched,
        retained,
        verdict,
        tuple(reasons),
    )


def overall_verdict(tasks: Sequence[TaskVerdict]) -> Verdict:
    if any(t.verdict == "regressed" for t in tasks):
        return "regressed"
    if any(t.verdict == "no-baseline" for t in tasks):
        return "no-baseline"
    return "pass"
