"""The patch manifest, ``patch.json``: what a patch is, what it was trained on, what it holds.

Strict (``extra="forbid"``), frozen, versioned by ``schema_version``. ``patchctl schema``
prints its JSON Schema.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from patchctl.errors import ManifestError
from patchctl.schemas._common import SafeRelPath, Sha256, StrictModel, format_validation_error
from patchctl.schemas._names import check_patch_name, normalize_version
from patchctl.schemas.base import Family, TokenizerFacts

__all__ = [
    "EVAL_DIR",
    "MANIFEST_FILE",
    "SCHEMA_VERSION",
    "EvalBaseline",
    "EvalResult",
    "EvalSpec",
    "EvalTaskSpec",
    "FileEntry",
    "LoraSpec",
    "Manifest",
    "SourceBase",
    "check_patch_name",
    "content_digest",
    "migrate_manifest",
    "normalize_version",
]

MANIFEST_FILE = "patch.json"
#: 2: the ``eval`` section (an lm-evaluation-harness task folder stored under ``eval/``).
#: Version 1 documents (no ``eval``) are migrated on read: see :func:`migrate_manifest`.
SCHEMA_VERSION = 2
#: the folder of a version's files that holds its eval set
EVAL_DIR = "eval"


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


class EvalBaseline(StrictModel):
    """The scores of one eval task on the source base θ, unpatched and patched (θ + Δθ)."""

    base_weights_sha256: Sha256
    patched: float
    unpatched: float
    limit: int | None = Field(default=None, ge=1, description="examples per task scored (None: all)")
    lm_eval_version: str


class EvalTaskSpec(StrictModel):
    """One lm-eval task of the eval set, the metric the verdict gates on, and its thresholds."""

    task: str = Field(min_length=1, description="lm-eval task name (the `task:` key of a YAML in eval/)")
    metric: str = Field(min_length=1, description="lm-eval metric gated on, e.g. acc")
    filter: str = Field(default="none", min_length=1, description="lm-eval filter of the metric (`acc,none`)")
    higher_is_better: bool = True
    min_score: float | None = Field(default=None, description="patched score on a new base must be at least this")
    max_drop: float | None = Field(
        default=0.02, ge=0, description="patched score may fall at most this many points below the baseline's patched"
    )
    min_retained: float | None = Field(
        default=None,
        description="(patched - unpatched) on the new base / the same gain on the source base must be at least this",
    )
    baseline: EvalBaseline | None = Field(default=None, description="scores on the source base, recorded at push")

    @property
    def result_key(self) -> str:
        """The key of the metric in lm-eval's results (``acc,none``)."""
        return f"{self.metric},{self.filter}"


class EvalSpec(StrictModel):
    """An lm-evaluation-harness task folder stored with the patch under ``eval/``: task YAMLs whose
    data are local files of the folder (``dataset_path: json`` + ``data_files`` relative to it)."""

    tasks: tuple[EvalTaskSpec, ...] = Field(min_length=1)
    files: tuple[FileEntry, ...] = Field(
        min_length=1, description="the folder's files (paths relative to eval/); also listed in the manifest's files"
    )
    contains_code: bool = Field(
        default=False, description="the folder has `!function` or Python files (runs only with --trust-eval-code)"
    )

    @model_validator(mode="after")
    def _unique(self) -> EvalSpec:
        names = [t.task for t in self.tasks]
        if len(names) != len(set(names)):
            raise ValueError("tasks: duplicate task names")
        return self


def migrate_manifest(data: Any) -> Any:
    """Bring a stored patch.json document to :data:`SCHEMA_VERSION` (1 → 2: no ``eval`` section)."""
    if isinstance(data, dict) and data.get("schema_version") == 1:
        data = {**data, "schema_version": 2}
    return data


class Manifest(StrictModel):
    schema_version: Literal[2] = 2
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
    eval: EvalSpec | None = Field(default=None, description="the eval set (lm-eval task folder under eval/)")

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
        listed = {(f.path, f.sha256, f.size) for f in self.files if f.path.startswith(EVAL_DIR + "/")}
        declared = set()
        if self.eval is not None:
            declared = {(f"{EVAL_DIR}/{f.path}", f.sha256, f.size) for f in self.eval.files}
        if listed != declared:
            raise ValueError(f"files under {EVAL_DIR}/ and eval.files disagree")
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
            return cls.model_validate(migrate_manifest(data))
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
