"""Plain frozen records that :class:`patchctl.registry.store.Catalog` returns (never ORM rows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # (records hold them; building them is the store's job, which imports them)
    from patchctl.schemas.base import Family
    from patchctl.schemas.manifest import FileEntry, Manifest

__all__ = [
    "AddVersionResult",
    "AliasInfo",
    "Ancestor",
    "BaseInfo",
    "CompatReportRecord",
    "InstallRecord",
    "LineageEdge",
    "LineageGraph",
    "LineageResult",
    "LineageVersion",
    "PatchSummary",
    "RemoteCopy",
    "ResolvedVersion",
    "ValidationRecord",
    "VersionInfo",
]


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str
    content_digest: str
    manifest_sha256: str
    manifest: Manifest
    yanked: bool
    yank_reason: str | None
    created_at: datetime

    @property
    def files(self) -> tuple[FileEntry, ...]:
        return self.manifest.files

    @property
    def ref(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class AddVersionResult:
    version: VersionInfo
    #: False when the same content was already recorded (an idempotent re-push)
    created: bool


@dataclass(frozen=True)
class ResolvedVersion:
    version: VersionInfo
    via: Literal["version", "spec", "alias", "latest"]

    @property
    def yanked(self) -> bool:
        return self.version.yanked


@dataclass(frozen=True)
class PatchSummary:
    name: str
    namespace: str
    latest: str | None  # newest non-yanked version
    task: str | None  # of the latest version
    versions: int
    yanked: int
    aliases: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AliasInfo:
    name: str
    alias: str
    version: str
    updated_at: datetime
    #: the base (weights fingerprint) ``ci --promote`` validated the version on before moving the alias
    validated_on: str | None = None
    validation_id: int | None = None


@dataclass(frozen=True)
class BaseInfo:
    source: str
    revision: str | None
    weights_sha256: str
    structure_sha256: str
    family: Family
    created_at: datetime


@dataclass(frozen=True)
class LineageEdge:
    child: str  # weights_sha256
    parent: str
    relation: str
    created_at: datetime


@dataclass(frozen=True)
class Ancestor:
    base: BaseInfo
    relation: str  # relation of the edge that reached it
    depth: int  # 1 = parent, 2 = grandparent, ...


@dataclass(frozen=True)
class RemoteCopy:
    name: str
    version: str
    url: str
    revision: str | None
    pushed_at: datetime


@dataclass(frozen=True)
class CompatReportRecord:
    id: int
    name: str
    version: str
    base_weights_sha256: str
    status: str
    report: dict[str, Any]
    tool_version: str
    created_at: datetime


@dataclass(frozen=True)
class ValidationRecord:
    id: int
    name: str
    version: str
    base_weights_sha256: str
    scores: dict[str, Any]
    verdict: str
    thresholds: dict[str, Any]
    created_at: datetime
    base_ref: str | None = None
    limit: int | None = None
    lm_eval_version: str | None = None
    tool_version: str | None = None
    duration_s: float | None = None
    check_status: str | None = None
    forced: bool = False


@dataclass(frozen=True)
class InstallRecord:
    id: int
    name: str
    version: str
    base_weights_sha256: str
    out_path: str
    format: str
    forced: bool
    report_id: int | None
    created_at: datetime
    #: the resolver's decision when the install named a range or alias (``install REQ --onto BASE``)
    decision: dict[str, Any] | None = None


@dataclass(frozen=True)
class LineageVersion:
    ref: str
    source_weights_sha256: str
    yanked: bool


@dataclass(frozen=True)
class LineageResult:
    """A check report or a validation of a version on a base (the newest of each pair)."""

    ref: str
    base_weights_sha256: str
    kind: Literal["check", "validation"]
    status: str  # pass | warn | fail (checks), pass | fail (validations)


@dataclass(frozen=True)
class LineageGraph:
    """The bases connected to the seeds (ancestors and descendants), their edges, the patch versions
    made on them, and the checks and validations run on them."""

    bases: tuple[BaseInfo, ...]
    edges: tuple[LineageEdge, ...]
    versions: tuple[LineageVersion, ...]
    results: tuple[LineageResult, ...]
    #: base fingerprint → versions made on it that are not listed (over the per-base limit)
    more_versions: dict[str, int] = field(default_factory=dict)
