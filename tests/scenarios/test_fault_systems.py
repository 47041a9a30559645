"""Issue O, the real systems failing: PostgreSQL restarted and stopped under the real app while runs,
logins and Stripe webhook deliveries flow; the disk full under an upload and under a result copy.
Each scenario records its figure (RELIABILITY.md quotes them).

PostgreSQL here is a private throw-away cluster (`pg_createcluster`, restarted and stopped with
`pg_ctlcluster`), never the shared one on 5432; the full disk is a small tmpfs mounted over the
storage and spool folders (root only), unmounted whatever happens.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlmodel import Session, col, select

from tests.conftest import REQUIRE_PG, _wipe
from tests.fakes.fake_bigquery import FakeBigQuery
from tests.helpers import make_user
from tests.scenarios.test_fault_runs import PRICE, App, _job_records, ready_tasks
from vgen_app import db as dbmod
from vgen_app.adapters import media
from vgen_app.adapters import storage as storage_mod
from vgen_app.adapters.payments import TestCheckout
from vgen_app.adapters.simulator import Simulator
from vgen_app.cli import migrate
from vgen_app.config import ROOT, get_settings, reset_settings
from vgen_app.db import UNAVAILABLE, UNAVAILABLE_ERRORS, session_scope, with_db
from vgen_app.models import (
    AnalyticsOutbox,
    CheckoutSession,
    Lease,
    LedgerEntry,
    PaymentCredit,
    Run,
    TaskInput,
)
from vgen_app.services import billing, ledger, run_worker, runs, tasks, uploads
from vgen_app.worker import GENERATION_LEASE, RETENTION_LEASE, SHIPPER_LEASE

PW = "correct horse"
WEBHOOK_SECRET = "whsec_fault_systems"
ORIGIN = "http://localhost:3000"  # the app's APP_URL: the socket's CORS origin


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- a private PostgreSQL cluster --------------------------------------------------------------


@dataclass
class Cluster:
    version: str
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/vgen"

    def ctl(self, action: str) -> float:
        """`pg_ctlcluster … <action>` (start | stop | restart); how long it took."""
        started = time.monotonic()
        done = subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, action],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"pg_ctlcluster {action}: {done.stdout}{done.stderr}"
        return time.monotonic() - started

    def accepts(self) -> bool:
        try:
            with psycopg.connect(self.url, connect_timeout=1) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False


def _pg_version() -> str | None:
    tools = ("pg_createcluster", "pg_ctlcluster", "pg_dropcluster")
    base = Path("/usr/lib/postgresql")
    if not all(shutil.which(t) for t in tools) or not base.is_dir():
        return None
    versions = sorted((p.name for p in base.iterdir() if p.name.isdigit()), key=int)
    return versions[-1] if versions else None


@pytest.fixture(scope="module")
def private_pg() -> Iterator[Cluster]:
    """A throw-away cluster on a free port (trust auth), dropped at the end of the module."""
    version = _pg_version()
    if version is None:
        if REQUIRE_PG:
            pytest.fail("pg_createcluster/pg_ctlcluster are required here (postgresql-common)")
        pytest.skip("pg_ctlcluster is not installed")
    cluster = Cluster(version, f"vgenfault{os.getpid()}", _free_port())
    made = subprocess.run(
        ["pg_createcluster", version, cluster.name, "--port", str(cluster.port)]
        + ["-o", "fsync=off", "-o", "max_connections=200", "--", "--auth=trust"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if made.returncode != 0:
        pytest.fail(f"pg_createcluster failed: {made.stdout}{made.stderr}")
    try:
        cluster.ctl("start")
        admin = f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres"
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute("CREATE DATABASE vgen")
        migrate(cluster.url)
        yield cluster
    finally:
        dbmod.dispose_engines()
        subprocess.run(
            ["pg_dropcluster", "--stop", version, cluster.name],
            check=False,
            capture_output=True,
            timeout=120,
        )


@pytest.fixture
def on_private_pg(private_pg: Cluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """This test's services on the private cluster, emptied."""
    if not private_pg.accepts():
        private_pg.ctl("start")
    _wipe(private_pg.url)
    monkeypatch.setenv("DATABASE_URL", private_pg.url)
    reset_settings()
    yield private_pg
    dbmod.dispose_engines()
    reset_settings()


