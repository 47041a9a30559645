"""The user's own data: `GET /api/account/export`, their ZIP (services/export.py), streamed."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import iterate_in_threadpool
from starlette.responses import Response

from vgen_app.api.deps import CurrentUser
from vgen_app.db import run_db
from vgen_app.services import erasure, export

router = APIRouter(prefix="/api/account", tags=["account"])


def zip_response(data: export.ExportData) -> StreamingResponse:
    """The archive as a download, produced in a worker thread as it is sent (no Content-Length:
    its size is known only at the end)."""
    return StreamingResponse(
        iterate_in_threadpool(export.zip_chunks(data)),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{export.filename(data.exported_at)}"',
            "Cache-Control": "private, no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get("/export", include_in_schema=False)
async def export_my_data(user: CurrentUser) -> Response:
    try:
        data = await run_db(export.collect, user.user_id)
    except erasure.UserGone:  # deleted since the session check
        return JSONResponse({"detail": "Not found."}, status_code=404)
    return zip_response(data)
