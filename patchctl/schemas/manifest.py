"""The patch manifest, ``patch.json``: what a patch is, what it was trained on, what it holds.

Strict (``extra="forbid"``), frozen, versioned by ``schema_version``. ``patchctl schema``
prints its JSON Schema.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from packaging.version import InvalidVersion, Version
from pydantic import Field, ValidationError, field_validator, model_validator

from patchctl.errors import ManifestError
from patchctl.schemas._common import SafeRelPath, Sha256, StrictModel, format_validation_error
from patchctl.schemas.base import Family, TokenizerFacts

__all__ = [
    "MANIFEST_FILE",
    "SCHEMA_VERSION",
    "EvalResult",
    "FileEntry",
    "LoraSpec",
    "Manifest",
    "SourceBase",
    "check_patch_name",
    "content_digest",
    "normalize_version",
]

MANIFEST_FILE = "patch.json"
SCHEMA_VERSION = 1

_NAME_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_NAME = re.compile(rf"^{_NAME_PART}/{_NAME_PART}$")


def check_patch_name(value: str) -> str:
    """``namespace/name``: letters, digits, '.', '_' and '-', each part 1-96 chars (Hub repo id rules)."""
    if not _NAME.fullmatch(value) or ".." in value or "--" in value:
        raise ValueError(
            f"{value!r}: a patch name is 'namespace/name' (letters, digits, '.', '_', '-'; "
            "no '..' or '--'; each part at most 96 characters)"
        )
    return value


def normalize_version(value: str) -> str:
    """PEP 440 normal form of a version string (``1.0`` stays ``1.0``; ``v1.0.0`` → ``1.0.0``)."""
    try:
        return str(Version(value))
    except InvalidVersion:
        raise ValueError(f"{value!r} is not a valid PEP 440 version (e.g. 1.0.0, 1.2rc1)") from None


def content_digest(files: Iterable[tuple[str, str]]) -> str:
    """sha256 over sorted ``"<path>\\t<sha256>\\n"`` lines: the immutable identity of a version's files."""
    lines = sorted(f"{path}\t{sha}\n" for path, sha in files)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


class FileEntry(StrictModel):
    path: SafeRelPath
    sha256: Sha256
    size: int = Field(ge=0)


class LoraSpec(StrictModel):
    """The LoRA facts of the adapter, copied from adapter_config.json and counted from its weights."""

    peft_type: Literal["LORA"] = "LORA"
    r: int = Field(gt=0)
    lora_alpha: float
    use_rslora: bool = False
    rank_pattern: dict[str, int] = Field(default_factory=dict)
    alpha_pattern: dict[str, float] = Field(default_factory=dict)
    target_modules: tuple[str, ...] | str | None = None
    modules_to_save: tuple[str, ...] = ()
    fan_in_fan_out: bool = False
    bias: Literal["none", "all", "lora_only"] = "none"
    lora_bias: bool = False
    lora_pairs: int = Field(ge=0, description="number of (lora_A, lora_B) pairs in the weights")
    total_parameters: int = Field(ge=0, description="number of values in the adapter weights")


class SourceBase(StrictModel):
    """The base the patch was fine-tuned on (θ)."""

    repo: str = Field(min_length=1, description="Hub repo id or local path of the base")
    revision: str | None = None
    weights_sha256: Sha256
    structure_sha256: Sha256
    family: Family
    #: sha256 over the base's tokenizer files (``patchctl.bases.TOKENIZER_FILES``), None if it had none
    tokenizer_sha256: Sha256 | None = None
    #: what gives tokens their ids (``vocab`` compares this, not file bytes); None in older manifests
    tokenizer: TokenizerFacts | None = None


class EvalResult(StrictModel):
    task: str
    metric: str
    value: float
    base_weights_sha256: Sha256 | None = None
    n: int | None = Field(default=None, ge=0)


class Manifest(StrictModel):
    schema_version: Literal[1] = 1
    name: str
    version: str
    task: str = Field(min_length=1)
    description: str = ""
    license: str | None = None
    created_at: datetime
    patchctl_version: str
    lora: LoraSpec
    source_base: SourceBase
    files: tuple[FileEntry, ...] = Field(min_length=1)
    evals: tuple[EvalResult, ...] = ()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_patch_name(v)

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        return normalize_version(v)

    @model_validator(mode="after")
    def _unique_files(self) -> Manifest:
        paths = [f.path for f in self.files]
        if len(paths) != len(set(paths)):
            raise ValueError("files: duplicate paths")
        return self

    @property
    def namespace(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def short_name(self) -> str:
        return self.name.split("/", 1)[1]

    @property
    def content_digest(self) -> str:
        return content_digest((f.path, f.sha256) for f in self.files)

    def file(self, path: str) -> FileEntry:
        for f in self.files:
            if f.path == path:
                return f
        raise KeyError(path)

    def to_json(self) -> str:
        """Canonical text of patch.json (sorted keys, 2-space indent, trailing newline)."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = MANIFEST_FILE) -> Manifest:
        try:
            data: Any = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{source}: not valid JSON ({exc})") from None
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = MANIFEST_FILE) -> Manifest:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ManifestError(format_validation_error(exc, source)) from None

    @classmethod
    def read(cls, path: Path) -> Manifest:
        return cls.from_json(Path(path).read_bytes(), source=str(path))

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        schema = cls.model_json_schema(mode="serialization")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = "https://patchctl.dev/schemas/patch.schema.json"
        return schema
