"""In-process app tests: the API routes through the real Reflex ASGI app, and the UI states' handlers.

The whole Reflex app (with its FastAPI sub-app) runs under Starlette's TestClient: lifespan, CORS,
cookies. States are instantiated directly with a RouterData, as a socket would give them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from http.cookies import SimpleCookie
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from tests.helpers import TOKEN_RE, login_session, make_user, token_of, ui_state
from vgen_app.api import auth_routes
from vgen_app.api.errors import RETRY_AFTER_S
from vgen_app.config import reset_settings
from vgen_app.db import session_scope, with_db
from vgen_app.models import AnalyticsOutbox, User
from vgen_app.services import accounts, passwords, sessions

ORIGIN = "http://localhost:3000"
PW = "correct horse"


@pytest.fixture
def client(asgi_app: Any, database_url: str) -> Iterator[TestClient]:
    with TestClient(asgi_app, base_url=ORIGIN) as c:
        yield c


def _ticket(email: str = "ann@example.com") -> str:
    with session_scope() as db:
        make_user(db, email)
        result = accounts.login(db, email, PW)
    assert result.ticket
    return result.ticket


def _set_cookie(response: Any) -> SimpleCookie:
    jar = SimpleCookie()
    jar.load(response.headers["set-cookie"])
    return jar


# --- HTTP: CORS, the session route, logout ---------------------------------------------------


def test_ping(client: TestClient) -> None:
    assert client.get("/ping").status_code == 200


def test_foreign_origin_gets_no_cors_permission(client: TestClient) -> None:
    evil = {"Origin": "https://evil.example"}
    assert "access-control-allow-origin" not in client.get("/ping", headers=evil).headers
    pre = client.options(
        "/api/auth/logout", headers={**evil, "Access-Control-Request-Method": "POST"}
    )
    assert pre.status_code == 400
    assert "access-control-allow-origin" not in pre.headers
    # The Socket.IO endpoint refuses the foreign origin too.
    sio = client.get("/_event/?EIO=4&transport=polling", headers=evil)
    assert sio.status_code == 400 and "not an accepted origin" in sio.text
    ours = client.get("/ping", headers={"Origin": ORIGIN})
    assert ours.headers["access-control-allow-origin"] == ORIGIN


def test_ticket_sets_httponly_session_cookie_and_redirects(client: TestClient) -> None:
    ticket = _ticket()
    response = client.get(
        f"/api/auth/session?ticket={ticket}&next=%2Ftokens", follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"] == f"{ORIGIN}/tokens"
    raw = response.headers["set-cookie"]
    morsel = _set_cookie(response)["vgen_session"]
    assert "HttpOnly" in raw and "SameSite=lax" in raw and "Path=/" in raw
    assert "Secure" not in raw  # APP_URL is http here
    assert with_db(sessions.validate, morsel.value).email == "ann@example.com"
    # The ticket is single use.
    again = client.get(f"/api/auth/session?ticket={ticket}", follow_redirects=False)
    assert again.headers["location"] == f"{ORIGIN}/login?expired=1"
    assert "set-cookie" not in again.headers


def test_ticket_met_by_a_database_outage_gets_a_page_that_retries_and_still_logs_in(
    client: TestClient, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticket = _ticket()
    url = f"/api/auth/session?ticket={ticket}&next=%2Ftokens"
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/vgen")  # nobody there
    reset_settings()
    away = client.get(url, follow_redirects=False)
    # A page a person can read (not JSON, not a 500), which loads the same address again.
    assert away.status_code == 503 and away.headers["content-type"].startswith("text/html")
    assert away.headers["retry-after"] == str(RETRY_AFTER_S)
    assert f'http-equiv="refresh" content="{RETRY_AFTER_S}"' in away.text
    assert auth_routes.RETRY_WORDS in away.text and "set-cookie" not in away.headers
    assert '<a href="">Try again now</a>' in away.text  # the same address, at once
    assert away.headers["cache-control"] == "no-store"
    assert away.headers["referrer-policy"] == "no-referrer"  # the address holds the ticket
    # The database back: the same address (the page's reload) logs in with the same ticket.
    monkeypatch.setenv("DATABASE_URL", database_url)
    reset_settings()
    back = client.get(url, follow_redirects=False)
    assert back.status_code == 303 and back.headers["location"] == f"{ORIGIN}/tokens"
    assert with_db(sessions.validate, _set_cookie(back)["vgen_session"].value).email == (
        "ann@example.com"
    )


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example", "\\\\evil"])
def test_session_route_never_redirects_off_site(client: TestClient, target: str) -> None:
    response = client.get(
        "/api/auth/session", params={"ticket": _ticket(), "next": target}, follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"] == f"{ORIGIN}/"


def test_session_route_refuses_cross_site_navigation(client: TestClient) -> None:
    ticket = _ticket()
    response = client.get(
        f"/api/auth/session?ticket={ticket}",
        headers={"Sec-Fetch-Site": "cross-site"},
        follow_redirects=False,
    )
    assert (
        response.headers["location"] == f"{ORIGIN}/login" and "set-cookie" not in response.headers
    )


def test_login_row_records_ip_and_geo_only_from_trusted_proxy(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    forged = {"X-Forwarded-For": "198.51.100.23", "CF-IPCountry": "NL", "User-Agent": "UA/1"}
    client.get(
        f"/api/auth/session?ticket={_ticket('a@example.com')}",
        headers=forged,
        follow_redirects=False,
    )
    monkeypatch.setenv("TRUSTED_PROXY_HOPS", "1")
    reset_settings()
    client.get(
        f"/api/auth/session?ticket={_ticket('b@example.com')}",
        headers=forged,
        follow_redirects=False,
    )
    with session_scope() as db:
        rows = [r.row for r in db.exec(select(AnalyticsOutbox)) if r.row["action"] == "login"]
    by_email = {r["email"]: r for r in rows}
    assert by_email["a@example.com"]["ip"] == "testclient"  # the socket peer, headers ignored
    assert by_email["a@example.com"]["geo"] is None
    assert by_email["b@example.com"]["ip"] == "198.51.100.23"
    assert by_email["b@example.com"]["geo"] == "NL"
    assert by_email["b@example.com"]["useragent"] == "UA/1"


def test_logout_revokes_the_session_and_clears_the_cookie(client: TestClient) -> None:
    client.get(f"/api/auth/session?ticket={_ticket()}", follow_redirects=False)
    token = client.cookies.get("vgen_session")
    assert token and with_db(sessions.validate, token)
    response = client.post("/api/auth/logout")
    assert response.status_code == 200
    assert (
        'vgen_session=""' in response.headers["set-cookie"]
        or "Max-Age=0" in response.headers["set-cookie"]
    )
    assert with_db(sessions.validate, token) is None


def test_secure_host_cookie_on_https(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_URL", "https://app.vgen.com")
    reset_settings()
    response = client.get(f"/api/auth/session?ticket={_ticket()}", follow_redirects=False)
    raw = response.headers["set-cookie"]
    assert raw.startswith("__Host-vgen_session=") and "Secure" in raw and "HttpOnly" in raw


def test_no_framework_docs_at_the_root(client: TestClient) -> None:
    for path in ("/docs", "/redoc", "/openapi.json"):
        response = client.get(path, follow_redirects=False)
        assert "swagger" not in response.text.lower() and '"openapi"' not in response.text


# --- UI states: the guard and the auth handlers ------------------------------------------------


async def _collect(result: Any) -> list[Any]:
    if hasattr(result, "__aiter__"):
        return [e async for e in result]
    if asyncio.iscoroutine(result):
        result = await result
    return [] if result is None else [result]


def _js(events: list[Any]) -> str:
    return " ".join(str(e) for e in events)


def test_guard_redirects_without_a_valid_session(database_url: str) -> None:
    from vgen_app.ui.session import SessionState

    for cookie in ["", "vgen_session=forged-token", "garbage;;=="]:
        state = ui_state(SessionState, "/tokens?page=2", cookie)
        state.user_email, state.authenticated = "stale@example.com", True  # stale tab state
        events = asyncio.run(_collect(state.require_login()))
        assert "/login?next=%2Ftokens%3Fpage%3D2" in _js(events)
        assert (state.user_email, state.authenticated) == ("", False)


def test_guard_admits_a_valid_session_and_rejects_it_once_revoked(database_url: str) -> None:
    from vgen_app.ui.session import SessionState

    with session_scope() as db:
        user_id = make_user(db, "ann@example.com")
        token = login_session(db, "ann@example.com")
    state = ui_state(SessionState, "/", f"other=1; vgen_session={token}")
    assert asyncio.run(_collect(state.require_login())) == []
    assert (state.user_email, state.balance, state.authenticated) == ("ann@example.com", 0, True)
    with session_scope() as db:
        accounts.set_status(db, user_id, "blocked")
    events = asyncio.run(_collect(state.require_login()))
    assert "/login" in _js(events) and state.authenticated is False


def test_login_handler_redirects_through_the_session_route(database_url: str) -> None:
    from vgen_app.ui.auth import LoginState

    with session_scope() as db:
        make_user(db, "ann@example.com")
    state = ui_state(LoginState, "/login?next=/tokens")
    events = asyncio.run(_collect(state.submit({"email": "ann@example.com", "password": PW})))
    js = _js(events)
    assert "window.location.assign" in js and "/api/auth/session?ticket=" in js
    assert "next=%2Ftokens" in js and state.login_error == ""

    bad = ui_state(LoginState, "/login")
    asyncio.run(_collect(bad.submit({"email": "ann@example.com", "password": "nope nope"})))
    assert bad.login_error == "Wrong e-mail or password."


def test_signup_survives_a_failing_mail_provider(
    database_url: str, monkeypatch: pytest.MonkeyPatch, httpserver: Any, figure
) -> None:
    from vgen_app.adapters import mail
    from vgen_app.ui.auth import LoginState, SignupState

    httpserver.expect_request("/emails").respond_with_data("down", status=503)
    monkeypatch.setenv("RESEND_API_KEY", "re_test")
    monkeypatch.setenv("RESEND_API_URL", httpserver.url_for("").rstrip("/"))
    reset_settings()
    state = ui_state(SignupState, "/signup?utm_source=fb&utm_campaign=spring")

    async def run() -> list[Any]:
        events = await _collect(state.submit({"email": "Ann@Example.com", "password": PW}))
        await mail.drain()
        return events

    events = asyncio.run(run())
    assert state.signup_error == ""
    assert "/check-email?email=ann%40example.com" in _js(events)
    assert len(httpserver.log) == 1  # the provider was asked, and failed
    with session_scope() as db:
        user = db.exec(select(User)).one()
        assert user.email == "ann@example.com" and user.status == "new"
        assert user.signup_utm == {"utm_source": "fb", "utm_campaign": "spring"}

    # Two minutes later (links are re-sent at most once a minute) the provider is back.
    # Logging in to the new account is refused and re-sends the link.
    from datetime import timedelta

    from vgen_app import clock

    clock.travel(timedelta(minutes=2))
    httpserver.clear()
    httpserver.expect_request("/emails", "POST").respond_with_json({"id": "mail-2"})
    login = ui_state(LoginState, "/login")

    async def resend() -> None:
        await _collect(login.submit({"email": "ann@example.com", "password": PW}))
        await mail.drain()

    asyncio.run(resend())
    assert "activation link" in login.login_error
    (sent,) = httpserver.log
    body = sent[0].get_json()
    assert body["to"] == ["ann@example.com"]
    token = TOKEN_RE.search(body["text"]).group(1)
    with session_scope() as db:
        accounts.activate(db, token)
        assert db.exec(select(User)).one().status == "activated"
    figure(
        "sign-up while the mail provider answers 503: account created, 1 failed send; "
        f"log-in attempt re-sent the link ({len(httpserver.log)} send), the link activated it"
    )


def test_signup_handler_shows_validation_errors(database_url: str) -> None:
    from vgen_app.ui.auth import SignupState

    state = ui_state(SignupState, "/signup")
    asyncio.run(_collect(state.submit({"email": "not-an-email", "password": PW})))
    assert "valid e-mail" in state.signup_error
    asyncio.run(_collect(state.submit({"email": "ann@example.com", "password": "short"})))
    assert "at least 8" in state.signup_error


def test_verify_and_reset_pages(database_url: str) -> None:
    from vgen_app.ui.auth import ResetState, VerifyState

    with session_scope() as db:
        signup = accounts.signup(db, "ann@example.com", PW)
    token = token_of(signup.mails[0])
    state = ui_state(VerifyState, f"/verify?token={token}")
    asyncio.run(_collect(state.on_load()))
    assert state.verify_status == "ok"
    again = ui_state(VerifyState, f"/verify?token={token}")
    asyncio.run(_collect(again.on_load()))
    assert (
        again.verify_status == "error" and "already active" in again.verify_message
    )  # issue K: not "invalid"

    with session_scope() as db:
        reset_token = token_of(passwords.request_password_reset(db, "ann@example.com").mails[0])
    reset = ui_state(ResetState, f"/reset?token={reset_token}")
    asyncio.run(_collect(reset.on_load()))
    assert reset.reset_status == "form"
    asyncio.run(_collect(reset.submit({"password": "new secret 1", "confirm": "different"})))
    assert reset.reset_error == "The two passwords do not match."
    asyncio.run(_collect(reset.submit({"password": "new secret 1", "confirm": "new secret 1"})))
    assert reset.reset_status == "done"
    bogus = ui_state(ResetState, "/reset?token=bogus")
    asyncio.run(_collect(bogus.on_load()))
    assert bogus.reset_status == "error" and "invalid, expired or already used" in bogus.reset_error


def test_check_email_page_never_echoes_arbitrary_text() -> None:
    from vgen_app.ui.auth import CheckEmailState

    ok = ui_state(CheckEmailState, "/check-email?email=Ann%40Example.com")
    assert ok.check_email_address == "ann@example.com"
    spoof = ui_state(CheckEmailState, "/check-email?email=Send+us+your+password")
    assert spoof.check_email_address == "your e-mail address"


def test_health_checks_the_database(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    assert client.get("/api/health").json() == {"ok": True, "database": "ok"}
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    reset_settings()
    down = client.get("/api/health")
    assert down.status_code == 503 and down.json()["ok"] is False
