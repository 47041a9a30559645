"""Retention (SPEC §9): what the privacy page says we forget is forgotten, by a background job.

`worker.housekeeping` runs `run_once` once per cluster (a lease) every RETENTION_EVERY_SECONDS, and
`prune_spool` in every process (the spool is each machine's own disk). Every batch is one
`DELETE … WHERE id IN (SELECT id … LIMIT n)` in its own short transaction (the same statement on
SQLite and PostgreSQL), so the job never holds a lock for long, and a kill at any moment loses
only the batch in flight, which the next round deletes.

What is due (the periods come from `config.py`; the landing's privacy page states the same settings
at build time, and `tests/landing/test_privacy_periods.py` fails if they differ):

| rows | due when | why not sooner |
| --- | --- | --- |
| analytics outbox, delivered | `delivered_at` older than OUTBOX_KEEP_DAYS | a copy to look at what was shipped |
| analytics outbox, not delivered | `created_at` older than BIGQUERY_PARTITION_EXPIRATION_DAYS | it waits to be shipped (or looked at, when BigQuery refused it); past the analytics period the warehouse would expire it anyway, and without BigQuery the outbox *is* the analytics log the privacy page promises to delete |
| sessions, revoked or not | `expires_at` passed (SESSION_TTL_DAYS after sign-in) | a revoked session no longer signs anyone in; its record (IP, device) stays until it would have expired, so the privacy page can state one period for every session record |
| one-time links, used or not | `expires_at` more than LINK_GRACE ago | a second click on a used activation link is still answered "already active" (`links.find_any`), and `links.sent_recently` still counts it |
| auth events | older than the longest rate-limit window, and at least AUTH_EVENTS_MIN_KEEP | the rate limits count them (`ratelimit.count`) |
| spool files `*.part` | not written for SPOOL_ORPHAN_AGE | a live upload is still writing its file |

Every session and link expires (sessions.create, links.issue), so "used or expired" is "expired":
the indexes of migration 0006 (`ix_sessions_expires_at`, `ix_one_time_links_expires_at`,
`ix_auth_events_created_at`, `ix_analytics_outbox_pending`) find what is due.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete
from sqlmodel import Session, col, select

from vgen_app import clock
from vgen_app.config import Settings, get_settings
from vgen_app.models import AnalyticsOutbox, AuthEvent, OneTimeLink, UserSession

log = logging.getLogger("vgen.retention")

# A used or expired link is kept this long after it expires (see the table above).
LINK_GRACE = timedelta(days=1)
# The sign-up and link-request limits count per hour (services/accounts.py, passwords.py).
HOURLY_WINDOW = timedelta(hours=1)
# Auth events are kept at least this long (an operator looking into yesterday's attack).
AUTH_EVENTS_MIN_KEEP = timedelta(days=1)
# A spool file not written to for this long belongs to no live upload.
SPOOL_ORPHAN_AGE = timedelta(days=1)
SPOOL_SUFFIX = ".part"
# One run_once deletes at most this many batches of each kind; the rest waits for the next round.
MAX_BATCHES = 100


def rate_limit_window(settings: Settings | None = None) -> timedelta:
    """The longest window any rate limit counts auth events in."""
    s = settings or get_settings()
    return max(
        timedelta(minutes=s.login_failure_window_minutes),  # login failures (per e-mail, IP)
        HOURLY_WINDOW,  # sign-ups and link requests per IP
        timedelta(seconds=s.mail_link_interval_seconds),  # "already registered" notices
    )


@dataclass(frozen=True)
class Cutoffs:
    """The moments before which each kind is due, for one `now`."""

    outbox_delivered: datetime  # delivered before this
    outbox_any: datetime  # created before this, delivered or not
    sessions: datetime  # expired before this
    links: datetime  # expired before this
    auth_events: datetime  # created before this

    @classmethod
    def at(cls, now: datetime, settings: Settings | None = None) -> Cutoffs:
        s = settings or get_settings()
        link_grace = max(LINK_GRACE, timedelta(seconds=s.mail_link_interval_seconds))
        return cls(
            outbox_delivered=now - timedelta(days=s.outbox_keep_days),
            outbox_any=now - timedelta(days=s.bigquery_partition_expiration_days),
            sessions=now,
            links=now - link_grace,
            auth_events=now - max(AUTH_EVENTS_MIN_KEEP, rate_limit_window(s)),
        )


def _delete_batch(db: Session, model: Any, batch: int, *where: Any) -> int:
    """Delete at most `batch` rows of `model` matching `where`, by id, and commit."""
    due = select(model.id).where(*where).limit(batch)
    result = db.exec(delete(model).where(col(model.id).in_(due)))
    db.commit()
    return result.rowcount or 0


def prune_outbox(db: Session, now: datetime, batch: int) -> int:
    """One batch of analytics-outbox rows past their period: delivered ones OUTBOX_KEEP_DAYS after
    delivery; any row, delivered or not, past the analytics period. A row still waiting to be
    shipped within the analytics period is never due, whatever the shipper's troubles."""
    cut = Cutoffs.at(now)
    removed = _delete_batch(
        db,
        AnalyticsOutbox,
        batch,
        col(AnalyticsOutbox.delivered_at).is_not(None),
        col(AnalyticsOutbox.delivered_at) < cut.outbox_delivered,
    )
    if removed < batch:
        removed += _delete_batch(
            db,
            AnalyticsOutbox,
            batch - removed,
            col(AnalyticsOutbox.delivered_at).is_(None),
            col(AnalyticsOutbox.created_at) < cut.outbox_any,
        )
    return removed


