"""`GET /metrics` (SPEC §11): Prometheus text format, for the operator's scraper.

Behind the admin token, as the admin API: `Authorization: Bearer <token>`, any of ADMIN_TOKEN and
ADMIN_TOKENS (the same check, api/internal.py `check_authorization`): 401 without it or with a
wrong one, 503 when no token is configured (the metrics are then off, never open). Prometheus
sends it with `authorization: {type: Bearer, credentials: …}` in its scrape config.

The exposition itself (services/metrics.py `scrape`) reads every worker's counter files and, at
most once per METRICS_CACHE_SECONDS, three aggregate queries: it runs on a database thread, never
on the event loop.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from vgen_app.api.internal import check_authorization
from vgen_app.db import run_db
from vgen_app.services import metrics

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request) -> Response:
    refusal = check_authorization(request.headers.get("authorization"))
    if refusal is not None:
        return refusal.response()
    body = await run_db(metrics.scrape)
    return Response(body, media_type=metrics.CONTENT_TYPE, headers={"Cache-Control": "no-store"})
