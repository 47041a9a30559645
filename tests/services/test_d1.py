"""Cloudflare D1 through `sqlalchemy-cloudflare-d1` (0.4.1), against the local fake in fake_d1.py.

The dialect as it is, what stays non-atomic (plain ORM writes), and the app's D1 support: Alembic's
`cloudflare_d1` impl (alembic/env.py), IntegrityError for constraint failures and `run_batch`
(vgen_app/db.py), and the ledger, webhook and run operations as one all-or-nothing batch each, as
are the admin API's changes with their audit rows (issue O: balance, status, deletion).
The services' own suites also run on D1 (`[d1]` in test_ledger, test_billing and test_runs).
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sqlalchemy_cloudflare_d1")

from sqlalchemy import create_engine, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.sql import Executable
from sqlmodel import Session, col, select

from tests.fakes.fake_d1 import FakeD1
from tests.helpers import login_session, make_user
from vgen_app import clock
from vgen_app import db as dbmod
from vgen_app.cli import migrate
from vgen_app.config import reset_settings
from vgen_app.models import (
    AdminAudit,
    AnalyticsOutbox,
    LedgerEntry,
    PaymentCredit,
    Run,
    TaskInput,
    User,
)
from vgen_app.services import accounts, admin, audit, billing, erasure, leases, ledger, runs, tasks

# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeD1]:
    d1 = FakeD1(str(tmp_path / "d1.sqlite"))
    yield d1
    d1.close()


@pytest.fixture(scope="module")
def migrated_d1(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A D1 database file migrated once (through the dialect and the fake), copied per test."""
    path = str(tmp_path_factory.mktemp("d1") / "migrated.sqlite")
    template = FakeD1(path)
    try:
        migrate(template.url())
    finally:
        template.close()
    return path


