"""Downloading a result: only its owner (session cookie), streamed, with a sensible filename."""

from __future__ import annotations

import re

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import iterate_in_threadpool
from starlette.responses import Response

from vgen_app.adapters.storage import get_storage
from vgen_app.api.deps import CurrentUser
from vgen_app.db import run_db
from vgen_app.models import is_id
from vgen_app.services import runs, tasks

router = APIRouter(prefix="/api/runs", tags=["files"])


def _filename(task_name: str, attempt: int) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", task_name).strip("-").lower()[:60] or "video"
    return f"vgen-{slug}-attempt-{attempt}.mp4"


@router.get("/{run_id}/result", include_in_schema=False)
async def download_result(run_id: str, user: CurrentUser) -> Response:
    if not is_id(run_id):
        return JSONResponse({"detail": "Not found."}, status_code=404)
    try:
        run = await run_db(runs.result_of, user.user_id, run_id)
        task = await run_db(tasks.get_task, user.user_id, run.task_id)
    except tasks.NotFound:
        return JSONResponse({"detail": "Not found."}, status_code=404)
    storage = get_storage()
    chunks = iterate_in_threadpool(storage.iter_chunks(run.result_key or ""))
    headers = {
        "Content-Disposition": f'attachment; filename="{_filename(task.name, run.attempt)}"',
        "Cache-Control": "private, no-store",
        "X-Content-Type-Options": "nosniff",
    }
    if run.result_bytes:
        headers["Content-Length"] = str(run.result_bytes)
    return StreamingResponse(chunks, media_type="video/mp4", headers=headers)
