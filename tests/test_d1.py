"""Cloudflare D1 through `sqlalchemy-cloudflare-d1` (0.4.1), against the local fake in fake_d1.py.

What runs unmodified, what breaks without multi-request transactions, and the batch SQL proposed
in docs/d1.md (run here on the fake, i.e. sqlite3, and on our SQLite engine: one code path).
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sqlalchemy_cloudflare_d1")

from alembic.ddl import impl as alembic_impl
from alembic.ddl.sqlite import SQLiteImpl
from sqlalchemy import bindparam, create_engine, event, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.sql import Executable
from sqlalchemy.sql.elements import TextClause
from sqlmodel import Session, col, select

from tests.fake_d1 import FakeD1
from tests.helpers import make_user
from vgen_app import clock
from vgen_app import db as dbmod
from vgen_app.cli import migrate
from vgen_app.config import reset_settings
from vgen_app.models import (
    AnalyticsOutbox,
    CheckoutSession,
    LedgerEntry,
    PaymentCredit,
    Run,
    Task,
    TaskInput,
    User,
    UTCDateTime,
)
from vgen_app.services import billing, ledger, outbox, runs, tasks

# --- Alembic knows no `cloudflare_d1` dialect: an impl must be registered (proposed: in env.py) ----


class D1AlembicImpl(SQLiteImpl):
    """D1 is SQLite. (Registered per test below; the app would set `__dialect__ = "cloudflare_d1"`.)"""


class D1AlembicImplFixed(D1AlembicImpl):
    """Stands in for the one-line fix of migration 0002 (skip INTEGER->BIGINT on SQLite *and* D1)."""

    def alter_column(self, table_name: str, column_name: str, **kw: Any) -> None:
        type_only = kw.get("nullable") is None and kw.get("server_default") is False
        if not (type_only and kw.get("name") is None):  # SQLite has no ALTER COLUMN … TYPE
            super().alter_column(table_name, column_name, **kw)


def use_alembic_impl(monkeypatch: pytest.MonkeyPatch, cls: type | None) -> None:
    if cls is None:
        monkeypatch.delitem(alembic_impl._impls, "cloudflare_d1", raising=False)
    else:
        monkeypatch.setitem(alembic_impl._impls, "cloudflare_d1", cls)


def map_constraint_errors(engine: Engine) -> None:
    """Proposed for db.make_engine: the dialect raises every D1 error as OperationalError; give
    constraint failures the IntegrityError that SQLite/psycopg raise (and our services catch)."""

    @event.listens_for(engine, "handle_error")
    def _integrity(ctx: Any) -> None:
        if "constraint failed" in str(ctx.original_exception):
            raise IntegrityError(
                ctx.statement, ctx.parameters, ctx.original_exception
            ) from ctx.original_exception


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
        with pytest.MonkeyPatch.context() as mp:
            use_alembic_impl(mp, D1AlembicImplFixed)
            migrate(template.url())
    finally:
        template.close()
    return path


@pytest.fixture
def d1_url(fake: FakeD1, migrated_d1: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A migrated fake D1, selected as DATABASE_URL for the code under test."""
    use_alembic_impl(monkeypatch, D1AlembicImplFixed)
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
    engine.dispose()
    assert set(fake.calls) == {"raw"}  # one POST …/raw per statement, never /query, never a batch
    assert not [s for s in fake.log if re.match(r"\s*(COMMIT|ROLLBACK)", s, re.IGNORECASE)]

    # The other override: CF_D1_BASE_URL, read when each DBAPI connection is made.
    monkeypatch.setenv("CF_D1_BASE_URL", fake.base)
    engine = create_engine("cloudflare_d1://acct:tok@db")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM t")).scalar_one() == "a"
    engine.dispose()


