"""records of what happens to versions: remotes, compat reports, validations, installs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 09:44:00.767953

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "compat_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("base_weights_sha256", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False, comment="pass | warn | fail"),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("tool_version", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"], ["versions.id"], name="fk_compat_reports_version_id_versions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_compat_reports")),
    )
    with op.batch_alter_table("compat_reports", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_compat_reports_base_weights_sha256"), ["base_weights_sha256"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_compat_reports_version_id"), ["version_id"], unique=False)

    op.create_table(
        "validations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("base_weights_sha256", sa.String(length=64), nullable=False),
        sa.Column("scores", sa.JSON(), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False, comment="pass | fail"),
        sa.Column("thresholds", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"], ["versions.id"], name="fk_validations_version_id_versions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_validations")),
    )
    with op.batch_alter_table("validations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_validations_base_weights_sha256"), ["base_weights_sha256"], unique=False)
        batch_op.create_index(batch_op.f("ix_validations_version_id"), ["version_id"], unique=False)

    op.create_table(
        "version_remotes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=1024), nullable=False),
        sa.Column("revision", sa.String(length=255), nullable=True),
        sa.Column("pushed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"], ["versions.id"], name="fk_version_remotes_version_id_versions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_version_remotes")),
        sa.UniqueConstraint("version_id", "url", name="uq_version_remotes_version_id_url"),
    )
    op.create_table(
        "installs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("base_weights_sha256", sa.String(length=64), nullable=False),
        sa.Column("out_path", sa.Text(), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False, comment="merged | adapter"),
        sa.Column("forced", sa.Boolean(), nullable=False),
        sa.Column("report_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["report_id"], ["compat_reports.id"], name="fk_installs_report_id_compat_reports", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["version_id"], ["versions.id"], name="fk_installs_version_id_versions", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_installs")),
    )
    with op.batch_alter_table("installs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_installs_base_weights_sha256"), ["base_weights_sha256"], unique=False)
        batch_op.create_index(batch_op.f("ix_installs_version_id"), ["version_id"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("installs")
    op.drop_table("validations")
    op.drop_table("compat_reports")
    op.drop_table("version_remotes")
