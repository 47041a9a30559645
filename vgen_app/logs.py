"""Structured logs: one line per HTTP request and per UI event, with the user id where known.

`LOG_FORMAT=json` writes one JSON object per line (for log shippers); `text` is for people.
Secrets never reach a log line: tokens, tickets and passwords in messages are masked.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from vgen_app.config import get_settings

_SECRET = re.compile(
    r"(?i)((?:token|ticket|password|secret|session|authorization)[\"']?\s*[=:]\s*[\"']?)"
    r"(?:Bearer\s+)?[^\s&\"',;}]+"
)
_configured = False


def redact(text: str) -> str:
    return _SECRET.sub(r"\1***", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key in ("kind", "method", "path", "status", "ms", "user_id", "event"):
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging() -> None:
    """Idempotent: the `vgen` loggers write to stderr in the configured format."""
    global _configured
    if _configured:
        return
    _configured = True
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if get_settings().log_format == "json" else TextFormatter()
    )
    root = logging.getLogger("vgen")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False


access = logging.getLogger("vgen.access")


class RequestLogger:
    """Pure ASGI middleware: one line per /api and /_upload request (the path without its query:
    it may hold tickets). The status is read off the `http.response.start` message as it passes;
    the body goes through untouched (no per-chunk re-streaming, unlike a BaseHTTPMiddleware). The
    user id is what the route's session check left in `request.state` (`scope["state"]`)."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(("/api/", "/_upload")):
            await self.app(scope, receive, send)  # static assets and pages: the proxy logs those
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            ms = round((time.perf_counter() - start) * 1000, 1)
            state = scope.get("state") or {}
            user_id = state.get("user_id") if isinstance(state, dict) else None
            method = scope.get("method", "")
            access.info(
                "%s %s %s %.1fms user=%s",
                method,
                path,
                status,
                ms,
                user_id or "-",
                extra={
                    "kind": "request",
                    "method": method,
                    "path": path,
                    "status": status,
                    "ms": ms,
                    "user_id": user_id,
                },
            )
