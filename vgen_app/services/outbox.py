"""The analytics outbox: rows written in the caller's transaction, shipped to BigQuery later."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from vgen_app import clock
from vgen_app.models import AnalyticsOutbox

USER_SESSIONS = "user_sessions"
BALANCE_CHANGES = "balance_changes"
GENERATION_LOG = "generation_log"


def record(db: Session, table: str, row: dict[str, Any]) -> AnalyticsOutbox:
    """Add an event to the caller's transaction (the caller commits)."""
    at = clock.now()
    event = AnalyticsOutbox(
        table_name=table, row={"timestamp": at.isoformat(), **row}, created_at=at
    )
    db.add(event)
    return event
