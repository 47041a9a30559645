"""CPU per call of the database part of the hot UI events, in-process (no server, no socket):
what each page's event runs in its database thread, measured with `time.thread_time()` over
--calls calls on a temp SQLite database (or --database postgresql), against `SELECT 1` in a
session of its own (the floor: a thread's database call that does nothing).

Each row as `run_db`'s thread runs it (`with_db`: `@raw_read` services on the raw DBAPI
connection, vgen_app/db_raw.py) and, for comparison, through an ORM Session.
Rows: the session check alone (`sessions.validate`); the dashboard's event (session check + a
page of 20 tasks with runs); the task page's (session check + task view with 20 runs); the tokens
page's (session check + history page + purchases + balance chart).

    .venv/bin/python bench/event_reads.py [--calls 2000] [--database sqlite|postgresql]

Use it to see where a UI event's server CPU goes before running bench/event_roundtrip.py.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable
from typing import Any

from common import migrated, temp_postgres, temp_sqlite_url, use_database


def per_call_us(fn: Callable[[], Any], calls: int) -> float:
    for _ in range(50):
        fn()
    rounds = []
    for _ in range(5):
        t0 = time.thread_time()
        for _ in range(calls // 5):
            fn()
        rounds.append((time.thread_time() - t0) / (calls // 5) * 1e6)
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--database", default="sqlite", choices=("sqlite", "postgresql"))
    args = parser.parse_args()
    assert args.calls <= 50_000

    import logging

    logging.disable(logging.INFO)
    with contextlib.ExitStack() as stack:
        url = (
            temp_sqlite_url("reads")
            if args.database == "sqlite"
            else stack.enter_context(temp_postgres())
        )
        migrated(url)
        use_database(url)
        from sqlalchemy import text

        from tests.helpers import login_session, make_user
        from vgen_app.db import session_scope, with_db
        from vgen_app.models import Run, RunStatus, Task
        from vgen_app.services import ledger, sessions
        from vgen_app.services.tasks import list_tasks, task_view
        from vgen_app.services.tokens_view import tokens_view
        from vgen_app.ui.session import _check_then_read

        with session_scope() as db:
            uid = make_user(db, "reads@example.com")
            token = login_session(db, "reads@example.com")
            ledger.change_balance(db, uid, 5000, "manual")
            task_ids = []
            for i in range(25):
                task = Task(owner_id=uid, name=f"task {i}", model="lipsync")
                db.add(task)
                db.flush()
                task_ids.append(task.id)
                for a in range(1, 4 if i else 21):
                    db.add(
                        Run(
                            task_id=task.id,
                            owner_id=uid,
                            attempt=a,
                            status=RunStatus.SUCCEEDED,
                            price=10,
                            model="lipsync",
                            inputs={},
                        )
                    )
            db.commit()
            for i in range(30):
                ledger.change_balance(db, uid, -1, "manual")

        def floor() -> None:
            with session_scope() as db:
                db.exec(text("SELECT 1")).one()  # type: ignore[call-overload]

        # Each row twice: as run_db's thread runs it (with_db: the raw DBAPI path of @raw_read
        # services, vgen_app/db_raw.py) and through an ORM Session (what it cost before).
        def check() -> None:
            with_db(sessions.validate, token)

        def dashboard() -> None:
            with_db(_check_then_read, token, list_tasks, 1, 20, "", "", "")

        def task_page() -> None:
            with_db(_check_then_read, token, task_view, task_ids[0], 20)

        def tokens_page() -> None:
            with_db(_check_then_read, token, tokens_view, 1, 20, True)

        def in_session(fn: Callable[..., Any], *a: Any) -> Callable[[], None]:
            def call() -> None:
                with session_scope() as db:
                    fn(db, *a)

            return call

        base = per_call_us(floor, args.calls)
        print(f"{args.database}: CPU per call (thread time, median of 5 x {args.calls // 5})")
        print(f"  floor SELECT 1 in a session      {base:8.0f} us")
        rows = (
            ("session check", check, in_session(sessions.validate, token)),
            (
                "dashboard event reads",
                dashboard,
                in_session(_check_then_read, token, list_tasks, 1, 20, "", "", ""),
            ),
            (
                "task page event reads",
                task_page,
                in_session(_check_then_read, token, task_view, task_ids[0], 20),
            ),
            (
                "tokens page event reads",
                tokens_page,
                in_session(_check_then_read, token, tokens_view, 1, 20, True),
            ),
        )
        print(f"  {'':32} {'raw path':>11} {'ORM Session':>12}")
        for name, fn, session_fn in rows:
            us = per_call_us(fn, args.calls)
            us_session = per_call_us(session_fn, args.calls)
            print(
                f"  {name:32} {us:8.0f} us  {us_session:8.0f} us  ({us / base:.1f}x / "
                f"{us_session / base:.1f}x floor)"
            )


if __name__ == "__main__":
    main()
