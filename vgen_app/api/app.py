"""The FastAPI sub-app mounted in front of Reflex (`api_transformer`)."""

from __future__ import annotations

from fastapi import FastAPI

from vgen_app.api import account, auth_routes, errors, files, health, media, webhooks
from vgen_app.api.internal import create_internal_api
from vgen_app.api.limits import BodyLimitMiddleware
from vgen_app.api.loopback import LoopbackRedirect
from vgen_app.logs import request_logger


def create_api() -> FastAPI:
    # No /docs, /redoc or /openapi.json at the root: those paths belong to the app's pages.
    api = FastAPI(title="vgen", docs_url=None, redoc_url=None, openapi_url=None)
    # Body cap for /api/… (413, never read whole); added first so the request log (outermost)
    # records its refusals.
    api.add_middleware(BodyLimitMiddleware)
    api.middleware("http")(request_logger())
    # Outermost: a page opened as 127.0.0.1 while APP_URL says localhost goes to APP_URL first.
    api.add_middleware(LoopbackRedirect)
    # The database down (a restart, a failover): 503 and Retry-After from every route, not a 500.
    errors.install(api)
    api.include_router(auth_routes.router)
    api.include_router(webhooks.router)
    api.include_router(files.router)
    api.include_router(media.router)
    api.include_router(account.router)
    api.include_router(health.router)
    # The admin API has its own OpenAPI schema, served under /api/internal/.
    api.mount("/api/internal", create_internal_api())
    return api
