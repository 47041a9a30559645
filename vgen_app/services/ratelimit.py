"""Counting recent auth events per e-mail and per IP (kept in the database: shared by all workers)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from vgen_app import clock
from vgen_app.models import AuthEvent

LOGIN_FAILURE = "login_failure"
SIGNUP = "signup"
LINK_REQUEST = "link_request"
NOTICE_MAIL = "notice_mail"  # an "already registered" mail went to this address


def hit(db: Session, kind: str, *, email: str | None = None, ip: str | None = None) -> None:
    db.add(AuthEvent(kind=kind, email=email, ip=ip, created_at=clock.now()))


def reserve(db: Session, kind: str, *, email: str | None = None, ip: str | None = None) -> int:
    """Record an attempt and commit it BEFORE counting (then `count` includes it).

    Count-then-record lets concurrent requests all pass the check before any of them is recorded
    (30 parallel logins got 30 password checks under a limit of 5). Recorded first, every attempt
    sees the attempts committed before it, so at most `limit` pass within a window whatever the
    concurrency. Give a refused or forgiven attempt back with `release`.
    """
    event = AuthEvent(kind=kind, email=email, ip=ip, created_at=clock.now())
    db.add(event)
    db.flush()
    event_id = event.id
    db.commit()
    assert event_id is not None
    return event_id


def release(db: Session, event_id: int) -> None:
    """Drop one reserved attempt (in the caller's transaction)."""
    db.exec(delete(AuthEvent).where(col(AuthEvent.id) == event_id))


def count(
    db: Session, kind: str, window: timedelta, *, email: str | None = None, ip: str | None = None
) -> int:
    query = (
        select(func.count())
        .select_from(AuthEvent)
        .where(AuthEvent.kind == kind, col(AuthEvent.created_at) > clock.now() - window)
    )
    if email is not None:
        query = query.where(AuthEvent.email == email)
    if ip is not None:
        query = query.where(AuthEvent.ip == ip)
    return int(db.exec(query).one())


def retry_after(
    db: Session, kind: str, window: timedelta, *, email: str | None = None, ip: str | None = None
) -> timedelta:
    """How long until the oldest counted event leaves the window."""
    query = select(func.min(AuthEvent.created_at)).where(
        AuthEvent.kind == kind, col(AuthEvent.created_at) > clock.now() - window
    )
    if email is not None:
        query = query.where(AuthEvent.email == email)
    if ip is not None:
        query = query.where(AuthEvent.ip == ip)
    oldest = db.exec(query).one()
    if oldest is None:
        return timedelta(0)
    return max(timedelta(0), oldest + window - clock.now())


def clear(db: Session, kind: str, *, email: str) -> None:
    """A successful login forgives earlier failures for that e-mail."""
    db.exec(delete(AuthEvent).where(AuthEvent.kind == kind, AuthEvent.email == email))
