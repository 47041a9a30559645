"""Server-side sessions: an opaque token in the cookie, only its hash in the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import update
from sqlmodel import Session, col, select

from vgen_app import clock
from vgen_app.config import get_settings
from vgen_app.db import end_read, read_only
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


@read_only
def validate(db: Session, token: str | None) -> SessionUser | None:
    """The user behind a session token, or None (unknown, expired, revoked, or user not active)."""
    if not token or len(token) > 200:
        return None
    now = clock.now()
    row = db.exec(
        select(UserSession, User)
        .join(User, col(User.id) == col(UserSession.user_id))
        .where(
            UserSession.token_hash == token_hash(token),
            col(UserSession.revoked_at).is_(None),
            col(UserSession.expires_at) > now,
        )
    ).first()
    if row is None:
        end_read(db)
        return None
    session, user = row
    if user.status != UserStatus.ACTIVATED:
        end_read(db)
        return None
    if now - session.last_seen_at > TOUCH_EVERY:
        end_read(db)  # the read ends first: a write then takes the lock in a transaction of its own
        db.exec(
            update(UserSession).where(col(UserSession.id) == session.id).values(last_seen_at=now)
        )
        db.commit()
    else:
        end_read(db)
    return SessionUser(user.id, user.email, user.balance, user.status)


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