@pytest.fixture
def d1_url(fake: FakeD1, migrated_d1: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A migrated fake D1, selected as DATABASE_URL for the code under test."""
    with sqlite3.connect(migrated_d1) as src:
        src.backup(fake.db)
    url = fake.url()
    monkeypatch.setenv("DATABASE_URL", url)
    reset_settings()
    yield url
    dbmod.dispose_engines()
    reset_settings()


def one(fake: FakeD1, sql: str) -> Any:
    return fake.db.execute(sql).fetchone()[0]


def crash_at_end_of_batch(monkeypatch: pytest.MonkeyPatch, module: Any) -> None:
    """Make the module's next batches fail on a last statement, after all their writes."""
    real = dbmod.run_batch

    def doomed(db: Session, statements: Sequence[Executable]) -> Any:
        return real(db, [*statements, text("SELECT no_such_column")])

    monkeypatch.setattr(module, "run_batch", doomed)


def writes(fake: FakeD1, since: int) -> list[str]:
    """The endpoints of the requests since request number `since` that wrote (not only SELECTs)."""
    return [
        endpoint
        for endpoint, statements in fake.requests[since:]
        if endpoint == "query"
        or any(not s.lstrip().upper().startswith("SELECT") for s in statements)
    ]


# --- 1. the dialect ------------------------------------------------------------------------------------


def test_dialect_speaks_raw_endpoint_and_base_url_can_be_overridden(
    fake: FakeD1, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(fake.url())  # cloudflare_d1://acct:tok@db?base_url=http://127.0.0.1…
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1 AS a, 'x' AS b")).all() == [(1, "x")]
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE)"))
        inserted = conn.execute(text("INSERT INTO t (name) VALUES (:n)"), {"n": "a"})
        assert (inserted.lastrowid, inserted.rowcount) == (1, 1)  # from meta.last_row_id/changes
        conn.commit()
        # No transaction exists: SQLAlchemy's begin/commit never reach D1 (they would be refused).
        with pytest.raises(OperationalError, match="state.storage.transaction"):
            conn.exec_driver_sql("BEGIN")
        # The dialect raises every failure as OperationalError, constraint violations included.
        with pytest.raises(OperationalError, match="UNIQUE constraint failed: t.name") as err:
            conn.execute(text("INSERT INTO t (name) VALUES ('a')"))
        assert not isinstance(err.value, IntegrityError)
    engine.dispose()
    assert set(fake.calls) == {"raw"}  # one POST …/raw per statement, never /query, never a batch
    assert not [s for s in fake.log if re.match(r"\s*(COMMIT|ROLLBACK)", s, re.IGNORECASE)]

    # The other override: CF_D1_BASE_URL, read when each DBAPI connection is made.
    monkeypatch.setenv("CF_D1_BASE_URL", fake.base)
    engine = create_engine("cloudflare_d1://acct:tok@db")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM t")).scalar_one() == "a"
    engine.dispose()


def _head() -> str:
    """The newest migration's revision (alembic/versions/)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    root = Path(__file__).resolve().parents[2]
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "alembic"))
    return ScriptDirectory.from_config(config).get_current_head()


def test_alembic_migrations(fake: FakeD1) -> None:
    """env.py registers the `cloudflare_d1` impl; 0002's INTEGER -> BIGINT (a no-op on SQLite,
    which has no ALTER COLUMN) is skipped, so a fresh database migrates to head, and again."""
    migrate(fake.url())
    assert one(fake, "SELECT version_num FROM alembic_version") == _head() == "0008"
    names = {r[0] for r in fake.db.execute("SELECT name FROM sqlite_master")}
    assert {"users", "ledger_entries", "payment_credits", "runs", "leases", "admin_audit"} <= names
    assert not [s for s in fake.log if "ALTER COLUMN" in s.upper()]
    assert "CHECK" in one(fake, "SELECT sql FROM sqlite_master WHERE name = 'users'")
    migrate(fake.url())  # at head: nothing to do
    assert one(fake, "SELECT count(*) FROM alembic_version") == 1


# --- 2. the engine and plain ORM writes ---------------------------------------------------------------


def test_orm_insert_select_and_update_returning(d1_url: str, fake: FakeD1) -> None:
    engine = dbmod.get_engine()
    with Session(engine) as db:
        db.add(User(email="ann@example.com", password_hash="x", signup_utm={"utm_source": "ad"}))
        db.commit()
        user = db.exec(select(User).where(User.email == "ann@example.com")).one()
        assert (user.balance, user.signup_utm) == (0, {"utm_source": "ad"})
        assert user.created_at.tzinfo is not None
        assert abs((clock.now() - user.created_at).total_seconds()) < 60
        row = db.exec(
            update(User)
            .where(col(User.id) == user.id, col(User.balance) + 5 >= 0)
            .values(balance=col(User.balance) + 5)
            .returning(col(User.balance), col(User.email))
        ).one()
        assert tuple(row) == (5, "ann@example.com")
    # Stored as ISO text with "T" and "+00:00" (SQLite's dialect stores "YYYY-MM-DD HH:MM:SS.ffffff").
    stored = one(fake, "SELECT created_at FROM users")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00", stored)
    # make_engine: no pre-ping (an HTTP "connection" has no state), so no extra `SELECT 1`.
    assert "SELECT 1" not in fake.log


def test_constraint_failures_are_integrity_errors(d1_url: str) -> None:
    """make_engine maps D1's "… constraint failed" to IntegrityError, as SQLite/psycopg raise it."""
    assert dbmod.is_d1(dbmod.get_engine())
    with dbmod.session_scope() as db:
        assert dbmod.is_d1(db)
        db.add(User(email="ann@example.com", password_hash="x"))
        db.commit()
        db.add(User(email="ann@example.com", password_hash="y"))
        with pytest.raises(IntegrityError, match="UNIQUE constraint failed: users.email"):
            db.commit()


def test_lease_contention_returns_false(d1_url: str) -> None:
    """`leases.acquire` catches IntegrityError: on D1 it now gets one, instead of raising."""
    with dbmod.session_scope() as db:
        assert leases.acquire(db, "worker", "a", 60) is True
        assert leases.acquire(db, "worker", "b", 60) is False
        assert leases.acquire(db, "worker", "a", 60) is True  # renewed by its holder


def test_a_failed_session_keeps_its_earlier_writes(d1_url: str, tmp_path: Path) -> None:
    """One Session, two rows, the second fails: SQLite rolls both back; D1 keeps the first.
    (Why every multi-statement write that must be atomic is a batch on D1.)"""
    sqlite_url = f"sqlite:///{tmp_path / 'contrast.db'}"
    migrate(sqlite_url)
    kept = {}
    for name, engine in [("d1", dbmod.get_engine()), ("sqlite", dbmod.make_engine(sqlite_url))]:
        with Session(engine) as db:
            db.add(User(email="taken@example.com", password_hash="x"))
            db.commit()
        with Session(engine) as db:
            db.add(User(email="first@example.com", password_hash="x"))
            db.flush()
            db.add(User(email="taken@example.com", password_hash="x"))
            with pytest.raises(IntegrityError):
                db.flush()
            db.rollback()
        with Session(engine) as db:
            kept[name] = db.exec(select(User.email).where(User.email == "first@example.com")).all()
        engine.dispose()
    assert kept == {"d1": ["first@example.com"], "sqlite": []}


