"""Security headers on every response (SPEC §11, `vgen_app/api/headers.py`): the rules of
`security_headers()`, and the headers on real responses of the in-process app — an API route,
/ping, the admin API, 404s, a 4xx, a 500, a streamed media read and a streamed export — the
no-referrer rule for URLs that hold a token, HSTS only under an https APP_URL.
(On the served pages and assets of the built app: tests/browser/test_served_headers.py.)"""

from __future__ import annotations

import asyncio
import hashlib
from base64 import b64encode
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.testclient import TestClient

from tests.api.conftest import Finished
from tests.helpers import login_session, make_user
from vgen_app.api import headers
from vgen_app.api.app import create_api
from vgen_app.api.headers import (
    SecurityHeaders,
    holds_secret,
    page_csp,
    script_hashes_of,
    security_headers,
)
from vgen_app.config import reset_settings
from vgen_app.db import session_scope
from vgen_app.services import emails
from vgen_app.ui import routes

APP = "http://localhost:3000"
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _as_dict(pairs: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in pairs}


def _directives(csp: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in (p.strip() for p in csp.split(";")) if d}


def assert_secured(response: Any, *, page: bool = False, referrer: str | None = None) -> None:
    """Every header of SPEC §11 once; a page's CSP or the locked-down one of anything else."""
    h = response.headers
    for name in (
        "content-security-policy",
        "x-frame-options",
        "x-content-type-options",
        "referrer-policy",
        "permissions-policy",
    ):
        assert len(h.get_list(name)) == 1, (name, h.get_list(name), response.url)
    csp = _directives(h["content-security-policy"])
    assert csp["frame-ancestors"] == ["'none'"]
    assert h["x-frame-options"] == "DENY"
    assert h["x-content-type-options"] == "nosniff"
    assert "camera=()" in h["permissions-policy"] and "microphone=()" in h["permissions-policy"]
    assert h["referrer-policy"] == (referrer or "strict-origin-when-cross-origin")
    if page:
        assert "'unsafe-inline'" not in csp["script-src"]
    assert "strict-transport-security" not in h  # APP_URL is http here


# --- the rules -------------------------------------------------------------------------------------


