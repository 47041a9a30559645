"""Health and readiness: the load balancer's question "can this worker serve?"."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from vgen_app.db import run_db

router = APIRouter(prefix="/api", tags=["health"])


def _database_ok(db) -> bool:
    db.exec(text("SELECT 1"))
    db.commit()
    return True


@router.get("/health")
async def health() -> JSONResponse:
    """200 when the database answers, 503 otherwise (Reflex's own /ping only says the process is up)."""
    try:
        await run_db(_database_ok)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return JSONResponse(
            {"ok": False, "database": f"unavailable: {type(exc).__name__}"}, status_code=503
        )
    return JSONResponse({"ok": True, "database": "ok"})
