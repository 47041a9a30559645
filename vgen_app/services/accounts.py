"""Accounts (SPEC §1): sign-up, activation, login, status changes (password reset: passwords.py).

Functions take a database session and plain values, commit their own transaction, and return the
mails to send after the commit (the caller sends them off the event loop). bcrypt never runs while
a transaction is open: on SQLite that would hold the write lock for the whole hash.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import ColumnElement, Executable, Integer, func, literal, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from vgen_app import clock
from vgen_app.config import get_settings
from vgen_app.db import Batch, end_read, refresh_loaded, run_batch
from vgen_app.models import LinkPurpose, User, UserSession, UserStatus, is_id
from vgen_app.services import changes, emails, links, metrics, outbox, ratelimit, sessions
from vgen_app.services.emails import Mail
from vgen_app.services.errors import AccountError
from vgen_app.services.security import burn_password_check, hash_password, verify_password
from vgen_app.services.throttle import link_mails, notice_once, refuse_beyond_limit

PASSWORD_MIN = 8
PASSWORD_MAX = 128

WRONG_CREDENTIALS = "Wrong e-mail or password."
CHECK_INBOX = (
    "Check your inbox: if {email} can sign up, we have sent it a link to activate the account."
)
BLOCKED = "This account is blocked. Contact support."
ALREADY_ACTIVE = "Your account is already active: log in with your e-mail and password."


@dataclass
class ClientInfo:
    """Who is asking: for rate limits and the analytics row."""

    ip: str | None = None
    user_agent: str | None = None
    geo: str | None = None


@dataclass
class Result:
    message: str
    mails: list[Mail] = field(default_factory=list)
    user_id: str | None = None
    email: str = ""  # whose account it was (to fill in the login form)


@dataclass
class LoginResult(Result):
    ticket: str | None = None  # redeemed by the session route for the HttpOnly cookie


# --- input rules ------------------------------------------------------------------------------


def normalize_email(raw: str) -> str:
    email = (raw or "").strip().lower()
    if not email or len(email) > 254:
        raise AccountError("invalid_email", "Enter a valid e-mail address.")
    try:
        info = validate_email(email, check_deliverability=False)
    except EmailNotValidError as exc:
        raise AccountError("invalid_email", f"Enter a valid e-mail address ({exc}).") from exc
    return info.normalized.lower()


def check_password(password: str) -> None:
    if not isinstance(password, str) or len(password) < PASSWORD_MIN:
        raise AccountError("weak_password", f"Use at least {PASSWORD_MIN} characters.")
    if len(password) > PASSWORD_MAX:
        raise AccountError("long_password", f"Use at most {PASSWORD_MAX} characters.")


# --- links ------------------------------------------------------------------------------------


def activation_mails(db: Session, user: User) -> list[Mail]:
    return link_mails(db, user, LinkPurpose.ACTIVATION, emails.activation_mail)


def user_by_email(db: Session, email: str) -> User | None:
    return db.exec(select(User).where(User.email == email)).first()


# --- sign-up and activation -------------------------------------------------------------------


@metrics.counts_signups
def signup(
    db: Session,
    email: str,
    password: str,
    client: ClientInfo | None = None,
    utm: dict[str, str] | None = None,
) -> Result:
    """Create a `new` account and send its activation link.

    Signing up with a taken address answers exactly as a fresh sign-up does (no enumeration);
    its owner gets a mail instead: a new activation link if still `new`, else a notice.
    """
    client = client or ClientInfo()
    settings = get_settings()
    email = normalize_email(email)
    check_password(password)
    # Recorded first, counted after (see ratelimit.reserve): concurrent sign-ups cannot overshoot.
    attempt = ratelimit.reserve(db, ratelimit.SIGNUP, email=email, ip=client.ip)
    if client.ip:
        refuse_beyond_limit(
            db,
            attempt,
            ratelimit.SIGNUP,
            timedelta(hours=1),
            settings.signups_per_ip_per_hour,
            "Too many sign-ups from your network. Try again later.",
            ip=client.ip,
        )
    end_read(db)

    password_hash = hash_password(password)  # outside any transaction

    existing = user_by_email(db, email)
    message = CHECK_INBOX.format(email=email)
    if existing is not None:
        mails = _mail_for_existing(db, existing)
        db.commit()
        return Result(message=message, mails=mails)

    user = User(email=email, password_hash=password_hash, signup_utm=_clean_utm(utm))
    db.add(user)
    try:
        db.flush()
    except IntegrityError:  # the same address signed up concurrently
        db.rollback()
        existing = user_by_email(db, email)
        mails = _mail_for_existing(db, existing) if existing else []
        db.commit()
        return Result(message=message, mails=mails)
    mails = activation_mails(db, user)
    _record_session_event(db, "signup", user, client, utm=user.signup_utm)
    db.commit()
    return Result(message=message, mails=mails, user_id=user.id)


def _mail_for_existing(db: Session, user: User) -> list[Mail]:
    if user.status == UserStatus.NEW:
        return activation_mails(db, user)
    if user.status == UserStatus.ACTIVATED:
        # Throttled like the link mails: sign-ups with a taken address must not flood its inbox.
        return notice_once(db, user.email, emails.already_registered_mail(user.email))
    return []


UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")


def _clean_utm(utm: dict[str, str] | None) -> dict[str, str] | None:
    if not utm:
        return None
    kept = {k: str(v)[:200] for k, v in utm.items() if k in UTM_KEYS and v}
    return kept or None


def activate(db: Session, token: str) -> Result:
    link = links.consume(db, token, LinkPurpose.ACTIVATION)
    if link is None:
        spent = links.find_any(db, token, LinkPurpose.ACTIVATION)
        owner = db.get(User, spent.user_id) if spent is not None else None
        db.rollback()
        if owner is not None and owner.status == UserStatus.ACTIVATED:
            # The link's holder knows the address: saying the account is active tells nothing new.
            raise AccountError("bad_link", ALREADY_ACTIVE)
        raise AccountError(
            "bad_link",
            "This activation link is invalid, expired or already used. "
            "Log in to get a new one: we send a fresh link to unverified accounts.",
        )
    user = db.get(User, link.user_id)
    assert user is not None
    if user.status == UserStatus.BLOCKED:
        db.rollback()
        raise AccountError("blocked", BLOCKED)
    db.exec(
        update(User)
        .where(col(User.id) == user.id, col(User.status) == UserStatus.NEW)
        .values(status=UserStatus.ACTIVATED)
    )
    # Every other activation link of this user is spent too.
    links.void(db, user.id, LinkPurpose.ACTIVATION)
    db.commit()
    return Result(
        message="Your e-mail is verified. You can log in now.", user_id=user.id, email=user.email
    )


# --- login --------------------------------------------------------------------------------------


@metrics.counts_logins
def login(db: Session, email: str, password: str, client: ClientInfo | None = None) -> LoginResult:
    """Check the password and hand out a single-use login ticket for the session route."""
    client = client or ClientInfo()
    settings = get_settings()
    try:
        email = normalize_email(email)
    except AccountError:
        raise AccountError("bad_credentials", WRONG_CREDENTIALS) from None
    if not password or len(password) > PASSWORD_MAX:
        raise AccountError("bad_credentials", WRONG_CREDENTIALS)

    window = timedelta(minutes=settings.login_failure_window_minutes)
    # The attempt is recorded as a failure first and counted after (see ratelimit.reserve): of any
    # number of concurrent attempts, at most the configured count get a password check.
    attempt = ratelimit.reserve(db, ratelimit.LOGIN_FAILURE, email=email, ip=client.ip)
    refuse_beyond_limit(
        db,
        attempt,
        ratelimit.LOGIN_FAILURE,
        window,
        settings.login_max_failures_per_email,
        "Too many failed attempts for this e-mail. Try again in {wait}, or reset your password.",
        email=email,
    )
    if client.ip:
        refuse_beyond_limit(
            db,
            attempt,
            ratelimit.LOGIN_FAILURE,
            window,
            settings.login_max_failures_per_ip,
            "Too many failed attempts from your network. Try again in {wait}.",
            ip=client.ip,
        )
    user = user_by_email(db, email)
    end_read(db)  # no transaction (and no SQLite write lock) while bcrypt runs

    if user is None:
        burn_password_check(password)
        ok = False
    else:
        ok = verify_password(password, user.password_hash)
    if not ok:  # the reserved attempt stays: it is the failure on record
        raise AccountError("bad_credentials", WRONG_CREDENTIALS)

    assert user is not None
    ratelimit.release(db, attempt)  # the right password is no failure, whatever the status
    db.commit()
    user = db.get(User, user.id, populate_existing=True)
    assert user is not None
    if user.status == UserStatus.BLOCKED:
        db.rollback()
        raise AccountError(
            "blocked", "This account is blocked. Contact support if you think this is a mistake."
        )
    if user.status == UserStatus.NEW:
        mails = activation_mails(db, user)
        db.commit()
        raise UnverifiedLogin(mails)

    ratelimit.clear(db, ratelimit.LOGIN_FAILURE, email=email)
    ttl = timedelta(seconds=settings.login_ticket_ttl_seconds)
    ticket = links.issue(
        db, user, LinkPurpose.LOGIN_TICKET, ttl, ip=client.ip, user_agent=_ua(client.user_agent)
    )
    db.commit()
    return LoginResult(message="Logged in.", user_id=user.id, ticket=ticket)


class UnverifiedLogin(AccountError):
    """Right password, e-mail not verified yet: a fresh activation link goes out (at most 1/min)."""

    def __init__(self, mails: list[Mail]) -> None:
        if mails:
            message = (
                "Verify your e-mail address first. We have sent you a new activation link"
                " (it may take a minute to arrive; check the spam folder too)."
            )
        else:
            message = (
                "Verify your e-mail address first. We sent you an activation link a moment ago:"
                " check your inbox and the spam folder."
            )
        super().__init__("unverified", message)
        self.mails = mails


def _record_session_event(
    db: Session, action: str, user: User, client: ClientInfo, **extra: object
) -> None:
    """The `user_sessions` analytics row, in the caller's transaction."""
    row = {
        "ip": client.ip,
        "geo": client.geo,
        "useragent": client.user_agent,
        "action": action,
        "userid": user.id,
        "email": user.email,
        **extra,
    }
    outbox.record(db, outbox.USER_SESSIONS, row)


