"""Background jobs that run in the app's lifespan (safe to kill at any moment)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid

from vgen_app.adapters.generation import get_generation
from vgen_app.adapters.storage import get_storage
from vgen_app.config import get_settings
from vgen_app.db import run_db
from vgen_app.services import leases, ratelimit, runs

log = logging.getLogger("vgen.worker")

HOUSEKEEPING_EVERY_SECONDS = 3600
GENERATION_LEASE = "generation-worker"
LEASE_TTL_SECONDS = 15
HOLDER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


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


def generation_round() -> runs.StepReport | None:
    """One round, if this process holds the lease (blocking: runs in a worker thread)."""
    from vgen_app.db import with_db

    if not with_db(leases.acquire, GENERATION_LEASE, HOLDER, LEASE_TTL_SECONDS):
        return None
    return with_db(runs.step, get_generation(), get_storage())


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
