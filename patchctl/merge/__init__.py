"""The streaming merge engine: θ′ + Δθ written shard by shard, equal to PEFT's ``merge_and_unload``.

The only package of patchctl that imports torch at module level.

- :func:`plan_merge` reads headers and config and says what will change (``MergePlan.summary()``
  for ``--dry-run``); it refuses what cannot be merged exactly.
- :func:`execute_merge` writes the merged model atomically, with a ``patchctl.json`` provenance.
- :func:`write_rebased_adapter` writes the adapter itself, its config naming the new base.
"""

from __future__ import annotations

from patchctl.merge._execute import DELAY_ENV, execute_merge
from patchctl.merge._output import PROVENANCE_FILE, FileRecord, MergeResult
from patchctl.merge._plan import MergePlan, ShardPlan, TensorPlan, plan_merge
from patchctl.merge._progress import MergeProgress, NullProgress, RichMergeProgress
from patchctl.merge._rebase import write_rebased_adapter

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