def _ua(user_agent: str | None) -> str | None:
    return user_agent[:512] if user_agent else None


def redeem_login_ticket(
    db: Session, ticket: str, client: ClientInfo | None = None
) -> tuple[str, User]:
    """Turn a login ticket into a session (token returned once, for the cookie).

    The successful login is recorded here, with the session it created, for analytics.
    """
    client = client or ClientInfo()
    link = links.consume(db, ticket, LinkPurpose.LOGIN_TICKET)
    if link is None:
        db.rollback()
        raise AccountError("bad_ticket", "Your login expired. Please log in again.")
    user = db.get(User, link.user_id)
    if user is None or user.status != UserStatus.ACTIVATED:
        db.rollback()
        raise AccountError("blocked", "This account cannot log in.")
    country = (client.geo or "")[:2].upper() or None  # "DE" of "DE/Berlin"
    token = sessions.create(
        db, user.id, ip=client.ip, user_agent=_ua(client.user_agent), country=country
    )
    _record_session_event(db, "login", user, client)
    db.commit()
    return token, user


# --- status (admin) -------------------------------------------------------------------------------


@dataclass
class StatusChange:
    user_id: str
    email: str
    previous_status: str
    status: str
    sessions_revoked: int = 0
    also_rows: list[dict[str, Any]] = field(default_factory=list)  # RETURNING rows of `also`


