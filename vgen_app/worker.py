"""Background jobs that run in the app's lifespan (safe to kill at any moment)."""

from __future__ import annotations

import asyncio
import logging

from vgen_app.db import run_db
from vgen_app.services import ratelimit

log = logging.getLogger("vgen.worker")

HOUSEKEEPING_EVERY_SECONDS = 3600


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
