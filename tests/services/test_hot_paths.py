"""Hot paths found by the benchmarks (issue G): reads that grew with a task's run count, and the task
page's once-a-second refresh doing one database call per piece. Statement counts, not timings."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event
from sqlmodel import Session

from tests.helpers import login_session, make_user, statements, ui_state
from vgen_app.models import Run, RunStatus
from vgen_app.services import tasks
from vgen_app.ui import dashboard as dashboard_ui
from vgen_app.ui import task as task_ui


@contextmanager
def runs_loaded() -> Iterator[list[str]]:
    """The id of every Run row the ORM builds inside the block."""
    seen: list[str] = []

    def record(target: Run, context: Any) -> None:
        seen.append(target.id)

    event.listen(Run, "load", record)
    try:
        yield seen
    finally:
        event.remove(Run, "load", record)


def add_runs(db: Session, owner: str, task_id: str, count: int, last_status: str) -> None:
    start = len(db.exec(Run.__table__.select().where(Run.task_id == task_id)).all())
    for i in range(1, count + 1):
        status = last_status if i == count else RunStatus.FAILED.value
        db.add(
            Run(
                task_id=task_id,
                owner_id=owner,
                attempt=start + i,
                status=status,
                price=100,
                model="lipsync",
                inputs={},
            )
        )
    db.commit()


def test_task_list_reads_do_not_grow_with_the_run_count(db: Session) -> None:
    ann = make_user(db, "ann@example.com")
    busy = tasks.create_task(db, ann, "lipsync", "busy")
    once = tasks.create_task(db, ann, "lipsync", "once")
    tasks.create_task(db, ann, "lipsync", "never")
    add_runs(db, ann, busy.id, 5, RunStatus.PROCESSING.value)
    add_runs(db, ann, once.id, 1, RunStatus.SUCCEEDED.value)

    with statements() as few:
        small = tasks.list_tasks(db, ann)
    add_runs(db, ann, busy.id, 60, RunStatus.SUCCEEDED.value)
    with statements() as many, runs_loaded() as loaded:
        page = tasks.list_tasks(db, ann)

    assert len(many) == len(few) <= 3
    assert len(loaded) <= 2  # no Run object for each of the 66 runs (Core rows: none at all)
    by_name = {row.task.name: row for row in page.rows}
    assert by_name["busy"].runs == 65 and by_name["busy"].last_status == "succeeded"
    assert by_name["once"].runs == 1 and by_name["once"].last_status == "succeeded"
    assert by_name["never"].runs == 0 and by_name["never"].last_status is None
    assert {r.task.name: r.last_status for r in small.rows}["busy"] == "processing"


def test_task_view_reads_the_newest_runs_in_one_session(db: Session) -> None:
    ann = make_user(db, "ann@example.com")
    eve = make_user(db, "eve@example.com")
    task = tasks.create_task(db, ann, "lipsync", "clip")
    add_runs(db, ann, task.id, 3, RunStatus.QUEUED.value)

    with statements() as few:
        view = tasks.task_view(db, ann, task.id, runs_limit=20)
    assert [r.attempt for r in view.runs] == [3, 2, 1] and view.runs_total == 3
    assert view.in_flight

    add_runs(db, ann, task.id, 47, RunStatus.SUCCEEDED.value)
    with statements() as many:
        view = tasks.task_view(db, ann, task.id, runs_limit=20)
    assert [r.attempt for r in view.runs] == list(range(50, 30, -1))
    assert view.runs_total == 50 and not view.in_flight
    assert len(few) <= 3 and len(many) <= 4  # task, inputs, runs (+ a count past one page)

    with pytest.raises(tasks.NotFound):
        tasks.task_view(db, eve, task.id)
    with pytest.raises(tasks.NotFound):
        tasks.task_view(db, ann, "x" * 33)


def test_task_page_refresh_is_one_database_call_and_sends_only_the_newest_runs(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    ann = make_user(db, "ann@example.com")
    task = tasks.create_task(db, ann, "lipsync", "clip")
    add_runs(db, ann, task.id, task_ui.RUNS_SHOWN + 15, RunStatus.PROCESSING.value)
    cookie = f"vgen_session={login_session(db, 'ann@example.com')}"

    calls: list[str] = []
    real = task_ui.run_db

    async def counting(fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(fn.__name__)
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(task_ui, "run_db", counting)
    state = ui_state(task_ui.TaskState, f"/tasks/{task.id}", cookie=cookie)
    state.task_id = task.id
    user = asyncio.run(state.current_user())
    assert user is not None

    asyncio.run(state._refresh(user.user_id))  # what each watch tick does after the session check

    assert calls == ["task_view"]
    assert len(state.run_rows) == task_ui.RUNS_SHOWN
    assert state.run_rows[0].attempt == task_ui.RUNS_SHOWN + 15
    assert state.runs_total == task_ui.RUNS_SHOWN + 15 and state.in_flight


def test_token_history_paging_does_not_resend_the_chart(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vgen_app.services import ledger, purchases
    from vgen_app.ui import session as session_ui
    from vgen_app.ui import tokens as tokens_ui

    ann = make_user(db, "ann@example.com")
    for i in range(45):
        ledger.change_balance(db, ann, 100 + i, "topup")
    cookie = f"vgen_session={login_session(db, 'ann@example.com')}"
    hops: list[str] = []
    reads: list[str] = []
    real_run_db = session_ui.run_db

    async def counting_hops(fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(fn.__name__)
        return await real_run_db(fn, *args, **kwargs)

    def counting(module: Any, name: str) -> None:
        real = getattr(module, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            reads.append(name)
            return real(*args, **kwargs)

        wrapper.read_only = True  # type: ignore[attr-defined]
        monkeypatch.setattr(module, name, wrapper)

    monkeypatch.setattr(session_ui, "run_db", counting_hops)
    monkeypatch.setattr(tokens_ui, "run_db", counting_hops)
    counting(ledger, "history")
    counting(ledger, "balance_series")
    counting(purchases, "purchases")
    state = ui_state(tokens_ui.TokensState, "/tokens", cookie=cookie)
    asyncio.run(state.on_load())
    assert hops == ["_check_then_read"]  # the session check and the page: one database call
    assert reads == ["history", "purchases", "balance_series"]
    assert len(state.chart) == 46 + 1  # each change, then the balance now (issue K)
    state._clean()  # as after the delta went out over the socket

    hops.clear()
    reads.clear()
    asyncio.run(state.go_to_page(2))

    assert hops == ["_check_then_read"] and reads == ["history"]
    assert state.history_page == 2 and len(state.history_rows) == 20
    assert "chart" not in state.dirty_vars  # only the page's rows travel
    assert "purchase_rows" not in state.dirty_vars


def test_bcrypt_runs_on_its_own_low_priority_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst of logins must never take every core from the event loop (bench/event_roundtrip.py)."""
    import os
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import bcrypt

    from vgen_app.services import security

    seen: list[tuple[str, int]] = []
    running, peak = [0], [0]
    lock = threading.Lock()
    real = bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            seen.append((threading.current_thread().name, os.getpriority(os.PRIO_PROCESS, 0)))
        time.sleep(0.05)  # long enough for the callers to pile up
        try:
            return real(password, hashed)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(bcrypt, "checkpw", spy)
    hashed = security.hash_password("correct horse")
    with ThreadPoolExecutor(8) as callers:  # eight logins at once, as from eight db threads
        results = list(
            callers.map(lambda _: security.verify_password("correct horse", hashed), range(8))
        )

    assert results == [True] * 8
    assert peak[0] <= security.bcrypt_threads()
    assert all(name.startswith("vgen-bcrypt") for name, _ in seen)
    assert all(nice >= security.BCRYPT_NICE for _, nice in seen)