@dataclass(frozen=True)
class StatusSQL:
    """What `set_status(also=…)` builds its statement from, as SQL valid right after the user row
    was locked and before it changed: `found` (a condition on `users` that picks the user's row:
    select FROM users WHERE found, one row or none), `previous` (its status, a `users` column) and
    `revoking` (how many live sessions a block revokes; 0 otherwise)."""

    found: ColumnElement[bool]
    previous: ColumnElement[Any]
    revoking: ColumnElement[Any]


def set_status(
    db: Session,
    user_id: str,
    status: str,
    also: Callable[[StatusSQL], Executable] | None = None,
) -> StatusChange:
    """Change a user's status. Blocking revokes every session at once.

    One batch (`db.run_batch`: one transaction on SQLite and PostgreSQL, one request on D1): lock
    the user row and read it, `also(sql)` (the admin audit row, built from the row as it was:
    `StatusSQL`), the status UPDATE and, when blocking, the sessions' revocation. Should `also`
    fail, nothing changes."""
    try:
        new_status = UserStatus(status)
    except ValueError as exc:
        raise AccountError("bad_status", "status must be one of: new, activated, blocked") from exc
    if not is_id(user_id):
        raise AccountError("not_found", "No such user.")
    mine = col(User.id) == user_id
    blocking = new_status == UserStatus.BLOCKED
    live = [col(UserSession.user_id) == user_id, col(UserSession.revoked_at).is_(None)]
    batch = Batch()
    batch.add(
        select(User.id, User.email, User.status).where(mine).with_for_update(key_share=True),
        "user",
    )
    if also is not None:
        revoking = (
            select(func.count()).select_from(UserSession).where(*live).scalar_subquery()
            if blocking
            else literal(0, Integer())
        )
        previous = User.__table__.c.status  # type: ignore[attr-defined]
        batch.add(also(StatusSQL(mine, previous, revoking)), "also")
    batch.add(update(User).where(mine).values(status=new_status.value))
    if blocking:
        batch.add(
            update(UserSession)
            .where(*live)
            .values(revoked_at=clock.now())
            .returning(col(UserSession.id)),
            "revoked",
        )
    try:
        results = run_batch(db, batch.statements)
    except Exception:
        db.rollback()
        raise
    found = batch.rows(results, "user")
    if not found:
        db.rollback()
        raise AccountError("not_found", "No such user.")
    revoked = len(batch.rows(results, "revoked")) if blocking else 0
    if blocking:
        changes.touch(db, user_id)  # their open pages find the session gone at once
    db.commit()
    refresh_loaded(db, User, user_id)
    return StatusChange(
        user_id,
        found[0]["email"],
        UserStatus(found[0]["status"]).value,
        new_status.value,
        revoked,
        also_rows=batch.rows(results, "also") if also is not None else [],
    )
