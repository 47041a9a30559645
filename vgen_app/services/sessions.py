"""Server-side sessions: an opaque token in the cookie, only its hash in the database."""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, update
from sqlmodel import Session, col, select

from vgen_app import clock
from vgen_app.config import get_settings
from vgen_app.db import end_read, one_writer, raw_read, run_db_later
from vgen_app.models import User, UserSession, UserStatus
from vgen_app.services import changes
from vgen_app.services.security import new_token, token_hash

TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class SessionUser:
    """What a handler may know about the logged-in user."""

    user_id: str
    email: str
    balance: int
    status: str


def create(
    db: Session,
    user_id: str,
    *,
    ip: str | None = None,
    user_agent: str | None = None,
    country: str | None = None,
) -> str:
    token = new_token()
    now = clock.now()
    db.add(
        UserSession(
            token_hash=token_hash(token),
            user_id=user_id,
            created_at=now,
            last_seen_at=now,
            expires_at=now + timedelta(days=get_settings().session_ttl_days),
            ip=ip,
            user_agent=user_agent,
            country=country,
        )
    )
    return token


# The session check runs on every event of every signed-in tab: one statement built once (bound
# parameters, SQLAlchemy's compiled cache) and run on the session's connection as Core, so no ORM
# objects are built for it. Nothing is cached across calls but the statement: a revoked session
# is refused by the very next check.
_CHECK = (
    select(
        UserSession.id,
        UserSession.last_seen_at,
        User.id,
        User.email,
        User.balance,
        User.status,
    )
    .join(User, col(User.id) == col(UserSession.user_id))
    .where(
        col(UserSession.token_hash) == bindparam("token_hash"),
        col(UserSession.revoked_at).is_(None),
        col(UserSession.expires_at) > bindparam("now"),
    )
    .limit(1)
)
_TOUCH = (
    update(UserSession)
    .where(col(UserSession.id).in_(bindparam("session_ids", expanding=True)))
    .values(last_seen_at=bindparam("now"))
)
_TOUCH_CHUNK = 500

# Last-seen stamps (the account page's "last active") are written off the read path: the check
# notes that a session was seen, and one background write stamps every session noted meanwhile.
# A check is then a read and nothing else, whatever the minute; 200 tabs whose minute is up at
# once cost one UPDATE, not 200 write transactions inside their events (BENCHMARKS.md, note 1).
# A stamp not yet written when the process ends is lost: it is a "last seen", nothing depends on it.
_seen_lock = threading.Lock()
_seen: dict[str, datetime] = {}  # session id -> when it was seen
_seen_write: Future[int] | None = None  # the background write, while one is queued or running
_seen_pid = 0  # the process they belong to (a forked worker starts with none of its parent's)


@raw_read
def validate(db: Session, token: str | None) -> SessionUser | None:
    """The user behind a session token, or None (unknown, expired, revoked, or user not active)."""
    if not token or len(token) > 200:
        return None
    now = clock.now()
    row = db.connection().execute(_CHECK, {"token_hash": token_hash(token), "now": now}).first()
    end_read(db)
    if row is None:
        return None
    session_id, last_seen_at, user_id, email, balance, status = row
    if status != UserStatus.ACTIVATED:
        return None
    if now - last_seen_at > TOUCH_EVERY:
        _saw(session_id, now)
    return SessionUser(user_id, email, balance, str(status))


def _saw(session_id: str, now: datetime) -> None:
    global _seen_write, _seen_pid
    with _seen_lock:
        if _seen_pid != os.getpid():  # a parent's queued write runs in the parent only
            _seen.clear()
            _seen_write, _seen_pid = None, os.getpid()
        _seen[session_id] = now
        if _seen_write is None:
            _seen_write = run_db_later(write_seen)


@one_writer
def write_seen(db: Session) -> int:
    """Stamp every session seen since the last write (the latest moment for all: they were
    seen within milliseconds of each other); until none is left. Returns how many."""
    global _seen_write
    stamped = 0
    try:
        while True:
            with _seen_lock:
                batch = dict(_seen)
                _seen.clear()
                if not batch:
                    _seen_write = None
                    return stamped
            now = max(batch.values())
            ids = sorted(batch)
            for i in range(0, len(ids), _TOUCH_CHUNK):
                chunk = ids[i : i + _TOUCH_CHUNK]
                db.connection().execute(_TOUCH, {"session_ids": chunk, "now": now})
            db.commit()
            stamped += len(ids)
    except BaseException:
        with _seen_lock:  # the next check that notes a session queues a new write
            _seen_write = None
        raise


def seen_written(timeout: float = 10.0) -> None:
    """Wait until the last-seen stamps noted so far are written (tests)."""
    while (pending := _seen_write) is not None:
        pending.result(timeout=timeout)  # raises what the write raised


def revoke(db: Session, token: str | None) -> bool:
    if not token:
        return False
    result = db.exec(
        update(UserSession)
        .where(
            col(UserSession.token_hash) == token_hash(token), col(UserSession.revoked_at).is_(None)
        )
        .values(revoked_at=clock.now())
    )
    db.commit()
    return bool(result.rowcount)


def revoke_all(db: Session, user_id: str) -> int:
    """Revoke every live session of a user (in the caller's transaction)."""
    changes.touch(db, user_id)  # their open pages find the session gone at once
    result = db.exec(
        update(UserSession)
        .where(col(UserSession.user_id) == user_id, col(UserSession.revoked_at).is_(None))
        .values(revoked_at=clock.now())
    )
    return result.rowcount or 0


def active_count(db: Session, user_id: str) -> int:
    rows = db.exec(
        select(UserSession.id).where(
            UserSession.user_id == user_id,
            col(UserSession.revoked_at).is_(None),
            col(UserSession.expires_at) > clock.now(),
        )
    ).all()
    end_read(db)
    return len(rows)
