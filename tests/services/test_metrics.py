"""Prometheus metrics (services/metrics.py): each counter moves when its action happens through the
real service, the database gauges match the rows, and their cache spares the database. Read back
from the exposition itself (`scrape`, parsed with prometheus-client's own parser)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import Session, delete, select
from starlette.testclient import TestClient

from tests.helpers import login_session, make_user, statements, ui_state
from tests.services.test_billing import SECRET, deliver, paid_event, sign
from vgen_app import catalog, clock
from vgen_app.adapters.payments import BadSignature
from vgen_app.config import reset_settings
from vgen_app.db import with_db
from vgen_app.models import AnalyticsOutbox, Run, RunStatus, TaskInput
from vgen_app.services import accounts, billing, metrics, tasks, uploads
from vgen_app.services.accounts import AccountError, ClientInfo

PW = "correct horse"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str | bytes) -> Samples:
    if isinstance(text, bytes):
        text = text.decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scraped() -> Samples:
    """The whole exposition, as GET /metrics serves it (on a database session of its own)."""
    return parse(with_db(metrics.scrape))


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture(autouse=True)
def _fresh_gauges() -> None:
    metrics.forget_cache()


# --- counters ---------------------------------------------------------------------------------


def test_logins_count_ok_refused_unverified_and_rate_limited(db: Session) -> None:
    make_user(db, "ann@example.com")
    accounts.signup(db, "new@example.com", PW)  # never verified
    before = scraped()
    login_session(db, "ann@example.com")
    for i in range(5):  # the per-e-mail limit (5 failures in the window)
        with pytest.raises(AccountError, match="Wrong e-mail or password"):
            accounts.login(db, "ann@example.com", f"bad {i}", ClientInfo(ip=f"10.1.0.{i}"))
    with pytest.raises(AccountError) as limited:
        accounts.login(db, "ann@example.com", PW, ClientInfo(ip="10.9.9.9"))
    assert limited.value.code == "rate_limited"
    with pytest.raises(AccountError) as unverified:
        accounts.login(db, "new@example.com", PW)
    assert unverified.value.code == "unverified"
    after = scraped()
    name = "vgen_logins_total"
    assert moved(before, after, name, outcome="ok") == 1
    assert moved(before, after, name, outcome="refused") == 5
    assert moved(before, after, name, outcome="rate_limited") == 1
    assert moved(before, after, name, outcome="unverified") == 1
    assert moved(before, after, name, outcome="error") == 0


def test_signups_count_created_existing_refused_and_rate_limited(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGNUPS_PER_IP_PER_HOUR", "2")
    reset_settings()
    client = ClientInfo(ip="198.51.100.1")
    before = scraped()
    accounts.signup(db, "u1@example.com", PW, client)
    accounts.signup(db, "u1@example.com", PW)  # taken: answered like a new one
    with pytest.raises(AccountError):
        accounts.signup(db, "not-an-address", PW)
    accounts.signup(db, "u2@example.com", PW, client)
    with pytest.raises(AccountError) as limited:
        accounts.signup(db, "u3@example.com", PW, client)
    assert limited.value.code == "rate_limited"
    after = scraped()
    name = "vgen_signups_total"
    assert moved(before, after, name, outcome="created") == 2
    assert moved(before, after, name, outcome="existing") == 1
    assert moved(before, after, name, outcome="refused") == 1
    assert moved(before, after, name, outcome="rate_limited") == 1


def test_webhooks_count_by_event_type_and_outcome(db: Session) -> None:
    uid = make_user(db, "ann@example.com")
    payload = paid_event("cs_metrics", uid)
    before = scraped()
    assert deliver(db, payload).status == "credited"
    assert deliver(db, payload).status == "duplicate"
    assert deliver(db, payload).status == "duplicate"
    other = paid_event("cs_other", uid, event_type="customer.created", event_id="evt_2")
    assert deliver(db, other).status == "ignored"
    with pytest.raises(BadSignature):
        billing.handle_webhook(db, payload, sign(payload, "whsec_wrong"), SECRET)
    with pytest.raises(billing.MalformedEvent):
        deliver(db, json.dumps({"id": "evt_3", "type": 5}))  # a type that is not a string
    after = scraped()
    name, completed = "vgen_webhooks_total", "checkout.session.completed"
    assert moved(before, after, name, type=completed, outcome="credited") == 1
    assert moved(before, after, name, type=completed, outcome="duplicate") == 2
    assert moved(before, after, name, type="other", outcome="ignored") == 1
    assert moved(before, after, name, type="unknown", outcome="refused") == 1
    assert moved(before, after, name, type="unknown", outcome="malformed") == 1
    # The event type is a label only when it is one of ours: no label per junk type.
    assert not any(("type", "customer.created") in labels for (n, labels) in after if n == name)


async def _chunks(src: Path, size: int = 64 * 1024) -> AsyncIterator[Any]:
    data = src.read_bytes()
    for start in range(0, len(data), size):
        yield SimpleNamespace(filename=src.name, data=data[start : start + size])


def test_upload_bytes_and_media_bytes_served(
    db: Session, local_storage: Path, samples: dict[str, Path], asgi_app: Any
) -> None:
    ann = make_user(db, "ann@example.com")
    token = login_session(db, "ann@example.com")
    task = tasks.create_task(db, ann, "lipsync", "Clip")
    slot = catalog.get("lipsync").get_slot("video")
    video = samples["video"].read_bytes()
    before = scraped()
    assert (
        asyncio.run(uploads.spool_and_ingest(_chunks(samples["video"]), ann, task.id, slot)) == ""
    )
    refused = uploads.spool_and_ingest(_chunks(samples["image"]), ann, task.id, slot)
    assert asyncio.run(refused) != ""  # not a video: refused, its bytes were received all the same
    middle = scraped()
    assert moved(before, middle, "vgen_upload_bytes_total") == len(video) + len(
        samples["image"].read_bytes()
    )

    db.expire_all()
    (input_id,) = db.exec(select(TaskInput.id).where(TaskInput.task_id == task.id)).all()
    db.rollback()
    with TestClient(asgi_app, base_url="http://localhost:3000") as client:
        client.cookies.set("vgen_session", token)
        whole = client.get(f"/api/media/input/{input_id}")
        part = client.get(f"/api/media/input/{input_id}", headers={"Range": "bytes=10-1009"})
        head = client.head(f"/api/media/input/{input_id}")
        foreign = TestClient(asgi_app, base_url="http://localhost:3000")
        assert foreign.get(f"/api/media/input/{input_id}").status_code == 404
    assert (whole.status_code, part.status_code, head.status_code) == (200, 206, 200)
    assert whole.content == video and len(part.content) == 1000
    after = scraped()
    name = "vgen_media_served_bytes_total"
    assert moved(middle, after, name, kind="input") == len(video) + 1000  # HEAD sends none
    assert moved(middle, after, name, kind="result") == 0


def test_event_handler_latency_histogram_by_handler(db: Session) -> None:
    """The UI event middleware hooks the end of the event's own task (Reflex 0.10 never calls a
    middleware's postprocess): one observation per event, labelled state.handler."""
    from vgen_app.ui.auth import LoginState
    from vgen_app.ui.eventlog import EventLogMiddleware

    state = ui_state(LoginState, "/login")
    event = SimpleNamespace(name=f"{LoginState.get_full_name()}.submit")
    label = "login_state.submit"
    assert metrics.handler_label(event.name) == label

    async def handled(seconds: float) -> None:
        await EventLogMiddleware().preprocess(None, state, event)
        await asyncio.sleep(seconds)  # the handler

    async def run() -> None:
        await asyncio.gather(asyncio.create_task(handled(0)), asyncio.create_task(handled(0.3)))
        await asyncio.sleep(0)  # the done callbacks

    before = scraped()
    asyncio.run(run())
    after = scraped()
    name = "vgen_event_handler_duration_seconds"
    assert moved(before, after, f"{name}_count", handler=label) == 2
    assert moved(before, after, f"{name}_sum", handler=label) >= 0.3
    # The slow one (0.3 s at least) is past the 0.25 s bucket.
    assert moved(before, after, f"{name}_bucket", handler=label, le="0.25") <= 1
    assert moved(before, after, f"{name}_bucket", handler=label, le="+Inf") == 2


