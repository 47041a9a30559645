"""Small helpers shared by tests."""

from __future__ import annotations

import re

from sqlmodel import Session

from vgen_app.services import accounts
from vgen_app.services.emails import Mail

TOKEN_RE = re.compile(r"token=([A-Za-z0-9_\-]+)")


def token_of(mail: Mail) -> str:
    match = TOKEN_RE.search(mail.text)
    assert match, mail.text
    return match.group(1)


def make_user(db: Session, email: str = "ann@example.com", password: str = "correct horse") -> str:
    """A signed-up, activated user; returns its id."""
    result = accounts.signup(db, email, password)
    (mail,) = result.mails
    accounts.activate(db, token_of(mail))
    assert result.user_id
    return result.user_id


def login_session(db: Session, email: str, password: str = "correct horse") -> str:
    result = accounts.login(
        db, email, password, accounts.ClientInfo(ip="10.0.0.1", user_agent="pytest")
    )
    assert result.ticket
    token, _user = accounts.redeem_login_ticket(
        db, result.ticket, accounts.ClientInfo(ip="10.0.0.1")
    )
    return token
