"""Password reset (SPEC §1): the request, the link, the new password.

Like accounts.py, functions take a database session and plain values, commit their own
transaction, and return the mails to send after the commit; `answer_reset_request` is the page's
whole request (it runs the database work off the event loop and sends the mails itself).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy import update
from sqlmodel import Session, col

from vgen_app.adapters import mail
from vgen_app.config import get_settings
from vgen_app.db import end_read, run_db
from vgen_app.models import LinkPurpose, User, UserStatus
from vgen_app.services import emails, links, ratelimit, sessions
from vgen_app.services.accounts import (
    BLOCKED,
    ClientInfo,
    Result,
    activation_mails,
    check_password,
    normalize_email,
    user_by_email,
)
from vgen_app.services.emails import Mail
from vgen_app.services.errors import AccountError
from vgen_app.services.security import hash_password
from vgen_app.services.throttle import link_mails, refuse_beyond_limit

log = logging.getLogger("vgen.auth")

RESET_SENT = "If an account exists for {email}, we have sent it a link to reset the password."
BAD_RESET_LINK = "This reset link is invalid, expired or already used. Ask for a new one."


# --- the request ----------------------------------------------------------------------------------


def request_password_reset(db: Session, email: str, client: ClientInfo | None = None) -> Result:
    """Same answer whatever the address; mail only to accounts that may reset."""
    email = admit_reset_request(db, email, client)
    return Result(message=RESET_SENT.format(email=email), mails=reset_link_mails(db, email))


async def answer_reset_request(email: str, client: ClientInfo | None = None) -> str:
    """The reset request as the page makes it: returns the answer (the same for every address)
    once the part alike for every address is done (`admit_reset_request`; its AccountError if
    refused). The part that depends on the account (`reset_link_mails`, then sending them) is a
    task that starts when the caller next waits, so after the caller has its answer: how long it
    takes (a link written, a mail rendered, or nothing) must not tell whether the address has an
    account. It is tracked with the mails being sent: `mail.drain()` waits for it too."""
    email = await run_db(admit_reset_request, email, client)
    mail.track(asyncio.get_running_loop().create_task(_send_reset_link(email)))
    return RESET_SENT.format(email=email)


async def _send_reset_link(email: str) -> int:
    try:
        mails = await run_db(reset_link_mails, email)
    except Exception:
        log.exception("issuing a reset link failed")
        return 0
    mail.send_in_background(mails)
    return len(mails)


def admit_reset_request(db: Session, email: str, client: ClientInfo | None = None) -> str:
    """The part of a reset request that is the same for every address (syntax, the per-IP limit):
    the page answers after this alone. Returns the normalized address."""
    client = client or ClientInfo()
    email = normalize_email(email)
    attempt = ratelimit.reserve(db, ratelimit.LINK_REQUEST, email=email, ip=client.ip)
    if client.ip:
        refuse_beyond_limit(
            db,
            attempt,
            ratelimit.LINK_REQUEST,
            timedelta(hours=1),
            get_settings().link_requests_per_ip_per_hour,
            "Too many requests from your network. Try again later.",
            ip=client.ip,
        )
    end_read(db)
    return email


def reset_link_mails(db: Session, email: str) -> list[Mail]:
    """The part that depends on the account: a reset link for an activated one, the activation
    link for a `new` one, nothing otherwise. Its time tells whether the address has an account,
    so the page runs it after answering."""
    user = user_by_email(db, email)
    mails: list[Mail] = []
    if user is not None and user.status == UserStatus.NEW:
        mails = activation_mails(db, user)
    elif user is not None and user.status == UserStatus.ACTIVATED:
        # A newer link voids the older ones.
        mails = link_mails(db, user, LinkPurpose.RESET, emails.reset_mail, void_older=True)
    db.commit()
    return mails


# --- the link and the new password ----------------------------------------------------------------


def check_reset_token(db: Session, token: str) -> bool:
    """Whether a reset link can still be used (to show the form or a clear error)."""
    ok = links.find_valid(db, token, LinkPurpose.RESET) is not None
    end_read(db)
    return ok


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
        raise AccountError("blocked", BLOCKED)
    db.exec(update(User).where(col(User.id) == user.id).values(password_hash=password_hash))
    links.void(db, user.id, LinkPurpose.RESET)
    sessions.revoke_all(db, user.id)
    ratelimit.clear(db, ratelimit.LOGIN_FAILURE, email=user.email)
    db.commit()
    return Result(message="Your password is changed. Log in with the new one.", user_id=user.id)
