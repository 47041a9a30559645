"""Issue H: the session cookie, beyond tests/ui/test_app.py (SQLite and PostgreSQL).

Every flag on http and https, its lifetime, the response's caching, logout deleting the very same
cookie; on https only the `__Host-` cookie counts; the token never reaches the state synced to
the browser.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.helpers import login_session, make_user, ui_state
from tests.scenarios.abuse_helpers import ORIGIN, _js, _run, _ticket
from vgen_app.config import get_settings, reset_settings
from vgen_app.db import session_scope, with_db
from vgen_app.services import sessions


def _attrs(raw: str) -> dict[str, str]:
    """Attributes of one Set-Cookie header, lower-cased names."""
    parts = [p.strip() for p in raw.split(";")]
    return {p.partition("=")[0].lower(): p.partition("=")[2] for p in parts[1:]}


@pytest.fixture(params=["http://localhost:3000", "https://app.vgen.com"])
def app_url_client(
    request: pytest.FixtureRequest,
    asgi_app: Any,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[str, TestClient]]:
    """The app under APP_URL, set before the app's lifespan starts: its background threads read
    the settings too, and one that started reading before a change could cache the old ones."""
    monkeypatch.setenv("APP_URL", request.param)
    reset_settings()
    with TestClient(asgi_app, base_url=ORIGIN) as c:
        yield request.param, c


def test_session_cookie_flags(
    app_url_client: tuple[str, TestClient], figure: Callable[[str], None]
) -> None:
    """test_app.py checks the http flags and Secure + __Host- on https; here every flag on both,
    the lifetime, the response's caching, and that logout deletes the very same cookie."""
    app_url, client = app_url_client
    assert get_settings().app_url == app_url
    https = app_url.startswith("https")
    name = "__Host-vgen_session" if https else "vgen_session"
    response = client.get(f"/api/auth/session?ticket={_ticket()}", follow_redirects=False)
    raw = response.headers["set-cookie"]
    assert raw.startswith(f"{name}=")
    attrs = _attrs(raw)
    assert "httponly" in attrs and attrs["samesite"].lower() == "lax" and attrs["path"] == "/"
    assert "domain" not in attrs  # host-only: never shared with vgen.com or its other subdomains
    assert ("secure" in attrs) is https
    assert int(attrs["max-age"]) == get_settings().session_ttl_days * 86400
    assert response.headers["cache-control"] == "no-store"
    token = raw.split(";")[0].partition("=")[2]
    assert with_db(sessions.validate, token)

    logout = client.post("/api/auth/logout", headers={"cookie": f"{name}={token}"})
    gone = _attrs(logout.headers["set-cookie"])
    assert logout.headers["set-cookie"].startswith(f"{name}=")
    # A browser only replaces a cookie set with the same name, path and (for __Host-) Secure.
    assert gone["path"] == "/" and ("secure" in gone) is https and "httponly" in gone
    assert gone.get("max-age") == "0" or "expires" in gone
    assert with_db(sessions.validate, token) is None
    figure(
        f"{app_url}: {raw.split('=')[0]}; "
        + "; ".join(f"{k}={v}" if v else k for k, v in attrs.items() if k != "expires")
        + "; Cache-Control: no-store; logout deletes it with the same name, Path and Secure"
    )


def test_https_ignores_a_cookie_without_the_host_prefix(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On https only `__Host-vgen_session` counts: a plain `vgen_session` can be planted by a
    sibling subdomain or over plain http (cookie tossing); the guard must not read it."""
    from vgen_app.ui.session import SessionState

    with session_scope() as db:
        make_user(db, "ann@example.com")
        token = login_session(db, "ann@example.com")
    monkeypatch.setenv("APP_URL", "https://app.vgen.com")
    reset_settings()
    tossed = ui_state(SessionState, "/tokens", f"vgen_session={token}")
    assert "/login" in _js(_run(tossed, "require_login"))
    assert not tossed.authenticated
    real = ui_state(SessionState, "/tokens", f"__Host-vgen_session={token}")
    assert _run(real, "require_login") == [] and real.authenticated


def test_the_session_token_never_reaches_the_browser_state(database_url: str) -> None:
    """HttpOnly keeps the cookie from scripts; the state synced to the tab must not carry it
    either (the socket handshake's headers stay on the server)."""
    from vgen_app.ui.session import SessionState
    from vgen_app.ui.tokens import TokensState

    with session_scope() as db:
        make_user(db, "ann@example.com")
        token = login_session(db, "ann@example.com")
    cookie = f"vgen_session={token}"

    async def synced(state: Any) -> str:
        return repr(await state._get_resolved_delta()) + repr(state.dict())

    texts = []
    for cls, handler in ((SessionState, "require_login"), (TokensState, "on_load")):
        state = ui_state(cls, "/tokens", cookie)
        _run(state, handler)
        assert state.authenticated
        texts.append(asyncio.run(synced(state)))
    assert "ann@example.com" in texts[0]  # the delta is what we think it is
    for text in texts:
        assert token not in text and "vgen_session" not in text