def test_alembic_migrations(fake: FakeD1, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Unmodified: Alembic has no implementation for the dialect name.
    use_alembic_impl(monkeypatch, None)
    with pytest.raises(KeyError, match="cloudflare_d1"):
        migrate(fake.url())

    # With an impl: 0002 runs `ALTER TABLE … ALTER COLUMN` (guarded for "sqlite" only) and fails,
    # and DDL is not transactional: 0002's tables stay while alembic_version still says 0001.
    use_alembic_impl(monkeypatch, D1AlembicImpl)
    with pytest.raises(OperationalError, match="ALTER"):
        migrate(fake.url())
    assert one(fake, "SELECT version_num FROM alembic_version") == "0001"
    assert one(fake, "SELECT count(*) FROM sqlite_master WHERE name = 'ledger_entries'") == 1

    # With the guard fixed, a fresh database migrates to head.
    use_alembic_impl(monkeypatch, D1AlembicImplFixed)
    fresh = FakeD1(str(tmp_path / "fresh.sqlite"))
    try:
        migrate(fresh.url())
        assert one(fresh, "SELECT version_num FROM alembic_version") == "0003"
        names = {r[0] for r in fresh.db.execute("SELECT name FROM sqlite_master")}
        assert {"users", "ledger_entries", "payment_credits", "runs", "leases"} <= names
    finally:
        fresh.close()


# --- 2. ORM basics ------------------------------------------------------------------------------------


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


def test_unique_violation_is_operational_error_unless_mapped(d1_url: str) -> None:
    engine = dbmod.get_engine()
    with Session(engine) as db:
        db.add(User(email="ann@example.com", password_hash="x"))
        db.commit()
        db.add(User(email="ann@example.com", password_hash="y"))
        with pytest.raises(OperationalError, match="UNIQUE constraint failed: users.email") as err:
            db.commit()
        assert not isinstance(err.value, IntegrityError)
        db.rollback()
    map_constraint_errors(engine)
    with Session(engine) as db:
        db.add(User(email="ann@example.com", password_hash="z"))
        with pytest.raises(IntegrityError, match="UNIQUE constraint failed"):
            db.commit()


def test_a_failed_session_keeps_its_earlier_writes(d1_url: str, tmp_path: Path) -> None:
    """One Session, two rows, the second fails: SQLite rolls both back; D1 keeps the first."""
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
            with pytest.raises((IntegrityError, OperationalError)):
                db.flush()
            db.rollback()
        with Session(engine) as db:
            kept[name] = db.exec(select(User.email).where(User.email == "first@example.com")).all()
        engine.dispose()
    assert kept == {"d1": ["first@example.com"], "sqlite": []}


# --- 3. our services, unmodified ----------------------------------------------------------------------


def test_ledger_core_scenario_runs_unmodified(d1_url: str) -> None:
    with dbmod.session_scope() as db:
        uid = make_user(db, "ann@example.com")
        up = ledger.change_balance(db, uid, 1000, "topup", reference="cs_1")
        down = ledger.change_balance(db, uid, -300, "used", reference="run_1")
        refused = ledger.change_balance(db, uid, -701, "used", reference="run_2")
        assert (up.applied, up.old_balance, up.new_balance) == (True, 0, 1000)
        assert (down.applied, down.old_balance, down.new_balance) == (True, 1000, 700)
        assert (refused.applied, refused.old_balance, refused.new_balance) == (False, 700, 700)
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


def test_concurrent_debits_never_overspend(d1_url: str) -> None:
    """The debit is one conditional UPDATE … RETURNING: atomic on D1 too."""
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


def test_ledger_change_is_not_atomic(d1_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after the UPDATE (here: writing the outbox row) cannot be rolled back."""
    with dbmod.session_scope() as db:
        uid = make_user(db, "ann@example.com")

    def broken(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("crash between statements")

    monkeypatch.setattr(outbox, "record", broken)
    with dbmod.session_scope() as db, pytest.raises(RuntimeError):
        ledger.change_balance(db, uid, 500, "topup")
    with dbmod.session_scope() as db:
        assert ledger.balance_of(db, uid) == 500  # SQLite/PostgreSQL: 0
        assert len(db.exec(select(LedgerEntry)).all()) == 1  # the ledger row was flushed too
        assert [
            r for r in db.exec(select(AnalyticsOutbox)) if r.table_name == "balance_changes"
        ] == []


def paid(session_id: str, user_id: str) -> dict[str, Any]:
    meta = {"package_id": "10k", "user_id": user_id}
    return {"id": session_id, "metadata": meta, "amount_total": 1000, "currency": "usd"}


def test_webhook_dedupe(d1_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with dbmod.session_scope() as db:
        uid = make_user(db, "ann@example.com")
        assert billing.credit_checkout(db, paid("cs_1", uid), "evt_1").status == "credited"
        # A redelivery: the payment_credits INSERT fails, but as OperationalError, so the
        # `except IntegrityError` branch is skipped and the webhook answers 500.
        with pytest.raises(OperationalError, match="UNIQUE constraint failed"):
            billing.credit_checkout(db, paid("cs_1", uid), "evt_2")
        db.rollback()
        map_constraint_errors(dbmod.get_engine())
        assert billing.credit_checkout(db, paid("cs_1", uid), "evt_3").status == "duplicate"
        assert ledger.balance_of(db, uid) == 10_000

        # A failure between the credit row and the ledger change: the credit row stays (each
        # statement autocommitted), so every redelivery is a "duplicate": the tokens are lost.
        def broken(*_a: Any, **_k: Any) -> None:
            raise RuntimeError("crash between statements")

        with monkeypatch.context() as mp, pytest.raises(RuntimeError):
            mp.setattr(ledger, "apply_change", broken)
            billing.credit_checkout(db, paid("cs_2", uid), "evt_4")
        db.rollback()
        assert billing.credit_checkout(db, paid("cs_2", uid), "evt_5").status == "duplicate"
        assert ledger.balance_of(db, uid) == 10_000  # SQLite/PostgreSQL: 20 000


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


def test_run_creation(d1_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with dbmod.session_scope() as db:
        uid = make_user(db, "ann@example.com")
        ledger.change_balance(db, uid, 1000, "topup")
        first, second = add_task(db, uid), add_task(db, uid)
        run = runs.start_run(db, uid, first)  # the happy path works
        assert (run.attempt, run.price, ledger.balance_of(db, uid)) == (1, 500, 500)

        real = ledger.apply_change

        def debit_then_crash(*a: Any, **k: Any) -> Any:
            real(*a, **k)
            raise RuntimeError("crash after the debit")

        monkeypatch.setattr(ledger, "apply_change", debit_then_crash)
        with pytest.raises(RuntimeError):
            runs.start_run(db, uid, second)
        db.rollback()
        assert ledger.balance_of(db, uid) == 0  # debited (SQLite/PostgreSQL: 500) …
        assert len(db.exec(select(Run)).all()) == 1  # … for a run that does not exist


# --- 4. the proposal: one all-or-nothing batch per operation -----------------------------------------
# What follows would live in vgen_app (db.run_batch; the statements in ledger/billing/runs).


def run_batch(db: Session, statements: Sequence[Executable]) -> list[list[dict[str, Any]]]:
    """Run statements all or nothing; each one's RETURNING rows (as dicts).

    SQLite/PostgreSQL: in the session's transaction (the caller commits). D1: one `/query` batch,
    which is its own transaction, over the dialect's own HTTP client."""
    conn = db.connection()
    dialect = conn.dialect
    if dialect.name != "cloudflare_d1":
        out = []
        for stmt in statements:
            result = conn.execute(stmt)  # fetched at once: SQLite sets changes() when one ends
            out.append([dict(r) for r in result.mappings()] if result.returns_rows else [])
        return out
    batch = []
    for stmt in statements:
        compiled = stmt.compile(dialect=dialect)
        values = compiled.construct_params()
        params = []
        for name in compiled.positiontup or []:
            proc = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            params.append(proc(values[name]) if proc else values[name])
        batch.append({"sql": compiled.string, "params": params})
    raw = conn.connection.dbapi_connection  # sqlalchemy_cloudflare_d1.Connection
    body = raw.client.post(f"{raw.base_url}/query", json={"batch": batch}).json()
    if not body.get("success"):
        message = "; ".join(e.get("message", "") for e in body.get("errors") or [])
        cls = IntegrityError if "constraint failed" in message else OperationalError
        raise cls(batch[0]["sql"], None, Exception(message))
    return [r.get("results") or [] for r in body["result"]]


def sql(statement: str, **values: Any) -> TextClause:
    """A text statement with the values it names bound (datetimes as UTCDateTime)."""
    names = set(re.findall(r"(?<!:):(\w+)", statement))
    binds = [
        bindparam(k, v, type_=UTCDateTime()) if isinstance(v, datetime) else bindparam(k, v)
        for k, v in values.items()
        if k in names
    ]
    return text(statement).bindparams(*binds)


def ledger_statements(
    uid: str, diff: int, action: str, reference: str | None, note: str | None, now: datetime,
    guard: str = "1", **extra: Any,
) -> list[TextClause]:  # fmt: skip
    """The ledger change as 3 statements; `changes()` carries "did the UPDATE apply" forward.

    `guard` (SQL) must hold for anything to happen at all (not even a `rejected` record)."""
    v = dict(uid=uid, diff=diff, action=action, reference=reference, note=note, now=now, **extra)
    return [
        sql(
            "UPDATE users SET balance = balance + :diff"
            f" WHERE id = :uid AND balance + :diff >= 0 AND {guard}",
            **v,
        ),
        sql(
            "INSERT INTO ledger_entries (user_id, email, action, diff, old_balance, new_balance,"
            " outcome, reference, note, created_at)"
            " SELECT id, email, :action, :diff,"
            " CASE WHEN changes() = 1 THEN balance - :diff ELSE balance END, balance,"
            " CASE WHEN changes() = 1 THEN 'applied' ELSE 'rejected' END, :reference, :note, :now"
            f" FROM users WHERE id = :uid AND {guard}"
            " RETURNING id, email, old_balance, new_balance, outcome",
            **v,
        ),
        sql(
            "INSERT INTO analytics_outbox (table_name, row, created_at, attempts)"
            " SELECT 'balance_changes', json_object('timestamp', :ts, 'userid', user_id,"
            " 'email', email, 'action', action, 'diff', diff, 'old_balance', old_balance,"
            " 'new_balance', new_balance, 'outcome', outcome, 'reference', reference,"
            " 'ledger_entry_id', id), :now, 0"
            " FROM ledger_entries WHERE changes() = 1 AND id = last_insert_rowid()",
            ts=now.isoformat(),
            **v,
        ),
    ]


def credit_statements(cs: str, event_id: str, uid: str, tokens: int, now: datetime) -> list:
    """Webhook: the payment_credits row first: a redelivery fails the whole batch on its key."""
    v = {"cs": cs, "event_id": event_id, "uid": uid, "tokens": tokens, "now": now}
    return [
        sql(
            "INSERT INTO payment_credits (checkout_session_id, event_id, user_id, tokens,"
            " created_at) VALUES (:cs, :event_id, :uid, :tokens, :now)",
            **v,
        ),
        *ledger_statements(uid, tokens, "topup", cs, f"{tokens:,} tokens", now),
        sql(
            "UPDATE payment_credits SET ledger_entry_id ="
            " (SELECT max(id) FROM ledger_entries WHERE user_id = :uid)"
            " WHERE checkout_session_id = :cs",
            **v,
        ),
        sql("UPDATE checkout_sessions SET status = 'paid', paid_at = :now WHERE id = :cs", **v),
    ]


NOT_BUSY = (
    "NOT EXISTS (SELECT 1 FROM runs WHERE task_id = :task_id"
    " AND status IN ('queued', 'processing'))"
)


def start_run_statements(
    uid: str, task_id: str, run_id: str, price: int, model: str, inputs: dict, now: datetime
) -> list[TextClause]:
    """Run creation: the debit and the run, both only if the task is idle; the run only if paid."""
    v = {
        "uid": uid,
        "task_id": task_id,
        "run_id": run_id,
        "price": price,
        "model": model,
        "now": now,
    }
    return [
        sql("UPDATE tasks SET updated_at = :now WHERE id = :task_id AND owner_id = :uid", **v),
        *ledger_statements(uid, -price, "used", run_id, None, now, NOT_BUSY, task_id=task_id),
        sql(
            "INSERT INTO runs (id, task_id, owner_id, attempt, status, progress, price, model,"
            " inputs, submit_attempts, created_at, updated_at)"
            " SELECT :run_id, :task_id, :uid,"
            " (SELECT coalesce(max(attempt), 0) + 1 FROM runs WHERE task_id = :task_id),"
            " 'queued', 0.0, :price, :model, :inputs, 0, :now, :now"
            " FROM ledger_entries WHERE id = (SELECT max(id) FROM ledger_entries"
            " WHERE user_id = :uid) AND reference = :run_id AND outcome = 'applied'"
            " RETURNING id, attempt",
            inputs=json.dumps(inputs),
            **v,
        ),
    ]


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
    applied = run_batch(db, ledger_statements(uid, -60, "used", "run_1", None, now))
    refused = run_batch(db, ledger_statements(uid, -60, "used", "run_2", None, now))
    nobody = run_batch(db, ledger_statements("nobody", 5, "manual", None, None, now))
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
        doomed = [*ledger_statements(uid, -60, "used", "r", None, clock.now()), text("SELECT x")]
        with pytest.raises(OperationalError, match="no such column"):
            run_batch(db, doomed)
        assert balance(db, uid) == 100
        assert db.exec(select(LedgerEntry)).all() == []
    engine.dispose()


def test_proposed_webhook_batch(batch_db: Session) -> None:
    db, now = batch_db, clock.now()
    uid = new_user(db, "ann@example.com")
    db.add(CheckoutSession(id="cs_1", user_id=uid, provider="test", package_id="10k",
                           tokens=10_000, amount_cents=1000, currency="usd", url="u"))  # fmt: skip
    db.commit()
    run_batch(db, credit_statements("cs_1", "evt_1", uid, 10_000, now))
    db.commit()
    with pytest.raises(IntegrityError):  # the redelivery: nothing at all is written
        run_batch(db, credit_statements("cs_1", "evt_2", uid, 10_000, now))
    db.rollback()
    with pytest.raises(IntegrityError):  # unknown user: the credit row's foreign key
        run_batch(db, credit_statements("cs_9", "evt_3", "nobody", 10_000, now))
    db.rollback()
    assert balance(db, uid) == 10_000
    credit = db.exec(select(PaymentCredit)).one()
    entry = db.exec(select(LedgerEntry)).one()
    assert (credit.event_id, credit.ledger_entry_id) == ("evt_1", entry.id)
    assert (entry.diff, entry.reference, entry.outcome) == (10_000, "cs_1", "applied")
    assert db.get(CheckoutSession, "cs_1").status == "paid"
    assert len(db.exec(select(AnalyticsOutbox)).all()) == 1


def test_proposed_run_batch(batch_db: Session) -> None:
    db, now = batch_db, clock.now()
    uid = new_user(db, "ann@example.com", balance=700)
    task = Task(owner_id=uid, model="lipsync", name="promo")
    db.add(task)
    db.commit()
    inputs = {"audio": {"duration_s": 3.0}}

    def start(run_id: str) -> tuple[list, list]:
        results = run_batch(
            db, start_run_statements(uid, task.id, run_id, 500, "lipsync", inputs, now)
        )
        db.commit()
        return results[2], results[4]  # the ledger row, the run

    (entry,), (run,) = start("run_a")
    assert (entry["outcome"], run) == ("applied", {"id": "run_a", "attempt": 1})
    assert start("run_b") == ([], [])  # busy: no debit, no ledger row, no run
    db.exec(update(Run).values(status="succeeded"))
    db.commit()
    (entry,), no_run = start("run_c")  # 200 left: refused, recorded, no run
    assert (entry["outcome"], entry["old_balance"], no_run) == ("rejected", 200, [])
    assert balance(db, uid) == 200
    assert [r.id for r in db.exec(select(Run))] == ["run_a"]
    assert db.get(Run, "run_a").inputs == inputs


def test_proposed_batches_never_overspend_under_concurrency(d1_url: str) -> None:
    engine = dbmod.make_engine(d1_url)
    with Session(engine) as db:
        uid = new_user(db, "ann@example.com", balance=70)
    outcomes: list[str] = []

    def worker() -> None:
        for _ in range(5):
            with Session(engine) as s:
                rows = run_batch(s, ledger_statements(uid, -7, "used", None, None, clock.now()))
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
