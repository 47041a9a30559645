"""The media route through the whole app: a real run's result, poster and inputs, played by their
owner with Range requests; anyone else, and everything of a deleted task, 404."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from tests.api.conftest import Finished
from tests.helpers import ingest
from vgen_app.db import session_scope
from vgen_app.services import tasks, uploads


def _client(asgi_app: Any, token: str | None) -> TestClient:
    client = TestClient(asgi_app, base_url="http://localhost:3000")
    if token:
        client.cookies.set("vgen_session", token)
    return client


def test_the_result_plays_with_ranges(asgi_app: Any, finished_run: Finished) -> None:
    stored = (finished_run.root / finished_run.result_key).read_bytes()
    size = len(stored)
    url = f"/api/media/result/{finished_run.run_id}"
    with _client(asgi_app, finished_run.tokens["ann"]) as client:
        whole = client.get(url)
        assert whole.status_code == 200 and whole.content == stored
        assert whole.headers["content-type"] == "video/mp4"
        assert whole.headers["accept-ranges"] == "bytes"
        assert whole.headers["content-length"] == str(size)
        assert whole.headers["content-disposition"] == "inline"
        assert whole.headers["x-content-type-options"] == "nosniff"

        part = client.get(url, headers={"Range": "bytes=100-1099"})
        assert part.status_code == 206 and part.content == stored[100:1100]
        assert part.headers["content-range"] == f"bytes 100-1099/{size}"
        assert part.headers["content-length"] == "1000"
        tail = client.get(url, headers={"Range": "bytes=-500"})
        assert tail.status_code == 206 and tail.content == stored[-500:]
        assert tail.headers["content-range"] == f"bytes {size - 500}-{size - 1}/{size}"
        rest = client.get(url, headers={"Range": f"bytes={size - 7}-"})
        assert rest.status_code == 206 and rest.content == stored[-7:]
        past = client.get(url, headers={"Range": f"bytes=0-{size * 10}"})  # clamped to the end
        assert past.status_code == 206 and past.content == stored

        beyond = client.get(url, headers={"Range": f"bytes={size}-"})
        assert beyond.status_code == 416 and beyond.content == b""
        assert beyond.headers["content-range"] == f"bytes */{size}"

        head = client.head(url, headers={"Range": "bytes=0-9"})
        assert head.status_code == 206 and head.content == b""
        assert head.headers["content-length"] == "10"

        etag = whole.headers["etag"]
        assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
        stale = client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
        assert stale.status_code == 200 and stale.content == stored  # changed: sent whole
        fresh = client.get(url, headers={"Range": "bytes=0-9", "If-Range": etag})
        assert fresh.status_code == 206 and fresh.content == stored[:10]

        # The download route is still an attachment.
        download = client.get(f"/api/runs/{finished_run.run_id}/result")
        assert download.headers["content-disposition"].startswith("attachment;")


def test_the_poster_is_a_jpeg_frame_of_the_result(asgi_app: Any, finished_run: Finished) -> None:
    assert finished_run.poster_key and finished_run.poster_key.endswith(".jpg")
    with _client(asgi_app, finished_run.tokens["ann"]) as client:
        poster = client.get(f"/api/media/poster/{finished_run.run_id}")
    assert poster.status_code == 200
    assert poster.headers["content-type"] == "image/jpeg"
    assert poster.content[:3] == b"\xff\xd8\xff" and len(poster.content) > 500


def test_every_input_kind_is_served_with_its_type(
    asgi_app: Any, finished_run: Finished, samples
) -> None:
    owner = finished_run.owner_id
    with session_scope() as db:
        photo = tasks.create_task(db, owner, "talking-photo", "Photo")
    image = ingest(owner, photo.id, "image", samples["image"])
    expected = {
        finished_run.inputs["video"]: ("video/mp4", samples["video"].read_bytes()),
        finished_run.inputs["audio"]: ("audio/mp4", samples["audio"].read_bytes()),
        image.id: ("image/png", samples["image"].read_bytes()),
    }
    with _client(asgi_app, finished_run.tokens["ann"]) as client:
        for input_id, (kind, content) in expected.items():
            r = client.get(f"/api/media/input/{input_id}?v=1")
            assert r.status_code == 200, input_id
            assert r.headers["content-type"] == kind and r.content == content
            seek = client.get(f"/api/media/input/{input_id}", headers={"Range": "bytes=10-19"})
            assert seek.status_code == 206 and seek.content == content[10:20]


def test_anyone_else_gets_404(asgi_app: Any, finished_run: Finished) -> None:
    urls = [
        f"/api/media/result/{finished_run.run_id}",
        f"/api/media/poster/{finished_run.run_id}",
        *(f"/api/media/input/{i}" for i in finished_run.inputs.values()),
    ]
    for token in (None, "forged", finished_run.tokens["eve"]):
        with _client(asgi_app, token) as client:
            for url in urls:
                r = client.get(url, headers={"Range": "bytes=0-9"})
                assert r.status_code == 404 and r.json() == {"detail": "Not found."}, (token, url)
    with _client(asgi_app, finished_run.tokens["ann"]) as client:
        assert all(client.get(url).status_code == 200 for url in urls)


def test_a_deleted_task_is_gone_from_storage_and_the_routes(
    asgi_app: Any, finished_run: Finished
) -> None:
    urls = [
        f"/api/media/result/{finished_run.run_id}",
        f"/api/media/poster/{finished_run.run_id}",
        f"/api/runs/{finished_run.run_id}/result",
        *(f"/api/media/input/{i}" for i in finished_run.inputs.values()),
    ]
    before = [p for p in finished_run.root.rglob("*") if p.is_file()]
    assert any(finished_run.task_id in str(p) for p in before)
    uploads.delete_task(finished_run.owner_id, finished_run.task_id)
    left = [p for p in finished_run.root.rglob("*") if p.is_file()]
    assert left == []  # inputs, result and poster: every blob of the only task
    with _client(asgi_app, finished_run.tokens["ann"]) as client:
        for url in urls:
            assert client.get(url).status_code == 404, url
