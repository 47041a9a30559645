"""The FastAPI sub-app mounted in front of Reflex (`api_transformer`)."""

from __future__ import annotations

from fastapi import FastAPI

from vgen_app.api import auth_routes


def create_api() -> FastAPI:
    # No /docs, /redoc or /openapi.json at the root: those paths belong to the app's pages.
    api = FastAPI(title="vgen", docs_url=None, redoc_url=None, openapi_url=None)
    api.include_router(auth_routes.router)
    return api
