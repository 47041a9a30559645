"""Background jobs that run in the app's lifespan (safe to kill at any moment)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid

from vgen_app.adapters.analytics import SinkUnavailable
from vgen_app.adapters.generation import get_generation
from vgen_app.adapters.storage import get_storage
from vgen_app.config import get_settings
from vgen_app.db import run_db
from vgen_app.services import leases, ratelimit, run_mails, run_worker, shipping

log = logging.getLogger("vgen.worker")

HOUSEKEEPING_EVERY_SECONDS = 3600
GENERATION_LEASE = "generation-worker"
_holders: dict[int, str] = {}


def holder() -> str:
    """This process's lease identity. Computed per pid: app workers are forked from a supervisor
    that imported this module, and a shared identity would let every worker hold the lease."""
    pid = os.getpid()
    if pid not in _holders:
        _holders[pid] = f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:8]}"
    return _holders[pid]


async def housekeeping() -> None:
    """Forget rate-limit events older than any window (idempotent: fine in every worker)."""
    while True:
        try:
            removed = await run_db(ratelimit.prune)
            if removed:
                log.info("pruned %d old auth events", removed)
        except Exception:
            log.exception("housekeeping failed")
        await asyncio.sleep(HOUSEKEEPING_EVERY_SECONDS)


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
    if sink is None or not with_db(
        leases.acquire, SHIPPER_LEASE, holder(), get_settings().worker_lease_seconds
    ):
        return None
    total = shipping.ShipReport()
    batch = get_settings().analytics_batch_size
    while True:
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
