"""SPEC §1, rule by rule, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from tests.helpers import login_session, make_user, token_of
from vgen_app import clock
from vgen_app.db import session_scope
from vgen_app.models import AnalyticsOutbox, OneTimeLink, User, UserSession
from vgen_app.services import accounts, passwords, sessions
from vgen_app.services.accounts import AccountError, ClientInfo, UnverifiedLogin

PW = "correct horse"


def user_by_email(db: Session, email: str) -> User:
    db.expire_all()
    user = db.exec(select(User).where(User.email == email)).one()
    db.rollback()
    return user


# --- sign-up -----------------------------------------------------------------------------------


def test_signup_creates_new_account_and_sends_activation_link(db: Session) -> None:
    result = accounts.signup(db, "  Ann@Example.COM ", PW)
    user = user_by_email(db, "ann@example.com")
    assert (user.status, user.balance, user.id) == ("new", 0, result.user_id)
    assert 8 <= len(user.id) <= 16
    (mail,) = result.mails
    assert mail.kind == "activation" and mail.to == "ann@example.com"
    assert "http://localhost:3000/verify?token=" in mail.text and "/verify?token=" in mail.html
    token = token_of(mail)
    assert len(token) >= 22  # >= 128 bits of randomness, URL-safe
    # Only the hash is stored: the token itself appears nowhere in the database.
    links = db.exec(select(OneTimeLink)).all()
    assert len(links) == 1 and token not in links[0].token_hash and links[0].purpose == "activation"
    assert links[0].expires_at - links[0].created_at == timedelta(hours=24)
    assert user.password_hash.startswith("$2") and PW not in user.password_hash


@pytest.mark.parametrize(
    "email", ["", "no-at-sign", "a@b", "two@@example.com", "x" * 300 + "@e.com"]
)
def test_signup_rejects_invalid_email(db: Session, email: str) -> None:
    with pytest.raises(AccountError) as err:
        accounts.signup(db, email, PW)
    assert err.value.code == "invalid_email" and "valid e-mail" in err.value.message
    assert db.exec(select(User)).all() == []


@pytest.mark.parametrize(
    ("password", "code"),
    [("", "weak_password"), ("1234567", "weak_password"), ("x" * 129, "long_password")],
)
def test_signup_password_length(db: Session, password: str, code: str) -> None:
    with pytest.raises(AccountError) as err:
        accounts.signup(db, "ann@example.com", password)
    assert err.value.code == code


def test_long_passwords_beyond_bcrypt_limit_are_fully_significant(db: Session) -> None:
    long_pw = "ä" * 100  # 200 bytes in UTF-8, far past bcrypt's 72
    make_user(db, "ann@example.com", long_pw)
    assert login_session(db, "ann@example.com", long_pw)
    with pytest.raises(AccountError):  # same first 72 bytes, different tail
        accounts.login(db, "ann@example.com", "ä" * 99 + "b")


def test_signup_with_taken_email_answers_the_same_and_mails_the_owner(db: Session) -> None:
    first = accounts.signup(db, "ann@example.com", PW)
    clock.travel(timedelta(minutes=2))
    again = accounts.signup(db, "ANN@example.com", "another password")
    assert again.message == first.message
    assert again.user_id is None
    assert [m.kind for m in again.mails] == ["activation"]  # still `new`: a fresh link
    accounts.activate(db, token_of(again.mails[0]))
    third = accounts.signup(db, "ann@example.com", "yet another one")
    assert third.message == first.message and [m.kind for m in third.mails] == [
        "already_registered"
    ]
    assert len(db.exec(select(User)).all()) == 1
    # The password was not changed by the second sign-up.
    assert login_session(db, "ann@example.com", PW)


def test_signup_keeps_utm_parameters(db: Session) -> None:
    accounts.signup(
        db, "ann@example.com", PW, utm={"utm_source": "fb", "utm_campaign": "lipsync", "evil": "x"}
    )
    assert user_by_email(db, "ann@example.com").signup_utm == {
        "utm_source": "fb",
        "utm_campaign": "lipsync",
    }


def test_signup_writes_user_sessions_outbox_row(db: Session) -> None:
    client = ClientInfo(ip="203.0.113.9", user_agent="Mozilla/5.0 test", geo="DE")
    result = accounts.signup(db, "ann@example.com", PW, client)
    rows = db.exec(select(AnalyticsOutbox)).all()
    assert len(rows) == 1
    row = rows[0]
    assert row.table_name == "user_sessions" and row.delivered_at is None
    assert row.row["action"] == "signup"
    assert row.row["userid"] == result.user_id and row.row["email"] == "ann@example.com"
    assert (row.row["ip"], row.row["useragent"], row.row["geo"]) == (
        "203.0.113.9",
        "Mozilla/5.0 test",
        "DE",
    )
    assert row.row["timestamp"]


def test_signup_rate_limited_per_ip(db: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNUPS_PER_IP_PER_HOUR", "3")
    from vgen_app.config import reset_settings

    reset_settings()
    client = ClientInfo(ip="198.51.100.1")
    for i in range(3):
        accounts.signup(db, f"u{i}@example.com", PW, client)
    with pytest.raises(AccountError) as err:
        accounts.signup(db, "u9@example.com", PW, client)
    assert err.value.code == "rate_limited"
    accounts.signup(db, "u9@example.com", PW, ClientInfo(ip="198.51.100.2"))  # other IP is fine
    clock.travel(timedelta(hours=1, seconds=1))
    accounts.signup(db, "u10@example.com", PW, client)


# --- activation --------------------------------------------------------------------------------


def test_activation_link_is_single_use(db: Session) -> None:
    token = token_of(accounts.signup(db, "ann@example.com", PW).mails[0])
    accounts.activate(db, token)
    assert user_by_email(db, "ann@example.com").status == "activated"
    with pytest.raises(AccountError) as err:
        accounts.activate(db, token)
    assert err.value.code == "bad_link"


def test_a_used_activation_link_of_an_active_account_says_log_in(db: Session) -> None:
    """Issue K: opened again after the account is active, the link says so (not "invalid"); the
    e-mail comes back with a successful activation, to fill in the login form."""
    token = token_of(accounts.signup(db, "ann@example.com", PW).mails[0])
    assert accounts.activate(db, token).email == "ann@example.com"
    with pytest.raises(AccountError) as err:
        accounts.activate(db, token)
    assert "already active" in err.value.message
    with pytest.raises(AccountError) as err:
        accounts.activate(db, "never-issued")
    assert "invalid, expired or already used" in err.value.message


def test_activation_link_expires_after_24_hours(db: Session) -> None:
    t1 = token_of(accounts.signup(db, "ann@example.com", PW).mails[0])
    clock.travel(timedelta(hours=24, seconds=1))
    with pytest.raises(AccountError):
        accounts.activate(db, t1)
    assert user_by_email(db, "ann@example.com").status == "new"


def test_activation_link_still_valid_just_before_24_hours(db: Session) -> None:
    token = token_of(accounts.signup(db, "ann@example.com", PW).mails[0])
    clock.travel(timedelta(hours=23, minutes=59))
    accounts.activate(db, token)
    assert user_by_email(db, "ann@example.com").status == "activated"


@pytest.mark.parametrize("token", ["", "nonsense", "x" * 500])
def test_activation_with_unknown_token_is_refused(db: Session, token: str) -> None:
    with pytest.raises(AccountError):
        accounts.activate(db, token)


def test_activation_does_not_unblock(db: Session) -> None:
    result = accounts.signup(db, "ann@example.com", PW)
    accounts.set_status(db, result.user_id, "blocked")
    with pytest.raises(AccountError) as err:
        accounts.activate(db, token_of(result.mails[0]))
    assert err.value.code == "blocked"
    assert user_by_email(db, "ann@example.com").status == "blocked"


def test_concurrent_redemptions_of_one_link_only_one_wins(database_url: str) -> None:
    with session_scope() as db:
        token = token_of(accounts.signup(db, "ann@example.com", PW).mails[0])
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def redeem() -> None:
        barrier.wait()
        with session_scope() as s:
            try:
                accounts.activate(s, token)
                outcomes.append("ok")
            except AccountError:
                outcomes.append("refused")

    threads = [threading.Thread(target=redeem) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok"] + ["refused"] * 7


# --- login -------------------------------------------------------------------------------------


def test_login_of_new_account_is_refused_and_sends_fresh_activation_link(db: Session) -> None:
    first = token_of(accounts.signup(db, "ann@example.com", PW).mails[0])
    clock.travel(timedelta(minutes=1, seconds=1))
    with pytest.raises(UnverifiedLogin) as err:
        accounts.login(db, "ann@example.com", PW)
    assert "Verify your e-mail" in err.value.message
    (mail,) = err.value.mails
    fresh = token_of(mail)
    assert mail.kind == "activation" and fresh != first
    # Within the mail interval, another attempt is refused the same way but sends no new mail.
    with pytest.raises(UnverifiedLogin) as again:
        accounts.login(db, "ann@example.com", PW)
    assert again.value.mails == []
    assert "a moment ago" in again.value.message  # no false claim of a new mail
    accounts.activate(db, fresh)
    assert login_session(db, "ann@example.com")


def test_login_of_new_account_with_wrong_password_sends_nothing(db: Session) -> None:
    accounts.signup(db, "ann@example.com", PW)
    clock.travel(timedelta(minutes=5))
    with pytest.raises(AccountError) as err:
        accounts.login(db, "ann@example.com", "wrong password")
    assert not isinstance(err.value, UnverifiedLogin)
    assert err.value.message == accounts.WRONG_CREDENTIALS


def test_wrong_password_and_unknown_email_get_one_generic_message(db: Session) -> None:
    make_user(db, "ann@example.com")
    messages = set()
    for email, pw in [
        ("ann@example.com", "bad password"),
        ("nobody@example.com", PW),
        ("junk", PW),
    ]:
        with pytest.raises(AccountError) as err:
            accounts.login(db, email, pw)
        messages.add((err.value.code, err.value.message))
    assert messages == {("bad_credentials", "Wrong e-mail or password.")}


def test_blocked_account_cannot_log_in(db: Session) -> None:
    user_id = make_user(db, "ann@example.com")
    accounts.set_status(db, user_id, "blocked")
    with pytest.raises(AccountError) as err:
        accounts.login(db, "ann@example.com", PW)
    assert err.value.code == "blocked" and "blocked" in err.value.message
    # With a wrong password it gets the generic answer: no hint that the account exists.
    with pytest.raises(AccountError) as err2:
        accounts.login(db, "ann@example.com", "bad password")
    assert err2.value.code == "bad_credentials"


def test_login_ticket_is_single_use_and_short_lived(db: Session) -> None:
    make_user(db, "ann@example.com")
    ticket = accounts.login(db, "ann@example.com", PW).ticket
    assert ticket
    token, _user = accounts.redeem_login_ticket(db, ticket)
    assert sessions.validate(db, token).email == "ann@example.com"
    with pytest.raises(AccountError):
        accounts.redeem_login_ticket(db, ticket)
    late = accounts.login(db, "ann@example.com", PW).ticket
    clock.travel(timedelta(seconds=61))
    with pytest.raises(AccountError):
        accounts.redeem_login_ticket(db, late)


def test_login_ticket_refused_once_user_is_blocked(db: Session) -> None:
    user_id = make_user(db, "ann@example.com")
    ticket = accounts.login(db, "ann@example.com", PW).ticket
    accounts.set_status(db, user_id, "blocked")
    with pytest.raises(AccountError):
        accounts.redeem_login_ticket(db, ticket)


def test_successful_login_writes_one_user_sessions_row(db: Session) -> None:
    user_id = make_user(db, "ann@example.com")
    before = len(db.exec(select(AnalyticsOutbox)).all())
    ticket = accounts.login(db, "ann@example.com", PW).ticket
    accounts.redeem_login_ticket(
        db, ticket, ClientInfo(ip="192.0.2.7", user_agent="Chromium", geo="FR")
    )
    rows = db.exec(select(AnalyticsOutbox).order_by(AnalyticsOutbox.id)).all()
    assert len(rows) == before + 1
    assert rows[-1].table_name == "user_sessions"
    assert {
        k: rows[-1].row[k] for k in ("action", "userid", "email", "ip", "useragent", "geo")
    } == {
        "action": "login",
        "userid": user_id,
        "email": "ann@example.com",
        "ip": "192.0.2.7",
        "useragent": "Chromium",
        "geo": "FR",
    }
    # A failed login writes no analytics row.
    with pytest.raises(AccountError):
        accounts.login(db, "ann@example.com", "bad password")
    assert len(db.exec(select(AnalyticsOutbox)).all()) == before + 1


def test_failed_logins_are_rate_limited_per_email(db: Session) -> None:
    make_user(db, "ann@example.com")
    for i in range(5):
        with pytest.raises(AccountError) as err:
            accounts.login(db, "ann@example.com", f"bad password {i}", ClientInfo(ip=f"10.1.0.{i}"))
        assert err.value.code == "bad_credentials"
    # Even the right password is refused now, with a clear message and a wait time.
    with pytest.raises(AccountError) as err:
        accounts.login(db, "ann@example.com", PW, ClientInfo(ip="10.9.9.9"))
    assert err.value.code == "rate_limited" and "Try again in 15 minutes" in err.value.message
    clock.travel(timedelta(minutes=15, seconds=1))
    assert login_session(db, "ann@example.com")


def test_failed_logins_are_rate_limited_per_ip(db: Session) -> None:
    make_user(db, "ann@example.com")
    attacker = ClientInfo(ip="203.0.113.66")
    for i in range(20):
        with pytest.raises(AccountError):
            accounts.login(db, f"victim{i}@example.com", "guess", attacker)
    with pytest.raises(AccountError) as err:
        accounts.login(db, "ann@example.com", PW, attacker)
    assert err.value.code == "rate_limited" and "network" in err.value.message
    # Someone else is unaffected.
    assert accounts.login(db, "ann@example.com", PW, ClientInfo(ip="203.0.113.67")).ticket


def test_successful_login_forgives_earlier_failures(db: Session) -> None:
    make_user(db, "ann@example.com")
    for _ in range(4):
        with pytest.raises(AccountError):
            accounts.login(db, "ann@example.com", "bad password")
    assert login_session(db, "ann@example.com")
    for _ in range(4):
        with pytest.raises(AccountError) as err:
            accounts.login(db, "ann@example.com", "bad password")
        assert err.value.code == "bad_credentials"


# --- password reset ----------------------------------------------------------------------------


def test_reset_request_answers_the_same_whatever_the_email(db: Session) -> None:
    make_user(db, "ann@example.com")
    blocked = make_user(db, "bob@example.com")
    accounts.set_status(db, blocked, "blocked")
    answers = {}
    for email in ["ann@example.com", "nobody@example.com", "bob@example.com"]:
        result = passwords.request_password_reset(db, email)
        answers[email] = (result.message.replace(email, "<email>"), [m.kind for m in result.mails])
    assert {a[0] for a in answers.values()} == {passwords.RESET_SENT.format(email="<email>")}
    assert answers["ann@example.com"][1] == ["reset"]
    assert answers["nobody@example.com"][1] == []  # no mail to unknown addresses
    assert answers["bob@example.com"][1] == []  # nor to blocked accounts


def test_reset_for_new_account_sends_activation_link_instead(db: Session) -> None:
    accounts.signup(db, "ann@example.com", PW)
    clock.travel(timedelta(minutes=2))
    result = passwords.request_password_reset(db, "ann@example.com")
    assert [m.kind for m in result.mails] == ["activation"]
    assert "/verify?token=" in result.mails[0].text


def test_reset_changes_password_and_revokes_all_sessions(db: Session) -> None:
    make_user(db, "ann@example.com")
    s1 = login_session(db, "ann@example.com")
    s2 = login_session(db, "ann@example.com")
    (mail,) = passwords.request_password_reset(db, "ann@example.com").mails
    assert "http://localhost:3000/reset?token=" in mail.text
    passwords.reset_password(db, token_of(mail), "brand new secret")
    assert sessions.validate(db, s1) is None and sessions.validate(db, s2) is None
    with pytest.raises(AccountError):
        accounts.login(db, "ann@example.com", PW)
    assert login_session(db, "ann@example.com", "brand new secret")


def test_reset_link_is_single_use(db: Session) -> None:
    make_user(db, "ann@example.com")
    token = token_of(passwords.request_password_reset(db, "ann@example.com").mails[0])
    passwords.reset_password(db, token, "brand new secret")
    assert not passwords.check_reset_token(db, token)
    with pytest.raises(AccountError) as err:
        passwords.reset_password(db, token, "another secret")
    assert err.value.code == "bad_link"
    assert login_session(db, "ann@example.com", "brand new secret")


def test_reset_link_expires_after_24_hours(db: Session) -> None:
    make_user(db, "ann@example.com")
    token = token_of(passwords.request_password_reset(db, "ann@example.com").mails[0])
    clock.travel(timedelta(hours=23, minutes=59))
    assert passwords.check_reset_token(db, token)
    clock.travel(timedelta(minutes=1, seconds=1))
    assert not passwords.check_reset_token(db, token)
    with pytest.raises(AccountError):
        passwords.reset_password(db, token, "brand new secret")


def test_newer_reset_link_voids_older_ones(db: Session) -> None:
    make_user(db, "ann@example.com")
    old = token_of(passwords.request_password_reset(db, "ann@example.com").mails[0])
    clock.travel(timedelta(minutes=1, seconds=1))
    new = token_of(passwords.request_password_reset(db, "ann@example.com").mails[0])
    assert not passwords.check_reset_token(db, old)
    with pytest.raises(AccountError):
        passwords.reset_password(db, old, "brand new secret")
    passwords.reset_password(db, new, "brand new secret")


def test_reset_mail_is_sent_at_most_once_a_minute(db: Session) -> None:
    make_user(db, "ann@example.com")
    first = passwords.request_password_reset(db, "ann@example.com")
    second = passwords.request_password_reset(db, "ann@example.com")
    assert len(first.mails) == 1 and second.mails == []
    assert second.message == first.message
    assert passwords.check_reset_token(db, token_of(first.mails[0]))  # not voided by the flood


def test_reset_rejects_weak_password_without_spending_the_link(db: Session) -> None:
    make_user(db, "ann@example.com")
    token = token_of(passwords.request_password_reset(db, "ann@example.com").mails[0])
    with pytest.raises(AccountError) as err:
        passwords.reset_password(db, token, "short")
    assert err.value.code == "weak_password"
    assert passwords.check_reset_token(db, token)


def test_reset_requests_rate_limited_per_ip(db: Session) -> None:
    client = ClientInfo(ip="198.51.100.5")
    for i in range(30):
        passwords.request_password_reset(db, f"x{i}@example.com", client)
    with pytest.raises(AccountError) as err:
        passwords.request_password_reset(db, "y@example.com", client)
    assert err.value.code == "rate_limited"


# --- sessions and status -----------------------------------------------------------------------


def test_session_validate_touch_and_expiry(db: Session) -> None:
    make_user(db, "ann@example.com")
    token = login_session(db, "ann@example.com")
    row = db.exec(select(UserSession)).one()
    assert token not in row.token_hash and row.ip == "10.0.0.1"
    first_seen = row.last_seen_at
    clock.travel(timedelta(minutes=5))
    assert sessions.validate(db, token).email == "ann@example.com"
    sessions.seen_written()
    db.expire_all()
    assert db.exec(select(UserSession)).one().last_seen_at > first_seen
    clock.travel(timedelta(days=30))
    assert sessions.validate(db, token) is None
    assert sessions.validate(db, "") is None and sessions.validate(db, "garbage") is None


def test_logout_revokes_only_that_session(db: Session) -> None:
    make_user(db, "ann@example.com")
    a = login_session(db, "ann@example.com")
    b = login_session(db, "ann@example.com")
    assert sessions.revoke(db, a)
    assert sessions.validate(db, a) is None
    assert sessions.validate(db, b) is not None


def test_blocking_revokes_sessions_at_once_and_activation_by_admin(db: Session) -> None:
    user_id = make_user(db, "ann@example.com")
    token = login_session(db, "ann@example.com")
    change = accounts.set_status(db, user_id, "blocked")
    assert (change.previous_status, change.status) == ("activated", "blocked")
    assert sessions.validate(db, token) is None
    assert sessions.active_count(db, user_id) == 0
    # An operator can activate someone who never got the mail.
    result = accounts.signup(db, "carl@example.com", PW)
    accounts.set_status(db, result.user_id, "activated")
    assert login_session(db, "carl@example.com")


def test_set_status_refuses_unknown_user_and_status(db: Session) -> None:
    user_id = make_user(db, "ann@example.com")
    with pytest.raises(AccountError) as err:
        accounts.set_status(db, "nope", "blocked")
    assert err.value.code == "not_found"
    with pytest.raises(AccountError) as err:
        accounts.set_status(db, user_id, "admin")
    assert err.value.code == "bad_status"
