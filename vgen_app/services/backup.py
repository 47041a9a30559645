"""Backups of the database: `vgen backup PATH` and `vgen restore PATH [--force]` (SPEC §11).

- SQLite: SQLite's online backup API (`sqlite3.Connection.backup`), copying every page in one step:
  the copy is one read transaction, so it is a consistent snapshot even while the app writes (in WAL
  mode readers don't block writers, and writers don't restart the copy). The copy is written to
  `PATH.part`, checked (`PRAGMA integrity_check`, a vgen schema), then renamed to `PATH`.
- PostgreSQL: `pg_dump --format=custom` (one snapshot by construction) and `pg_restore --clean
  --if-exists --no-owner --single-transaction`; both must be on PATH (Debian: postgresql-client).
- Cloudflare D1: not here; `wrangler d1 export` does it (docs/d1.md).

`restore` refuses to overwrite a database that already holds vgen tables unless `force`: a restore
onto the live database replaces everything written since the backup. After a restore, `check`
reads every user's balance against the sum of their applied ledger rows.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlmodel import Session

from vgen_app.db import D1, normalize_url
from vgen_app.models import LedgerEntry, Outcome, User


class BackupError(Exception):
    """A backup or restore that cannot be done, with a message for the operator."""


@dataclass(frozen=True)
class Done:
    path: Path
    bytes: int
    seconds: float
    kind: str  # "sqlite" | "postgresql"


@dataclass(frozen=True)
class Mismatch:
    user_id: str
    balance: int
    ledger_sum: int


def _kind(database_url: str) -> tuple[str, str]:
    """("sqlite", file path) or ("postgresql", libpq URI) for a DATABASE_URL."""
    url = make_url(normalize_url(database_url))
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise BackupError("An in-memory SQLite database cannot be backed up.")
        return "sqlite", url.database
    if backend == "postgresql":
        return "postgresql", url.set(drivername="postgresql").render_as_string(hide_password=False)
    if backend == D1:
        raise BackupError("Cloudflare D1: use `wrangler d1 export` (docs/d1.md).")
    raise BackupError(f"No backup for the {backend} backend.")


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} is not on PATH (Debian: apt-get install postgresql-client).")
    return found


def _run(args: list[str]) -> None:
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BackupError(f"{Path(args[0]).name} failed: {proc.stderr.strip() or proc.returncode}")


def _check_sqlite_file(path: Path) -> None:
    """A readable, intact SQLite file with vgen's schema, or BackupError."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise BackupError(f"{path}: not a SQLite database ({exc}).") from None
    try:
        ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path}: not a SQLite database ({exc}).") from None
    finally:
        conn.close()
    if ok != "ok":
        raise BackupError(f"{path}: integrity check failed ({ok}).")
    if not {"alembic_version", "users", "ledger_entries"} <= tables:
        raise BackupError(f"{path}: not a vgen database (no users/ledger tables).")


def backup(database_url: str, dest: Path) -> Done:
    """Write a consistent copy of the database to `dest` (replaced if it exists)."""
    kind, where = _kind(database_url)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    part.unlink(missing_ok=True)
    started = time.monotonic()
    try:
        if kind == "sqlite":
            if not Path(where).exists():
                raise BackupError(f"{where}: no such database file.")
            src = sqlite3.connect(where, timeout=30)
            dst = sqlite3.connect(part)
            try:
                src.backup(dst)  # every page in one step: one consistent read transaction
            finally:
                dst.close()
                src.close()
            _check_sqlite_file(part)
        else:
            _run([_tool("pg_dump"), "--format=custom", "--no-owner", f"--file={part}", where])
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    return Done(dest, dest.stat().st_size, time.monotonic() - started, kind)


def _sqlite_has_tables(path: str) -> bool:
    if not Path(path).exists() or Path(path).stat().st_size == 0:
        return False
    conn = sqlite3.connect(path, timeout=30)
    try:
        return (
            conn.execute("SELECT count(*) FROM sqlite_master WHERE name='users'").fetchone()[0] > 0
        )
    finally:
        conn.close()


def _pg_has_tables(uri: str) -> bool:
    import psycopg

    with psycopg.connect(uri, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass('public.users') IS NOT NULL").fetchone()
    return bool(row and row[0])


def restore(database_url: str, src: Path, force: bool = False) -> Done:
    """Replace the database with the backup `src`; refused onto a vgen database without `force`."""
    kind, where = _kind(database_url)
    src = Path(src)
    if not src.is_file():
        raise BackupError(f"{src}: no such backup file.")
    started = time.monotonic()
    if kind == "sqlite":
        _check_sqlite_file(src)
        if _sqlite_has_tables(where) and not force:
            raise BackupError(
                f"{where} holds a vgen database: restoring replaces everything in it. "
                "Stop the app and pass --force to overwrite it."
            )
        Path(where).parent.mkdir(parents=True, exist_ok=True)
        source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
        target = sqlite3.connect(where, timeout=30)
        try:
            source.backup(target)  # page by page into the target, under its write lock
        finally:
            target.close()
            source.close()
    else:
        _run([_tool("pg_restore"), "--list", str(src)])  # a custom-format dump, or refused
        if _pg_has_tables(where) and not force:
            raise BackupError(
                "The database holds vgen tables: restoring replaces everything in it. "
                "Stop the app and pass --force to overwrite it."
            )
        _run(
            [
                _tool("pg_restore"),
                "--clean",
                "--if-exists",
                "--no-owner",
                "--single-transaction",
                f"--dbname={where}",
                str(src),
            ]
        )
    return Done(src, src.stat().st_size, time.monotonic() - started, kind)


def check(db: Session) -> tuple[int, list[Mismatch]]:
    """(users, those whose balance differs from the sum of their applied ledger rows)."""
    sums = (
        select(LedgerEntry.user_id, func.sum(LedgerEntry.diff).label("total"))
        .where(LedgerEntry.outcome == Outcome.APPLIED)
        .group_by(LedgerEntry.user_id)
        .subquery()
    )
    rows = db.execute(
        select(User.id, User.balance, func.coalesce(sums.c.total, 0)).outerjoin(
            sums, sums.c.user_id == User.id
        )
    ).all()
    db.rollback()
    bad = [Mismatch(uid, int(b), int(s)) for uid, b, s in rows if int(b) != int(s)]
    return len(rows), bad
