"""Background jobs that run in the app's lifespan (safe to kill at any moment)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid

from sqlmodel import Session

from vgen_app import clock
from vgen_app.adapters.analytics import SinkUnavailable
from vgen_app.adapters.generation import get_generation
from vgen_app.adapters.storage import get_storage
from vgen_app.config import get_settings
from vgen_app.services import leases, retention, run_mails, run_worker, shipping

log = logging.getLogger("vgen.worker")

GENERATION_LEASE = "generation-worker"
_holders: dict[int, str] = {}


def holder() -> str:
    """This process's lease identity. Computed per pid: app workers are forked from a supervisor
    that imported this module, and a shared identity would let every worker hold the lease."""
    pid = os.getpid()
    if pid not in _holders:
        _holders[pid] = f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:8]}"
    return _holders[pid]


RETENTION_LEASE = "retention"
# While a round left rows due (its batches were bounded), the next one starts after this pause.
RETENTION_BACKLOG_PAUSE_SECONDS = 5.0


def retention_lease_seconds() -> float:
    """The retention lease lasts a whole interval (and a minute): one process runs the job each
    RETENTION_EVERY_SECONDS; if it dies another takes over after at most two intervals."""
    s = get_settings()
    return s.retention_every_seconds + max(60.0, s.worker_lease_seconds)


def retention_round(who: str | None = None) -> retention.RetentionReport | None:
    """The database part of retention, if this process (or `who`) holds the lease, renewed before
    every batch: a holder that lost it stops at once (blocking: runs in a worker thread)."""
    from vgen_app.db import with_db

    who = who or holder()
    ttl = retention_lease_seconds()
    if not with_db(leases.acquire, RETENTION_LEASE, who, ttl):
        return None

    def still_mine(db: Session) -> bool:
        return leases.acquire(db, RETENTION_LEASE, who, ttl)

    return with_db(retention.run_once, still_mine=still_mine)


def spool_round() -> int:
    """Orphaned upload spool files, in every process: each machine spools to its own disk."""
    return retention.prune_spool(get_settings().upload_tmp_dir, clock.now())


async def housekeeping() -> None:
    """Retention (services/retention.py) every RETENTION_EVERY_SECONDS: delivered outbox rows,
    expired sessions and links, old auth events — once per cluster, in bounded batches — and the
    orphaned spool files of this machine. Safe to kill: every batch is its own transaction."""
    while True:
        delay = get_settings().retention_every_seconds
        try:
            removed = await asyncio.to_thread(spool_round)
            if removed:
                log.info("removed %d orphaned upload spool files", removed)
            report = await asyncio.to_thread(retention_round)
            if report is not None and report.total:
                log.info("retention: %s", report)
            if report is not None and report.more:
                delay = min(delay, RETENTION_BACKLOG_PAUSE_SECONDS)
        except Exception:
            log.exception("retention failed")
        await asyncio.sleep(delay)


def generation_round() -> run_worker.StepReport | None:
    """One round, if this process holds the lease (blocking: runs in a worker thread)."""
    from vgen_app.db import with_db

    if not with_db(leases.acquire, GENERATION_LEASE, holder(), get_settings().worker_lease_seconds):
        return None
    report = with_db(run_worker.step, get_generation(), get_storage())
    with_db(run_mails.send_finished)
    return report


async def generation_worker() -> None:
    """Submit queued runs, poll in-flight jobs, keep results, fail and refund — once per cluster
    (a database lease), every WORKER_POLL_SECONDS. Every step is a conditional update, so a kill
    at any moment leaves nothing half-done that the next round cannot finish."""
    while True:
        try:
            await asyncio.to_thread(generation_round)
        except Exception:
            log.exception("generation round failed")
        await asyncio.sleep(get_settings().worker_poll_seconds)


SHIPPER_LEASE = "analytics-shipper"


def shipping_round() -> shipping.ShipReport | None:
    """Ship while there is a full batch waiting, if this process holds the lease (blocking)."""
    from vgen_app.db import with_db

    sink = shipping.get_sink()
    if sink is None:
        return None
    total = shipping.ShipReport()
    batch = get_settings().analytics_batch_size
    while True:
        # The lease is renewed before every batch, not only the first: a round that outlives it
        # (a slow warehouse, a database restart) would otherwise ship side by side with the
        # process that took it over, the same rows twice.
        if not with_db(
            leases.acquire, SHIPPER_LEASE, holder(), get_settings().worker_lease_seconds
        ):
            return total if total.batches else None
        report = with_db(shipping.ship_once, sink, batch)
        total.sent += report.sent
        total.rejected += report.rejected
        total.batches += report.batches
        if report.sent + report.rejected < batch:
            return total


async def analytics_shipper() -> None:
    """Ship the analytics outbox to BigQuery — once per cluster, in the background, with capped
    exponential backoff while BigQuery is unreachable. Nothing waits on it; nothing is lost."""
    if shipping.get_sink() is None:
        log.info("BIGQUERY_PROJECT is not set: analytics events stay in the local outbox")
        return
    backoff = 0.0
    while True:
        settings = get_settings()
        try:
            await asyncio.to_thread(shipping_round)
            backoff = 0.0
            delay = settings.analytics_ship_interval_seconds
        except SinkUnavailable as exc:
            backoff = min(settings.analytics_max_backoff_seconds, max(1.0, backoff * 2))
            log.warning("BigQuery unavailable (%s); retrying in %.0f s", exc, backoff)
            delay = backoff
        except Exception:
            log.exception("analytics shipping failed")
            delay = settings.analytics_max_backoff_seconds
        await asyncio.sleep(delay)
