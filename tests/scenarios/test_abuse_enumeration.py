"""Issue H: account enumeration through the pages' handlers (SQLite and PostgreSQL).

Login, sign-up and reset request answer alike (message and state) for known and unknown addresses,
and run the same bcrypt work on both paths (counted, and timed as a figure); a taken address
cannot be used to flood its owner's inbox.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import event as sa_event

from tests.helpers import make_user, ui_state
from tests.scenarios import abuse_helpers
from tests.scenarios.abuse_helpers import PW, _call, _js, _login, _run, _snapshot
from vgen_app import clock
from vgen_app.adapters import mail
from vgen_app.config import get_settings, reset_settings
from vgen_app.db import session_scope, with_db
from vgen_app.services import accounts, passwords

bcrypt_calls = abuse_helpers.bcrypt_calls


def _people(db: Any) -> dict[str, str]:
    """One address of every kind an attacker might probe."""
    make_user(db, "active@example.com")
    accounts.signup(db, "new@example.com", PW)  # never activated
    blocked = make_user(db, "blocked@example.com")
    accounts.set_status(db, blocked, "blocked")
    return {
        "activated": "active@example.com",
        "new": "new@example.com",
        "blocked": "blocked@example.com",
        "unknown": "nobody@example.com",
    }


def _generic(text: str, email: str) -> str:
    return text.replace(quote(email, safe=""), "<email>").replace(email, "<email>")


def test_login_answers_alike_and_checks_a_hash_for_every_address(
    database_url: str, bcrypt_calls: list, figure: Callable[[str], None]
) -> None:
    """One bcrypt check on every path, also the first time (the unknown path's dummy hash used
    to be hashed on first use: two bcrypt rounds for the first unknown address of a worker)."""
    from vgen_app.services import security
    from vgen_app.ui.auth import LoginState

    security._dummy_hash.cache_clear()  # as in a fresh worker

    with session_scope() as db:
        people = _people(db)
    answers, work = {}, {}
    for who, email in people.items():
        bcrypt_calls.clear()
        state = ui_state(LoginState, "/login", ip=f"10.11.{len(answers)}.1")
        events = _run(state, "submit", {"email": email, "password": "wrong guess"})
        answers[who] = (state.login_error, _generic(_js(events), email), _snapshot(state))
        work[who] = list(bcrypt_calls)
    assert answers["activated"][0] == accounts.WRONG_CREDENTIALS
    assert all(a == answers["activated"] for a in answers.values()), answers
    # The same expensive work: one bcrypt check, at the same cost, known address or not.
    assert all(w == work["activated"] for w in work.values()), work
    assert [c for c, _ in work["unknown"]] == ["check"]
    assert work["unknown"][0][1] == f"$2b${get_settings().bcrypt_rounds:02d}$".encode()
    # The lockout is per address whether or not it exists: no enumeration through it either.
    locked = set()
    for who, email in people.items():
        for i in range(get_settings().login_max_failures_per_email + 1):
            state, _ = _login(email, f"guess {i}", f"10.12.{i}.{len(locked) + 1}")
        locked.add(state.login_error)
    assert len(locked) == 1 and next(iter(locked)).startswith("Too many failed attempts")
    figure(
        f"login with a wrong password for {len(people)} kinds of address ({', '.join(people)}): "
        f"1 answer, 1 state; bcrypt per attempt: {work['unknown']} on every path; "
        "the lockout message after the limit: 1 for all"
    )


def test_signup_answers_alike_and_hashes_for_every_address(
    database_url: str, bcrypt_calls: list, figure: Callable[[str], None]
) -> None:
    from vgen_app.ui.auth import SignupState

    with session_scope() as db:
        people = _people(db)
    answers, work = {}, {}
    for who, email in people.items():
        bcrypt_calls.clear()
        state = ui_state(SignupState, "/signup", ip=f"10.13.{len(answers)}.1")
        events = _run(state, "submit", {"email": email, "password": "some password"})
        answers[who] = (state.signup_error, _generic(_js(events), email))
        snap = _snapshot(state)
        answers[who] += (snap,)
        work[who] = list(bcrypt_calls)
    assert "/check-email?email=<email>" in answers["unknown"][1]
    assert all(a == answers["unknown"] for a in answers.values()), answers
    assert all(w == work["unknown"] for w in work.values()), work
    assert [c for c, _ in work["unknown"]] == ["hash"]
    figure(
        f"sign-up with {len(people)} kinds of address ({', '.join(people)}): 1 answer "
        f"(-> /check-email), 1 state; bcrypt per attempt: {work['unknown']} on every path"
    )


@pytest.fixture
def sql_log(database_url: str) -> Iterator[list[str]]:
    """The SQL statements the app runs (text only), while the test records them."""
    from vgen_app.db import get_engine

    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = get_engine()
    sa_event.listen(engine, "before_cursor_execute", record)
    yield statements
    sa_event.remove(engine, "before_cursor_execute", record)


def test_reset_request_answers_alike_for_every_address(
    database_url: str,
    bcrypt_calls: list,
    sql_log: list[str],
    monkeypatch: pytest.MonkeyPatch,
    figure: Callable[[str], None],
) -> None:
    """Same answer, and the same work before it: the page answers after the part of the request
    that is alike for every address; the link (or nothing) is made after the answer. It used to
    be made before, so an unknown address answered in about half the time of a known one (see
    test_enumeration_timing_figure)."""
    from vgen_app.ui.auth import ForgotState

    with session_scope() as db:
        people = _people(db)
    answers, work, later = {}, {}, []
    real = passwords.reset_link_mails

    def after_the_answer(db: Any, email: str) -> Any:
        later.append((email, state.forgot_done))  # what the page showed when this began
        return real(db, email)

    monkeypatch.setattr(passwords, "reset_link_mails", after_the_answer)

    async def ask(email: str) -> tuple:
        events = await _call(state, "submit", {"email": email})
        before_answer = list(sql_log)
        await mail.drain()
        answer = (
            state.forgot_error,
            _generic(state.forgot_done, email),
            _generic(_js(events), email),
        )
        return answer, before_answer

    for who, email in people.items():
        state = ui_state(ForgotState, "/forgot", ip="10.14.0.1")
        bcrypt_calls.clear()
        sql_log.clear()
        answers[who], statements = asyncio.run(ask(email))
        work[who] = (list(bcrypt_calls), statements)
    assert answers["unknown"][1] == passwords.RESET_SENT.format(email="<email>")
    assert all(a == answers["unknown"] for a in answers.values()), answers
    # The same SQL, and no bcrypt, before the answer on every path.
    assert all(w == work["unknown"] for w in work.values()), work
    # The account-dependent part ran for each, after the answer was on the page.
    assert [email for email, _ in later] == list(people.values())
    assert all(shown.startswith("If an account exists for ") for _, shown in later)
    # And it did its job: a reset link to the activated account, nothing to the others (the
    # `new` one had its activation link a moment ago: throttled).
    sent = [p.read_text() for p in get_settings().mail_outbox_dir.glob("*.eml")]
    resets = [t for t in sent if "X-Vgen-Kind: reset" in t]
    assert len(resets) == 1 and "To: active@example.com" in resets[0]
    figure(
        f"reset request for {len(people)} kinds of address: 1 answer; before it, the same "
        f"{len(work['unknown'][1])} SQL statements and no bcrypt on every path; the link (1 mail, "
        "to the activated account) made after the answer"
    )


def test_signup_with_a_taken_address_cannot_flood_its_inbox(database_url: str) -> None:
    """Each sign-up with an activated address mailed its owner a notice: a mail bomb at the rate
    limit per IP, unbounded from many IPs. Now at most one such mail per address per interval."""
    interval = get_settings().mail_link_interval_seconds
    with session_scope() as db:
        make_user(db, "ann@example.com")
        kinds = []
        for i in range(10):
            result = accounts.signup(
                db, "ann@example.com", "x password", accounts.ClientInfo(ip=f"10.15.{i}.1")
            )
            assert result.message == accounts.CHECK_INBOX.format(email="ann@example.com")
            kinds += [m.kind for m in result.mails]
        assert kinds == ["already_registered"]
        clock.travel(timedelta(seconds=interval + 1))
        again = accounts.signup(db, "ann@example.com", "x password")
        assert [m.kind for m in again.mails] == ["already_registered"]


def _answer_ms(cls: type, path: str, form: dict[str, str], ip: str) -> float:
    """How long the page takes to answer one submit (what an attacker can time)."""

    async def go() -> float:
        state = ui_state(cls, path, ip=ip)
        start = time.perf_counter()
        await _call(state, "submit", form)
        elapsed = (time.perf_counter() - start) * 1000
        await mail.drain()
        return elapsed

    return asyncio.run(go())


def _service_ms(fn: Callable[..., Any], *args: Any) -> float:
    start = time.perf_counter()
    with_db(fn, *args)
    return (time.perf_counter() - start) * 1000


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_enumeration_timing_figure(
    database_url: str, monkeypatch: pytest.MonkeyPatch, figure: Callable[[str], None]
) -> None:
    """Known vs unknown address, through the pages' handlers at a realistic bcrypt cost.
    Printed as a figure, never asserted (the structural checks are the tests above)."""
    from vgen_app.ui.auth import ForgotState, LoginState, SignupState

    monkeypatch.setenv("BCRYPT_ROUNDS", "10")
    reset_settings()
    with session_scope() as db:
        make_user(db, "known@example.com")
    fresh = iter(range(10_000))
    # (repetitions, probe): fewer of the bcrypt-bound ones, many of the fast ones (noisier).
    probes = {
        "login": (
            15,
            lambda email: _answer_ms(
                LoginState, "/login", {"email": email, "password": "wrong password"}, "10.16.0.1"
            ),
        ),
        "signup": (
            15,
            lambda email: _answer_ms(
                SignupState, "/signup", {"email": email, "password": "some password"}, "10.16.0.2"
            ),
        ),
        "reset request": (
            51,
            lambda email: _answer_ms(ForgotState, "/forgot", {"email": email}, "10.16.0.3"),
        ),
        # What the reset page used to wait for: the whole request, link included.
        "reset request before the fix": (
            51,
            lambda email: _service_ms(
                passwords.request_password_reset, email, accounts.ClientInfo(ip="10.16.0.4")
            ),
        ),
    }
    results = {}
    for name, (reps, probe) in probes.items():
        known, unknown = [], []
        for _ in range(reps):  # interleaved, each out of every rate limit and mail throttle
            clock.travel(timedelta(hours=1, minutes=1))
            known.append(probe("known@example.com"))
            clock.travel(timedelta(hours=1, minutes=1))
            unknown.append(probe(f"fresh{next(fresh)}@example.com"))
        results[name] = reps, statistics.median(known), statistics.median(unknown)
    figure(
        "page answer time (median), bcrypt cost 10, known vs unknown address: "
        + "; ".join(
            f"{name} {k:.1f} vs {u:.1f} ms (unknown/known {u / k:.2f}x, n={n})"
            for name, (n, k, u) in results.items()
        )
    )
