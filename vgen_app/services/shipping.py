"""Shipping the analytics outbox to BigQuery: in order, in batches, insertId = outbox row id.

Rows are marked delivered only after BigQuery accepted them; a crash in between resends them with
the same insertId (deduplicated by BigQuery). A row BigQuery rejects is retried a few times, then
kept as failed — with its error — for an operator to see (`vgen analytics status`), never dropped.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from vgen_app import clock
from vgen_app.adapters.analytics import AnalyticsSink, BigQuerySink, make_client, to_bigquery_row
from vgen_app.config import get_settings
from vgen_app.db import end_read
from vgen_app.models import AnalyticsOutbox

log = logging.getLogger("vgen.analytics")

MAX_ROW_ATTEMPTS = 5


@dataclass
class ShipReport:
    """What one shipping pass did: rows sent, rows the warehouse refused, batches, errors."""

    sent: int = 0
    rejected: int = 0
    batches: int = 0
    errors: list[str] = field(default_factory=list)


def _pending_query(limit: int):
    return (
        select(AnalyticsOutbox)
        .where(
            col(AnalyticsOutbox.delivered_at).is_(None),
            col(AnalyticsOutbox.attempts) < MAX_ROW_ATTEMPTS,
        )
        .order_by(col(AnalyticsOutbox.id))
        .limit(limit)
    )


def ship_once(db: Session, sink: AnalyticsSink, batch_size: int | None = None) -> ShipReport:
    """Send the oldest pending rows (one request per table). Raises SinkUnavailable, marking nothing,
    when BigQuery cannot be reached: the caller backs off and tries again."""
    batch_size = batch_size or get_settings().analytics_batch_size
    rows = list(db.exec(_pending_query(batch_size)))
    end_read(db)
    report = ShipReport()
    by_table: dict[str, list[AnalyticsOutbox]] = defaultdict(list)
    for row in rows:
        by_table[row.table_name].append(row)
    for table, group in by_table.items():
        payload = [(str(r.id), to_bigquery_row(table, r.id or 0, r.row)) for r in group]
        errors = sink.insert(table, payload)
        report.batches += 1
        bad = {e.index: e.message for e in errors if 0 <= e.index < len(group)}
        ok_ids = [r.id for i, r in enumerate(group) if i not in bad]
        now = clock.now()
        if ok_ids:
            db.exec(
                update(AnalyticsOutbox)
                .where(
                    col(AnalyticsOutbox.id).in_(ok_ids), col(AnalyticsOutbox.delivered_at).is_(None)
                )
                .values(
                    delivered_at=now, attempts=col(AnalyticsOutbox.attempts) + 1, last_error=None
                )
            )
        for index, message in bad.items():
            db.exec(
                update(AnalyticsOutbox)
                .where(col(AnalyticsOutbox.id) == group[index].id)
                .values(attempts=col(AnalyticsOutbox.attempts) + 1, last_error=message[:1000])
            )
            log.error("analytics row %s (%s) rejected: %s", group[index].id, table, message)
            report.errors.append(f"{group[index].id}: {message}")
        db.commit()
        report.sent += len(ok_ids)
        report.rejected += len(bad)
    return report


@dataclass(frozen=True)
class OutboxStatus:
    destination: str
    pending: int
    failed: int
    delivered: int
    oldest_pending_age_s: float | None
    failed_examples: list[str]


def status(db: Session) -> OutboxStatus:
    settings = get_settings()
    pending_where = (
        col(AnalyticsOutbox.delivered_at).is_(None),
        col(AnalyticsOutbox.attempts) < MAX_ROW_ATTEMPTS,
    )
    failed_where = (
        col(AnalyticsOutbox.delivered_at).is_(None),
        col(AnalyticsOutbox.attempts) >= MAX_ROW_ATTEMPTS,
    )
    count = lambda *where: int(
        db.exec(select(func.count()).select_from(AnalyticsOutbox).where(*where)).one()
    )
    pending, failed = count(*pending_where), count(*failed_where)
    delivered = count(col(AnalyticsOutbox.delivered_at).is_not(None))
    oldest = db.exec(select(func.min(AnalyticsOutbox.created_at)).where(*pending_where)).one()
    examples = [
        f"#{r.id} {r.table_name}: {r.last_error}"
        for r in db.exec(
            select(AnalyticsOutbox).where(*failed_where).order_by(col(AnalyticsOutbox.id)).limit(5)
        )
    ]
    end_read(db)
    destination = (
        f"BigQuery {settings.bigquery_project}.{settings.bigquery_dataset}"
        if settings.bigquery_project
        else "local only (BIGQUERY_PROJECT is not set): rows stay in the analytics_outbox table"
    )
    age = (clock.now() - oldest).total_seconds() if oldest else None
    return OutboxStatus(destination, pending, failed, delivered, age, examples)


def retry_failed(db: Session) -> int:
    """Give failed rows another round of attempts (after fixing what made BigQuery reject them)."""
    result = db.exec(
        update(AnalyticsOutbox)
        .where(
            col(AnalyticsOutbox.delivered_at).is_(None),
            col(AnalyticsOutbox.attempts) >= MAX_ROW_ATTEMPTS,
        )
        .values(attempts=0)
    )
    db.commit()
    return result.rowcount or 0


@lru_cache(maxsize=4)
def _sink_for(project: str, dataset: str, endpoint: str | None, deadline: float) -> BigQuerySink:
    return BigQuerySink(project, dataset, make_client(project, endpoint), retry_deadline_s=deadline)


def get_sink() -> BigQuerySink | None:
    """The BigQuery sink, or None when analytics stay local."""
    s = get_settings()
    if not s.bigquery_project:
        return None
    return _sink_for(
        s.bigquery_project,
        s.bigquery_dataset,
        s.bigquery_api_endpoint,
        s.bigquery_retry_deadline_seconds,
    )
