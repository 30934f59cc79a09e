"""catalog at scale: composite indexes for the resolver and show; the resolver's decision on installs;
the tensor-content fingerprint of bases

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 20:10:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("versions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_versions_listing",
            ["patch_id", "yanked", "sort_key"],
            unique=False,
        )
    with op.batch_alter_table("compat_reports", schema=None) as batch_op:
        batch_op.create_index(
            "ix_compat_reports_version_id_base_weights_sha256_id",
            ["version_id", "base_weights_sha256", "id"],
            unique=False,
        )
    with op.batch_alter_table("validations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_validations_version_id_base_weights_sha256", ["version_id", "base_weights_sha256"], unique=False
        )
    with op.batch_alter_table("installs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("decision", sa.JSON(), nullable=True))
    with op.batch_alter_table("bases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tensors_sha256", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_bases_tensors_sha256", ["tensors_sha256"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("bases", schema=None) as batch_op:
        batch_op.drop_index("ix_bases_tensors_sha256")
        batch_op.drop_column("tensors_sha256")
    with op.batch_alter_table("installs", schema=None) as batch_op:
        batch_op.drop_column("decision")
    with op.batch_alter_table("validations", schema=None) as batch_op:
        batch_op.drop_index("ix_validations_version_id_base_weights_sha256")
    with op.batch_alter_table("compat_reports", schema=None) as batch_op:
        batch_op.drop_index("ix_compat_reports_version_id_base_weights_sha256_id")
    with op.batch_alter_table("versions", schema=None) as batch_op:
        batch_op.drop_index("ix_versions_listing")
