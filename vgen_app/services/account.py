"""A signed-in user's own account: what it is, its password and e-mail address, where it is signed
in, its notifications. (Signing up, logging in and resets are `accounts.py` / `passwords.py`.)"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from ua_parser import parse as parse_ua

from vgen_app import clock
from vgen_app.config import get_settings
from vgen_app.db import end_read
from vgen_app.models import LinkPurpose, User, UserSession, UserStatus
from vgen_app.services import changes, emails, links, ratelimit, throttle
from vgen_app.services.accounts import check_password, normalize_email, user_by_email
from vgen_app.services.emails import Mail
from vgen_app.services.errors import AccountError
from vgen_app.services.security import hash_password, token_hash, verify_password

WRONG_PASSWORD = "That is not your current password."
EMAIL_LINK_SENT = (
    "We sent a link to {email}. Open it within 24 hours to move your account to that address; "
    "until then your e-mail stays as it is."
)
BAD_EMAIL_LINK = "This link is not valid any more. Ask for a new one on your account page."


# --- what the page shows ----------------------------------------------------------------------


@dataclass(frozen=True)
class SessionInfo:
    id: int
    device: str  # "Chrome on Linux"
    ip: str
    country: str
    created_at: datetime
    last_seen_at: datetime
    current: bool


@dataclass(frozen=True)
class Overview:
    email: str
    created_at: datetime
    balance: int
    run_mails: bool
    sessions: list[SessionInfo]


@functools.lru_cache(maxsize=1024)
def device_name(user_agent: str | None) -> str:
    """A user agent as people say it: "Chrome on Linux", "Mobile Safari on iOS"."""
    if not user_agent:
        return "Unknown device"
    parsed = parse_ua(user_agent)
    browser = parsed.user_agent.family if parsed.user_agent else ""
    system = parsed.os.family if parsed.os else ""
    browser = "" if browser == "Other" else browser
    system = "" if system == "Other" else system
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or "Unknown device"


def overview(db: Session, user_id: str, current_token: str | None) -> Overview:
    user = db.get(User, user_id)
    if user is None or user.deleted_at is not None:
        end_read(db)
        raise AccountError("gone", "This account does not exist any more.")
    rows = db.exec(
        select(UserSession)
        .where(
            UserSession.user_id == user_id,
            col(UserSession.revoked_at).is_(None),
            col(UserSession.expires_at) > clock.now(),
        )
        .order_by(col(UserSession.last_seen_at).desc(), col(UserSession.id).desc())
        .limit(100)
    ).all()
    end_read(db)
    mine = token_hash(current_token) if current_token else ""
    found = [
        SessionInfo(
            id=s.id or 0,
            device=device_name(s.user_agent),
            ip=s.ip or "unknown",
            country=s.country or "unknown",
            created_at=s.created_at,
            last_seen_at=s.last_seen_at,
            current=s.token_hash == mine,
        )
        for s in rows
    ]
    found.sort(key=lambda s: not s.current)  # this device first
    return Overview(user.email, user.created_at, user.balance, user.run_mails, found)


# --- sessions -----------------------------------------------------------------------------------


def revoke_session(db: Session, user_id: str, session_id: int) -> bool:
    """End one of the user's sessions (another device; its open pages notice at once)."""
    result = db.exec(
        update(UserSession)
        .where(
            col(UserSession.id) == session_id,
            col(UserSession.user_id) == user_id,
            col(UserSession.revoked_at).is_(None),
        )
        .values(revoked_at=clock.now())
    )
    changes.touch(db, user_id)
    db.commit()
    return bool(result.rowcount)


def _revoke_others(db: Session, user_id: str, current_token: str) -> int:
    """Every live session of the user but this one (in the caller's transaction)."""
    result = db.exec(
        update(UserSession)
        .where(
            col(UserSession.user_id) == user_id,
            col(UserSession.revoked_at).is_(None),
            col(UserSession.token_hash) != token_hash(current_token),
        )
        .values(revoked_at=clock.now())
    )
    changes.touch(db, user_id)
    return result.rowcount or 0


