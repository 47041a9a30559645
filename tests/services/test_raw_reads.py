"""`@raw_read` services on the raw DBAPI connection (vgen_app/db_raw.py): what `with_db` gives
the hot UI reads on SQLite and PostgreSQL. Same answers as through an ORM Session, none of it
through SQLAlchemy's engine, errors raised as SQLAlchemy's own."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, select

from tests.helpers import login_session, make_user, statements
from vgen_app import db_raw
from vgen_app.db import get_engine, session_scope, with_db
from vgen_app.models import LedgerAction, Run, RunStatus
from vgen_app.services import ledger, sessions, tasks, tokens_view
from vgen_app.ui.session import _check_then_read


def _seed(db: Session) -> tuple[str, str, str]:
    ann = make_user(db, "ann@example.com")
    token = login_session(db, "ann@example.com")
    ledger.change_balance(db, ann, 5_000, LedgerAction.MANUAL)
    clip = tasks.create_task(db, ann, "lipsync", "clip 100%_done")
    tasks.create_task(db, ann, "lipsync", "other")
    for attempt, status in ((1, RunStatus.FAILED), (2, RunStatus.SUCCEEDED)):
        run = Run(
            task_id=clip.id,
            owner_id=ann,
            attempt=attempt,
            status=status.value,
            price=100,
            model="lipsync",
            inputs={"video": "k"},
            poster_key="poster" if status is RunStatus.SUCCEEDED else None,
        )
        db.add(run)
        db.commit()
        ledger.change_balance(db, ann, -100, LedgerAction.USED, reference=run.id)
    return ann, token, clip.id


def test_raw_reads_answer_what_a_session_answers_without_the_engine(db: Session) -> None:
    ann, token, clip = _seed(db)
    calls = [
        (sessions.validate, (token,)),
        (sessions.validate, ("no-such-token",)),
        (tasks.list_tasks, (ann,)),
        (tasks.list_tasks, (ann, 1, 20, RunStatus.SUCCEEDED.value, "lipsync", "100%")),
        (tasks.list_tasks, (ann, 3, 1, "not_run", "", "")),
        (tasks.task_view, (ann, clip, 1)),
        (tokens_view.tokens_view, (ann, 1, 20, True)),  # history rows name their runs (IN list)
        (_check_then_read, (token, tasks.list_tasks, 1, 20, "", "", "")),
    ]
    raw_path = get_engine().dialect.name in ("sqlite", "postgresql")
    for fn, args in calls:
        assert getattr(fn, "raw_read", False), fn.__name__
        with statements() as seen:
            answer = with_db(fn, *args)
        with session_scope() as session:
            expected = fn(session, *args)
        assert answer == expected, fn.__name__
        if raw_path:  # nothing went through the engine's execution (its events never fired)
            assert seen == [], (fn.__name__, seen)
        else:  # Cloudflare D1: the Session path
            assert seen, fn.__name__
    view = with_db(tokens_view.tokens_view, ann, 1, 20, True)
    assert view.history.total == 3 and len(view.history.runs) == 2
    assert [p for _, p in view.series] == [0, 5_000, 4_900, 4_800]
    page = with_db(tasks.list_tasks, ann)
    assert [(r.task.name, r.last_status, r.runs) for r in page.rows] == [
        ("other", None, 0),
        ("clip 100%_done", "succeeded", 2),
    ]
    assert page.rows[1].poster_run_id is not None


def test_a_raw_read_of_a_closed_connection_raises_sqlalchemys_error(database_url: str) -> None:
    engine = get_engine()
    if engine.dialect.name not in ("sqlite", "postgresql"):
        pytest.skip("the raw path is for SQLite and PostgreSQL")
    reader = db_raw.RawReader(engine)
    try:
        reader._conn.close()  # the driver's connection gone under the reader
        with pytest.raises(Exception) as raised:
            reader.execute(sessions._CHECK, {"token_hash": "x", "now": None})
        assert isinstance(raised.value, DBAPIError)  # SQLAlchemy's, not the driver's
    finally:
        if reader._raw.is_valid:
            reader._raw.invalidate()
        reader._raw = None
    assert with_db(sessions.validate, "anything") is None  # the pool hands out a live one


def test_a_failed_read_keeps_nothing_open(database_url: str) -> None:
    """An error inside a raw read still hands the connection back (no leak, no open read
    transaction holding back SQLite's checkpoints)."""
    engine = get_engine()
    if engine.dialect.name not in ("sqlite", "postgresql"):
        pytest.skip("the raw path is for SQLite and PostgreSQL")
    before = engine.pool.checkedout()
    with pytest.raises(DBAPIError), db_raw.RawReader(engine) as reader:
        reader.execute(text("SELECT no_such_column FROM users"), {})
    assert engine.pool.checkedout() == before
    assert with_db(sessions.validate, "anything") is None


def _sqlite_only() -> None:
    if get_engine().dialect.name != "sqlite":
        pytest.skip("SQLite's reader threads and transactions")


def test_a_reader_thread_keeps_its_connection_and_reads_without_a_transaction(db: Session) -> None:
    """On the SQLite reader threads a raw read neither checks a connection out of the pool nor
    opens a transaction (autocommit reads); the session's last-seen stamp is not written there
    but lands (written in the background)."""
    from datetime import timedelta

    from vgen_app import clock
    from vgen_app.models import UserSession

    _sqlite_only()
    _, token, _ = _seed(db)
    (before,) = db.exec(select(UserSession.last_seen_at)).all()
    engine = get_engine()
    sql: list[str] = []
    conns: list[int] = []

    def on_reader_thread() -> None:
        for _ in range(3):
            with db_raw.RawReader(engine) as reader:
                conns.append(id(reader._conn))
                reader._conn.set_trace_callback(sql.append)
                assert _check_then_read(reader, token, tasks.list_tasks, 1, 20, "", "", "")[0]
                reader._conn.set_trace_callback(None)
        assert engine.pool.checkedout() == out_before + 1  # kept by this thread, not handed back
        clock.travel(sessions.TOUCH_EVERY + timedelta(seconds=1))
        try:
            with db_raw.RawReader(engine) as reader:
                reader._conn.set_trace_callback(sql.append)
                assert sessions.validate(reader, token) is not None
                reader._conn.set_trace_callback(None)
                assert not reader._conn.in_transaction
        finally:
            clock.reset()

    db.close()
    out_before = engine.pool.checkedout()  # other reader threads' kept connections
    _on_a_reader_thread(on_reader_thread)
    assert len(set(conns)) == 1
    # per event: the session check, the page with its count; then the check after the minute:
    # still a read, and nothing else (its stamp is written in the background)
    assert all(s.lstrip().upper().startswith(("WITH", "SELECT")) for s in sql), sql
    assert len(sql) == 3 * 2 + 1
    sessions.seen_written()
    with session_scope() as check:
        (seen,) = check.exec(select(UserSession.last_seen_at)).all()
    assert _aware(seen) - _aware(before) > sessions.TOUCH_EVERY  # the touch landed
    assert getattr(db_raw._held, "conn", None) is None  # the test's own thread holds nothing


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _on_a_reader_thread(fn: object) -> None:
    """`fn` on a thread made as db.py makes its SQLite readers (its exceptions raised here)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, initializer=db_raw.hold_connections) as pool:
        pool.submit(fn).result()  # type: ignore[arg-type]


def test_a_failed_read_on_a_reader_thread_leaves_its_connection_clean(db: Session) -> None:
    _sqlite_only()
    _, token, _ = _seed(db)
    engine = get_engine()
    answers: list[object] = []

    def on_reader_thread() -> None:
        with db_raw.RawReader(engine) as reader:
            reader._conn.execute("BEGIN IMMEDIATE")  # as a write cut short would leave it
            reader._open = True
            reader._wrote = True
        with pytest.raises(DBAPIError), db_raw.RawReader(engine) as reader:
            reader.execute(text("SELECT no_such_column FROM users"), {})
        with db_raw.RawReader(engine) as reader:
            assert not reader._conn.in_transaction  # rolled back, not left to the next reader
            answers.append(sessions.validate(reader, token))
        reader_conn = db_raw._held.conn[1]
        reader_conn.invalidate()  # a connection gone bad: the next reader takes a new one
        with db_raw.RawReader(engine) as reader:
            answers.append(reader._raw is not reader_conn)

    db.close()
    _on_a_reader_thread(on_reader_thread)
    assert answers[0] is not None and answers[1] is True
