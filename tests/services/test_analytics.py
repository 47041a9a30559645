"""Analytics to BigQuery through the real client against a local fake: tables, rows, insertIds,
outage and recovery, per-row errors; and every event producing its one row."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from sqlmodel import Session, select

from tests.fakes.fake_bigquery import FakeBigQuery
from tests.helpers import ingest, make_user
from vgen_app.adapters.analytics import BigQuerySink, make_client
from vgen_app.adapters.simulator import Simulator
from vgen_app.config import reset_settings
from vgen_app.db import run_db, session_scope
from vgen_app.models import AnalyticsOutbox
from vgen_app.services import accounts, ledger, shipping

PROJECT, DATASET = "vgen-test", "analytics"


@pytest.fixture
def fake(httpserver: HTTPServer) -> FakeBigQuery:
    fake = FakeBigQuery()
    fake.install(httpserver)
    return fake


@pytest.fixture
def sink(httpserver: HTTPServer, fake: FakeBigQuery) -> BigQuerySink:
    client = make_client(PROJECT, httpserver.url_for("").rstrip("/"))
    return BigQuerySink(PROJECT, DATASET, client, retry_deadline_s=0.5, timeout_s=5)


def test_shipped_rows_carry_json_and_insert_ids(db: Session, fake: FakeBigQuery, sink) -> None:
    uid = make_user(db, "ann@example.com")  # signup row
    ledger.change_balance(db, uid, 100, "topup", reference="cs_1")
    ledger.change_balance(db, uid, -500, "used", reference="run_x")  # refused
    report = shipping.ship_once(db, sink)
    assert (report.sent, report.rejected) == (3, 0)
    outbox = {r.id: r for r in db.exec(select(AnalyticsOutbox))}
    assert all(r.delivered_at is not None for r in outbox.values())
    sessions_rows = fake.inserted["user_sessions"]
    (insert_id, row) = sessions_rows[0]
    assert insert_id == str(row["event_id"]) and int(insert_id) in outbox
    assert (row["action"], row["userid"], row["email"]) == ("signup", uid, "ann@example.com")
    assert row["utm"] == "{}" and row["timestamp"].endswith("+00:00")
    changes = [r for _, r in fake.inserted["balance_changes"]]
    assert [
        (r["action"], r["diff"], r["old_balance"], r["new_balance"], r["outcome"]) for r in changes
    ] == [
        ("topup", 100, 0, 100, "applied"),
        ("used", -500, 100, 100, "rejected"),
    ]
    assert shipping.ship_once(db, sink).sent == 0  # nothing left, nothing resent


def test_outage_then_recovery_every_row_once_and_the_app_keeps_serving(
    database_url: str,
    fake: FakeBigQuery,
    httpserver: HTTPServer,
    monkeypatch: pytest.MonkeyPatch,
    figure,
) -> None:
    from vgen_app import worker

    monkeypatch.setenv("BIGQUERY_PROJECT", PROJECT)
    monkeypatch.setenv("BIGQUERY_DATASET", DATASET)
    monkeypatch.setenv("BIGQUERY_API_ENDPOINT", httpserver.url_for("").rstrip("/"))
    monkeypatch.setenv("BIGQUERY_RETRY_DEADLINE_SECONDS", "0.3")
    monkeypatch.setenv("ANALYTICS_SHIP_INTERVAL_SECONDS", "0.05")
    monkeypatch.setenv("ANALYTICS_MAX_BACKOFF_SECONDS", "0.3")
    monkeypatch.setenv("ANALYTICS_BATCH_SIZE", "7")
    reset_settings()
    fake.fail_inserts = 10**9  # down (503) until we say so
    release = threading.Event()
    # If a sign-up ever waited on BigQuery, the hung phase below would stall until this timer:
    # the ordering check after it then fails (no timing threshold involved).
    timer = threading.Timer(60, release.set)
    timer.start()
    marks: dict[str, float] = {}

    async def signups(first: int, count: int) -> None:
        for i in range(first, first + count):
            await run_db(accounts.signup, f"user{i}@example.com", "correct horse")
            await asyncio.sleep(0.02)

    async def scenario() -> None:
        shipper = asyncio.create_task(worker.analytics_shipper())
        await signups(0, 15)  # BigQuery answers 503
        failed_calls = len([r for r in fake.requests if r[1].endswith("/insertAll")])
        assert failed_calls >= 2 and fake.all_insert_ids() == []  # it kept trying, nothing landed
        fake.hold, fake.fail_inserts = release, 0  # now it hangs instead: no answer at all
        while fake.held == 0:
            await asyncio.sleep(0.02)
        await signups(15, 10)  # the shipper is stuck inside an insertAll call meanwhile
        marks["signups_done"] = time.monotonic()
        release.set()  # BigQuery is back
        marks["released"] = time.monotonic()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            st = await run_db(shipping.status)
            if st.pending == 0:
                break
            await asyncio.sleep(0.05)
        shipper.cancel()

    try:
        asyncio.run(scenario())
    finally:
        timer.cancel()
        release.set()
    assert marks["signups_done"] < marks["released"]  # the app served while BigQuery hung
    with session_scope() as db:
        ids = sorted(str(r.id) for r in db.exec(select(AnalyticsOutbox)))
        assert all(r.delivered_at for r in db.exec(select(AnalyticsOutbox)))
    shipped = fake.all_insert_ids()
    assert sorted(shipped) == ids and len(set(shipped)) == len(shipped) == 25
    calls = len([r for r in fake.requests if r[1].endswith("/insertAll")])
    figure(
        f"BigQuery 503 on every insert during 15 sign-ups, then hung during 10 more: 25 sign-ups "
        f"served meanwhile; after recovery {len(shipped)} rows shipped, {len(set(shipped))} "
        f"distinct, {len(ids) - len(set(shipped))} lost, {calls} insertAll calls"
    )


def test_a_rejected_row_is_recorded_and_reported(
    db: Session, fake: FakeBigQuery, sink, capsys: pytest.CaptureFixture
) -> None:
    from vgen_app.cli import main

    uid = make_user(db, "ann@example.com")
    ledger.change_balance(db, uid, 100, "topup")
    bad = db.exec(select(AnalyticsOutbox).order_by(AnalyticsOutbox.id)).first()
    fake.reject_insert_ids = {str(bad.id)}
    report = shipping.ship_once(db, sink)
    assert (report.sent, report.rejected) == (1, 1)
    db.expire_all()
    row = db.get(AnalyticsOutbox, bad.id)
    assert row.delivered_at is None and row.attempts == 1 and "no such field" in row.last_error
    for _ in range(shipping.MAX_ROW_ATTEMPTS):
        shipping.ship_once(db, sink)
    st = shipping.status(db)
    assert (st.pending, st.failed, st.delivered) == (0, 1, 1)
    assert "no such field" in st.failed_examples[0]
    assert main(["analytics", "status"]) == 1
    out = capsys.readouterr().out
    assert "failed: 1" in out and "no such field" in out
    # Fixed upstream: retry, and it goes through.
    fake.reject_insert_ids = set()
    assert shipping.retry_failed(db) == 1
    assert shipping.ship_once(db, sink).sent == 1
    assert shipping.status(db).failed == 0


def test_status_says_when_analytics_stay_local(db: Session, capsys: pytest.CaptureFixture) -> None:
    from vgen_app.cli import main

    make_user(db, "ann@example.com")
    assert main(["analytics", "status"]) == 0
    out = capsys.readouterr().out
    assert "local only" in out and "pending: 1" in out


# --- every event: exactly one row, every column filled -------------------------------------------


def _rows(db: Session, table: str) -> list[dict[str, Any]]:
    return [
        r.row
        for r in db.exec(select(AnalyticsOutbox).order_by(AnalyticsOutbox.id))
        if r.table_name == table
    ]


def _filled(table: str, row: dict[str, Any]) -> bool:
    from vgen_app.adapters.analytics import SCHEMAS, to_bigquery_row

    bq = to_bigquery_row(table, 1, row)
    return all(bq[f.name] not in (None, "") for f in SCHEMAS[table])


def test_each_event_writes_one_complete_row(
    db: Session, samples, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.services.test_billing import deliver, paid_event
    from vgen_app.adapters import storage as storage_mod
    from vgen_app.services import clientinfo, run_worker, runs, tasks

    monkeypatch.setenv("STORAGE_URL", f"file://{tmp_path / 'storage'}")
    monkeypatch.setenv("UPLOAD_TMP_DIR", str(tmp_path / "spool"))
    reset_settings()
    storage_mod._cache.clear()

    # Sign-up from a public address, no proxy: geo from the offline lookup.
    direct = clientinfo.from_request({"User-Agent": "Firefox/140"}, "81.2.69.160")
    signup = accounts.signup(
        db, "ann@example.com", "correct horse", direct, utm={"utm_source": "newsletter"}
    )
    accounts.activate(db, signup.mails[0].text.split("token=")[1].split()[0])
    (row,) = _rows(db, "user_sessions")
    assert (row["action"], row["geo"], row["ip"]) == ("signup", "GB", "81.2.69.160")
    assert _filled("user_sessions", row)

    # Login behind a trusted Cloudflare proxy: geo from CF-IPCountry.
    monkeypatch.setenv("TRUSTED_PROXY_HOPS", "1")
    reset_settings()
    proxied = clientinfo.from_request(
        {"User-Agent": "Chrome/150", "X-Forwarded-For": "203.0.113.50", "CF-IPCountry": "de"},
        "10.0.0.2",
    )
    ticket = accounts.login(db, "ann@example.com", "correct horse", proxied).ticket
    accounts.redeem_login_ticket(db, ticket, proxied)
    login_rows = _rows(db, "user_sessions")[1:]
    assert len(login_rows) == 1 and login_rows[0]["geo"] == "DE"
    assert login_rows[0]["ip"] == "203.0.113.50" and _filled("user_sessions", login_rows[0])

    uid = signup.user_id
    before = len(_rows(db, "balance_changes"))
    assert deliver(db, paid_event("cs_a", uid, package_id="10k", amount=1000)).status == "credited"
    topups = _rows(db, "balance_changes")[before:]
    assert [r["action"] for r in topups] == ["topup"] and _filled("balance_changes", topups[0])

    ledger.change_balance(db, uid, -99_999, "used", reference="run_none")
    refused = _rows(db, "balance_changes")[-1]
    assert refused["outcome"] == "rejected" and _filled("balance_changes", refused)

    task = tasks.create_task(db, uid, "lipsync")
    ingest(uid, task.id, "video", samples["video"])
    ingest(uid, task.id, "audio", samples["audio"])
    n_changes = len(_rows(db, "balance_changes"))
    run = runs.start_run(db, uid, task.id)
    assert [r["action"] for r in _rows(db, "balance_changes")[n_changes:]] == ["used"]
    failing = Simulator(tmp_path / "sim", delay_s=0, failure_rate=1.0)
    for _ in range(100):
        run_worker.step(db, failing, storage_mod.get_storage())
        db.expire_all()
        if len(_rows(db, "balance_changes")) > n_changes + 1:
            break
        time.sleep(0.05)
    launches = _rows(db, "generation_log")
    assert len(launches) == 1 and launches[0]["properties"]["run_id"] == run.id
    assert _filled("generation_log", launches[0])
    refund = _rows(db, "balance_changes")[n_changes + 1 :]
    assert [(r["action"], r["diff"], r["reference"]) for r in refund] == [
        ("refund", run.price, run.id)
    ]
    assert _filled("balance_changes", refund[0])


def test_cli_user_lookup(db: Session, capsys: pytest.CaptureFixture) -> None:
    from vgen_app.cli import main

    uid = make_user(db, "ann@example.com")
    assert main(["user", "Ann@Example.com"]) == 0
    assert f"id={uid} email=ann@example.com status=activated balance=0" in capsys.readouterr().out
    assert main(["user", uid]) == 0 and "ann@example.com" in capsys.readouterr().out
    assert main(["user", "nobody@example.com"]) == 1
