"""Issue H — the generation API misbehaving: 5xx, answers slower than our timeout, jobs forgotten,
results that cannot be downloaded. The real HTTP adapter (httpx) talks to a local fake server
(pytest-httpserver) and the worker's own step() drives each run. Every run must end failed and be
refunded exactly once, with the ledger still summing to the balance."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from sqlmodel import Session, select
from werkzeug import Request, Response

from tests.helpers import ingest, make_user
from vgen_app import clock
from vgen_app.adapters.generation import HttpGeneration
from vgen_app.adapters.storage import LocalStorage
from vgen_app.config import get_settings
from vgen_app.models import LedgerEntry, Run
from vgen_app.services import ledger, run_worker, runs, tasks

TOPUP = 1_000


def slow(seconds: float, then: Response) -> Callable[[Request], Response]:
    def handler(request: Request) -> Response:
        time.sleep(seconds)
        return then

    return handler


def server_error(request: Request) -> Response:
    return Response("upstream exploded", status=503)


def job(status: str, **extra) -> Callable[[Request], Response]:
    import json

    body = json.dumps({"id": "job-1", "status": status, **extra})
    return lambda request: Response(body, status=200, content_type="application/json")


ACCEPT = job("queued")

# mode -> (POST /v1/jobs, GET /v1/jobs/job-1, GET result, expected error words)
MODES: dict[str, tuple] = {
    "5xx on every submit": (server_error, None, None, "unavailable"),
    "submit answers after our timeout": (
        slow(1.5, Response("late", 201)),
        None,
        None,
        "unavailable",
    ),
    "5xx on every poll": (ACCEPT, server_error, None, "timed out"),
    "poll answers after our timeout": (ACCEPT, slow(1.5, Response("late")), None, "timed out"),
    "job forgotten (404 on poll)": (
        ACCEPT,
        lambda r: Response("no such job", 404),
        None,
        "vanished",
    ),
    "result download 5xx forever": (
        ACCEPT,
        job("succeeded", progress=1, result_url="/v1/jobs/job-1/result"),
        server_error,
        "could not be saved in time",
    ),
    "result forgotten (410)": (
        ACCEPT,
        job("succeeded", progress=1, result_url="/v1/jobs/job-1/result"),
        lambda r: Response("gone", 410),
        "expired",
    ),
}


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


@pytest.fixture
def httpserver() -> Iterator[HTTPServer]:
    """A server of its own per test, threaded like a real service (a slow answer does not hold
    up the next request), so late requests of one test never reach the next."""
    server = HTTPServer(threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.mark.parametrize("mode", list(MODES))
def test_misbehaving_generation_api_fails_the_run_and_refunds_once(
    mode: str,
    db: Session,
    samples,
    storage: LocalStorage,
    httpserver: HTTPServer,
    figure,
) -> None:
    on_submit, on_poll, on_result, words = MODES[mode]
    served: list[str] = []

    def counted(handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def wrapper(request: Request) -> Response:
            served.append(request.path)
            return handler(request)

        return wrapper

    httpserver.expect_request("/v1/jobs", "POST").respond_with_handler(counted(on_submit))
    if on_poll is not None:
        httpserver.expect_request("/v1/jobs/job-1", "GET").respond_with_handler(counted(on_poll))
    if on_result is not None:
        httpserver.expect_request("/v1/jobs/job-1/result", "GET").respond_with_handler(
            counted(on_result)
        )
    api = HttpGeneration(httpserver.url_for("/").rstrip("/"), "sk-test", timeout=0.5)

    ann = make_user(db, "ann@example.com")
    ledger.change_balance(db, ann, TOPUP, "topup")
    task = tasks.create_task(db, ann, "lipsync", "promo")
    ingest(ann, task.id, "video", samples["video"])
    ingest(ann, task.id, "audio", samples["audio"])
    run_id = runs.start_run(db, ann, task.id).id
    price = TOPUP - ledger.balance_of(db, ann)
    assert price > 0

    rounds = 0
    timeout = timedelta(seconds=get_settings().run_timeout_seconds)
    try:
        while rounds < 20:
            rounds += 1
            run_worker.step(db, api, storage)
            db.expire_all()
            if db.get(Run, run_id).status in ("succeeded", "failed"):
                break
            if rounds == run_worker.MAX_SUBMIT_ATTEMPTS + 1:  # then let the run's deadline pass
                clock.travel(timeout + timedelta(seconds=1))
        for _ in range(3):  # later rounds (another worker, a retry) change nothing
            run_worker.step(db, api, storage)
    finally:
        api.close()

    db.expire_all()
    run = db.get(Run, run_id)
    assert run.status == "failed", (mode, run.status)
    assert words in run.error, run.error
    refunds = db.exec(
        select(LedgerEntry).where(LedgerEntry.action == "refund", LedgerEntry.reference == run_id)
    ).all()
    assert [r.diff for r in refunds] == [price]
    balance = ledger.balance_of(db, ann)
    assert balance == TOPUP == ledger.ledger_sum(db, ann)
    assert list((storage.root).rglob("results/*")) == []
    figure(
        f"{mode}: {rounds} worker rounds, {len(served)} requests -> {run.status} "
        f"({run.error!r}), refunds {len(refunds)}, balance {balance:,} = ledger sum"
    )
