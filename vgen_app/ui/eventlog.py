"""One log line per UI event, with the user id where known, and its duration in the event handler
latency histogram (vgen_event_handler_duration_seconds, services/metrics.py) — a Reflex app
middleware.

Reflex 0.10 calls a middleware's `preprocess` (with the state lock held, just before the handler)
but never its `postprocess`. Each event runs in an asyncio task of its own (the event
processor's `_create_event_task`), which ends once the handler has run and its update has been
sent: `preprocess` hooks the end of that task. A background handler's task ends when the
handler does. Only events Reflex resolved to a registered handler get here, so the handler
label is bounded by the app's own handlers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from reflex.middleware import Middleware

from vgen_app.services import metrics
from vgen_app.ui.session import SessionState

log = logging.getLogger("vgen.events")


def _user_id(state: Any) -> str | None:
    for sub in getattr(state, "substates", {}).values():
        if isinstance(sub, SessionState):
            return sub._user_id or None
    return None


def event_done(state: Any, event_name: str, seconds: float) -> None:
    """One event handled: its duration into the histogram, one log line."""
    metrics.observe_event(event_name, seconds)
    ms = round(seconds * 1000, 1)
    name = event_name.rsplit(".", 1)[-1]
    user_id = _user_id(state)
    log.info(
        "event %s %sms user=%s",
        name,
        ms,
        user_id or "-",
        extra={"kind": "event", "event": name, "ms": ms, "user_id": user_id},
    )


class EventLogMiddleware(Middleware):
    async def preprocess(self, app: Any, state: Any, event: Any) -> None:
        task = asyncio.current_task()
        if task is None:
            return
        start = time.perf_counter()
        name = str(getattr(event, "name", "?"))

        def done(_task: asyncio.Task[Any]) -> None:
            try:
                event_done(state, name, time.perf_counter() - start)
            except Exception:  # a log line never breaks an event
                log.exception("event %s: not recorded", name)

        task.add_done_callback(done)
