"""The catalog's tables (SQLAlchemy 2.x typed ORM). Alembic migrations create them; never ``create_all``.

Every constraint and index has an explicit name (``NAMING``) so migrations stay portable
between SQLite (batch mode) and PostgreSQL.

=================  =============================================================================
patches            one row per ``namespace/name``
versions           one immutable version of a patch: PEP 440 version, sort key, content digest,
                   manifest JSON (patch.json), yanked flag and reason
files              a version's files: relative path, sha256, size (bytes live in the content store)
aliases            ``org/name@stable`` → a version
bases              base checkpoints by ``weights_sha256`` (unique); structure and tensor-content
                   fingerprints, family
base_lineage       edges child → parent with a relation (``update``, ``finetune``, ...)
version_remotes    where a version was published (remote URL, revision/commit)
compat_reports     the result of ``check`` for a version on a base
validations        eval scores and verdict for a version on a base
installs           each install: version, base, output, format, forced, report used, the
                   resolver's decision (when a range or alias was installed)
=================  =============================================================================
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "NAMING",
    "Alias",
    "Base",
    "BaseLineage",
    "BaseModel",
    "CompatReport",
    "FileRow",
    "Install",
    "Patch",
    "Validation",
    "Version",
    "VersionRemote",
]

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SHA = String(64)
TS = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Patch(Base):
    __tablename__ = "patches"
    __table_args__ = (UniqueConstraint("name", name="uq_patches_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace: Mapped[str] = mapped_column(String(96), index=True)
    name: Mapped[str] = mapped_column(String(200), comment="namespace/name")
    created_at: Mapped[datetime] = mapped_column(TS)


class Version(Base):
    __tablename__ = "versions"
    # sort_key is equal for equal PEP 440 versions (1.0 == 1.0.0): it is the version's identity
    __table_args__ = (
        UniqueConstraint("patch_id", "sort_key", name="uq_versions_patch_id_sort_key"),
        # list's newest non-yanked version of a patch: one seek (0004)
        Index("ix_versions_listing", "patch_id", "yanked", "sort_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patch_id: Mapped[int] = mapped_column(
        ForeignKey("patches.id", name="fk_versions_patch_id_patches", ondelete="CASCADE"), index=True
    )
    version: Mapped[str] = mapped_column(String(64), comment="PEP 440 normal form")
    sort_key: Mapped[str] = mapped_column(String(255), comment="sorts like packaging.version.Version")
    content_digest: Mapped[str] = mapped_column(SHA)
    manifest_sha256: Mapped[str] = mapped_column(SHA)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    task: Mapped[str] = mapped_column(Text)
    source_weights_sha256: Mapped[str] = mapped_column(SHA, index=True)
    yanked: Mapped[bool] = mapped_column(Boolean, default=False)
    yank_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(TS)


class FileRow(Base):
    __tablename__ = "files"
    __table_args__ = (
        UniqueConstraint("version_id", "path", name="uq_files_version_id_path"),
        CheckConstraint("size >= 0", name="size_nonnegative"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("versions.id", name="fk_files_version_id_versions", ondelete="CASCADE"), index=True
    )
    path: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(SHA, index=True)
    size: Mapped[int] = mapped_column(BigInteger)


class Alias(Base):
    __tablename__ = "aliases"
    __table_args__ = (UniqueConstraint("patch_id", "alias", name="uq_aliases_patch_id_alias"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patch_id: Mapped[int] = mapped_column(
        ForeignKey("patches.id", name="fk_aliases_patch_id_patches", ondelete="CASCADE")
    )
    alias: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(
        ForeignKey("versions.id", name="fk_aliases_version_id_versions", ondelete="CASCADE"), index=True
    )
    updated_at: Mapped[datetime] = mapped_column(TS)
    #: set by ``ci --promote``: the base (weights fingerprint) the version was validated on, and the validation
    validated_base_sha256: Mapped[str | None] = mapped_column(SHA, nullable=True)
    validation_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class BaseModel(Base):
    """A base checkpoint. (Named ``BaseModel`` in Python; the table is ``bases``.)"""

    __tablename__ = "bases"
    __table_args__ = (UniqueConstraint("weights_sha256", name="uq_bases_weights_sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(Text, comment="local path or hf://repo")
    revision: Mapped[str | None] = mapped_column(String(255), nullable=True)
    weights_sha256: Mapped[str] = mapped_column(SHA)
    structure_sha256: Mapped[str] = mapped_column(SHA, index=True)
    #: per-tensor content fingerprint (0004): identical weights re-sharded/re-uploaded share it
    tensors_sha256: Mapped[str | None] = mapped_column(SHA, nullable=True, index=True)
    family: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(TS)


class BaseLineage(Base):
    __tablename__ = "base_lineage"
    __table_args__ = (
        UniqueConstraint("child_id", "parent_id", name="uq_base_lineage_child_id_parent_id"),
        CheckConstraint("child_id <> parent_id", name="not_self"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    child_id: Mapped[int] = mapped_column(
        ForeignKey("bases.id", name="fk_base_lineage_child_id_bases", ondelete="CASCADE"), index=True
    )
    parent_id: Mapped[int] = mapped_column(
        ForeignKey("bases.id", name="fk_base_lineage_parent_id_bases", ondelete="CASCADE"), index=True
    )
    relation: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(TS)


class VersionRemote(Base):
    __tablename__ = "version_remotes"
    __table_args__ = (UniqueConstraint("version_id", "url", name="uq_version_remotes_version_id_url"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("versions.id", name="fk_version_remotes_version_id_versions", ondelete="CASCADE")
    )
    url: Mapped[str] = mapped_column(String(1024))
    revision: Mapped[str | None] = mapped_column(String(255), nullable=True)
    pushed_at: Mapped[datetime] = mapped_column(TS)


class CompatReport(Base):
    __tablename__ = "compat_reports"
    # the resolver's cache key (version, base) and show's "latest report per base" (0004)
    __table_args__ = (
        Index("ix_compat_reports_version_id_base_weights_sha256_id", "version_id", "base_weights_sha256", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("versions.id", name="fk_compat_reports_version_id_versions", ondelete="CASCADE"), index=True
    )
    base_weights_sha256: Mapped[str] = mapped_column(SHA, index=True)
    status: Mapped[str] = mapped_column(String(16), comment="pass | warn | fail")
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    tool_version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(TS)


class Validation(Base):
    __tablename__ = "validations"
    # "validated on this exact base" for the resolver (0004)
    __table_args__ = (Index("ix_validations_version_id_base_weights_sha256", "version_id", "base_weights_sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("versions.id", name="fk_validations_version_id_versions", ondelete="CASCADE"), index=True
    )
    base_weights_sha256: Mapped[str] = mapped_column(SHA, index=True)
    scores: Mapped[dict[str, Any]] = mapped_column(JSON)
    verdict: Mapped[str] = mapped_column(String(16), comment="pass | regressed | no-baseline")
    thresholds: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(TS)
    base_ref: Mapped[str | None] = mapped_column(
        Text, nullable=True, comment="the base as named: a path or hf://repo@rev"
    )
    limit: Mapped[int | None] = mapped_column(Integer, nullable=True, comment="examples per task (None: all)")
    lm_eval_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    tool_version: Mapped[str | None] = mapped_column(String(64), nullable=True, comment="patchctl version")
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    check_status: Mapped[str | None] = mapped_column(String(16), nullable=True, comment="pass | warn | fail")
    forced: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class Install(Base):
    __tablename__ = "installs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("versions.id", name="fk_installs_version_id_versions", ondelete="CASCADE"), index=True
    )
    base_weights_sha256: Mapped[str] = mapped_column(SHA, index=True)
    out_path: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(16), comment="merged | adapter")
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    report_id: Mapped[int | None] = mapped_column(
        ForeignKey("compat_reports.id", name="fk_installs_report_id_compat_reports", ondelete="SET NULL"),
        nullable=True,
    )
    #: how the resolver chose this version for the base (``install REQ --onto BASE``), when it did (0004)
    decision: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(TS)
