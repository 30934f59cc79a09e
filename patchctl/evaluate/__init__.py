"""Validation: a patch's eval set (an lm-evaluation-harness task folder) scored on a base.

- :mod:`._spec` reads and vets eval folders (no torch, no lm-eval);
- :mod:`._verdict` judges scores against thresholds and the baseline (pure);
- :mod:`._apply` applies a patch to a loaded model in memory with the merge engine's
  arithmetic, and restores the base exactly;
- :mod:`._score` loads a base once and scores with lm-eval (imported lazily);
- :mod:`._run` is validate and the push baseline; :mod:`._ci` is ci (one base, many patches);
- :mod:`._outdated` asks the Hub which bases moved on (no torch).
"""

from __future__ import annotations

from patchctl.evaluate._spec import EvalFolder, build_eval_spec, read_eval_folder, refuse_untrusted_code
from patchctl.evaluate._verdict import TaskVerdict, Verdict, judge_task, overall_verdict

__all__ = [
    "EvalFolder",
    "TaskVerdict",
    "Verdict",
    "build_eval_spec",
    "judge_task",
    "overall_verdict",
    "read_eval_folder",
    "refuse_untrusted_code",
]
