"""The streaming merge engine: θ′ + Δθ written shard by shard, equal to PEFT's ``merge_and_unload``.

The only package of patchctl that imports torch (in the execution step, `_execute`; planning does not).

- :func:`plan_merge` reads headers and config and says what will change (``MergePlan.summary()``
  for ``--dry-run``); it refuses what cannot be merged exactly.
- :func:`execute_merge` writes the merged model atomically, with a ``patchctl.json`` provenance.
- :func:`write_rebased_adapter` writes the adapter itself, its config naming the new base.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from patchctl.merge._output import PROVENANCE_FILE, FileRecord, MergeResult
from patchctl.merge._plan import MergePlan, ShardPlan, TensorPlan, plan_merge
from patchctl.merge._progress import MergeProgress, NullProgress, RichMergeProgress
from patchctl.merge._rebase import write_rebased_adapter

if TYPE_CHECKING:
    from patchctl.merge._execute import DELAY_ENV, execute_merge

__all__ = [
    "DELAY_ENV",
    "PROVENANCE_FILE",
    "FileRecord",
    "MergePlan",
    "MergeProgress",
    "MergeResult",
    "NullProgress",
    "RichMergeProgress",
    "ShardPlan",
    "TensorPlan",
    "execute_merge",
    "plan_merge",
    "write_rebased_adapter",
]


def __getattr__(name: str) -> Any:
    # torch is imported by the execution step only: planning (``--dry-run``) stays light
    if name in ("execute_merge", "DELAY_ENV"):
        from patchctl.merge import _execute

        return getattr(_execute, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
