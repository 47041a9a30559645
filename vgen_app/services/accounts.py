"""Accounts (SPEC §1): sign-up, activation, login, password reset, status changes.

Functions take a database session and plain values, commit their own transaction, and return the
mails to send after the commit (the caller sends them off the event loop). bcrypt never runs while
a transaction is open: on SQLite that would hold the write lock for the whole hash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from vgen_app.config import get_settings
from vgen_app.db import end_read
from vgen_app.models import LinkPurpose, User, UserStatus
from vgen_app.services import emails, links, outbox, ratelimit, sessions
from vgen_app.services.emails import Mail
from vgen_app.services.errors import AccountError
from vgen_app.services.security import (
    burn_password_check,
    hash_password,
    verify_password,
)

PASSWORD_MIN = 8
PASSWORD_MAX = 128

WRONG_CREDENTIALS = "Wrong e-mail or password."
CHECK_INBOX = (
    "Check your inbox: if {email} can sign up, we have sent it a link to activate the account."
)
RESET_SENT = "If an account exists for {email}, we have sent it a link to reset the password."


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


def _minutes(delta: timedelta) -> str:
    mins = max(1, int(delta.total_seconds() + 59) // 60)
    return "1 minute" if mins == 1 else f"{mins} minutes"


# --- links ------------------------------------------------------------------------------------


def _activation_mail(db: Session, user: User) -> list[Mail]:
    if links.sent_recently(db, user.id, LinkPurpose.ACTIVATION):
        return []
    ttl = timedelta(hours=get_settings().link_ttl_hours)
    token = links.issue(db, user, LinkPurpose.ACTIVATION, ttl)
    return [emails.activation_mail(user.email, token)]


def _user_by_email(db: Session, email: str) -> User | None:
    return db.exec(select(User).where(User.email == email)).first()


# --- sign-up and activation -------------------------------------------------------------------


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
    if client.ip and ratelimit.count(db, ratelimit.SIGNUP, timedelta(hours=1), ip=client.ip) > (
        settings.signups_per_ip_per_hour
    ):
        ratelimit.release(db, attempt)
        db.commit()
        raise AccountError("rate_limited", "Too many sign-ups from your network. Try again later.")
    end_read(db)

    password_hash = hash_password(password)  # outside any transaction

    existing = _user_by_email(db, email)
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
        existing = _user_by_email(db, email)
        mails = _mail_for_existing(db, existing) if existing else []
        db.commit()
        return Result(message=message, mails=mails)
    mails = _activation_mail(db, user)
    _record_session_event(db, "signup", user, client, utm=user.signup_utm)
    db.commit()
    return Result(message=message, mails=mails, user_id=user.id)


def _mail_for_existing(db: Session, user: User) -> list[Mail]:
    if user.status == UserStatus.NEW:
        return _activation_mail(db, user)
    if user.status == UserStatus.ACTIVATED:
        # Throttled like the link mails: sign-ups with a taken address must not flood its inbox.
        interval = timedelta(seconds=get_settings().mail_link_interval_seconds)
        if ratelimit.count(db, ratelimit.NOTICE_MAIL, interval, email=user.email):
            return []
        ratelimit.hit(db, ratelimit.NOTICE_MAIL, email=user.email)
        return [emails.already_registered_mail(user.email)]
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
        db.rollback()
        raise AccountError(
            "bad_link",
            "This activation link is invalid, expired or already used. "
            "Log in to get a new one: we send a fresh link to unverified accounts.",
        )
    user = db.get(User, link.user_id)
    assert user is not None
    if user.status == UserStatus.BLOCKED:
        db.rollback()
        raise AccountError("blocked", "This account is blocked. Contact support.")
    db.exec(
        update(User)
        .where(col(User.id) == user.id, col(User.status) == UserStatus.NEW)
        .values(status=UserStatus.ACTIVATED)
    )
    # Every other activation link of this user is spent too.
    links.void(db, user.id, LinkPurpose.ACTIVATION)
    db.commit()
    return Result(message="Your e-mail is verified. You can log in now.", user_id=user.id)


# --- login --------------------------------------------------------------------------------------


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
    if ratelimit.count(db, ratelimit.LOGIN_FAILURE, window, email=email) > (
        settings.login_max_failures_per_email
    ):
        wait = ratelimit.retry_after(db, ratelimit.LOGIN_FAILURE, window, email=email)
        ratelimit.release(db, attempt)
        db.commit()
        raise AccountError(
            "rate_limited",
            f"Too many failed attempts for this e-mail. Try again in {_minutes(wait)}, "
            "or reset your password.",
        )
    if client.ip and ratelimit.count(db, ratelimit.LOGIN_FAILURE, window, ip=client.ip) > (
        settings.login_max_failures_per_ip
    ):
        wait = ratelimit.retry_after(db, ratelimit.LOGIN_FAILURE, window, ip=client.ip)
        ratelimit.release(db, attempt)
        db.commit()
        raise AccountError(
            "rate_limited",
            f"Too many failed attempts from your network. Try again in {_minutes(wait)}.",
        )
    user = _user_by_email(db, email)
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
        mails = _activation_mail(db, user)
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
    token = sessions.create(db, user.id, ip=client.ip, user_agent=_ua(client.user_agent))
    _record_session_event(db, "login", user, client)
    db.commit()
    return token, user


# --- password reset -------------------------------------------------------------------------------


def request_password_reset(db: Session, email: str, client: ClientInfo | None = None) -> Result:
    """Same answer whatever the address; mail only to accounts that may reset."""
    email = admit_reset_request(db, email, client)
    return Result(message=RESET_SENT.format(email=email), mails=reset_link_mails(db, email))


def admit_reset_request(db: Session, email: str, client: ClientInfo | None = None) -> str:
    """The part of a reset request that is the same for every address (syntax, the per-IP limit):
    the page answers after this alone. Returns the normalized address."""
    client = client or ClientInfo()
    email = normalize_email(email)
    attempt = ratelimit.reserve(db, ratelimit.LINK_REQUEST, email=email, ip=client.ip)
    if (
        client.ip
        and ratelimit.count(db, ratelimit.LINK_REQUEST, timedelta(hours=1), ip=client.ip)
        > get_settings().link_requests_per_ip_per_hour
    ):
        ratelimit.release(db, attempt)
        db.commit()
        raise AccountError("rate_limited", "Too many requests from your network. Try again later.")
    end_read(db)
    return email


def reset_link_mails(db: Session, email: str) -> list[Mail]:
    """The part that depends on the account: a reset link for an activated one, the activation
    link for a `new` one, nothing otherwise. Its time tells whether the address has an account,
    so the page runs it after answering."""
    user = _user_by_email(db, email)
    mails: list[Mail] = []
    if user is not None and user.status == UserStatus.NEW:
        mails = _activation_mail(db, user)
    elif (
        user is not None
        and user.status == UserStatus.ACTIVATED
        and not links.sent_recently(db, user.id, LinkPurpose.RESET)
    ):
        links.void(db, user.id, LinkPurpose.RESET)  # a newer link voids the older ones
        ttl = timedelta(hours=get_settings().link_ttl_hours)
        token = links.issue(db, user, LinkPurpose.RESET, ttl)
        mails = [emails.reset_mail(user.email, token)]
    db.commit()
    return mails


def check_reset_token(db: Session, token: str) -> bool:
    """Whether a reset link can still be used (to show the form or a clear error)."""
    ok = links.find_valid(db, token, LinkPurpose.RESET) is not None
    end_read(db)
    return ok


BAD_RESET_LINK = "This reset link is invalid, expired or already used. Ask for a new one."


def reset_password(db: Session, token: str, new_password: str) -> Result:
    check_password(new_password)
    if links.find_valid(db, token, LinkPurpose.RESET) is None:
        db.rollback()
        raise AccountError("bad_link", BAD_RESET_LINK)
    end_read(db)
    password_hash = hash_password(new_password)  # outside any transaction

    link = links.consume(db, token, LinkPurpose.RESET)
    if link is None:  # used concurrently meanwhile
        db.rollback()
        raise AccountError("bad_link", BAD_RESET_LINK)
    user = db.get(User, link.user_id)
    if user is None or user.status == UserStatus.BLOCKED:
        db.rollback()
        raise AccountError("blocked", "This account is blocked. Contact support.")
    db.exec(update(User).where(col(User.id) == user.id).values(password_hash=password_hash))
    links.void(db, user.id, LinkPurpose.RESET)
    sessions.revoke_all(db, user.id)
    ratelimit.clear(db, ratelimit.LOGIN_FAILURE, email=user.email)
    db.commit()
    return Result(message="Your password is changed. Log in with the new one.", user_id=user.id)


# --- status (admin) -------------------------------------------------------------------------------


@dataclass
class StatusChange:
    user_id: str
    email: str
    previous_status: str
    status: str


def set_status(db: Session, user_id: str, status: str) -> StatusChange:
    """Change a user's status. Blocking revokes every session at once."""
    try:
        new_status = UserStatus(status)
    except ValueError as exc:
        raise AccountError("bad_status", "status must be one of: new, activated, blocked") from exc
    user = db.get(User, user_id, with_for_update=True)
    if user is None:
        db.rollback()
        raise AccountError("not_found", "No such user.")
    previous = user.status
    user.status = new_status.value
    db.add(user)
    if new_status == UserStatus.BLOCKED:
        sessions.revoke_all(db, user.id)
    db.commit()
    return StatusChange(user.id, user.email, previous, new_status.value)