def test_read_only_services_never_wait_for_the_sqlite_write_lock(db: Session) -> None:
    """A writer holding SQLite's lock does not hold up the session check and the page reads."""
    import threading

    from sqlalchemy import text

    from vgen_app.db import session_scope
    from vgen_app.services import ledger, sessions

    if db.get_bind().dialect.name != "sqlite":
        pytest.skip("SQLite's write lock")
    ann = make_user(db, "ann@example.com")
    token = login_session(db, "ann@example.com")
    task = tasks.create_task(db, ann, "lipsync", "clip")
    holding, release, committed = threading.Event(), threading.Event(), threading.Event()

    def writer() -> None:
        with session_scope() as s:
            s.execute(text("UPDATE users SET balance = balance WHERE id = :id"), {"id": ann})
            holding.set()  # BEGIN IMMEDIATE taken: every other writer now queues
            release.wait(15)
            s.commit()
            committed.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert holding.wait(10)
        from vgen_app.db import with_db

        assert with_db(sessions.validate, token) is not None
        assert with_db(tasks.task_view, ann, task.id).task.name == "clip"
        assert with_db(tasks.list_tasks, ann).total == 1
        assert with_db(ledger.history, ann).total == 0
        assert with_db(ledger.balance_series, ann) == []
        assert not committed.is_set()  # all of it answered while the writer held the lock
    finally:
        release.set()
        thread.join(10)