def test_the_engine_reconnects_at_first_use_after_a_restart(on_private_pg: Cluster, figure) -> None:
    """The app's engine (db.make_engine) holds pooled connections the restart killed: the first
    query after it gets a fresh one (pool_pre_ping) instead of an error."""
    engine = dbmod.make_engine(on_private_pg.url)
    try:
        with Session(engine) as db:  # leaves a connection in the pool
            before = db.exec(text("SELECT pg_backend_pid()")).one()[0]
        restart_s = on_private_pg.ctl("restart")
        started = time.perf_counter()
        with Session(engine) as db:
            after = db.exec(text("SELECT pg_backend_pid()")).one()[0]
        first_ms = (time.perf_counter() - started) * 1000
    finally:
        engine.dispose()
    assert after != before  # a new server process: the pooled connection was replaced
    figure(
        f"postgresql: `pg_ctlcluster restart` ({restart_s:.1f} s) under a pooled connection; the"
        f" first query after it succeeded on a fresh connection in {first_ms:.0f} ms (pre-ping),"
        " 0 errors"
    )


# --- one browser tab on the app's socket ---------------------------------------------------------

ROOT_STATE = "reflex___state____state"


def _login_state_name() -> str:
    # Imported on the main thread: Reflex registers its states in a context variable, and the
    # session's app (the `asgi_app` fixture) must find them there.
    from vgen_app.ui.auth import LoginState

    return LoginState.get_full_name()


LOGIN_STATE = _login_state_name()


class Tab:
    """A login page on Reflex's `/_event` socket (python-socketio's asyncio client, as
    bench/reflex_client.py drives it): hydrate on connect, then send events and read the deltas."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token = str(uuid.uuid4())
        self.updates: asyncio.Queue[dict] = asyncio.Queue()
        self.sio: Any = None

    def _event(self, name: str, payload: dict | None = None) -> dict:
        return {
            "name": name,
            "payload": payload or {},
            "router_data": {"pathname": "/login", "asPath": "/login"},
        }

    async def open(self) -> None:
        import socketio

        self.sio = socketio.AsyncClient(reconnection=False)

        async def on_event(data: Any) -> None:
            await self.updates.put(data)

        self.sio.on("event", on_event, namespace="/_event")
        await self.sio.connect(
            f"{self.base}/_event?token={self.token}",
            headers={"Origin": ORIGIN, "User-Agent": "fault-systems test"},
            auth={"event": self._event(f"{ROOT_STATE}.hydrate_and_load")},
            transports=["websocket"],
            namespaces=["/_event"],
            socketio_path="_event",
            wait_timeout=20,
        )
        await self._until(lambda u: _var(u, ROOT_STATE, "is_hydrated") is True, 20)

    async def _until(self, done: Callable[[dict], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            update = await asyncio.wait_for(self.updates.get(), deadline - time.monotonic())
            if (found := done(update)) is not None and found is not False:
                return found

    async def login(self, email: str, password: str) -> tuple[str, str]:
        """("ticket", ticket) or ("error", the message the page shows)."""
        state = LOGIN_STATE
        await self.sio.emit(
            "event",
            self._event(f"{state}.submit", {"form": {"email": email, "password": password}}),
            namespace="/_event",
        )

        def answer(update: dict) -> tuple[str, str] | None:
            for event in update.get("events") or ():
                if event.get("name") == "_call_script":
                    found = re.search(r"ticket=([A-Za-z0-9_\-]+)", json.dumps(event))
                    return ("ticket", found.group(1)) if found else ("script", json.dumps(event))
                return ("event", json.dumps(event))  # a toast, an alert: not a readable answer
            message = _var(update, state, "login_error")
            return ("error", message) if message else None

        return await self._until(answer, 30)

    async def close(self) -> None:
        if self.sio is not None:
            await self.sio.disconnect()


def _var(update: dict, state: str, name: str) -> Any:
    return ((update.get("delta") or {}).get(state) or {}).get(f"{name}_rx_state_")


def _http(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> int:
    """The status of one request (redirects not followed); 0 if no answer at all."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with opener.open(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


