"""initial catalog schema: patches, versions, files, aliases, bases, lineage

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-29 09:44:00.767953

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""

    op.create_table(
        "bases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False, comment="local path or hf://repo"),
        sa.Column("revision", sa.String(length=255), nullable=True),
        sa.Column("weights_sha256", sa.String(length=64), nullable=False),
        sa.Column("structure_sha256", sa.String(length=64), nullable=False),
        sa.Column("family", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bases")),
        sa.UniqueConstraint("weights_sha256", name="uq_bases_weights_sha256"),
    )
    with op.batch_alter_table("bases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bases_structure_sha256"), ["structure_sha256"], unique=False)

    op.create_table(
        "patches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("namespace", sa.String(length=96), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False, comment="namespace/name"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patches")),
        sa.UniqueConstraint("name", name="uq_patches_name"),
    )
    with op.batch_alter_table("patches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_patches_namespace"), ["namespace"], unique=False)

    op.create_table(
        "base_lineage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("child_id", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=False),
        sa.Column("relation", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("child_id <> parent_id", name=op.f("ck_base_lineage_not_self")),
        sa.ForeignKeyConstraint(["child_id"], ["bases.id"], name="fk_base_lineage_child_id_bases", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["bases.id"], name="fk_base_lineage_parent_id_bases", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_base_lineage")),
        sa.UniqueConstraint("child_id", "parent_id", name="uq_base_lineage_child_id_parent_id"),
    )
    with op.batch_alter_table("base_lineage", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_base_lineage_child_id"), ["child_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_base_lineage_parent_id"), ["parent_id"], unique=False)

    op.create_table(
        "versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patch_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False, comment="PEP 440 normal form"),
        sa.Column("sort_key", sa.String(length=255), nullable=False, comment="sorts like packaging.version.Version"),
        sa.Column("content_digest", sa.String(length=64), nullable=False),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("task", sa.Text(), nullable=False),
        sa.Column("source_weights_sha256", sa.String(length=64), nullable=False),
        sa.Column("yanked", sa.Boolean(), nullable=False),
        sa.Column("yank_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["patch_id"], ["patches.id"], name="fk_versions_patch_id_patches", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_versions")),
        sa.UniqueConstraint("patch_id", "sort_key", name="uq_versions_patch_id_sort_key"),
    )
    with op.batch_alter_table("versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_versions_patch_id"), ["patch_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_versions_source_weights_sha256"), ["source_weights_sha256"], unique=False)

    op.create_table(
        "aliases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patch_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["patch_id"], ["patches.id"], name="fk_aliases_patch_id_patches", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["version_id"], ["versions.id"], name="fk_aliases_version_id_versions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_aliases")),
        sa.UniqueConstraint("patch_id", "alias", name="uq_aliases_patch_id_alias"),
    )
    with op.batch_alter_table("aliases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_aliases_version_id"), ["version_id"], unique=False)

    op.create_table(
        "files",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("size >= 0", name=op.f("ck_files_size_nonnegative")),
        sa.ForeignKeyConstraint(
            ["version_id"], ["versions.id"], name="fk_files_version_id_versions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_files")),
        sa.UniqueConstraint("version_id", "path", name="uq_files_version_id_path"),
    )
    with op.batch_alter_table("files", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_files_sha256"), ["sha256"], unique=False)
        batch_op.create_index(batch_op.f("ix_files_version_id"), ["version_id"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("aliases")
    op.drop_table("files")
    op.drop_table("versions")
    op.drop_table("base_lineage")
    op.drop_table("patches")
    op.drop_table("bases")
