"""One-time links (activation, password reset, login tickets): only a token's hash is stored; a
link is used once, before it expires, and a newer one can void the older ones."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlmodel import Session, col, select

from vgen_app import clock
from vgen_app.config import get_settings
from vgen_app.models import LinkPurpose, OneTimeLink, User
from vgen_app.services.security import new_token, token_hash


def issue(
    db: Session, user: User, purpose: LinkPurpose, ttl: timedelta, **extra: str | None
) -> str:
    token = new_token()
    now = clock.now()
    db.add(
        OneTimeLink(
            user_id=user.id,
            purpose=purpose,
            token_hash=token_hash(token),
            created_at=now,
            expires_at=now + ttl,
            **extra,
        )
    )
    return token


def sent_recently(db: Session, user_id: str, purpose: LinkPurpose) -> bool:
    """One link mail per address per interval: a flood of requests sends no flood of mail."""
    since = clock.now() - timedelta(seconds=get_settings().mail_link_interval_seconds)
    query = select(OneTimeLink.id).where(
        OneTimeLink.user_id == user_id,
        OneTimeLink.purpose == purpose,
        col(OneTimeLink.created_at) > since,
    )
    return db.exec(query.limit(1)).first() is not None


def void(db: Session, user_id: str, purpose: LinkPurpose) -> None:
    db.exec(
        update(OneTimeLink)
        .where(
            col(OneTimeLink.user_id) == user_id,
            col(OneTimeLink.purpose) == purpose,
            col(OneTimeLink.used_at).is_(None),
        )
        .values(used_at=clock.now())
    )


def consume(db: Session, token: str, purpose: LinkPurpose) -> OneTimeLink | None:
    """Mark a valid link used, atomically: of two concurrent redemptions exactly one wins."""
    if not token or len(token) > 200:
        return None
    now = clock.now()
    hashed = token_hash(token)
    result = db.exec(
        update(OneTimeLink)
        .where(
            col(OneTimeLink.token_hash) == hashed,
            col(OneTimeLink.purpose) == purpose,
            col(OneTimeLink.used_at).is_(None),
            col(OneTimeLink.expires_at) > now,
        )
        .values(used_at=now)
    )
    if result.rowcount != 1:
        return None
    return db.exec(select(OneTimeLink).where(OneTimeLink.token_hash == hashed)).one()


def find_any(db: Session, token: str, purpose: LinkPurpose) -> OneTimeLink | None:
    """The link of this token, used or expired too (to say why it no longer works)."""
    if not token or len(token) > 200:
        return None
    return db.exec(
        select(OneTimeLink).where(
            OneTimeLink.token_hash == token_hash(token), OneTimeLink.purpose == purpose
        )
    ).first()


def find_valid(db: Session, token: str, purpose: LinkPurpose) -> OneTimeLink | None:
    link = find_any(db, token, purpose)
    if link is None or link.used_at is not None or link.expires_at <= clock.now():
        return None
    return link
