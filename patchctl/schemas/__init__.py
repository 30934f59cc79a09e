"""Pydantic models and parsers for patchctl's formats. No I/O beyond reading a given file, no torch.

The names below are imported from their modules on first use, so that importing one module of
this package (say :mod:`patchctl.schemas._names`, which needs no pydantic) loads only that one.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from patchctl.schemas.base import BaseFacts, Family, TensorInfo, WeightFile
    from patchctl.schemas.manifest import (
        MANIFEST_FILE,
        EvalResult,
        FileEntry,
        LoraSpec,
        Manifest,
        SourceBase,
        content_digest,
    )
    from patchctl.schemas.peft_config import ADAPTER_CONFIG, ADAPTER_WEIGHTS, AdapterConfig, read_adapter_config
    from patchctl.schemas.refs import HubRef, PatchRef, PathRef, RemoteRef, parse_base_ref, parse_patch_ref
    from patchctl.schemas.report import CheckResult, CheckStatus, CompatReport

_MODULES: dict[str, tuple[str, ...]] = {
    "base": ("BaseFacts", "Family", "TensorInfo", "WeightFile"),
    "manifest": ("MANIFEST_FILE", "EvalResult", "FileEntry", "LoraSpec", "Manifest", "SourceBase", "content_digest"),
    "peft_config": ("ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "AdapterConfig", "read_adapter_config"),
    "refs": ("HubRef", "PatchRef", "PathRef", "RemoteRef", "parse_base_ref", "parse_patch_ref"),
    "report": ("CheckResult", "CheckStatus", "CompatReport"),
}
_LAZY = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "MANIFEST_FILE",
    "AdapterConfig",
    "BaseFacts",
    "CheckResult",
    "CheckStatus",
    "CompatReport",
    "EvalResult",
    "Family",
    "FileEntry",
    "HubRef",
    "LoraSpec",
    "Manifest",
    "PatchRef",
    "PathRef",
    "RemoteRef",
    "SourceBase",
    "TensorInfo",
    "WeightFile",
    "content_digest",
    "parse_base_ref",
    "parse_patch_ref",
    "read_adapter_config",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
