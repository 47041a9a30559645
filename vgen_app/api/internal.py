"""Admin API (SPEC §5) — being written."""

from __future__ import annotations

from fastapi import FastAPI


def create_internal_api() -> FastAPI:
    return FastAPI(title="vgen admin API", docs_url="/docs", redoc_url=None, openapi_url="/openapi.json")
