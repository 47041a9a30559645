"""The download route through the whole app: owner gets the file, anyone else 404, nobody 401."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.helpers import ingest, login_session, make_user
from vgen_app.adapters.simulator import Simulator
from vgen_app.adapters.storage import LocalStorage
from vgen_app.config import reset_settings
from vgen_app.db import session_scope
from vgen_app.models import Run
from vgen_app.services import ledger, run_worker, runs, tasks


@pytest.fixture
def finished_run(database_url: str, samples, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from vgen_app.adapters import storage as storage_mod

    root = tmp_path / "storage"
    monkeypatch.setenv("STORAGE_URL", f"file://{root}")
    monkeypatch.setenv("UPLOAD_TMP_DIR", str(tmp_path / "spool"))
    reset_settings()
    storage_mod._cache.clear()
    sim = Simulator(tmp_path / "sim", delay_s=0)
    with session_scope() as db:
        ann = make_user(db, "ann@example.com")
        make_user(db, "eve@example.com")
        ledger.change_balance(db, ann, 5_000, "topup")
        task = tasks.create_task(db, ann, "lipsync", "My clip")
        ingest(ann, task.id, "video", samples["video"])
        ingest(ann, task.id, "audio", samples["audio"])
        run_id = runs.start_run(db, ann, task.id).id
        for _ in range(100):
            run_worker.step(db, sim, LocalStorage(root))
            db.expire_all()
            if db.get(Run, run_id).status == "succeeded":
                break
            time.sleep(0.1)
        run = db.get(Run, run_id)
        assert run.status == "succeeded"
        tokens = {
            "ann": login_session(db, "ann@example.com"),
            "eve": login_session(db, "eve@example.com"),
        }
        size = run.result_bytes
    return run_id, tokens, size


def test_download_only_for_the_owner(asgi_app: Any, finished_run) -> None:
    run_id, tokens, size = finished_run
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
