"""The owner-only media route: a task's inputs, its results and their posters, played in the page.

`GET|HEAD /api/media/{input|result|poster}/{id}` with HTTP Range (206 + Content-Range, 416 when
unsatisfiable), streamed from storage a chunk at a time in a worker thread, never read whole.
Anyone but the owner, a visitor without a session and a deleted task get the same 404."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.responses import Response

from vgen_app.adapters.storage import StorageError, get_storage
from vgen_app.api.deps import SessionToken
from vgen_app.db import run_db
from vgen_app.services import media, metrics

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/media", tags=["media"])


def _not_found() -> Response:
    return JSONResponse({"detail": "Not found."}, status_code=404)


@router.api_route("/{kind}/{ref}", methods=["GET", "HEAD"], include_in_schema=False)
async def serve_media(kind: str, ref: str, request: Request, token: SessionToken) -> Response:
    user, found = (
        await run_db(media.locate_for_session, token, kind, ref) if token else (None, None)
    )
    if user is not None:
        request.state.user_id = user.user_id  # the request's log line
    if found is None:
        return _not_found()
    storage = get_storage()
    try:
        size = await run_in_threadpool(storage.size, found.key)
    except FileNotFoundError:
        log.warning("media %s/%s: %s is missing from storage", kind, ref, found.key)
        return _not_found()
    except StorageError:
        log.exception("media %s/%s: storage failed", kind, ref)
        return JSONResponse({"detail": "Storage is unavailable; try again."}, status_code=503)
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": found.etag,
        "Cache-Control": "private, no-cache",
        "Content-Disposition": "inline",
        "X-Content-Type-Options": "nosniff",
        # A stored file opened on its own runs nothing: no scripts, no plugins, no framing.
        "Content-Security-Policy": "default-src 'none'; sandbox; frame-ancestors 'none'",
    }
    if request.headers.get("if-none-match", "").strip() == found.etag:
        return Response(status_code=304, headers=headers)
    asked = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() != found.etag:
        asked = None  # the object changed since the client's copy: send it whole
    try:
        wanted = media.byte_range(asked, size)
    except media.Unsatisfiable:
        headers["Content-Range"] = f"bytes */{size}"
        return Response(status_code=416, headers=headers)
    first, last = wanted or (0, size - 1)
    status = 206 if wanted else 200
    if wanted:
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    headers["Content-Length"] = str(max(0, last - first + 1))
    if request.method == "HEAD" or size == 0:
        return Response(status_code=status, headers=headers, media_type=found.content_type)
    return StreamingResponse(
        _closing(storage.iter_range(found.key, first, last), kind),
        status_code=status,
        headers=headers,
        media_type=found.content_type,
    )


async def _closing(chunks: Iterator[bytes], kind: str) -> AsyncIterator[bytes]:
    """The chunks read in a worker thread; the file is closed as soon as the response ends, even
    when the player drops the connection mid-range (a seek), not when the garbage collector runs.
    The bytes handed to the server are counted once, when it ends (vgen_media_served_bytes)."""
    sent = 0
    try:
        async for chunk in iterate_in_threadpool(chunks):
            yield chunk
            sent += len(chunk)
    finally:
        metrics.MEDIA_BYTES.labels(kind).inc(sent)
        close = getattr(chunks, "close", None)
        if close is not None:
            await run_in_threadpool(close)