def prune_sessions(db: Session, now: datetime, batch: int) -> int:
    """One batch of expired sessions (revoked or not)."""
    return _delete_batch(
        db, UserSession, batch, col(UserSession.expires_at) < Cutoffs.at(now).sessions
    )


def prune_links(db: Session, now: datetime, batch: int) -> int:
    """One batch of one-time links expired more than LINK_GRACE ago (used or not)."""
    return _delete_batch(
        db, OneTimeLink, batch, col(OneTimeLink.expires_at) < Cutoffs.at(now).links
    )


def prune_auth_events(db: Session, now: datetime, batch: int) -> int:
    """One batch of auth events older than any rate limit counts."""
    return _delete_batch(
        db, AuthEvent, batch, col(AuthEvent.created_at) < Cutoffs.at(now).auth_events
    )


def prune_spool(directory: Path, now: datetime, limit: int | None = None) -> int:
    """Remove upload spool files (`*.part`) not written to for SPOOL_ORPHAN_AGE: left behind by a
    process killed mid-upload. A live upload's file is being written, so it is always fresh.
    At most `limit` files; returns how many were removed."""
    cutoff = (now - SPOOL_ORPHAN_AGE).timestamp()
    removed = 0
    try:
        entries = os.scandir(directory)
    except FileNotFoundError:
        return 0
    with entries:
        for entry in entries:
            if limit is not None and removed >= limit:
                break
            if not entry.name.endswith(SPOOL_SUFFIX):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                    continue
                os.unlink(entry.path)
                removed += 1
            except FileNotFoundError:  # its upload finished (or another process removed it)
                continue
    return removed


@dataclass
class RetentionReport:
    """What one run removed, in how many batches, and whether anything is left."""

    outbox: int = 0
    sessions: int = 0
    links: int = 0
    auth_events: int = 0
    spool: int = 0
    batches: int = 0
    more: bool = False  # stopped at MAX_BATCHES (or lost the lease) while rows were still due

    @property
    def total(self) -> int:
        return self.outbox + self.sessions + self.links + self.auth_events + self.spool

    def __str__(self) -> str:
        counts = [
            f"{getattr(self, f.name)} {f.name.replace('_', ' ')}"
            for f in fields(self)
            if f.name not in ("batches", "more")
        ]
        tail = "; more is due" if self.more else ""
        return f"pruned {', '.join(counts)} in {self.batches} batches{tail}"


PRUNERS: tuple[tuple[str, Callable[[Session, datetime, int], int]], ...] = (
    ("outbox", prune_outbox),
    ("sessions", prune_sessions),
    ("links", prune_links),
    ("auth_events", prune_auth_events),
)


def run_once(
    db: Session,
    *,
    now: datetime | None = None,
    batch: int | None = None,
    max_batches: int = MAX_BATCHES,
    still_mine: Callable[[Session], bool] | None = None,
    spool_dir: Path | None = None,
) -> RetentionReport:
    """Prune every kind, batch after batch, until nothing is due or `max_batches` batches of a kind
    were deleted (then `more` is set: the next round goes on). `still_mine(db)` is asked before
    every batch (the worker renews its lease with it): False stops the run at once. `spool_dir`:
    prune that upload spool too."""
    now = now or clock.now()
    batch = batch or get_settings().retention_batch
    report = RetentionReport()
    for kind, prune in PRUNERS:
        for _ in range(max_batches):
            if still_mine is not None and not still_mine(db):
                report.more = True
                return report
            removed = prune(db, now, batch)
            report.batches += 1
            setattr(report, kind, getattr(report, kind) + removed)
            if removed < batch:
                break
        else:
            report.more = True
    if spool_dir is not None:
        report.spool = prune_spool(spool_dir, now)
    return report
