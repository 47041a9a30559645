"""`vgen backup` / `vgen restore`: a backup taken while 200 debits and 20 credits run restores to a
database where every ledger sums to its balance (SQLite's online backup API; PostgreSQL's
pg_dump/pg_restore), and a restore never overwrites a vgen database without --force."""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from tests.helpers import make_user
from vgen_app import cli
from vgen_app import db as dbmod
from vgen_app.db import session_scope
from vgen_app.models import LedgerEntry
from vgen_app.services import backup, ledger

USERS = 10
DEBITS = 200
CREDITS = 20
PG_ADMIN_DSN = os.environ.get("VGEN_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _entries(url: str) -> int:
    engine = dbmod.make_engine(url)
    try:
        with Session(engine) as s:
            return int(s.execute(select(func.count()).select_from(LedgerEntry)).scalar_one())
    finally:
        engine.dispose()


def _check(url: str) -> tuple[int, list[backup.Mismatch]]:
    engine = dbmod.make_engine(url)
    try:
        with Session(engine) as s:
            return backup.check(s)
    finally:
        engine.dispose()


def _empty_target(kind: str, tmp_path: Path, made: list[str]) -> str:
    """A URL of a database that does not exist yet (SQLite) or is empty (PostgreSQL)."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / f'restored-{secrets.token_hex(3)}.db'}"
    name = f"vgen_restore_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    made.append(name)
    return f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"


@pytest.fixture
def pg_targets():
    made: list[str] = []
    yield made
    dbmod.dispose_engines()
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _kind(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


def test_a_backup_under_200_debits_and_20_credits_restores_consistent(
    database_url: str, tmp_path: Path, pg_targets: list[str], figure
) -> None:
    kind = _kind(database_url)
    with session_scope() as db:
        uids = [make_user(db, f"u{i}@example.com") for i in range(USERS)]
        for uid in uids:
            ledger.change_balance(db, uid, 100, "topup", reference=f"cs_{uid}")
    before = _entries(database_url)
    errors: list[BaseException] = []
    done = threading.Event()
    start = threading.Barrier(11)

    def debits(n: int) -> None:
        start.wait()
        for i in range(DEBITS // 10):
            try:
                with session_scope() as s:
                    ledger.change_balance(s, uids[(n + i) % USERS], -7, "used", f"run_{n}_{i}")
            except BaseException as exc:  # noqa: BLE001 - asserted below
                errors.append(exc)

    def credits() -> None:
        start.wait()
        for i in range(CREDITS):
            try:
                with session_scope() as s:
                    ledger.change_balance(s, uids[i % USERS], 50, "topup", f"cs_more_{i}")
            except BaseException as exc:  # noqa: BLE001 - asserted below
                errors.append(exc)

    writers = [threading.Thread(target=debits, args=(n,)) for n in range(10)]
    writers.append(threading.Thread(target=credits))
    for t in writers:
        t.start()
    backups: list[Path] = []

    def watcher() -> None:
        for t in writers:
            t.join()
        done.set()

    threading.Thread(target=watcher).start()
    suffix = "db" if kind == "sqlite" else "dump"
    # Back up again and again while the writers run, then once more after they are done.
    while not done.is_set():
        path = tmp_path / f"backup-{len(backups)}.{suffix}"
        backup.backup(database_url, path)
        backups.append(path)
    backups.append(backup.backup(database_url, tmp_path / f"backup-last.{suffix}").path)
    assert errors == []
    after = _entries(database_url)
    assert after == before + DEBITS + CREDITS

    # Restore each backup (on PostgreSQL a sample: pg_restore takes a second) into a new database.
    sample = backups if kind == "sqlite" else [*backups[:3], backups[-1]]
    seen: list[int] = []
    for path in sample:
        target = _empty_target(kind, tmp_path, pg_targets)
        backup.restore(target, path)
        users, bad = _check(target)
        assert users == USERS
        assert bad == [], f"{path.name}: balances differ from their ledger sums: {bad}"
        seen.append(_entries(target))
    mid_load = [n for n in seen if before < n < after]
    assert mid_load, f"no backup was taken while the writers ran (entries seen: {seen})"
    assert seen[-1] == after  # the last backup, after the writers, has everything
    figure(
        f"{len(backups)} backups while {DEBITS} debits + {CREDITS} credits ran; "
        f"{len(sample)} restored, {len(mid_load)} mid-load (ledger rows {min(mid_load)}–"
        f"{max(mid_load)} of {after}); every balance = its ledger sum",
    )


def test_restore_refuses_a_live_database_without_force(
    database_url: str, tmp_path: Path, pg_targets: list[str]
) -> None:
    kind = _kind(database_url)
    with session_scope() as db:
        uid = make_user(db, "ann@example.com")
        ledger.change_balance(db, uid, 500, "topup")
    path = tmp_path / "b.bak"
    backup.backup(database_url, path)
    with session_scope() as db:
        ledger.change_balance(db, uid, -200, "used", "run_after_backup")
    dbmod.dispose_engines()
    with pytest.raises(backup.BackupError, match="--force"):
        backup.restore(database_url, path)
    assert _entries(database_url) == 2  # untouched

    backup.restore(database_url, path, force=True)
    dbmod.dispose_engines()
    assert _entries(database_url) == 1  # back to the backup: the later debit is gone
    with session_scope() as db:
        assert ledger.balance_of(db, uid) == 500 == ledger.ledger_sum(db, uid)
    # Restoring into a database that has none of our tables needs no --force.
    target = _empty_target(kind, tmp_path, pg_targets)
    backup.restore(target, path)
    assert _check(target) == (1, [])


def test_junk_is_not_restored(database_url: str, tmp_path: Path) -> None:
    junk = tmp_path / "junk.bak"
    junk.write_bytes(b"not a backup at all" * 100)
    with pytest.raises(backup.BackupError):
        backup.restore(database_url, junk, force=True)
    with pytest.raises(backup.BackupError, match="no such backup"):
        backup.restore(database_url, tmp_path / "missing.bak", force=True)
    other = tmp_path / "other.db"  # a SQLite file that is not a vgen database
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    if _kind(database_url) == "sqlite":
        with pytest.raises(backup.BackupError, match="not a vgen database"):
            backup.restore(database_url, other, force=True)
    assert _entries(database_url) == 0  # still readable, nothing written
    assert _check(database_url)[1] == []


def test_the_cli_backs_up_and_restores(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with session_scope() as db:
        uid = make_user(db, "ann@example.com")
        ledger.change_balance(db, uid, 300, "topup")
    path = tmp_path / "cli.bak"
    assert cli.main(["backup", str(path)]) == 0
    assert "backed up" in capsys.readouterr().out and path.stat().st_size > 0
    assert cli.main(["restore", str(path)]) == 2
    assert "--force" in capsys.readouterr().err
    assert cli.main(["restore", str(path), "--force"]) == 0
    out = capsys.readouterr().out
    assert "1 users" in out and "every balance equals its ledger sum" in out
