"""Verdict arithmetic (pure) and eval-folder reading (no torch, no lm-eval)."""

from __future__ import annotations

from pathlib import Path

import pytest
from evaltools import TASK, make_eval_folder

from patchctl.errors import InvalidInputError, UnsupportedError
from patchctl.evaluate import build_eval_spec, judge_task, overall_verdict, read_eval_folder, refuse_untrusted_code
from patchctl.schemas.manifest import EvalTaskSpec


def _spec(**kw: object) -> EvalTaskSpec:
    return EvalTaskSpec(task="t", metric="acc", **kw)  # type: ignore[arg-type]


def test_max_drop_against_the_baseline() -> None:
    v = judge_task(_spec(), 0.80, 0.50, baseline_patched=0.81, baseline_unpatched=0.50)
    assert v.verdict == "pass" and v.retained == pytest.approx(0.30 / 0.31)
    v = judge_task(_spec(), 0.78, 0.50, baseline_patched=0.81, baseline_unpatched=0.50)
    assert v.verdict == "regressed" and "max_drop 0.02" in v.reasons[0]
    v = judge_task(_spec(max_drop=None), 0.10, 0.50, baseline_patched=0.81, baseline_unpatched=0.50)
    assert v.verdict == "pass"  # no threshold, no failure


def test_min_retained_and_min_score() -> None:
    spec = _spec(max_drop=None, min_retained=0.5)
    assert judge_task(spec, 0.70, 0.60, baseline_patched=0.80, baseline_unpatched=0.60).verdict == "pass"  # 0.5
    v = judge_task(spec, 0.70, 0.65, baseline_patched=0.80, baseline_unpatched=0.60)
    assert v.verdict == "regressed" and v.retained == pytest.approx(0.25)
    v = judge_task(spec, 0.70, 0.65, baseline_patched=0.60, baseline_unpatched=0.60)
    assert v.verdict == "regressed" and v.retained is None  # no gain on θ: undefined, refused
    v = judge_task(_spec(min_score=0.9), 0.85, 0.5, baseline_patched=None, baseline_unpatched=None)
    assert v.verdict == "regressed"
    v = judge_task(_spec(min_score=0.8), 0.85, 0.5, baseline_patched=None, baseline_unpatched=None)
    assert v.verdict == "no-baseline" and v.retained is None


def test_lower_is_better_metrics_flip_the_comparisons() -> None:
    spec = EvalTaskSpec(task="t", metric="perplexity", higher_is_better=False, max_drop=1.0, min_score=20.0)
    assert judge_task(spec, 10.5, 30.0, baseline_patched=10.0, baseline_unpatched=30.0).verdict == "pass"
    assert judge_task(spec, 11.5, 30.0, baseline_patched=10.0, baseline_unpatched=30.0).verdict == "regressed"
    assert judge_task(spec, 25.0, 30.0, baseline_patched=24.5, baseline_unpatched=30.0).verdict == "regressed"


def test_overall_verdict() -> None:
    ok = judge_task(_spec(), 0.8, 0.5, baseline_patched=0.8, baseline_unpatched=0.5)
    none = judge_task(_spec(), 0.8, 0.5, baseline_patched=None, baseline_unpatched=None)
    bad = judge_task(_spec(), 0.1, 0.5, baseline_patched=0.8, baseline_unpatched=0.5)
    assert overall_verdict([ok]) == "pass"
    assert overall_verdict([ok, none]) == "no-baseline"
    assert overall_verdict([ok, none, bad]) == "regressed"


def test_read_eval_folder(tmp_path: Path) -> None:
    folder = make_eval_folder(tmp_path / "eval")
    found = read_eval_folder(folder)
    assert [t.name for t in found.tasks] == [TASK] and found.tasks[0].metrics == ("acc",)
    assert {f.path for f in found.files} == {"data.jsonl", f"{TASK}.yaml"} and not found.code
    spec = build_eval_spec(found, min_score=0.6)
    assert spec.tasks[0].metric == "acc" and spec.tasks[0].max_drop == 0.02 and spec.tasks[0].min_score == 0.6
    with pytest.raises(InvalidInputError, match="not in the eval folder"):
        build_eval_spec(found, tasks=["other"])
    with pytest.raises(InvalidInputError, match="no metric"):
        build_eval_spec(found, metric="f1")


def test_code_is_found_and_refused(tmp_path: Path) -> None:
    folder = make_eval_folder(tmp_path / "eval", extra_yaml="process_results: !function u.process\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "u.py").write_text("x = 1\n")
    found = read_eval_folder(folder)
    assert any("!function u.process" in c for c in found.code) and any("sub/u.py" in c for c in found.code)
    with pytest.raises(UnsupportedError, match="would run code"):
        refuse_untrusted_code(found.code, where="x", trust=False)
    refuse_untrusted_code(found.code, where="x", trust=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("test: data.jsonl", "test: /etc/passwd"), "must be relative"),
        (("test: data.jsonl", "test: missing.jsonl"), "not in the eval folder"),
        (("dataset_path: json", "dataset_path: glue"), "not local"),
        (("task: pico_choice", "task: [pico_choice"), "not valid YAML"),
    ],
)
def test_bad_folders(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    folder = make_eval_folder(tmp_path / "eval")
    y = folder / f"{TASK}.yaml"
    y.write_text(y.read_text().replace(*change))
    with pytest.raises(InvalidInputError, match=message):
        read_eval_folder(folder)


def test_empty_or_taskless_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="empty"):
        read_eval_folder(tmp_path / "empty")
    (tmp_path / "notask").mkdir()
    (tmp_path / "notask" / "data.jsonl").write_text("{}\n")
    with pytest.raises(InvalidInputError, match="no task YAML"):
        read_eval_folder(tmp_path / "notask")
