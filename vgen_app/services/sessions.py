"""Server-side sessions: an opaque token in the cookie, only its hash in the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import bindparam, update
from sqlmodel import Session, col, select

from vgen_app import clock
from vgen_app.config import get_settings
from vgen_app.db import end_read, raw_read
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
    .where(col(UserSession.id) == bindparam("session_id"))
    .values(last_seen_at=bindparam("now"))
)


@raw_read
def validate(db: Session, token: str | None) -> SessionUser | None:
    """The user behind a session token, or None (unknown, expired, revoked, or user not active)."""
    if not token or len(token) > 200:
        return None
    now = clock.now()
    row = db.connection().execute(_CHECK, {"token_hash": token_hash(token), "now": now}).first()
    end_read(db)  # the read ends first: a write then takes the lock in a transaction of its own
    if row is None:
        return None
    session_id, last_seen_at, user_id, email, balance, status = row
    if status != UserStatus.ACTIVATED:
        return None
    if now - last_seen_at > TOUCH_EVERY:
        db.connection().execute(_TOUCH, {"session_id": session_id, "now": now})
        db.commit()
    return SessionUser(user_id, email, balance, str(status))


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