# --- the gauges read from the database --------------------------------------------------------


def _runs(db: Session, owner: str, task_id: str, rows: list[tuple[RunStatus, float]]) -> None:
    now = clock.now()
    for attempt, (status, age_s) in enumerate(rows, start=1):
        db.add(
            Run(
                task_id=task_id,
                owner_id=owner,
                attempt=attempt,
                status=status,
                price=500,
                model="lipsync",
                inputs={},
                created_at=now - timedelta(seconds=age_s),
            )
        )
    db.commit()


def _outbox(db: Session, rows: list[tuple[int, bool, float]]) -> None:
    """(attempts, delivered, age in seconds) per row; the outbox emptied first."""
    db.exec(delete(AnalyticsOutbox))
    now = clock.now()
    for attempts, delivered, age_s in rows:
        db.add(
            AnalyticsOutbox(
                table_name="user_sessions",
                row={"x": 1},
                created_at=now - timedelta(seconds=age_s),
                delivered_at=now if delivered else None,
                attempts=attempts,
            )
        )
    db.commit()


def test_gauges_match_the_rows(db: Session) -> None:
    ann = make_user(db, "ann@example.com")
    task = tasks.create_task(db, ann, "lipsync", "Clip")
    queued, processing = RunStatus.QUEUED, RunStatus.PROCESSING
    _runs(
        db,
        ann,
        task.id,
        [
            (queued, 600),
            (queued, 60),
            (queued, 5),
            (processing, 5000),  # older, but not waiting: not the queue's age
            (RunStatus.SUCCEEDED, 9000),
            (RunStatus.SUCCEEDED, 8000),
            (RunStatus.FAILED, 7000),
        ],
    )
    # 3 pending (one retried twice), 2 given up, 4 delivered (the oldest rows of all).
    _outbox(
        db,
        [(0, False, 300), (2, False, 30), (0, False, 1), (5, False, 9000), (7, False, 8000)]
        + [(0, True, 20000)] * 4,
    )
    got = scraped()
    assert value(got, "vgen_metrics_database_up") == 1
    for status, count in [
        ("queued", 3),
        ("processing", 1),
        ("succeeded", 2),
        ("failed", 1),
        ("canceled", 0),
    ]:
        assert value(got, "vgen_runs", status=status) == count, status
    assert value(got, "vgen_runs_queued") == 3
    assert 600 <= value(got, "vgen_runs_queued_oldest_age_seconds") < 3600
    assert value(got, "vgen_outbox_pending") == 3
    assert value(got, "vgen_outbox_failed") == 2
    assert 300 <= value(got, "vgen_outbox_oldest_pending_age_seconds") < 3600


