"""SPEC §9, the signed-in user's own account, on SQLite and PostgreSQL: password change, e-mail
change, sessions, notifications."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session, select

from tests.helpers import login_session, make_user, token_of
from vgen_app import clock
from vgen_app.models import OneTimeLink, User, UserSession
from vgen_app.services import account, accounts, sessions
from vgen_app.services.accounts import ClientInfo
from vgen_app.services.errors import AccountError

PW = "correct horse"
CHROME_LINUX = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)


def _session(db: Session, email: str, ua: str, ip: str, geo: str | None = None) -> str:
    result = accounts.login(db, email, PW, ClientInfo(ip=ip, user_agent=ua))
    token, _ = accounts.redeem_login_ticket(db, result.ticket, ClientInfo(ip, ua, geo))
    return token


@pytest.mark.parametrize(
    ("ua", "name"),
    [
        (CHROME_LINUX, "Chrome on Linux"),
        (SAFARI_IPHONE, "Mobile Safari on iOS"),
        ("curl/8.5.0", "curl"),
        ("", "Unknown device"),
        (None, "Unknown device"),
        ("\x00garbage" * 50, "Unknown device"),
    ],
)
def test_device_names(ua: str | None, name: str) -> None:
    assert account.device_name(ua) == name


def test_sessions_list_marks_this_device_and_hides_ended_ones(db: Session) -> None:
    ann = make_user(db, "ann@example.com")
    laptop = _session(db, "ann@example.com", CHROME_LINUX, "203.0.113.5", "DE/Berlin")
    phone = _session(db, "ann@example.com", SAFARI_IPHONE, "198.51.100.7")
    old = _session(db, "ann@example.com", CHROME_LINUX, "192.0.2.1")
    sessions.revoke(db, old)
    view = account.overview(db, ann, laptop)
    assert [(s.device, s.ip, s.country, s.current) for s in view.sessions] == [
        ("Chrome on Linux", "203.0.113.5", "DE", True),
        ("Mobile Safari on iOS", "198.51.100.7", "unknown", False),
    ]
    assert view.email == "ann@example.com" and view.run_mails is True
    # An expired one is not listed either.
    clock.travel(timedelta(days=31))
    assert account.overview(db, ann, phone).sessions == []


def test_revoke_one_session_and_all_others(db: Session) -> None:
    ann = make_user(db, "ann@example.com")
    eve = make_user(db, "eve@example.com")
    mine = _session(db, "ann@example.com", CHROME_LINUX, "203.0.113.5")
    phone = _session(db, "ann@example.com", SAFARI_IPHONE, "198.51.100.7")
    tablet = _session(db, "ann@example.com", SAFARI_IPHONE, "198.51.100.8")
    eves = login_session(db, "eve@example.com")
    (phone_row,) = [s for s in account.overview(db, ann, mine).sessions if s.ip == "198.51.100.7"]
    (eve_row,) = account.overview(db, eve, eves).sessions
    assert account.revoke_session(db, ann, eve_row.id) is False  # not hers: nothing happens
    assert sessions.validate(db, eves) is not None
    assert account.revoke_session(db, ann, phone_row.id) is True
    assert sessions.validate(db, phone) is None and sessions.validate(db, tablet) is not None
    assert account.revoke_other_sessions(db, ann, mine) == 1
    assert sessions.validate(db, tablet) is None
    assert sessions.validate(db, mine) is not None and sessions.validate(db, eves) is not None


def test_change_password_needs_the_current_one_and_signs_out_the_others(db: Session) -> None:
    ann = make_user(db, "ann@example.com")
    mine = login_session(db, "ann@example.com")
    other = login_session(db, "ann@example.com")
    with pytest.raises(AccountError) as wrong:
        account.change_password(db, ann, mine, "not it", "brand new pw 1")
    assert wrong.value.message == account.WRONG_PASSWORD
    with pytest.raises(AccountError):  # too short: refused before anything
        account.change_password(db, ann, mine, PW, "short")
    assert sessions.validate(db, other) is not None
    (mail,) = account.change_password(db, ann, mine, PW, "brand new pw 1")
    assert mail.kind == "password_changed" and mail.to == "ann@example.com"
    assert sessions.validate(db, other) is None
    assert sessions.validate(db, mine) is not None
    with pytest.raises(AccountError):
        accounts.login(db, "ann@example.com", PW)
    assert accounts.login(db, "ann@example.com", "brand new pw 1").ticket


def test_wrong_current_passwords_are_rate_limited_like_logins(db: Session) -> None:
    ann = make_user(db, "ann@example.com")
    mine = login_session(db, "ann@example.com")
    codes = []
    for _ in range(8):
        try:
            account.change_password(db, ann, mine, "a guess", "brand new pw 1")
        except AccountError as exc:
            codes.append(exc.code)
    assert codes[:5] == ["wrong_password"] * 5 and set(codes[5:]) == {"rate_limited"}
    with pytest.raises(AccountError) as limited:  # even the right one waits now
        account.change_password(db, ann, mine, PW, "brand new pw 1")
    assert limited.value.code == "rate_limited"


def test_change_email_end_to_end(db: Session) -> None:
    ann = make_user(db, "ann@example.com")
    answer, (link_mail,) = account.request_email_change(db, ann, PW, " Ann.New@Example.com ")
    assert "ann.new@example.com" in answer
    assert link_mail.kind == "email_change" and link_mail.to == "ann.new@example.com"
    assert "/account/email?token=" in link_mail.text
    assert db.get(User, ann).email == "ann@example.com"  # nothing moves before the link
    token = token_of(link_mail)
    message, (notice,) = account.confirm_email_change(db, token)
    assert "ann.new@example.com" in message
    assert notice.kind == "email_changed" and notice.to == "ann@example.com"
    assert "ann.new@example.com" in notice.text
    db.expire_all()
    assert db.get(User, ann).email == "ann.new@example.com"
    assert accounts.login(db, "ann.new@example.com", PW).ticket
    with pytest.raises(AccountError):
        accounts.login(db, "ann@example.com", PW)
    with pytest.raises(AccountError) as again:  # single use
        account.confirm_email_change(db, token)
    assert again.value.code == "bad_link"
    # The old address is free: it can sign up as a new account.
    assert accounts.signup(db, "ann@example.com", PW).user_id != ann


def test_change_email_link_expires_and_a_newer_one_replaces_it(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vgen_app.services.links.sent_recently", lambda *a: False)
    ann = make_user(db, "ann@example.com")
    _, (first,) = account.request_email_change(db, ann, PW, "one@example.com")
    _, (second,) = account.request_email_change(db, ann, PW, "two@example.com")
    with pytest.raises(AccountError):
        account.confirm_email_change(db, token_of(first))  # voided by the newer one
    clock.travel(timedelta(hours=24, minutes=1))
    with pytest.raises(AccountError):
        account.confirm_email_change(db, token_of(second))
    db.expire_all()
    assert db.get(User, ann).email == "ann@example.com"


def test_a_taken_address_gets_the_same_answer_and_no_link(db: Session) -> None:
    ann = make_user(db, "ann@example.com")
    make_user(db, "bob@example.com")
    answer, mails = account.request_email_change(db, ann, PW, "bob@example.com")
    free_answer, _ = account.request_email_change(db, ann, PW, "free@example.com")
    assert answer == free_answer.replace("free@example.com", "bob@example.com")
    assert [(m.kind, m.to) for m in mails] == [("email_taken", "bob@example.com")]
    links = db.exec(select(OneTimeLink).where(OneTimeLink.new_email == "bob@example.com")).all()
    assert links == []
    with pytest.raises(AccountError):
        account.request_email_change(db, ann, "wrong", "x@example.com")
    with pytest.raises(AccountError):
        account.request_email_change(db, ann, PW, "ann@example.com")
    with pytest.raises(AccountError):
        account.request_email_change(db, ann, PW, "not an address")


def test_the_address_taken_between_request_and_link(db: Session) -> None:
    ann = make_user(db, "ann@example.com")
    _, (link_mail,) = account.request_email_change(db, ann, PW, "late@example.com")
    make_user(db, "late@example.com")
    with pytest.raises(AccountError) as taken:
        account.confirm_email_change(db, token_of(link_mail))
    assert taken.value.code in ("email_taken", "bad_link")
    db.expire_all()
    assert db.get(User, ann).email == "ann@example.com"


def test_run_mails_switch(db: Session) -> None:
    ann = make_user(db, "ann@example.com")
    account.set_run_mails(db, ann, False)
    db.expire_all()
    assert db.get(User, ann).run_mails is False
    account.set_run_mails(db, ann, True)
    db.expire_all()
    assert db.get(User, ann).run_mails is True
    assert db.exec(select(UserSession)).all() == []
