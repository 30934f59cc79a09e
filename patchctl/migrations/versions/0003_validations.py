"""validations: base ref, limit, lm-eval/patchctl versions, duration, checks, forced; aliases: validated-on base

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 20:20:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("validations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("base_ref", sa.Text(), nullable=True, comment="the base as named: a path or hf://repo@rev")
        )
        batch_op.add_column(sa.Column("limit", sa.Integer(), nullable=True, comment="examples per task (None: all)"))
        batch_op.add_column(sa.Column("lm_eval_version", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("tool_version", sa.String(length=64), nullable=True, comment="patchctl version"))
        batch_op.add_column(sa.Column("duration_s", sa.Float(), nullable=True))
        batch_op.add_column(
            sa.Column("check_status", sa.String(length=16), nullable=True, comment="pass | warn | fail")
        )
        batch_op.add_column(sa.Column("forced", sa.Boolean(), server_default="0", nullable=False))
        batch_op.alter_column(
            "verdict",
            existing_type=sa.String(length=16),
            comment="pass | regressed | no-baseline",
            existing_comment="pass | fail",
            existing_nullable=False,
        )
    with op.batch_alter_table("aliases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("validated_base_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("validation_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("aliases", schema=None) as batch_op:
        batch_op.drop_column("validation_id")
        batch_op.drop_column("validated_base_sha256")
    with op.batch_alter_table("validations", schema=None) as batch_op:
        batch_op.alter_column(
            "verdict",
            existing_type=sa.String(length=16),
            comment="pass | fail",
            existing_comment="pass | regressed | no-baseline",
            existing_nullable=False,
        )
        for col in ("forced", "check_status", "duration_s", "tool_version", "lm_eval_version", "limit", "base_ref"):
            batch_op.drop_column(col)
