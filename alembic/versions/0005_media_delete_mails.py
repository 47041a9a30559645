"""Issue L: a poster frame per result, tasks deleted by their owner (files gone, row kept for the
ledger), the run-finished e-mail (sent once per run; a per-user setting), canceled runs.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

from vgen_app.models import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "runs", sa.Column("poster_key", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True)
    )
    op.add_column("runs", sa.Column("finished_mail_at", UTCDateTime(timezone=True), nullable=True))
    # Runs that finished before this: no run-finished e-mail for them now.
    op.execute(
        "UPDATE runs SET finished_mail_at = finished_at "
        "WHERE status IN ('succeeded', 'failed', 'canceled')"
    )
    op.create_index("ix_runs_mail_pending", "runs", ["finished_mail_at", "status"])
    op.add_column("tasks", sa.Column("deleted_at", UTCDateTime(timezone=True), nullable=True))
    op.add_column(
        "users", sa.Column("run_mails", sa.Boolean(), nullable=False, server_default=sa.true())
    )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("run_mails")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("deleted_at")
    op.drop_index("ix_runs_mail_pending", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("finished_mail_at")
        batch.drop_column("poster_key")