# --- 1. PostgreSQL restarted and stopped under traffic ---------------------------------------------


@dataclass
class Traffic:
    """What each flow tried and got, with the monotonic time each attempt began."""

    health: list[tuple[float, int]] = field(default_factory=list)
    webhooks: list[tuple[float, str, int]] = field(default_factory=list)  # (t, checkout, status)
    logins: list[tuple[float, str, str]] = field(default_factory=list)  # (t, outcome, detail)
    starts: list[tuple[float, str]] = field(default_factory=list)  # (t, "ok" | "unavailable")
    redeem_retries: int = 0  # a ticket's redemption that met the outage, tried again
    errors: list[str] = field(default_factory=list)  # anything unexpected, with its detail
    stop: threading.Event = field(default_factory=threading.Event)


RUN_TASKS = 24
CHECKOUTS = 16
SIM_DELAY_S = 1.0
SIM_FAILURE_RATE = 0.2
DOWN_S = 5.0


def _flows(app: App, uid: str, email: str, task_ids: list[str], events: list, t: Traffic):
    base = f"http://127.0.0.1:{app.port}"

    def health() -> None:
        while not t.stop.is_set():
            began = time.monotonic()
            t.health.append((began, _http("GET", f"{base}/api/health")))
            time.sleep(0.05)

    def start_runs() -> None:
        for task_id in task_ids:
            while not t.stop.is_set():
                began = time.monotonic()
                try:
                    with session_scope() as db:
                        runs.start_run(db, uid, task_id)
                    t.starts.append((began, "ok"))
                    break
                except UNAVAILABLE_ERRORS:
                    t.starts.append((began, "unavailable"))
                except tasks.TaskError as exc:  # started by an attempt whose answer was lost
                    if exc.code != "busy":
                        t.errors.append(f"start_run: {exc.code} {exc.message}")
                    break
                time.sleep(0.3)
            time.sleep(0.6)

    def webhooks() -> None:
        # As Stripe does (faster): each event delivered until it gets a 2xx.
        for session_id, (payload, header) in events:
            while not t.stop.is_set():
                began = time.monotonic()
                status = _http(
                    "POST",
                    f"{base}/api/webhooks/stripe",
                    payload.encode(),
                    {"Stripe-Signature": header, "Content-Type": "application/json"},
                )
                t.webhooks.append((began, session_id, status))
                if 200 <= status < 300:
                    break
                time.sleep(0.3)
            time.sleep(1.0)

    def logins() -> None:
        async def go() -> None:
            tab = Tab(app.port)
            await tab.open()
            try:
                while not t.stop.is_set():
                    began = time.monotonic()
                    outcome, detail = await tab.login(email, PW)
                    if outcome == "ticket":
                        # As the page the redemption answers with the database away does: the
                        # same address again after its Retry-After (shorter here), until it is
                        # not 503. The ticket must still be good then.
                        url = f"{base}/api/auth/session?ticket={detail}&next=%2F"
                        status = await asyncio.to_thread(_http, "GET", url)
                        give_up = time.monotonic() + 30
                        while status == 503 and time.monotonic() < give_up:
                            t.redeem_retries += 1
                            await asyncio.sleep(0.3)
                            status = await asyncio.to_thread(_http, "GET", url)
                        outcome, detail = "redeemed", str(status)
                    t.logins.append((began, outcome, detail))
                    await asyncio.sleep(0.5)
            finally:
                await tab.close()

        try:
            asyncio.run(go())
        except Exception as exc:  # noqa: BLE001 - reported by the test
            t.errors.append(f"login tab: {type(exc).__name__}: {exc}")

    return [threading.Thread(target=f, daemon=True) for f in (health, start_runs, webhooks, logins)]


