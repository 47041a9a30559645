"""One log line per UI event, with the user id where known (Reflex app middleware)."""

from __future__ import annotations

import logging
import time
from typing import Any

from reflex.middleware import Middleware

from vgen_app.ui.session import SessionState

log = logging.getLogger("vgen.events")


def _user_id(state: Any) -> str | None:
    for sub in getattr(state, "substates", {}).values():
        if isinstance(sub, SessionState):
            return sub._user_id or None
    return None


class EventLogMiddleware(Middleware):
    async def preprocess(self, app: Any, state: Any, event: Any) -> None:
        event.__dict__["_vgen_start"] = time.perf_counter()

    async def postprocess(self, app: Any, state: Any, event: Any, update: Any) -> Any:
        start = event.__dict__.get("_vgen_start")
        ms = round((time.perf_counter() - start) * 1000, 1) if start else None
        name = str(getattr(event, "name", "?")).rsplit(".", 1)[-1]
        user_id = _user_id(state)
        log.info(
            "event %s %sms user=%s",
            name,
            ms,
            user_id or "-",
            extra={"kind": "event", "event": name, "ms": ms, "user_id": user_id},
        )
        return update