def test_gauges_are_zero_when_nothing_waits(db: Session) -> None:
    _outbox(db, [(0, True, 10)])
    got = scraped()
    assert value(got, "vgen_runs", status="queued") == 0
    assert value(got, "vgen_runs_queued_oldest_age_seconds") == 0
    assert value(got, "vgen_outbox_pending") == 0
    assert value(got, "vgen_outbox_oldest_pending_age_seconds") == 0


def test_a_second_scrape_within_the_cache_time_reads_nothing(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METRICS_CACHE_SECONDS", "3600")
    reset_settings()
    ann = make_user(db, "ann@example.com")
    task = tasks.create_task(db, ann, "lipsync", "Clip")
    _runs(db, ann, task.id, [(RunStatus.QUEUED, 10)])
    with statements() as first:
        one = scraped()
    assert len(first) == 3, first  # three aggregate queries, whatever the number of rows
    assert all("count(" in s.lower() or "min(" in s.lower() for s in first)
    other = tasks.create_task(db, ann, "lipsync", "Other")
    _runs(db, ann, other.id, [(RunStatus.QUEUED, 10)] * 2)
    with statements() as second:
        two = scraped()
    assert second == []
    assert value(one, "vgen_runs_queued") == value(two, "vgen_runs_queued") == 1  # reused
    metrics.forget_cache()  # as the cache time running out does
    with statements() as third:
        three = scraped()
    assert len(third) == 3 and value(three, "vgen_runs_queued") == 3


def test_no_cache_reads_every_scrape(db: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRICS_CACHE_SECONDS", "0")
    reset_settings()
    with statements() as seen:
        scraped()
        scraped()
    assert len(seen) == 6


def test_the_counters_are_served_when_the_database_is_down(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts.signup(db, "ann@example.com", PW)
    served = scraped()
    assert value(served, "vgen_signups_total", outcome="created") >= 1
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nothing_here")
    reset_settings()
    metrics.forget_cache()
    down = scraped()
    assert value(down, "vgen_metrics_database_up") == 0
    assert ("vgen_runs_queued", frozenset()) not in down  # no made-up gauges
    assert value(down, "vgen_signups_total", outcome="created") == value(
        served, "vgen_signups_total", outcome="created"
    )
