"""The download route through the whole app: owner gets the file, anyone else 404, nobody 401."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient


def test_download_only_for_the_owner(asgi_app: Any, finished_run) -> None:
    run_id, tokens, size = finished_run.run_id, finished_run.tokens, finished_run.size
    url = f"/api/runs/{run_id}/result"
    with TestClient(asgi_app, base_url="http://localhost:3000") as client:
        assert client.get(url).status_code == 401
        client.cookies.set("vgen_session", tokens["eve"])
        assert client.get(url).status_code == 404
        assert client.get("/api/runs/nonexistent/result").status_code == 404
        client.cookies.set("vgen_session", tokens["ann"])
        response = client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "video/mp4"
    assert (
        response.headers["content-disposition"]
        == 'attachment; filename="vgen-my-clip-attempt-1.mp4"'
    )
    assert len(response.content) == size and response.content[4:8] == b"ftyp"
