"""Compatibility checks of a patch against a base, from config.json and safetensors headers.

No torch: the adapter's values are read with numpy (it is small); the base is read only
through :class:`~patchctl.schemas.BaseFacts`, so a Hub base is checked without downloading
its weights. Each check is registered by name in :data:`CHECKS` (in report order)::

    format · family · coverage · shapes · dtype · vocab · lineage

:func:`run_checks` runs them into a :class:`~patchctl.schemas.CompatReport`. :func:`drift_report`
(the ``drift`` check) needs both bases' weights, so it is a separate call for local bases.
"""

# check modules register themselves on import, in this order (the report's order)
from patchctl.checks import _format, _family, _coverage, _shapes, _dtype, _vocab, _lineage  # noqa: F401  # isort: skip
from patchctl.checks._context import CHECKS, Check, CheckContext, register
from patchctl.checks._drift import drift_report
from patchctl.checks._run import read_adapter_for_checks, run_checks
from patchctl.checks._shapes import delta_shape
from patchctl.checks._tensors import iter_tensor_chunks, nonfinite_count, read_tensor

__all__ = [
    "CHECKS",
    "Check",
    "CheckContext",
    "delta_shape",
    "drift_report",
    "iter_tensor_chunks",
    "nonfinite_count",
    "read_adapter_for_checks",
    "read_tensor",
    "register",
    "run_checks",
]