def revoke_other_sessions(db: Session, user_id: str, current_token: str) -> int:
    ended = _revoke_others(db, user_id, current_token)
    db.commit()
    return ended


# --- notifications ------------------------------------------------------------------------------


def set_run_mails(db: Session, user_id: str, on: bool) -> None:
    db.exec(update(User).where(col(User.id) == user_id).values(run_mails=bool(on)))
    db.commit()


# --- the password -------------------------------------------------------------------------------


def check_current_password(db: Session, user_id: str, password: str) -> User:
    """The user, if `password` is their current one. Wrong guesses count as failed logins (the
    same limit: a stolen session cannot try passwords without end)."""
    user = db.get(User, user_id)
    if user is None or user.status != UserStatus.ACTIVATED or user.deleted_at is not None:
        db.rollback()
        raise AccountError("gone", "This account cannot be changed.")
    settings = get_settings()
    attempt = ratelimit.reserve(db, ratelimit.LOGIN_FAILURE, email=user.email)
    throttle.refuse_beyond_limit(
        db,
        attempt,
        ratelimit.LOGIN_FAILURE,
        timedelta(minutes=settings.login_failure_window_minutes),
        settings.login_max_failures_per_email,
        "Too many wrong passwords. Try again in {wait}, or reset your password.",
        email=user.email,
    )
    db.commit()  # the attempt is on record; no transaction while bcrypt runs
    if not password or not verify_password(password, user.password_hash):
        raise AccountError("wrong_password", WRONG_PASSWORD)
    ratelimit.release(db, attempt)
    db.commit()
    return user


def change_password(
    db: Session, user_id: str, current_token: str, current: str, new: str
) -> list[Mail]:
    """A new password, the current one required; every other session ends. Returns the notice
    mail for the caller to send."""
    check_password(new)
    user = check_current_password(db, user_id, current)
    new_hash = hash_password(new)  # outside any transaction
    db.exec(update(User).where(col(User.id) == user.id).values(password_hash=new_hash))
    links.void(db, user.id, LinkPurpose.RESET)
    _revoke_others(db, user.id, current_token)
    db.commit()
    return [emails.notice_mail(user.email, "password_changed")]


# --- the e-mail address -------------------------------------------------------------------------


def request_email_change(
    db: Session, user_id: str, password: str, new_email: str
) -> tuple[str, list[Mail]]:
    """A link to the new address (valid link_ttl_hours, once). The answer is the same whether or
    not the address has an account already; if it has, that address is told instead and nothing
    changes. Returns (what to show, the mails to send)."""
    address = normalize_email(new_email)
    user = check_current_password(db, user_id, password)
    if address == user.email:
        raise AccountError("same_email", "That is already your e-mail address.")
    answer = EMAIL_LINK_SENT.format(email=address)
    if user_by_email(db, address) is not None:
        mails = throttle.notice_once(db, address, emails.notice_mail(address, "email_taken"))
        db.commit()
        return answer, mails
    mails = throttle.link_mails(
        db,
        user,
        LinkPurpose.EMAIL_CHANGE,
        emails.email_change_mail,
        void_older=True,
        to=address,
        new_email=address,
    )
    db.commit()
    return answer, mails


def confirm_email_change(db: Session, token: str) -> tuple[str, list[Mail]]:
    """Open the link: the account moves to the new address; the old one is told."""
    link = links.consume(db, token, LinkPurpose.EMAIL_CHANGE)
    if link is None or not link.new_email:
        db.rollback()
        raise AccountError("bad_link", BAD_EMAIL_LINK)
    user = db.get(User, link.user_id)
    if user is None or user.status != UserStatus.ACTIVATED or user.deleted_at is not None:
        db.rollback()
        raise AccountError("bad_link", BAD_EMAIL_LINK)
    old, new = user.email, link.new_email
    try:
        db.exec(update(User).where(col(User.id) == user.id).values(email=new))
        changes.touch(db, user.id)
        db.commit()
    except IntegrityError:  # the address got an account of its own meanwhile
        db.rollback()
        raise AccountError("email_taken", "That address belongs to another account now.") from None
    return f"Your e-mail address is now {new}.", [emails.notice_mail(old, "email_changed", new=new)]
