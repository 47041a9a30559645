"""Issue M: accounts deleted by their owner (the row anonymised, kept for the ledger), e-mail
change links (the new address), a session's country, and indexes for the retention job.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

from vgen_app.models import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("deleted_at", UTCDateTime(timezone=True), nullable=True))
    op.add_column(
        "one_time_links",
        sa.Column("new_email", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True),
    )
    op.add_column(
        "sessions", sa.Column("country", sqlmodel.sql.sqltypes.AutoString(length=2), nullable=True)
    )
    op.create_index("ix_sessions_expires_at", "sessions", ["expires_at"])
    op.create_index("ix_one_time_links_expires_at", "one_time_links", ["expires_at"])
    op.create_index("ix_auth_events_created_at", "auth_events", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_auth_events_created_at", table_name="auth_events")
    op.drop_index("ix_one_time_links_expires_at", table_name="one_time_links")
    op.drop_index("ix_sessions_expires_at", table_name="sessions")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("country")
    with op.batch_alter_table("one_time_links") as batch:
        batch.drop_column("new_email")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("deleted_at")
