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


def hit(db: Session, kind: str, *, email: str | None = None, ip: str | None = None) -> None:
    db.add(AuthEvent(kind=kind, email=email, ip=ip, created_at=clock.now()))


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


def prune(db: Session, older_than: timedelta = timedelta(days=2)) -> int:
    result = db.exec(delete(AuthEvent).where(col(AuthEvent.created_at) < clock.now() - older_than))
    db.commit()
    return result.rowcount or 0
