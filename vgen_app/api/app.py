"""The FastAPI sub-app mounted in front of Reflex (`api_transformer`)."""

from __future__ import annotations

from fastapi import FastAPI

from vgen_app.api import account, auth_routes, errors, files, health, media, metrics, webhooks
from vgen_app.api.headers import SecurityHeaders
from vgen_app.api.internal import create_internal_api
from vgen_app.api.limits import ASGIApp, BodyLimitMiddleware
from vgen_app.api.loopback import LoopbackRedirect
from vgen_app.logs import RequestLogger


class _Api(FastAPI):
    """The security headers (`api/headers.py`) around the whole stack: outside Starlette's error
    middleware too (a 500 carries them), and around the CORS middleware Reflex adds and the
    compiled frontend it mounts inside this app in prod (pages and assets carry them)."""

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack())


def create_api() -> FastAPI:
    # No /docs, /redoc or /openapi.json at the root: those paths belong to the app's pages.
    api = _Api(title="vgen", docs_url=None, redoc_url=None, openapi_url=None)
    # Body cap for /api/… (413, never read whole); added first so the request log (outermost)
    # records its refusals.
    api.add_middleware(BodyLimitMiddleware)
    api.add_middleware(RequestLogger)
    # Outermost: a page opened as 127.0.0.1 while APP_URL says localhost goes to APP_URL first.
    api.add_middleware(LoopbackRedirect)
    # The database down (a restart, a failover): 503 and Retry-After from every route, not a 500.
    errors.install(api)
    # Routes are matched in this order, each included router scanning its own routes (FastAPI
    # 0.16x): the admin API's mount (one prefix test) and the media route (a player's many Range
    # requests) first, so the hottest paths pay the least matching.
    # The admin API has its own OpenAPI schema, served under /api/internal/.
    api.mount("/api/internal", create_internal_api())
    api.include_router(media.router)
    api.include_router(auth_routes.router)
    api.include_router(webhooks.router)
    api.include_router(files.router)
    api.include_router(account.router)
    api.include_router(health.router)
    api.include_router(metrics.router)  # GET /metrics (Prometheus), the admin token
    return api
