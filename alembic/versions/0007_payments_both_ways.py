"""Issue N: payments both ways. A checkout's PaymentIntent, receipt, charged amount, failure or
expiry, its charge's refunds and dispute and what they took back (and could not: the shortfall);
the Stripe events applied (payment_events) and the refunds and disputes applied
(payment_adjustments), each once by its primary key.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

from vgen_app.models import UTCDateTime

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _text(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def _count(name: str) -> sa.Column:
    return sa.Column(name, sa.BigInteger(), nullable=False, server_default="0")


def upgrade() -> None:
    with op.batch_alter_table("checkout_sessions") as batch:
        batch.add_column(sa.Column("payment_intent", _text(255), nullable=True))
        batch.add_column(sa.Column("paid_cents", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("receipt_url", _text(2000), nullable=True))
        batch.add_column(sa.Column("closed_at", UTCDateTime(timezone=True), nullable=True))
        batch.add_column(_count("refunded_cents"))
        batch.add_column(_count("refund_tokens"))
        batch.add_column(sa.Column("dispute_status", _text(16), nullable=True))
        batch.add_column(_count("tokens_taken_back"))
        batch.add_column(_count("shortfall"))
        batch.create_index("ix_checkout_sessions_payment_intent", ["payment_intent"])

    op.create_table(
        "payment_events",
        sa.Column("event_id", _text(255), nullable=False),
        sa.Column("type", _text(64), nullable=False),
        sa.Column("checkout_session_id", _text(255), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["checkout_session_id"], ["checkout_sessions.id"]),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_table(
        "payment_adjustments",
        sa.Column("object_id", _text(255), nullable=False),
        sa.Column("kind", _text(16), nullable=False),
        sa.Column("checkout_session_id", _text(255), nullable=False),
        sa.Column("user_id", _text(32), nullable=False),
        sa.Column("event_id", _text(255), nullable=True),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("detail", _text(32), nullable=True),
        sa.Column("ledger_entry_id", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["checkout_session_id"], ["checkout_sessions.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.ForeignKeyConstraint(["ledger_entry_id"], ["ledger_entries.id"]),
        sa.PrimaryKeyConstraint("object_id", "kind"),
    )
    op.create_index(
        "ix_payment_adjustments_checkout", "payment_adjustments", ["checkout_session_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_payment_adjustments_checkout", table_name="payment_adjustments")
    op.drop_table("payment_adjustments")
    op.drop_table("payment_events")
    with op.batch_alter_table("checkout_sessions") as batch:
        batch.drop_index("ix_checkout_sessions_payment_intent")
        for column in (
            "shortfall",
            "tokens_taken_back",
            "dispute_status",
            "refund_tokens",
            "refunded_cents",
            "closed_at",
            "receipt_url",
            "paid_cents",
            "payment_intent",
        ):
            batch.drop_column(column)
