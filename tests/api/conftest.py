"""A user's finished run through the real worker and simulator: inputs, result and poster stored."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import ingest, login_session, make_user
from vgen_app.adapters.simulator import Simulator
from vgen_app.adapters.storage import LocalStorage
from vgen_app.config import reset_settings
from vgen_app.db import session_scope
from vgen_app.models import Run
from vgen_app.services import ledger, run_worker, runs, tasks


@dataclass
class Finished:
    run_id: str
    task_id: str
    owner_id: str
    tokens: dict[str, str]  # ann (the owner), eve: sessions
    size: int  # the result's bytes
    root: Path  # the storage folder
    inputs: dict[str, int]  # slot → input id
    result_key: str
    poster_key: str | None


@pytest.fixture
def finished_run(
    database_url: str, samples, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Finished:
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
        inputs = {slot: ingest(ann, task.id, slot, samples[slot]).id for slot in ("video", "audio")}
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
        return Finished(
            run_id,
            task.id,
            ann,
            tokens,
            run.result_bytes,
            root,
            inputs,
            run.result_key,
            run.poster_key,
        )
