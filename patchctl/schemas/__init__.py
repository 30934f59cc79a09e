"""Pydantic models and parsers for patchctl's formats. No I/O beyond reading a given file, no torch."""

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
