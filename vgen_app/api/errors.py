"""What every /api route answers when the database is unreachable: 503 with a Retry-After, never
a 500 with a traceback (nor a 200: a webhook then counts as not delivered and Stripe sends it
again, which is safe — each event is applied once)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from vgen_app.db import UNAVAILABLE, UNAVAILABLE_ERRORS

log = logging.getLogger("vgen.api")

RETRY_AFTER_S = 5


def log_unavailable(request: Request, exc: Exception) -> None:
    log.warning(
        "%s %s: database unavailable (%s)", request.method, request.url.path, exc.__class__.__name__
    )


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log_unavailable(request, exc)
    return JSONResponse(
        {"error": "database unavailable, retry", "detail": UNAVAILABLE},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S), "Cache-Control": "no-store"},
    )


def install(api: FastAPI) -> None:
    for cls in UNAVAILABLE_ERRORS:
        api.add_exception_handler(cls, database_unavailable)
