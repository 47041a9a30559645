"""Sessions' last-seen stamps are written off the session check: the check stays a read whatever
the minute, and every session seen meanwhile is stamped by one background UPDATE."""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event
from sqlmodel import Session, select

from tests.helpers import login_session, make_user
from vgen_app import clock
from vgen_app.db import get_engine, session_scope, with_db
from vgen_app.models import UserSession
from vgen_app.services import sessions


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _stamps() -> dict[str, datetime]:
    with session_scope() as db:
        return {s.token_hash: _aware(s.last_seen_at) for s in db.exec(select(UserSession)).all()}


@pytest.fixture
def updates() -> list[tuple[int, str]]:
    """(thread id, SQL) of every UPDATE of the sessions table, while the test runs."""
    seen: list[tuple[int, str]] = []
    engine = get_engine()

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("UPDATE SESSIONS"):
            seen.append((threading.get_ident(), statement))

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def test_sessions_checked_after_their_minute_are_stamped_by_one_write(
    db: Session, updates: list[tuple[int, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    make_user(db, "ann@example.com")
    tokens = [login_session(db, "ann@example.com") for _ in range(30)]
    db.close()
    before = _stamps()
    queued: list[tuple[Future, object]] = []

    def later(fn, *args):  # held back until every check is done: one batch
        future: Future = Future()
        queued.append((future, fn))
        return future

    monkeypatch.setattr(sessions, "run_db_later", later)
    clock.travel(sessions.TOUCH_EVERY + timedelta(seconds=5))
    for token in tokens:
        assert with_db(sessions.validate, token) is not None
    assert updates == []  # the checks themselves wrote nothing
    assert len(queued) == 1 and len(sessions._seen) == len(tokens)  # one write queued for all
    future, write = queued[0]
    future.set_result(with_db(write))
    assert future.result() == len(tokens)
    after = _stamps()
    assert all(after[h] - before[h] > sessions.TOUCH_EVERY for h in before)  # every one moved
    assert len(updates) == 1  # in one statement
    # within the minute a check stamps nothing, and queues nothing
    for token in tokens:
        assert with_db(sessions.validate, token) is not None
    assert len(queued) == 1 and len(updates) == 1 and _stamps() == after


def test_the_write_runs_in_the_background(db: Session, updates: list[tuple[int, str]]) -> None:
    make_user(db, "cat@example.com")
    token = login_session(db, "cat@example.com")
    db.close()
    clock.travel(sessions.TOUCH_EVERY + timedelta(seconds=5))
    assert with_db(sessions.validate, token) is not None
    sessions.seen_written()
    assert len(updates) == 1 and updates[0][0] != threading.get_ident()  # not on this thread


def test_a_failed_write_does_not_stop_later_stamps(
    db: Session, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    make_user(db, "bob@example.com")
    token = login_session(db, "bob@example.com")
    db.close()
    (before,) = _stamps().values()
    clock.travel(sessions.TOUCH_EVERY + timedelta(seconds=5))
    monkeypatch.setattr(sessions, "_TOUCH_CHUNK", 0)  # range() refuses a zero step: the write fails
    assert with_db(sessions.validate, token) is not None
    with contextlib.suppress(ValueError):  # raised here if the write was still running
        sessions.seen_written()
    deadline = time.monotonic() + 5  # logged by the future's callback, on the database thread
    while "background database work failed" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "background database work failed" in caplog.text  # the failure is logged
    assert list(_stamps().values()) == [before]  # not stamped
    monkeypatch.setattr(sessions, "_TOUCH_CHUNK", 500)
    assert with_db(sessions.validate, token) is not None  # the next check queues a new write
    sessions.seen_written()
    (after,) = _stamps().values()
    assert after - before > sessions.TOUCH_EVERY