def test_a_page_gets_the_app_policy_and_anything_else_the_locked_down_one() -> None:
    page = _as_dict(security_headers("/", "", APP, script_hashes=["sha256-abc="]))
    csp = _directives(page["content-security-policy"])
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'", "'unsafe-eval'", "'sha256-abc='"]
    assert csp["style-src"] == ["'self'", "'unsafe-inline'"]
    # The socket and the API, under both loopback names (the app opens as either).
    assert csp["connect-src"] == [
        "'self'",
        APP,
        "ws://localhost:3000",
        "http://127.0.0.1:3000",
        "ws://127.0.0.1:3000",
    ]
    assert set(csp["img-src"]) == {"'self'", "data:", "blob:"}
    assert set(csp["media-src"]) == {"'self'", "blob:"}
    assert csp["object-src"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"]
    assert page["x-frame-options"] == "DENY"
    assert page["x-content-type-options"] == "nosniff"
    assert page["referrer-policy"] == "strict-origin-when-cross-origin"
    assert "geolocation=()" in page["permissions-policy"]
    assert "payment=()" in page["permissions-policy"]
    assert "fullscreen=(self)" in page["permissions-policy"]  # the players' full screen

    other = _as_dict(security_headers("/api/health", "", APP, html=False))
    assert _directives(other["content-security-policy"])["default-src"] == ["'none'"]
    assert _directives(other["content-security-policy"])["frame-ancestors"] == ["'none'"]


def test_hsts_only_when_app_url_is_https() -> None:
    assert "strict-transport-security" not in _as_dict(security_headers("/", "", APP))
    secure = _as_dict(security_headers("/", "", "https://app.vgen.example"))
    assert secure["strict-transport-security"] == "max-age=63072000; includeSubDomains"
    csp = _directives(secure["content-security-policy"])
    assert csp["connect-src"] == ["'self'", "https://app.vgen.example", "wss://app.vgen.example"]
    loopback = _directives(page_csp("http://127.0.0.1:8000"))["connect-src"]
    assert loopback == [
        "'self'",
        "http://127.0.0.1:8000",
        "ws://127.0.0.1:8000",
        "http://localhost:8000",
        "ws://localhost:8000",
    ]


def _link_of(mail: emails.Mail) -> str:
    return next(word for word in mail.text.split() if word.startswith(APP))


def test_every_url_that_holds_a_secret_sends_no_referrer() -> None:
    reset_settings()
    links = [
        _link_of(emails.activation_mail("ann@example.com", "T0KEN")),
        _link_of(emails.reset_mail("ann@example.com", "T0KEN")),
        _link_of(emails.email_change_mail("ann@example.com", "T0KEN")),
        f"{APP}{routes.SESSION_ROUTE}?ticket=T1CKET&next=%2F",  # ui/auth.py's login redirect
        f"{APP}{routes.TOKENS_SUCCESS}?session_id=cs_1",  # billing's success_url
        f"{APP}{routes.TEST_CHECKOUT}?session_id=cs_1",
    ]
    for link in links:
        url = urlsplit(link)
        assert holds_secret(url.path, url.query), link
        assert _as_dict(security_headers(url.path, url.query, APP))["referrer-policy"] == (
            "no-referrer"
        )
    # The pages themselves, however opened (a trailing slash, the token gone from the address).
    for path in (routes.VERIFY, routes.RESET, routes.ACCOUNT_EMAIL, routes.ACCOUNT_EMAIL + "/"):
        assert holds_secret(path, "")
    # Any other URL with a token in its query, too.
    assert holds_secret("/login", "next=%2F&token=x")
    for path, query in [("/", ""), ("/login", "next=%2Ftokens"), ("/tasks/abc", ""),
                        ("/check-email", "email=ann%40example.com"), ("/api/health", "")]:  # fmt: skip
        assert not holds_secret(path, query), (path, query)


def test_inline_script_hashes_are_those_a_browser_computes() -> None:
    theme = "\ndocument.documentElement.classList.add('light');\n"
    module = 'import "/assets/manifest.js";'
    html = (
        f"<html><head><script>{theme}</script><script src='/a.js'></script>"
        f'<script type="module" async="">{module}</script>'
        '<script type="application/json">{"not": "run"}</script></head>'
        '<body><SCRIPT id="_R_">$RC("B:0","S:0")</SCRIPT></body></html>'
    ).encode()

    def sha(text: str) -> str:
        return "sha256-" + b64encode(hashlib.sha256(text.encode()).digest()).decode()

    assert script_hashes_of(html) == [sha(theme), sha(module), sha('$RC("B:0","S:0")')]


def test_the_hashes_come_from_every_built_page_once_per_build(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "index.html").write_text("<script>one()</script><script>two()</script>")
    (tmp_path / "a" / "index.html").write_text("<script>two()</script><script>three()</script>")
    (tmp_path / "a" / "index.html.gz").write_bytes(b"\x1f\x8b not html")
    found = headers.inline_script_hashes(tmp_path)
    assert len(found) == 3 and len(set(found)) == 3
    assert headers.inline_script_hashes(tmp_path) is found  # cached
    assert headers.inline_script_hashes(tmp_path / "not-built") == ()


# --- the middleware on real responses ------------------------------------------------------------


@SQLITE
def test_api_ping_admin_404_and_4xx_responses_carry_them(
    asgi_app: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", "test-admin-token-0123456789abcdef")
    reset_settings()
    with TestClient(asgi_app, base_url=APP) as client:
        health = client.get("/api/health")
        assert health.status_code == 200
        assert_secured(health)
        assert _directives(health.headers["content-security-policy"])["default-src"] == ["'none'"]
        assert_secured(client.get("/ping"))
        admin = client.get("/api/internal/users?email=ann@example.com")
        assert admin.status_code == 401
        assert_secured(admin)
        authed = client.get(
            "/api/internal/users?email=ann@example.com",
            headers={"Authorization": "Bearer test-admin-token-0123456789abcdef"},
        )
        assert authed.status_code == 200
        assert_secured(authed)
        missing = client.get("/api/no-such-route")
        assert missing.status_code == 404
        assert_secured(missing)
        assert client.get("/no/such/page").status_code == 404
        assert_secured(client.get("/no/such/page"))
        no_session = client.get("/api/account/export")
        assert no_session.status_code == 401
        assert_secured(no_session)
        # Answered by a middleware inside the stack (the body cap), before any route.
        too_big = client.post(
            routes.LOGOUT_ROUTE, content=b"x", headers={"Content-Length": str(1 << 40)}
        )
        assert too_big.status_code == 413
        assert_secured(too_big)
        # The login ticket's redemption: a redirect, and no referrer from its URL.
        redeem = client.get(f"{routes.SESSION_ROUTE}?ticket=nope", follow_redirects=False)
        assert redeem.status_code == 303
        assert_secured(redeem, referrer="no-referrer")
        # A loopback redirect (answered before any route) too.
    with TestClient(asgi_app, base_url="http://127.0.0.1:3000") as client:
        moved = client.get("/reset?token=abc", follow_redirects=False)
        assert moved.status_code == 307
        assert_secured(moved, referrer="no-referrer")


def test_an_unhandled_error_500_carries_them() -> None:
    api = create_api()

    @api.get("/api/test-boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    with TestClient(api, raise_server_exceptions=False) as client:
        response = client.get("/api/test-boom")
    assert response.status_code == 500
    assert_secured(response)


def test_https_app_url_adds_hsts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_URL", "https://app.vgen.example")
    reset_settings()
    with TestClient(create_api(), base_url="https://app.vgen.example") as client:
        response = client.get("/api/no-such-route")
    assert response.headers["strict-transport-security"] == "max-age=63072000; includeSubDomains"
    assert len(response.headers.get_list("strict-transport-security")) == 1


@SQLITE
def test_a_streamed_media_read_keeps_its_own_policy(asgi_app: Any, finished_run: Finished) -> None:
    url = f"/api/media/result/{finished_run.run_id}"
    with TestClient(asgi_app, base_url=APP) as client:
        client.cookies.set("vgen_session", finished_run.tokens["ann"])
        part = client.get(url, headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206 and len(part.content) == 1000
    assert_secured(part)
    # The route's own sandboxed policy is kept, not doubled or replaced.
    assert part.headers["content-security-policy"] == (
        "default-src 'none'; sandbox; frame-ancestors 'none'"
    )


@SQLITE
def test_the_streamed_export_carries_them(asgi_app: Any, database_url: str) -> None:
    with session_scope() as db:
        make_user(db, "exporter@example.com")
        token = login_session(db, "exporter@example.com")
    with TestClient(asgi_app, base_url=APP) as client:
        client.cookies.set("vgen_session", token)
        export = client.get("/api/account/export")
    assert export.status_code == 200 and export.content[:2] == b"PK"
    assert_secured(export)  # its own X-Content-Type-Options kept once


def test_the_middleware_passes_a_stream_through_as_it_comes() -> None:
    """Nothing buffered: each body chunk reaches the server before the next one is produced."""
    sent: list[dict] = []
    produced: list[int] = []

    async def streaming_app(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(3):
            produced.append(i)
            assert len([m for m in sent if m["type"] == "http.response.body"]) == i
            await send({"type": "http.response.body", "body": b"x" * 10, "more_body": i < 2})

    async def send(message) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "path": "/api/x", "query_string": b"", "headers": []}
    asyncio.run(SecurityHeaders(streaming_app, hashes=lambda: ())(scope, receive, send))
    assert produced == [0, 1, 2] and len(sent) == 4
    names = {name for name, _ in sent[0]["headers"]}
    assert b"content-security-policy" in names and b"x-content-type-options" in names


def test_websockets_pass_untouched() -> None:
    seen: list[dict] = []

    async def ws_app(scope, receive, send) -> None:
        await send({"type": "websocket.accept"})

    async def send(message) -> None:
        seen.append(message)

    async def receive() -> dict:
        return {"type": "websocket.connect"}

    scope = {"type": "websocket", "path": "/_event", "query_string": b"", "headers": []}
    asyncio.run(SecurityHeaders(ws_app, hashes=lambda: ())(scope, receive, send))
    assert seen == [{"type": "websocket.accept"}]


def test_a_304_keeps_the_cached_pages_policy() -> None:
    """A revalidated page (`304 Not Modified`, no Content-Type) gets every header but the CSP: the
    browser merges a 304's headers into its cached page, and a resource policy sent here would
    replace the page's own (its scripts refused on the next visit)."""
    revalidated = _as_dict(security_headers("/tokens/", "", APP, html=False, status=304))
    assert "content-security-policy" not in revalidated
    assert revalidated["x-content-type-options"] == "nosniff"
    sent: list[dict] = []

    def app_answering(status: int, headers: list[tuple[bytes, bytes]]):
        async def app(scope, receive, send) -> None:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": b""})

        return app

    async def send(message) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "path": "/tokens/", "query_string": b"", "headers": []}
    answers = [(304, [(b"etag", b'"abc"')]), (200, [(b"content-type", b"text/html")])]
    for status, headers_out in answers:
        sent.clear()
        middleware = SecurityHeaders(app_answering(status, headers_out), hashes=lambda: ())
        asyncio.run(middleware(scope, receive, send))
        names = {name for name, _ in sent[0]["headers"]}
        assert b"x-content-type-options" in names and b"referrer-policy" in names
        assert (b"content-security-policy" in names) is (status != 304), status
