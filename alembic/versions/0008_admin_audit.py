"""Issue O: the admin audit. One `admin_audit` row per admin API call: when, which token (a
fingerprint), method, route and path, action, target user, what was asked, before/after, outcome
and HTTP status.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

from vgen_app.models import UTCDateTime

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table(
        "admin_audit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("token", _text(16), nullable=True),
        sa.Column("method", _text(8), nullable=False),
        sa.Column("route", _text(200), nullable=False),
        sa.Column("path", _text(500), nullable=False),
        sa.Column("action", _text(32), nullable=False),
        sa.Column("user_id", _text(32), nullable=True),
        sa.Column("request", sa.JSON(), nullable=True),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("outcome", _text(16), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_admin_audit_user_id_id", "admin_audit", ["user_id", "id"])
    op.create_index("ix_admin_audit_action_id", "admin_audit", ["action", "id"])
    op.create_index("ix_admin_audit_outcome_created_at", "admin_audit", ["outcome", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_admin_audit_outcome_created_at", table_name="admin_audit")
    op.drop_index("ix_admin_audit_action_id", table_name="admin_audit")
    op.drop_index("ix_admin_audit_user_id_id", table_name="admin_audit")
    op.drop_table("admin_audit")