# --- 3. our services: one all-or-nothing batch per operation -------------------------------------------


def test_ledger_core_scenario(d1_url: str, fake: FakeD1) -> None:
    with dbmod.session_scope() as db:
        uid = make_user(db, "ann@example.com")
        before = len(fake.requests)
        up = ledger.change_balance(db, uid, 1000, "topup", reference="cs_1")
        assert writes(fake, before) == ["query"]  # one batch, nothing else written
        down = ledger.change_balance(db, uid, -300, "used", reference="run_1")
        refused = ledger.change_balance(db, uid, -701, "used", reference="run_2")
        assert (up.applied, up.old_balance, up.new_balance) == (True, 0, 1000)
        assert (down.applied, down.old_balance, down.new_balance) == (True, 1000, 700)
        assert (refused.applied, refused.old_balance, refused.new_balance) == (False, 700, 700)
        assert [up.entry_id, down.entry_id, refused.entry_id] == [1, 2, 3]
        assert ledger.balance_of(db, uid) == 700
        assert ledger.ledger_sum(db, uid) == 700
        assert [e.diff for e in ledger.history(db, uid).entries] == [-300, 1000]
        assert [b for _, b in ledger.balance_series(db, uid)] == [0, 1000, 700]
        entries = db.exec(select(LedgerEntry).order_by(col(LedgerEntry.id))).all()
        assert [(e.diff, e.old_balance, e.new_balance, e.outcome) for e in entries] == [
            (1000, 0, 1000, "applied"),
            (-300, 1000, 700, "applied"),
            (-701, 700, 700, "rejected"),
        ]
        rows = [
            r.row for r in db.exec(select(AnalyticsOutbox)) if r.table_name == "balance_changes"
        ]
        assert [(r["diff"], r["outcome"], r["ledger_entry_id"]) for r in rows] == [
            (1000, "applied", 1),
            (-300, "applied", 2),
            (-701, "rejected", 3),
        ]
        with pytest.raises(ledger.UnknownUser):
            ledger.change_balance(db, "nobody", 5, "manual")


def test_a_user_loaded_in_the_session_sees_the_new_balance(d1_url: str) -> None:
    """The batch bypasses the ORM; rows the session holds are refreshed, as the ORM's UPDATE
    would have synchronized them."""
    with dbmod.session_scope() as db:
        uid = make_user(db, "ann@example.com")
        user = db.get(User, uid)
        assert user is not None and user.balance == 0
        ledger.change_balance(db, uid, 250, "topup")
        assert db.get(User, uid).balance == 250


def test_concurrent_debits_never_overspend(d1_url: str) -> None:
    with dbmod.session_scope() as db:
        uid = make_user(db, "ann@example.com")
        ledger.change_balance(db, uid, 70, "topup")
    results: list[bool] = []

    def worker() -> None:
        for _ in range(5):
            with dbmod.session_scope() as s:
                results.append(ledger.change_balance(s, uid, -7, "used").applied)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (results.count(True), results.count(False)) == (10, 20)
    with dbmod.session_scope() as db:
        assert ledger.balance_of(db, uid) == 0 and ledger.ledger_sum(db, uid) == 0


