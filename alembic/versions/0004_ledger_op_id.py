"""ledger_entries.op_id: the operation that wrote a row, so that the statements of one batch
(balance change, ledger row, analytics row, and what the operation records beside them) find it
without reading a result in between.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "ledger_entries",
        sa.Column("op_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    )
    op.create_index("ix_ledger_entries_op_id", "ledger_entries", ["op_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_ledger_entries_op_id", table_name="ledger_entries")
    with op.batch_alter_table("ledger_entries") as batch:
        batch.drop_column("op_id")
