"""Throttles shared by the account flows (accounts.py, passwords.py): an attempt beyond its limit
is refused and given back; a one-time link goes out by mail at most once per interval."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlmodel import Session

from vgen_app.config import get_settings
from vgen_app.models import LinkPurpose, User
from vgen_app.services import links, ratelimit
from vgen_app.services.emails import Mail
from vgen_app.services.errors import AccountError

MailFor = Callable[[str, str], Mail]  # (address, link token) -> the mail that carries the link


def _minutes(delta: timedelta) -> str:
    mins = max(1, int(delta.total_seconds() + 59) // 60)
    return "1 minute" if mins == 1 else f"{mins} minutes"


def refuse_beyond_limit(
    db: Session, attempt: int, kind: str, window: timedelta, limit: int, message: str, **who: str
) -> None:
    """Refuse a request whose attempt, reserved first (see ratelimit.reserve), is beyond `limit`
    within `window` for `who` (email= or ip=): the attempt is given back (a refused one does not
    count) and AccountError("rate_limited", message) raised; "{wait}" in the message becomes the
    time until the oldest counted attempt leaves the window."""
    if ratelimit.count(db, kind, window, **who) <= limit:
        return
    wait = ""
    if "{wait}" in message:
        wait = _minutes(ratelimit.retry_after(db, kind, window, **who))
    ratelimit.release(db, attempt)
    db.commit()
    raise AccountError("rate_limited", message.format(wait=wait))


def link_mails(
    db: Session,
    user: User,
    purpose: LinkPurpose,
    mail_for: MailFor,
    void_older: bool = False,
    to: str | None = None,
    **extra: str | None,
) -> list[Mail]:
    """A fresh one-time link of `purpose` for `user`, by mail (`mail_for(address, token)`) to
    their address (or `to`), valid link_ttl_hours; none if one went out a moment ago
    (links.sent_recently: no inbox flooding). `void_older`: the new link voids the ones sent
    before. `extra`: columns of the link (e.g. new_email)."""
    if links.sent_recently(db, user.id, purpose):
        return []
    if void_older:
        links.void(db, user.id, purpose)
    ttl = timedelta(hours=get_settings().link_ttl_hours)
    token = links.issue(db, user, purpose, ttl, **extra)
    return [mail_for(to or user.email, token)]


def notice_once(db: Session, address: str, mail: Mail) -> list[Mail]:
    """A notice to an address that has an account (someone signed up with it, or asked to move
    another account to it): at most one per mail_link_interval_seconds, so that such requests
    cannot flood its inbox."""
    interval = timedelta(seconds=get_settings().mail_link_interval_seconds)
    if ratelimit.count(db, ratelimit.NOTICE_MAIL, interval, email=address):
        return []
    ratelimit.hit(db, ratelimit.NOTICE_MAIL, email=address)
    return [mail]