def _statuses() -> Counter:
    with session_scope() as db:
        return Counter(db.exec(select(Run.status)).all())


def _lease_renewed_after(name: str, moment: datetime, ttl_s: float) -> bool:
    with session_scope() as db:
        lease = db.get(Lease, name)
        return lease is not None and lease.expires_at - timedelta(seconds=ttl_s) > moment


def test_postgres_restarted_and_stopped_under_runs_logins_and_webhooks(
    on_private_pg: Cluster,
    samples,
    tmp_path: Path,
    local_storage: Path,
    httpserver,
    monkeypatch: pytest.MonkeyPatch,
    figure,
) -> None:
    """The app (Granian, 2 workers, its background jobs, the simulator) on the private cluster;
    `pg_ctlcluster restart`, then `stop`, DOWN_S seconds down, `start` — while a user starts
    runs, logs in on the login page's socket, and Stripe delivers webhooks (each retried until
    2xx). Nothing restarts the app."""
    pg = on_private_pg
    bigquery = FakeBigQuery()
    bigquery.install(httpserver)
    sim_dir = tmp_path / "sim"
    monkeypatch.setenv("GENERATION_SIM_DIR", str(sim_dir))
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    reset_settings()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "REFLEX_REDIS_URL", "GENERATION_API_URL", "ADMIN_TOKEN")
    }
    env.update(
        DATABASE_URL=pg.url,
        APP_URL=ORIGIN,
        STORAGE_URL=os.environ["STORAGE_URL"],
        UPLOAD_TMP_DIR=os.environ["UPLOAD_TMP_DIR"],
        GENERATION_SIM_DIR=str(sim_dir),
        GENERATION_SIM_DELAY_SECONDS=str(SIM_DELAY_S),
        GENERATION_SIM_FAILURE_RATE=str(SIM_FAILURE_RATE),
        WORKER_LEASE_SECONDS="2",
        WORKER_POLL_SECONDS="0.2",
        RUN_TIMEOUT_SECONDS="900",  # a run that only ends by timing out is lost, not a pass
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        BIGQUERY_PROJECT="vgen-test",
        BIGQUERY_DATASET="analytics",
        BIGQUERY_API_ENDPOINT=httpserver.url_for("").rstrip("/"),
        BIGQUERY_RETRY_DEADLINE_SECONDS="1",
        ANALYTICS_SHIP_INTERVAL_SECONDS="0.3",
        ANALYTICS_MAX_BACKOFF_SECONDS="1",
        RETENTION_EVERY_SECONDS="1",
        REFLEX_STATE_MANAGER_MODE="memory",
        __REFLEX_SKIP_COMPILE="true",
        PYTHONPATH=str(ROOT),
    )
    email, balance0 = "ann@example.com", 20_000
    with session_scope() as db:
        uid = make_user(db, email, PW)
        ledger.change_balance(db, uid, balance0, "topup")
    task_ids = ready_tasks(uid, RUN_TASKS, samples)
    checkout = TestCheckout(ORIGIN, WEBHOOK_SECRET)
    pkg = billing.package("10k")
    events = []
    for _ in range(CHECKOUTS):
        with session_scope() as db:
            row = billing.start_checkout(db, uid, pkg.id, checkout)
        events.append((row.id, checkout.completed_event(row.id, uid, pkg, email)))

    app = App(env, tmp_path / "app", tmp_path / "app.log", workers=2)
    traffic = Traffic()
    try:
        app.wait_until_working()
        pids = app.pids()
        threads = _flows(app, uid, email, task_ids, events, traffic)
        for thread in threads:
            thread.start()
        began = time.monotonic()
        time.sleep(3)
        restart_at = time.monotonic()
        restart_s = pg.ctl("restart")
        restarted_at = time.monotonic()
        time.sleep(4)
        stop_at = time.monotonic()
        pg.ctl("stop")
        time.sleep(DOWN_S)
        pg.ctl("start")
        started_at = time.monotonic()
        recovered_wall = datetime.now(UTC)
        # Until every run has been started and every event delivered (or far too long).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            len({s for _, s, code in traffic.webhooks if code == 200}) == CHECKOUTS
            and sum(1 for _, r in traffic.starts if r == "ok") >= RUN_TASKS - 1
        ):
            assert app.proc.poll() is None, app.tail()
            time.sleep(0.2)
        time.sleep(1.5)  # a few more logins and health checks after the outage
        traffic.stop.set()
        for thread in threads:
            thread.join(timeout=40)
        runs_done_s = _wait(lambda: _statuses()["queued"] + _statuses()["processing"] == 0, 60)
        shipped_s = _wait(lambda: _pending_analytics() == 0, 30)
        assert app.pids() == pids, "an app process died or was replaced"
        leases_ok = {
            name: _lease_renewed_after(name, recovered_wall, ttl)
            for name, ttl in (
                (GENERATION_LEASE, 2),
                (SHIPPER_LEASE, 2),
                (RETENTION_LEASE, 1 + 60),
            )
        }
        # Replayed later (Stripe does that): every one a duplicate.
        replays = [
            _http(
                "POST",
                f"http://127.0.0.1:{app.port}/api/webhooks/stripe",
                payload.encode(),
                {"Stripe-Signature": header, "Content-Type": "application/json"},
            )
            for _, (payload, header) in events
        ]
        total_s = time.monotonic() - began
    finally:
        traffic.stop.set()
        app.kill9()
    log = app.log.read_text(errors="replace")

    assert traffic.errors == [], traffic.errors
    assert leases_ok == dict.fromkeys(leases_ok, True), leases_ok
    # No answer was a crash: 503 while the database was away, success otherwise.
    assert {code for _, code in traffic.health} <= {200, 503}, Counter(traffic.health)
    assert {code for _, _, code in traffic.webhooks} <= {200, 503}
    assert {(o, d) for _, o, d in traffic.logins} <= {("redeemed", "303"), ("error", UNAVAILABLE)}
    assert replays == [200] * CHECKOUTS
    # Nor in the app's own log: no route answered 500, no UI handler raised.
    assert not re.search(r"vgen\.access \w+ \S+ 500 ", log)
    assert "Reflex Backend Exception" not in log

    # During each outage the app refused (and the test therefore tried something).
    def refused(t0: float, t1: float) -> Counter:
        out: Counter = Counter()
        out["health"] = sum(1 for t, c in traffic.health if t0 <= t <= t1 and c == 503)
        out["webhook"] = sum(1 for t, _, c in traffic.webhooks if t0 <= t <= t1 and c == 503)
        out["login"] = sum(1 for t, o, _ in traffic.logins if t0 <= t <= t1 and o == "error")
        out["run start"] = sum(1 for t, r in traffic.starts if t0 <= t <= t1 and r != "ok")
        return out

    in_restart = refused(restart_at, restarted_at + 1)
    in_stop = refused(stop_at, started_at + 1)
    # A restart is down for a moment only (fast shutdown, start): some flow must have met it.
    assert sum(in_restart.values()) > 0, (in_restart, traffic.health)
    assert in_stop["webhook"] > 0 and in_stop["login"] > 0 and in_stop["health"] > 0, in_stop
    # Once PostgreSQL is back every request works: no app restart, no second failure.
    late = refused(started_at + 1.0, float("inf"))
    assert sum(late.values()) == 0, late
    first_ok = {
        "health": min(t for t, c in traffic.health if t >= started_at and c == 200),
        "webhook": min(t for t, _, c in traffic.webhooks if t >= started_at and c == 200),
        "login": min(t for t, o, _ in traffic.logins if t >= started_at and o == "redeemed"),
    }
    to_first = {k: v - started_at for k, v in first_ok.items()}

    # Nothing lost: every run final, debited once, each failure refunded once; each payment
    # credited once; the analytics shipped, each row once.
    with session_scope() as db:
        all_runs = db.exec(select(Run)).all()
        succeeded = [r for r in all_runs if r.status == "succeeded"]
        failed = [r for r in all_runs if r.status == "failed"]
        assert len(succeeded) + len(failed) == len(all_runs) >= RUN_TASKS - 1
        assert all("simulated failure" in (r.error or "") for r in failed), [
            r.error for r in failed
        ]
        applied = db.exec(select(LedgerEntry).where(LedgerEntry.outcome == "applied")).all()
        debits = Counter(e.reference for e in applied if e.action == "used")
        refunds = Counter(e.reference for e in applied if e.action == "refund")
        paid = Counter(e.reference for e in applied if e.action == "topup" and e.reference)
        assert debits == Counter(r.id for r in all_runs)
        assert refunds == Counter(r.id for r in failed)
        assert paid == Counter(s for s, _ in events)  # each payment credited exactly once
        credits = db.exec(select(PaymentCredit)).all()
        assert sorted(c.checkout_session_id for c in credits) == sorted(s for s, _ in events)
        assert all(c.status == "paid" for c in db.exec(select(CheckoutSession)).all()), (
            "a checkout not marked paid"
        )
        balance = ledger.balance_of(db, uid)
        assert balance == balance0 + CHECKOUTS * pkg.tokens - PRICE * len(succeeded)
        assert ledger.ledger_sum(db, uid) == balance
        outbox_ids = sorted(str(r.id) for r in db.exec(select(AnalyticsOutbox)))
        results = [r.result_key for r in succeeded]
        run_ids = Counter(r.id for r in all_runs)
        counts = Counter(ok=len(succeeded), failed=len(failed), runs=len(all_runs))
    # Each row stored once, none lost. A row can reach BigQuery twice when the database stops
    # between BigQuery's answer and the row marked delivered (at least once, same insertId:
    # BigQuery drops the copy); that is counted, not refused.
    shipped = bigquery.stored_insert_ids()
    assert shipped == outbox_ids
    resent = len(bigquery.all_insert_ids()) - len(shipped)
    for key in results:
        assert key and storage_mod.get_storage().exists(key)
    jobs = _job_records(sim_dir)
    assert Counter(j["params"]["client_ref"] for j in jobs) == run_ids  # each submitted once

    webhook_codes = Counter(code for _, _, code in traffic.webhooks)
    login_outcomes = Counter(o for _, o, _ in traffic.logins)
    figure(
        f"postgresql (private cluster), app 2 Granian workers: `pg_ctlcluster restart`"
        f" ({restart_s:.1f} s) then `stop`, {DOWN_S:.0f} s down, `start`"
        f" ({started_at - stop_at:.1f} s down in all), while {counts['runs']} runs were started"
        f" ({sum(1 for _, r in traffic.starts if r != 'ok')} start attempts refused while down),"
        f" {len(traffic.logins)} logins on the login page's socket and {len(traffic.webhooks)}"
        f" webhook deliveries of {CHECKOUTS} payments (retried until 2xx) ran. Refused while down:"
        f" restart {dict(in_restart)}, stop {dict(in_stop)} — webhooks 503"
        f" ({webhook_codes[503]} in all, 0 × 500), logins said {UNAVAILABLE!r}"
        f" ({login_outcomes['error']}), ticket redemptions met by the outage tried again"
        f" {traffic.redeem_retries}× and then logged in; 0 refused from 1 s after the start; first success"
        f" after `start`: health {to_first['health']:.2f} s, webhook {to_first['webhook']:.2f} s,"
        f" login {to_first['login']:.2f} s; app processes unchanged (no restart), generation,"
        f" retention and analytics jobs renewed their leases after the outage. Lost: 0 —"
        f" {counts['ok']} runs ok + {counts['failed']} simulated failures refunded once, 0 stuck;"
        f" {CHECKOUTS} payments credited once (replays {CHECKOUTS} duplicates); balance"
        f" {balance:,} = ledger sum; {len(shipped)} analytics rows stored once each ({resent} resent copies"
        f" dropped by insertId); all final"
        f" {runs_done_s:.1f} s after traffic stopped, shipped {shipped_s:.1f} s; {total_s:.0f} s"
    )