def test_ledger_change_is_all_or_nothing(d1_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after the UPDATE and the ledger row leaves nothing (unmodified: it left both)."""
    with dbmod.session_scope() as db:
        uid = make_user(db, "ann@example.com")
    crash_at_end_of_batch(monkeypatch, ledger)
    with dbmod.session_scope() as db, pytest.raises(OperationalError, match="no_such_column"):
        ledger.change_balance(db, uid, 500, "topup")
    with dbmod.session_scope() as db:
        assert ledger.balance_of(db, uid) == 0
        assert db.exec(select(LedgerEntry)).all() == []
        assert [
            r for r in db.exec(select(AnalyticsOutbox)) if r.table_name == "balance_changes"
        ] == []


def _admin_call(action: str, user_id: str) -> audit.Call:
    call = audit.Call("PUT", f"/{action}", f"/{action}", action, token=audit.fingerprint("t"))
    return call.about(user_id)


def _audit_rows(db: Session) -> list[tuple[str, str, Any, Any]]:
    rows = db.exec(select(AdminAudit).order_by(col(AdminAudit.id))).all()
    return [(r.action, r.outcome, r.before, r.after) for r in rows]


def test_admin_changes_and_their_audit_rows_are_one_batch_each(d1_url: str, fake: FakeD1) -> None:
    """The admin audit (issue O) on D1: each change and its audit row are one `/query` batch, so
    the row exists exactly when the change does, as in a transaction elsewhere."""
    with dbmod.session_scope() as db:
        uid = make_user(db, "ann@example.com")
        login_session(db, "ann@example.com")
        before = len(fake.requests)
        change = admin.change_balance(db, uid, 40, _admin_call(audit.CHANGE_BALANCE, uid))
        assert writes(fake, before) == ["query"]
        before = len(fake.requests)
        admin.change_balance(db, uid, -90, _admin_call(audit.CHANGE_BALANCE, uid))  # refused
        assert writes(fake, before) == ["query"]
        before = len(fake.requests)
        blocked = admin.set_status(db, uid, "blocked", _admin_call(audit.SET_STATUS, uid))
        assert writes(fake, before) == ["query"]
        assert (blocked.previous_status, blocked.sessions_revoked) == ("activated", 1)
        assert _audit_rows(db) == [
            (
                "change_balance",
                "ok",
                {"balance": 0},
                {"balance": 40, "ledger_entry": change.entry_id},
            ),
            ("change_balance", "rejected", {"balance": 40}, {"balance": 40, "ledger_entry": 2}),
            (
                "set_status",
                "ok",
                {"status": "activated"},
                {"status": "blocked", "sessions_revoked": 1},
            ),
        ]
        page = audit.read(db, limit=2, user_id=uid)
        assert [r.action for r in page.rows] == ["set_status", "change_balance"]
        assert page.next_before_id == page.rows[-1].id
        assert [e.diff for e in audit.ledger_page(db, uid).rows] == [-90, 40]
    done = admin.delete_user(uid, _admin_call(audit.DELETE_USER, uid))
    with dbmod.session_scope() as db:
        (row,) = db.exec(select(AdminAudit).where(col(AdminAudit.action) == "delete_user")).all()
        assert row.id == int(done.also_rows[0]["id"])
        assert row.before is not None and row.before["sessions"] == 1
        assert row.after is not None and row.after["files_failed"] == 0


@pytest.mark.parametrize("change", ["balance", "status", "delete"])
def test_an_admin_change_and_its_audit_row_are_all_or_nothing(
    d1_url: str, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    with dbmod.session_scope() as db:
        uid = make_user(db, "ann@example.com")
    module = {"balance": ledger, "status": accounts, "delete": erasure}[change]
    crash_at_end_of_batch(monkeypatch, module)
    with pytest.raises(OperationalError, match="no_such_column"):
        if change == "delete":
            admin.delete_user(uid, _admin_call(audit.DELETE_USER, uid))
        else:
            with dbmod.session_scope() as db:
                if change == "balance":
                    admin.change_balance(db, uid, 40, _admin_call(audit.CHANGE_BALANCE, uid))
                else:
                    admin.set_status(db, uid, "blocked", _admin_call(audit.SET_STATUS, uid))
    with dbmod.session_scope() as db:
        user = db.get(User, uid)
        assert user is not None
        assert (user.balance, user.status, user.deleted_at) == (0, "activated", None)
        assert _audit_rows(db) == [] and db.exec(select(LedgerEntry)).all() == []


def paid(session_id: str, user_id: str) -> dict[str, Any]:
    meta = {"package_id": "10k", "user_id": user_id}
    return {"id": session_id, "metadata": meta, "amount_total": 1000, "currency": "usd"}


def test_webhook_credits_once_and_all_or_nothing(
    d1_url: str, fake: FakeD1, monkeypatch: pytest.MonkeyPatch
) -> None:
    with dbmod.session_scope() as db:
        uid = make_user(db, "ann@example.com")
        before = len(fake.requests)
        credited = billing.credit_checkout(db, paid("cs_1", uid), "evt_1")
        assert writes(fake, before) == ["query"]
        assert (credited.status, credited.change.new_balance) == ("credited", 10_000)
        assert billing.credit_checkout(db, paid("cs_1", uid), "evt_2").status == "duplicate"
        unknown = billing.credit_checkout(db, paid("cs_9", "nobody"), "evt_3")
        assert (unknown.status, unknown.detail) == ("ignored", "unknown user")
        assert ledger.balance_of(db, uid) == 10_000
        credit = db.get(PaymentCredit, "cs_1")
        assert credit is not None and credit.ledger_entry_id == credited.change.entry_id

        # A failure after the credit row and the ledger change leaves nothing, so a redelivery
        # credits (unmodified, the credit row stayed and every redelivery was a "duplicate").
        with monkeypatch.context() as mp, pytest.raises(OperationalError):
            crash_at_end_of_batch(mp, billing)
            billing.credit_checkout(db, paid("cs_2", uid), "evt_4")
        db.rollback()
        assert db.get(PaymentCredit, "cs_2") is None
        assert billing.credit_checkout(db, paid("cs_2", uid), "evt_5").status == "credited"
        assert ledger.balance_of(db, uid) == 20_000 == ledger.ledger_sum(db, uid)


def add_task(db: Session, owner: str) -> str:
    task = tasks.create_task(db, owner, "lipsync", "promo")
    for slot, kind in [("video", "video"), ("audio", "audio")]:
        media = {"duration_s": 3.0, "kind": kind, "container": "mp4"}
        db.add(
            TaskInput(
                task_id=task.id, slot=slot, storage_key=f"k/{slot}", filename=f"{slot}.mp4",
                size_bytes=10, media=media,
            )
        )  # fmt: skip
    db.commit()
    return task.id


def test_run_creation_is_all_or_nothing(d1_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with dbmod.session_scope() as db:
        uid = make_user(db, "ann@example.com")
        ledger.change_balance(db, uid, 1000, "topup")
        first, second = add_task(db, uid), add_task(db, uid)
        run = runs.start_run(db, uid, first)
        assert (run.attempt, run.price, run.status, ledger.balance_of(db, uid)) == (
            1,
            500,
            "queued",
            500,
        )

        with monkeypatch.context() as mp, pytest.raises(OperationalError):
            crash_at_end_of_batch(mp, runs)
            runs.start_run(db, uid, second)  # fails after the debit and the run were written
        db.rollback()
        assert ledger.balance_of(db, uid) == 500  # nothing debited (unmodified: 0) …
        assert len(db.exec(select(Run)).all()) == 1  # … and no run
        assert runs.start_run(db, uid, second).attempt == 1


def test_run_guards_in_sql_close_the_race(d1_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the read-only "busy" check (here: disabled), the batch's own guard refuses a second
    start of a task: no debit, no ledger row, no run; the answer is still `busy`."""
    with dbmod.session_scope() as db:
        uid = make_user(db, "ann@example.com")
        ledger.change_balance(db, uid, 1000, "topup")
        task_id = add_task(db, uid)
        runs.start_run(db, uid, task_id)
        monkeypatch.setattr(tasks, "run_in_flight", lambda db, task_id: False)
        with pytest.raises(runs.TaskError) as err:
            runs.start_run(db, uid, task_id)
        assert err.value.code == "busy"
        assert ledger.balance_of(db, uid) == 500
        assert len(db.exec(select(LedgerEntry)).all()) == 2
        assert len(db.exec(select(Run)).all()) == 1


def test_fail_run_refunds_once_in_one_batch(d1_url: str, fake: FakeD1) -> None:
    with dbmod.session_scope() as db:
        uid = make_user(db, "ann@example.com")
        ledger.change_balance(db, uid, 1000, "topup")
        run = runs.start_run(db, uid, add_task(db, uid))
        before = len(fake.requests)
        assert runs.fail_run(db, run.id, "boom") is True
        assert writes(fake, before) == ["query"]
        assert runs.fail_run(db, run.id, "again") is False
        assert runs.fail_run(db, "no-such-run", "boom") is False
        assert (run.status, run.error, run.refunded_at is not None) == ("failed", "boom", True)
        assert ledger.balance_of(db, uid) == 1000 == ledger.ledger_sum(db, uid)
        refunds = db.exec(select(LedgerEntry).where(LedgerEntry.action == "refund")).all()
        assert [(r.diff, r.reference, r.note) for r in refunds] == [
            (500, run.id, "refund of attempt 1")
        ]


# --- 4. the batch SQL, on D1 and on SQLite --------------------------------------------------------------
# `ledger.change_statements` and `db.run_batch` run on both: the SQL is SQLite's, and D1 is SQLite.


@pytest.fixture(params=["d1", "sqlite"])
def batch_db(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Session]:
    if request.param == "d1":
        url = request.getfixturevalue("d1_url")
    else:
        url = f"sqlite:///{tmp_path / 'batch.db'}"
        migrate(url)
    engine = dbmod.make_engine(url)
    with Session(engine) as db:
        yield db
    engine.dispose()


def new_user(db: Session, email: str, balance: int = 0) -> str:
    user = User(email=email, password_hash="x", status="activated", balance=balance)
    db.add(user)
    db.commit()
    return user.id


def balance(db: Session, uid: str) -> int:
    value = db.exec(select(User.balance).where(User.id == uid)).one()
    db.commit()
    return value


def test_proposed_ledger_batch(batch_db: Session) -> None:
    db, now = batch_db, clock.now()
    uid = new_user(db, "ann@example.com", balance=100)
    applied = dbmod.run_batch(db, ledger.change_statements(uid, -60, "used", "run_1", None, now))
    refused = dbmod.run_batch(db, ledger.change_statements(uid, -60, "used", "run_2", None, now))
    nobody = dbmod.run_batch(db, ledger.change_statements("nobody", 5, "manual", None, None, now))
    db.commit()
    assert [applied[1], refused[1], nobody[1]] == [
        [{"id": 1, "email": "ann@example.com", "old_balance": 100, "new_balance": 40,
          "outcome": "applied"}],
        [{"id": 2, "email": "ann@example.com", "old_balance": 40, "new_balance": 40,
          "outcome": "rejected"}],
        [],  # unknown user: nothing written (the service raises UnknownUser)
    ]  # fmt: skip
    assert balance(db, uid) == 40
    entries = db.exec(select(LedgerEntry).order_by(col(LedgerEntry.id))).all()
    assert [(e.created_at, e.reference) for e in entries] == [(now, "run_1"), (now, "run_2")]
    rows = [r.row for r in db.exec(select(AnalyticsOutbox).order_by(col(AnalyticsOutbox.id)))]
    assert rows == [
        {"timestamp": now.isoformat(), "userid": uid, "email": "ann@example.com",
         "action": "used", "diff": -60, "old_balance": old, "new_balance": 40, "outcome": outcome,
         "reference": ref, "ledger_entry_id": n}
        for n, old, outcome, ref in [(1, 100, "applied", "run_1"), (2, 40, "rejected", "run_2")]
    ]  # fmt: skip


def test_proposed_batch_is_all_or_nothing_on_d1(d1_url: str) -> None:
    engine = dbmod.make_engine(d1_url)
    with Session(engine) as db:
        uid = new_user(db, "ann@example.com", balance=100)
        doomed = [
            *ledger.change_statements(uid, -60, "used", "r", None, clock.now()),
            text("SELECT x"),
        ]
        with pytest.raises(OperationalError, match="no such column"):
            dbmod.run_batch(db, doomed)
        assert balance(db, uid) == 100
        assert db.exec(select(LedgerEntry)).all() == []
    engine.dispose()


def test_proposed_batches_never_overspend_under_concurrency(d1_url: str) -> None:
    engine = dbmod.make_engine(d1_url)
    with Session(engine) as db:
        uid = new_user(db, "ann@example.com", balance=70)
    outcomes: list[str] = []

    def worker() -> None:
        for _ in range(5):
            with Session(engine) as s:
                rows = dbmod.run_batch(
                    s, ledger.change_statements(uid, -7, "used", None, None, clock.now())
                )
                outcomes.append(rows[1][0]["outcome"])

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (outcomes.count("applied"), outcomes.count("rejected")) == (10, 20)
    with Session(engine) as db:
        assert balance(db, uid) == 0
        olds = sorted(e.old_balance for e in db.exec(select(LedgerEntry)) if e.outcome == "applied")
        assert olds == list(range(7, 71, 7))
        assert len(db.exec(select(AnalyticsOutbox)).all()) == 30
    engine.dispose()