def test_dashboard_event_is_one_database_call(db: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session check and the task list share one thread hop and one session per event."""
    from vgen_app.ui import session as session_ui

    ann = make_user(db, "ann@example.com")
    tasks.create_task(db, ann, "lipsync", "clip")
    cookie = f"vgen_session={login_session(db, 'ann@example.com')}"
    calls: list[str] = []
    real = session_ui.run_db

    async def counting(fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(fn.__name__)
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(session_ui, "run_db", counting)
    monkeypatch.setattr(task_ui, "run_db", counting)
    state = ui_state(dashboard_ui.DashboardState, "/", cookie=cookie)
    assert asyncio.run(state.on_load()) is None
    assert calls == ["_check_then_read"]
    assert state.authenticated and [r.name for r in state.task_rows] == ["clip"]

    with pytest.raises(TypeError):  # a service that may write never rides on the read-only path
        asyncio.run(state.current_user_and(tasks.create_task, "lipsync"))


def test_task_page_event_sends_its_delta_and_no_other_message(db: Session) -> None:
    """The tab title is state (the page's <title>), not a script: an on_load of a task at rest
    answers with its delta alone (a `call_script` was a second socket message per event)."""
    ann = make_user(db, "ann@example.com")
    task = tasks.create_task(db, ann, "lipsync", "Wedding toast")
    cookie = f"vgen_session={login_session(db, 'ann@example.com')}"
    state = ui_state(task_ui.TaskState, f"/tasks/{task.id}", cookie=cookie)
    assert asyncio.run(state.on_load()) is None
    assert state.tab_title == "Wedding toast · vgen"
    asyncio.run(state.rename({"name": "Best man"}))
    assert state.tab_title == "Best man · vgen"
    gone = ui_state(task_ui.TaskState, "/tasks/" + "x" * 24, cookie=cookie)
    assert asyncio.run(gone.on_load()) is None
    assert gone.task_missing and gone.tab_title == "Task not found · vgen"


def _twelve_at_once(mark: Any = None) -> tuple[int, set[str]]:
    """12 `run_db` calls of a 10 ms service (marked with `mark`) at once: the most that ran at
    the same time, and the names of the threads they ran on."""
    import threading
    import time

    from vgen_app.db import run_db

    lock = threading.Lock()
    inside, most, names = [0], [0], set()

    def service(_db: Session) -> None:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            names.add(threading.current_thread().name.rsplit("_", 1)[0])
        time.sleep(0.01)
        with lock:
            inside[0] -= 1

    fn = mark(service) if mark is not None else service

    async def many() -> None:
        await asyncio.gather(*(run_db(fn) for _ in range(12)))

    asyncio.run(many())
    return most[0], names


def test_sqlite_admin_writes_queue_on_one_thread_instead_of_retrying_for_the_lock(
    db: Session,
) -> None:
    """bench/admin_api.py: 50 concurrent PUTs retried for SQLite's write lock (busy handler
    back-off, p99 2 s); `@one_writer` services run one at a time on one thread on SQLite."""
    from vgen_app.db import get_engine, one_writer
    from vgen_app.services import admin, audit

    assert getattr(admin.change_balance, "one_writer", False)
    assert getattr(audit.record, "one_writer", False)
    most, names = _twelve_at_once(one_writer)
    if get_engine().dialect.name == "sqlite":
        assert most == 1 and names == {"vgen-db-writer"}
    else:  # PostgreSQL has row locks: its writers run side by side
        assert most > 1 and names == {"vgen-db"}


def test_sqlite_reads_run_on_a_few_threads_of_their_own(db: Session) -> None:
    """200 reads at once on 30 threads cost 2.3 ms of CPU each (sqlite3 lets go of the GIL
    around every call: each extra thread adds hand-offs), 1.0 ms on 2. `@read_only` services run
    on READ_THREADS_SQLITE threads on SQLite; the rest, and everything on PostgreSQL, on the
    database pool."""
    from vgen_app.db import READ_THREADS_SQLITE, get_engine, read_only

    most, names = _twelve_at_once(read_only)
    if get_engine().dialect.name == "sqlite":
        assert most == READ_THREADS_SQLITE and names == {"vgen-db-read"}
    else:
        assert most > READ_THREADS_SQLITE and names == {"vgen-db"}
    most, names = _twelve_at_once()  # a write: the database pool
    assert most > READ_THREADS_SQLITE and names == {"vgen-db"}