def _wait(predicate: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s; runs {dict(_statuses())}")
        time.sleep(0.2)
    return time.monotonic() - started


def _pending_analytics() -> int:
    with session_scope() as db:
        return len(
            db.exec(
                select(AnalyticsOutbox.id).where(col(AnalyticsOutbox.delivered_at).is_(None))
            ).all()
        )


# --- 3. the disk full: under an upload, under a result copy ----------------------------------------

DISK_MB = 20


@dataclass
class Disk:
    """A small tmpfs holding storage and the upload spool; `fill` leaves `room` bytes free."""

    mount: Path

    @property
    def storage(self) -> Path:
        return self.mount / "storage"

    @property
    def spool(self) -> Path:
        return self.mount / "spool"

    def free(self) -> int:
        st = os.statvfs(self.mount)
        return st.f_bavail * st.f_frsize

    def fill(self, room: int) -> None:
        filler = self.mount / "filler"
        with filler.open("ab") as out:
            while (left := self.free() - room) > 0:
                try:
                    out.write(b"\0" * min(left, 1024 * 1024))
                    out.flush()
                except OSError as exc:  # full: as full as it gets
                    assert exc.errno == errno.ENOSPC, exc
                    break

    def empty(self) -> None:
        (self.mount / "filler").unlink(missing_ok=True)

    def files(self) -> set[str]:
        """Every file but the filler, relative to the mount."""
        return {
            str(p.relative_to(self.mount))
            for p in self.mount.rglob("*")
            if p.is_file() and p.name != "filler"
        }


@pytest.fixture
def full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Disk]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = Disk(tmp_path / "disk")
    disk.mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m,mode=0755", "tmpfs", str(disk.mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert mounted.returncode == 0, f"mount -t tmpfs failed: {mounted.stderr}"
    try:
        monkeypatch.setenv("STORAGE_URL", f"file://{disk.storage}")
        monkeypatch.setenv("UPLOAD_TMP_DIR", str(disk.spool))
        reset_settings()
        storage_mod._cache.clear()
        yield disk
    finally:
        storage_mod._cache.clear()
        for flags in ([], ["-l"]):  # lazily if something still holds a file open
            if subprocess.run(["umount", *flags, str(disk.mount)], check=False).returncode == 0:
                break


SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@SQLITE_ONLY
def test_an_upload_onto_a_full_disk_is_refused_and_leaves_nothing(
    database_url: str, asgi_app: Any, full_disk: Disk, samples, figure
) -> None:
    """Through the real upload route (POST /_upload → TaskState.upload_slot, in-process): the
    spool's disk full mid-stream, then room for the spool but not for storage. Each refused with
    a readable message; no partial file, no slot pointing at a missing file; the app serves on;
    with room again the same upload goes through."""
    from starlette.testclient import TestClient

    from tests.helpers import login_session
    from tests.scenarios.test_abuse_uploads import RealUploads

    disk = full_disk
    video = samples["long_video"].read_bytes()
    other = samples["video"].read_bytes()
    with session_scope() as db:
        ann = make_user(db, "ann@example.com")
        task = tasks.create_task(db, ann, "lipsync")
        cookie = f"vgen_session={login_session(db, 'ann@example.com')}"

    def slot_row() -> tuple[str, str] | None:
        with session_scope() as db:
            row = db.exec(
                select(TaskInput).where(TaskInput.task_id == task.id, TaskInput.slot == "video")
            ).first()
            return (row.storage_key, row.filename) if row else None

    outcomes: dict[str, str] = {}
    with TestClient(asgi_app, base_url=ORIGIN, raise_server_exceptions=False) as client:
        assert get_settings().storage_url == f"file://{disk.storage}"
        up = RealUploads(client, f"file://{disk.storage}")
        assert up.upload(cookie, task.id, b"first.mp4", other) == (202, "")  # room: stored
        kept = slot_row()
        assert kept is not None and (disk.storage / kept[0]).is_file()
        before = disk.files()
        cases = (
            ("spool full mid-stream", len(video) // 3),
            ("room to spool, none to store", len(video) + len(video) // 3),
        )
        for label, room in cases:
            disk.empty()
            disk.fill(room)
            started = time.perf_counter()
            status, message = up.upload(cookie, task.id, b"speaker.mp4", video)
            took = time.perf_counter() - started
            assert (status, message) == (202, uploads.NOT_STORED), (label, status, message)
            assert disk.files() == before, (label, disk.files() - before)  # nothing half-kept
            assert slot_row() == kept  # the slot still shows the file it had, which is there
            assert (disk.storage / kept[0]).is_file()
            health = client.get("/api/health").status_code  # the app serves on
            assert health == 200
            outcomes[label] = f"{status}, {message!r} in {took * 1000:.0f} ms; health {health}"
        disk.empty()
        assert up.upload(cookie, task.id, b"speaker.mp4", video) == (202, "")  # room again
        stored = slot_row()
        assert stored is not None and stored[1] == "speaker.mp4"
        assert (disk.storage / stored[0]).read_bytes() == video
        assert not (disk.storage / kept[0]).exists()  # the one it replaced is gone
        assert not list(disk.spool.iterdir())
    figure(
        f"tmpfs of {DISK_MB} MB over storage and the spool, a {len(video):,}-byte video through"
        " POST /_upload: "
        + "; ".join(f"{k}: {v}" for k, v in outcomes.items())
        + "; nothing left in the spool or storage, the slot kept its earlier file; with room"
        " again the same upload was stored"
    )


@SQLITE_ONLY
def test_a_result_copy_onto_a_full_disk_is_retried_not_lost(
    database_url: str, full_disk: Disk, samples, tmp_path: Path, figure
) -> None:
    """The generation worker's steps (run_worker.step, the simulator) with storage full when the
    result comes: the run stays processing (not succeeded without a file, not failed), nothing
    half-written stays; when there is room again the next step keeps it."""
    from tests.helpers import ingest

    disk = full_disk
    with session_scope() as db:
        uid = make_user(db, "ann@example.com")
        ledger.change_balance(db, uid, 10_000, "topup")
        task = tasks.create_task(db, uid, "lipsync", "full disk")
    ingest(uid, task.id, "video", samples["video"])
    ingest(uid, task.id, "audio", samples["audio"])
    with session_scope() as db:
        run_id = runs.start_run(db, uid, task.id).id
    sim = Simulator(tmp_path / "sim", delay_s=0)  # the generation service's disk is its own
    storage = storage_mod.get_storage()
    before = disk.files()
    disk.fill(4096)

    def run() -> Run:
        with session_scope() as db:
            row = db.get(Run, run_id)
            db.expunge(row)  # read, then kept as it was
            return row

    tries, deadline = 0, time.monotonic() + 30
    while time.monotonic() < deadline:
        with_db(run_worker.step, sim, storage)
        current = run()
        if current.provider_job_id and sim.get(current.provider_job_id).status == "succeeded":
            tries += 1  # the result waits to be copied: each step tries again
            if tries >= 5:
                break
        time.sleep(0.05)
    current = run()
    assert tries >= 5, (current.status, current.error)
    assert (current.status, current.result_key, current.refunded_at) == ("processing", None, None)
    assert disk.files() == before, disk.files() - before  # no partial result, no temp file
    disk.empty()
    with_db(run_worker.step, sim, storage)
    current = run()
    assert current.status == "succeeded" and current.result_key
    out = tmp_path / "result.mp4"
    storage.download_to(current.result_key, out)
    assert media.probe(out).kind == "video"
    with session_scope() as db:
        assert ledger.balance_of(db, uid) == 10_000 - PRICE  # debited once, nothing refunded
        assert ledger.ledger_sum(db, uid) == ledger.balance_of(db, uid)
    figure(
        f"tmpfs of {DISK_MB} MB over storage, full when the simulator's result came: {tries}"
        " worker steps each tried the copy and kept the run processing (0 succeeded without a"
        " file, 0 failed or refunded, 0 partial files); space freed → the next step stored it:"
        " succeeded, the result plays, debited once"
    )
