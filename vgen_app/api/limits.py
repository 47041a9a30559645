"""Request body limits for /api routes: refused early (413), never read whole into memory.

- `BodyLimitMiddleware` (pure ASGI) caps every request under /api/ at `API_MAX_BODY_BYTES`:
  a declared `Content-Length` over the cap is answered 413 before the route runs (nothing is
  read); a body without a length (chunked) is counted while the route reads it, and reading stops
  with 413 as soon as the count passes the cap. A malformed `Content-Length` is 400.
  Other paths (Reflex's /_upload, /_event, pages) are passed through untouched: uploads have
  their own per-slot limit, enforced while streaming.
- `read_body(request, limit)` reads a body for a route with a stricter limit of its own
  (the admin API: 64 KiB, the Stripe webhook: 512 KiB), stopping at the limit.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import HTTPException
from starlette.requests import Request

from vgen_app.config import get_settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(HTTPException):
    """413. An HTTPException, so the route's exception handling answers it (FastAPI re-raises
    HTTPExceptions met while parsing a body instead of turning them into a 400). Starlette's own
    RequestBodyLimitMiddleware is not used for the /api cap: it lets the route run (and act) and
    only swaps its answer for a 413, where this refuses a declared oversize body up front."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The body is larger than {limit} bytes.")
        self.limit = limit


def declared_length(headers: Any) -> int | None:
    """The Content-Length as an int; None when absent; -1 when malformed."""
    raw = headers.get("content-length")
    if raw is None:
        return None
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        return -1
    return int(raw)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, read chunk by chunk and refused (BodyTooLarge) as soon as it passes
    `limit`: by its declared length before reading anything, else while streaming. The body is
    cached on the request, so `request.body()` / `request.json()` (and FastAPI) reuse it."""
    cached = getattr(request, "_body", None)
    if cached is not None:
        if len(cached) > limit:
            raise BodyTooLarge(limit)
        return cached
    declared = declared_length(request.headers)
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(limit)
    request._body = bytes(body)
    return request._body


async def _json_response(send: Send, status: int, detail: str) -> None:
    payload = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class BodyLimitMiddleware:
    """See the module docstring. `max_bytes=None` reads API_MAX_BODY_BYTES per request."""

    def __init__(self, app: ASGIApp, max_bytes: int | None = None, prefix: str = "/api/") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes or get_settings().api_max_body_bytes
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        declared = declared_length(headers)
        if declared == -1:
            await _json_response(send, 400, "Malformed Content-Length header.")
            return
        if declared is not None and declared > limit:
            await _json_response(send, 413, f"The body is larger than {limit} bytes.")
            return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:  # a route that read the body outside any exception handler
            if started:
                raise
            await _json_response(send, 413, str(exc.detail))
