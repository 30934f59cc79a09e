"""Tensors the model class keeps in fp32 (``_keep_in_fp32_modules``, e.g. T5's ``wo``).

transformers loads a half-precision checkpoint with those tensors upcast to fp32 (its "dtype
plan": ``_keep_in_fp32_modules`` when the load dtype is fp16, ``_keep_in_fp32_modules_strict``
for fp16 and bf16). PEFT then merges them in fp32 and ``save_pretrained`` writes them as fp32.
The merge mirrors that for the tensors it touches: read the base's half-precision values, upcast
(exactly), add the fp32 delta, write fp32. Untouched ones are copied as they are (transformers
upcasts them at load, so the loaded models are the same).

The dtype plan is transformers' own (``PreTrainedModel._get_dtype_plan`` of the base's
architecture, built on the meta device: no weights read), matched against tensor names as
transformers matches it (a regex search of the patterns, ``*`` as ``.*``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["fp32_patterns", "load_dtype", "matches_fp32"]

log = logging.getLogger(__name__)

_CONFIG_DTYPES = {"float16": "F16", "bfloat16": "BF16", "float32": "F32", "half": "F16", "float": "F32"}


def load_dtype(config: Mapping[str, Any], tensor_dtypes: list[str]) -> str | None:
    """The dtype transformers loads the base in by default (``dtype="auto"``): the config's
    ``dtype``/``torch_dtype``, else the checkpoint's first floating dtype."""
    for key in ("dtype", "torch_dtype"):
        value = config.get(key)
        if isinstance(value, str) and value in _CONFIG_DTYPES:
            return _CONFIG_DTYPES[value]
    return next((d for d in tensor_dtypes if d in ("F16", "BF16", "F32", "F64")), None)


def fp32_patterns(base_dir: Path, config: Mapping[str, Any], dtype: str | None) -> tuple[tuple[str, ...], str | None]:
    """``(patterns, problem)``: the dtype-plan patterns of tensors transformers keeps in fp32 when
    loading this base in ``dtype``; ``problem`` says why they could not be determined (then none)."""
    if dtype not in ("F16", "BF16"):
        return (), None
    archs = config.get("architectures") or []
    if not archs:
        return (), "config.json names no architecture: _keep_in_fp32_modules not known"
    try:
        import torch
        import transformers
    except ImportError:
        return (), "transformers is not installed: _keep_in_fp32_modules not known"
    cls = getattr(transformers, str(archs[0]), None)
    if cls is None:
        return (), f"{archs[0]} is not a transformers class: _keep_in_fp32_modules not known"
    try:
        cfg = transformers.AutoConfig.from_pretrained(str(base_dir))
        with torch.device("meta"):
            model = cls(cfg)
        plan = model._get_dtype_plan(torch.float16 if dtype == "F16" else torch.bfloat16)
    except Exception as exc:  # a model that cannot be built from its config here: say so, do not guess
        log.debug("dtype plan of %s failed: %r", archs[0], exc)
        return (), f"{archs[0]}: the model could not be built to read _keep_in_fp32_modules ({type(exc).__name__})"
    return tuple(p for p, d in plan.items() if d == torch.float32), None


def matches_fp32(patterns: tuple[str, ...], name: str) -> bool:
    """transformers' matching of a tensor name against its dtype plan (core_model_loading)."""
    return any(re.search(p.replace("*", ".*"), name) for p in patterns)
