"""``drift``: how far the target base moved from the source base on the modules the patch
changes, measured on the weights (both bases local), streaming one tensor at a time.

Per LoRA module: ``rel = ‖W′−W‖/‖W‖`` (how much the base moved) and ``ratio = ‖W′−W‖/‖s·B·A‖``
(how the base's move compares with the patch itself). Follow-up work to PortLLM finds that
patches lose accuracy when the base drifts a lot with full-weight updates, so large drift
warns (thresholds are heuristics; validation on the new base decides). Never a failure.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from patchctl.adapter import AdapterLayout, map_to_base
from patchctl.bases import read_safetensors_header, weight_file_names
from patchctl.checks._context import preview, result
from patchctl.checks._tensors import FLOAT_DTYPES, iter_tensor_chunks, read_tensor
from patchctl.errors import InvalidInputError
from patchctl.schemas.report import CheckResult

__all__ = ["drift_report"]

NAME = "drift"
_DEFAULT_CHUNK = 4 * 1024 * 1024


def _local_tensors(base_dir: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    base_dir = Path(base_dir).expanduser()
    if not base_dir.is_dir():
        raise InvalidInputError(f"{base_dir}: base directory does not exist")
    out: dict[str, tuple[Path, dict[str, Any]]] = {}
    for name in weight_file_names(base_dir):
        path = base_dir / name
        for tensor, info in read_safetensors_header(path).items():
            if tensor != "__metadata__":
                out[tensor] = (path, info)
    return out


def _norms(
    src: tuple[Path, dict[str, Any]], dst: tuple[Path, dict[str, Any]], chunk_values: int
) -> tuple[float, float]:
    """(‖W‖², ‖W′−W‖²) in float64, reading both tensors in lockstep chunks."""
    w2 = d2 = 0.0
    chunks = zip(
        iter_tensor_chunks(*src, chunk_values=chunk_values),
        iter_tensor_chunks(*dst, chunk_values=chunk_values),
        strict=True,
    )
    for a, b in chunks:
        a64 = a.astype(np.float64)
        diff = b.astype(np.float64) - a64
        w2 += float(np.dot(a64, a64))
        d2 += float(np.dot(diff, diff))
    return w2, d2


def _patch_norm(adapter: AdapterLayout, a_key: str, b_key: str, scaling: float) -> float:
    """‖s·B·A‖_F without forming B·A: ‖BA‖² = trace((BᵀB)(AAᵀ)), r×r matrices."""
    a = read_tensor(adapter.weights_path, adapter.header[a_key]).astype(np.float64)
    b = read_tensor(adapter.weights_path, adapter.header[b_key]).astype(np.float64)
    sq = float(np.trace((b.T @ b) @ (a @ a.T)))
    return abs(scaling) * math.sqrt(max(sq, 0.0))


def _ratio(num: float, den: float) -> float | None:
    """num/den; None when undefined (a zero norm below a non-zero drift), so reports stay JSON."""
    if den:
        return num / den
    return 0.0 if num == 0 else None


def _key(value: float | None) -> float:
    return math.inf if value is None else value


def drift_report(
    adapter: AdapterLayout,
    source_dir: Path,
    target_dir: Path,
    *,
    warn_relative: float = 0.05,
    warn_ratio: float = 10.0,
    chunk_values: int = _DEFAULT_CHUNK,
) -> CheckResult:
    """The ``drift`` check of ``adapter`` from the source base directory to the target one.

    Warns when a module's relative drift exceeds ``warn_relative`` or its drift exceeds
    ``warn_ratio`` times the patch's own delta norm, or when a module cannot be compared.
    ``data["modules"]`` lists every module (largest ratio first) with ``rel``, ``ratio``,
    ``weight_norm``, ``drift_norm`` and ``patch_norm``.
    """
    src, dst = _local_tensors(source_dir), _local_tensors(target_dir)
    src_map, dst_map = map_to_base(adapter, src), map_to_base(adapter, dst)
    modules: list[dict[str, Any]] = []
    skipped: list[str] = []
    for p in adapter.pairs:
        s_name, t_name = src_map.targets.get(p.target), dst_map.targets.get(p.target)
        if p.kind == "conv" or s_name is None or t_name is None:
            skipped.append(f"{p.module} (not in {'source' if s_name is None else 'target'} base)")
            continue
        s_info, t_info = src[s_name][1], dst[t_name][1]
        if list(s_info["shape"]) != list(t_info["shape"]):
            skipped.append(f"{p.module} (shape {s_info['shape']} → {t_info['shape']})")
            continue
        if s_info["dtype"] not in FLOAT_DTYPES or t_info["dtype"] not in FLOAT_DTYPES:
            skipped.append(f"{p.module} (dtype {s_info['dtype']} → {t_info['dtype']})")
            continue
        w2, d2 = _norms(src[s_name], dst[t_name], chunk_values)
        patch = _patch_norm(adapter, p.a_key, p.b_key, p.scaling)
        drift, weight = math.sqrt(d2), math.sqrt(w2)
        modules.append(
            {
                "module": p.module,
                "weight_norm": weight,
                "drift_norm": drift,
                "patch_norm": patch,
                "rel": _ratio(drift, weight),
                "ratio": _ratio(drift, patch),
            }
        )
    modules.sort(key=lambda m: (-_key(m["ratio"]), m["module"]))
    max_rel = max((_key(m["rel"]) for m in modules), default=0.0)
    max_ratio = max((_key(m["ratio"]) for m in modules), default=0.0)
    data: dict[str, Any] = {
        "compared": len(modules),
        "skipped": skipped,
        "max_rel": max_rel if math.isfinite(max_rel) else None,
        "max_ratio": max_ratio if math.isfinite(max_ratio) else None,
        "modules": modules,
        "thresholds": {"rel": warn_relative, "ratio": warn_ratio},
    }
    summary = f"max ‖W′−W‖/‖W‖ {max_rel:.3g}, max ‖W′−W‖/‖sBA‖ {max_ratio:.3g} over {len(modules)} modules"
    if not modules and not skipped:
        return result(NAME, "pass", "the patch has no LoRA modules to compare", **data)
    warnings = []
    if skipped:
        warnings.append(f"{len(skipped)} modules not compared: {preview(skipped)}")
    drifted = [m["module"] for m in modules if _key(m["rel"]) > warn_relative or _key(m["ratio"]) > warn_ratio]
    if drifted:
        warnings.append(f"the base moved a lot on {len(drifted)} modules ({preview(drifted)}): validate before use")
    if warnings:
        return result(NAME, "warn", f"{summary}; " + "; ".join(warnings), **data)
    if max_rel == 0.0:
        return result(NAME, "pass", f"no drift: identical weights on all {len(modules)} patched modules", **data)
    return result(NAME, "pass", summary, **data)
