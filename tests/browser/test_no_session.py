"""Issue H in a real Chromium against `make run`: no session, or a session that dies while a page
is open.

- Every page route of the app (read from the app's own page registry) opened without a session
  ends on /login?next=<that page> or is a public page, and shows nobody's data.
- Every /api route (read from the API app's routes) without a cookie: the user-data ones answer
  401 / a redirect to /login / the admin API's refusal, and nothing leaks from any of them.
- A logged-in page whose session is then ended elsewhere (logout in another tab, an admin block,
  a password reset) refuses its next action and lands on /login.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest
from journey_helpers import activate, login_ok, signup, unique_email, wait_hydrated
from playwright.sync_api import expect
from sqlmodel import Session, select

from vgen_app.db import make_engine
from vgen_app.models import CheckoutSession, Task, User
from vgen_app.services import accounts, passwords

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"
# Pages anyone may open; every other page of the app needs a session.
PUBLIC_PAGES = {"signup", "login", "check-email", "verify", "forgot", "reset", "account/email"}


@dataclass
class Victim:
    email: str
    task_id: str
    task_name: str
    checkout_id: str  # a paid test checkout: /tokens/success and /checkout/test show it

    @property
    def secrets(self) -> list[str]:
        # Not the ids: an attacker puts those into the URL himself.
        return [self.email, self.task_name, "10,000 tokens were added"]


@pytest.fixture(scope="module")
def victim(app_server, browser) -> Iterator[Victim]:
    """A user with a task and a paid top-up, made through the UI."""
    ctx = browser.new_context(base_url=app_server.url)
    ctx.set_default_timeout(20_000)
    page = ctx.new_page()
    email = unique_email()
    signup(page, email, PASSWORD)
    activate(page, app_server.outbox, email)
    login_ok(page, app_server.url, email, PASSWORD)
    page.goto("/tokens")
    wait_hydrated(page, "#buy-10k")
    page.click("#buy-10k")
    wait_hydrated(page, "#test-pay")
    checkout_id = parse_qs(urlsplit(page.url).query)["session_id"][0]
    page.click("#test-pay")
    expect(page.locator("#payment-credited")).to_be_visible()
    name = f"Secret plan {secrets.token_hex(4)}"
    page.goto("/tasks/new")
    wait_hydrated(page, "#create-task")
    page.fill("#name", name)
    page.click("#create-task")
    expect(page.locator("#task-name")).to_have_text(name)
    task_id = urlsplit(page.url).path.rstrip("/").rsplit("/", 1)[-1]
    ctx.close()
    yield Victim(email, task_id, name, checkout_id)


def _page_routes() -> list[str]:
    from vgen_app.vgen_app import app

    return sorted(app._unevaluated_pages)


def _url_of(route: str, v: Victim) -> str:
    """A URL for a page route, with the victim's ids where the route or page takes one."""
    path = "/" if route == "index" else "/" + route
    path = path.replace("[task_id]", v.task_id)
    if "[" in path:
        pytest.fail(f"page route {route!r}: add a value for its parameter to _url_of")
    query = {
        "/tokens/success": f"session_id={v.checkout_id}",
        "/checkout/test": f"session_id={v.checkout_id}",
        "/verify": "token=bogus",
        "/reset": "token=bogus",
        "/account/email": "token=bogus",
    }.get(path)
    return f"{path}?{query}" if query else path


def _expect_login_for(page, app_url: str, target: str) -> None:
    """On /login, with `next` pointing back at the page that was asked for."""
    expect(page).to_have_url(re.compile(re.escape(app_url) + r"/login/?\?next="))
    wait_hydrated(page, "#login-submit")
    next_param = parse_qs(urlsplit(page.url).query)["next"][0]
    want_path, _, want_query = target.partition("?")
    got_path, _, got_query = unquote(next_param).partition("?")
    assert got_path.rstrip("/") == want_path.rstrip("/") and got_query == want_query, page.url


def _shows_nothing_of(page, v: Victim) -> None:
    expect(page.locator("#header-email")).to_have_count(0)
    html = page.content()
    for secret in v.secrets:
        assert secret not in html, (page.url, secret)


def test_every_page_without_a_session(app_server, new_context, victim, figure, shots):
    routes = _page_routes()
    assert {"index", "tokens", "tasks/[task_id]"} <= set(routes)
    assert PUBLIC_PAGES <= set(routes), "a public page is gone: update PUBLIC_PAGES"
    protected, public = [], []
    for route in routes:
        target = _url_of(route, victim)
        page = new_context().new_page()  # no cookies at all
        raw = page.request.get(target)  # the prerendered HTML, before any script runs
        assert raw.status == (404 if route == "404" else 200), (target, raw.status)
        assert not any(s in raw.text() for s in victim.secrets), target
        page.goto(target)
        if route in PUBLIC_PAGES or route == "404":
            expect(page).to_have_url(
                re.compile(
                    re.escape(app_server.url)
                    + re.escape(target.split("?")[0].rstrip("/"))
                    + r"/?(\?.*)?$"
                )
            )
            page.wait_for_function("() => document.readyState === 'complete'")
            public.append(route)
        else:
            _expect_login_for(page, app_server.url, target)
            protected.append(route)
        _shows_nothing_of(page, victim)
        page.context.close()
    shots_page = new_context().new_page()
    shots_page.goto(_url_of("tasks/[task_id]", victim))
    _expect_login_for(shots_page, app_server.url, _url_of("tasks/[task_id]", victim))
    shots(shots_page, "task-page-without-session")
    figure(
        f"{len(routes)} page routes opened without a session: {len(protected)} protected "
        f"({', '.join(protected)}) ended on /login?next=<page>, {len(public)} public stayed; "
        "pages showing user data: 0"
    )


# --- the API ------------------------------------------------------------------------------------


def _api_routes() -> list[tuple[str, str]]:
    """(method, path) of every route of the API app, mounted sub-apps included."""
    from starlette.routing import Mount

    from vgen_app.api.app import create_api

    found: set[tuple[str, str]] = set()

    def walk(routes, prefix: str) -> None:
        for route in routes:
            if isinstance(route, Mount):
                walk(route.routes, prefix + route.path)
            elif hasattr(route, "original_router"):  # FastAPI's included routers
                walk(route.original_router.routes, prefix + route.include_context.prefix)
            elif getattr(route, "methods", None):
                for method in route.methods - {"HEAD"}:
                    found.add((method, prefix + route.path))

    walk(create_api().routes, "")
    return sorted(found, key=lambda r: (r[1], r[0]))


# What each route answers a caller without a cookie (or admin token), and why that is right.
API_WITHOUT_COOKIE = {
    ("GET", "/api/auth/session"): ({303}, "no ticket: back to /login?expired=1, no cookie set"),
    ("POST", "/api/auth/logout"): ({200}, "nothing to revoke; clears the cookie"),
    ("GET", "/api/runs/{run_id}/result"): ({401}, "a user's result"),
    ("GET", "/api/media/{kind}/{ref}"): ({404}, "a user's media: the same 404 as anyone else's"),
    ("HEAD", "/api/media/{kind}/{ref}"): ({404}, "a user's media"),
    ("GET", "/api/account/export"): ({401}, "a user's data"),
    ("DELETE", "/api/internal/user/{userID}"): ({401, 503}, "admin"),
    ("GET", "/api/internal/users/{userID}/export"): ({401, 503}, "admin"),
    ("GET", "/api/internal/users/{userID}/purchases"): ({401, 503}, "admin"),
    ("GET", "/api/internal/shortfalls"): ({401, 503}, "admin"),
    ("GET", "/api/internal/users/{userID}/ledger"): ({401, 503}, "admin: a user's ledger"),
    ("GET", "/api/internal/audit"): ({401, 503}, "admin: the audit"),
    ("GET", "/api/health"): ({200}, "public: is the database up"),
    ("GET", "/metrics"): ({401, 503}, "operator metrics: the admin token (503 = none set)"),
    ("POST", "/api/webhooks/stripe"): ({400}, "signature checked, no user data returned"),
    ("PUT", "/api/internal/user"): ({401, 503}, "admin: refused (503 = no ADMIN_TOKEN set)"),
    ("PUT", "/api/internal/balance"): ({401, 503}, "admin"),
    ("GET", "/api/internal/users"): ({401, 503}, "admin"),
    ("GET", "/api/internal/users/{userID}"): ({401, 503}, "admin"),
    ("GET", "/api/internal/openapi.json"): ({200}, "public schema, no data"),
    ("GET", "/api/internal/docs"): ({200}, "public docs page, no data"),
    ("GET", "/api/internal/docs/oauth2-redirect"): ({200}, "part of the docs page"),
}


def test_every_api_route_without_a_cookie(app_server, new_context, victim, figure):
    routes = _api_routes()
    unknown = set(routes) - set(API_WITHOUT_COOKIE)
    assert not unknown, f"classify these /api routes in API_WITHOUT_COOKIE: {sorted(unknown)}"
    request = new_context().request
    params = {
        "run_id": victim.task_id,
        "userID": "0123456789abcdef0123456789abcdef",
        "kind": "result",
        "ref": victim.task_id,
    }
    seen = {}
    for method, path in routes:
        url = re.sub(r"\{(\w+)\}", lambda m: params[m.group(1)], path)
        if path == "/api/internal/users":
            url += "?email=" + quote(victim.email)
        body = {"userID": "x", "status": "blocked"} if method == "PUT" else None
        response = request.fetch(url, method=method, data=body, max_redirects=0)
        expected, why = API_WITHOUT_COOKIE[(method, path)]
        assert response.status in expected, (method, path, response.status, why)
        text = response.text()
        assert not any(s in text for s in victim.secrets), (method, path)
        if path == "/api/auth/session":
            assert response.headers["location"].endswith("/login?expired=1")
            assert "set-cookie" not in response.headers
        seen[f"{method} {path}"] = response.status
    refused = [
        f"{r} {seen[r]}" for r in seen if 200 not in API_WITHOUT_COOKIE[tuple(r.split(" ", 1))][0]
    ]
    figure(
        f"{len(routes)} /api routes without a cookie: {len(refused)} refuse "
        f"({', '.join(refused)}), the rest are public; bodies with user data: 0"
    )


# --- a session that dies while its page is open ---------------------------------------------------


@contextmanager
def _app_db(request, app_server) -> Iterator[Session]:
    """The running app's own database (the conftest names it): to block or reset like an admin."""
    if request.node.callspec.params.get("app_server") == "postgres-redis-3-workers":
        from tests.conftest import PG_ADMIN_DSN

        url = f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/vgen_browser_{os.getpid()}"
    else:
        url = f"sqlite:///{app_server.workdir / 'vgen.db'}"
    engine = make_engine(url)
    try:
        with Session(engine, expire_on_commit=False) as db:
            yield db
    finally:
        engine.dispose()


def _user_id(db: Session, email: str) -> str:
    user = db.exec(select(User).where(User.email == email)).first()
    assert user is not None, f"{email} is not in the app's database: did the conftest move it?"
    user_id = user.id
    db.rollback()
    return user_id


def _checkouts(db: Session, user_id: str) -> int:
    rows = db.exec(select(CheckoutSession.id).where(CheckoutSession.user_id == user_id)).all()
    db.rollback()
    return len(rows)


def _new_user(app_server, new_context):
    page = new_context().new_page()
    email = unique_email()
    signup(page, email, PASSWORD)
    activate(page, app_server.outbox, email)
    login_ok(page, app_server.url, email, PASSWORD)
    return page, email


def test_logout_in_another_tab_refuses_the_open_pages_next_action(
    app_server, new_context, victim, request, shots, figure
):
    page = new_context().new_page()
    login_ok(page, app_server.url, victim.email, PASSWORD)
    page.goto("/tokens")
    expect(page.locator("#history")).to_contain_text("+10,000")
    wait_hydrated(page, "#buy-10k")

    other_tab = page.context.new_page()  # same browser, same cookie
    other_tab.goto("/")
    wait_hydrated(other_tab, "#logout")
    other_tab.click("#logout")
    expect(other_tab).to_have_url(re.compile(r"/login/?(\?logged_out=1)?$"))

    with _app_db(request, app_server) as db:
        user_id = _user_id(db, victim.email)
        before = _checkouts(db, user_id)
    page.click("#buy-10k")  # the first tab still has its socket, opened with the old cookie
    _expect_login_for(page, app_server.url, "/tokens")
    _shows_nothing_of(page, victim)
    shots(page, "buy-after-logout-elsewhere")
    with _app_db(request, app_server) as db:
        assert _checkouts(db, user_id) == before  # no checkout was started
    figure(
        "logout in a 2nd tab, then Buy on the open /tokens tab: -> /login?next=/tokens, "
        "checkouts started: 0"
    )


def test_admin_block_refuses_the_open_pages_next_action(app_server, new_context, request, figure):
    page, email = _new_user(app_server, new_context)
    page.goto("/tasks/new")
    wait_hydrated(page, "#create-task")
    page.fill("#name", "made after the block")
    with _app_db(request, app_server) as db:
        user_id = _user_id(db, email)
        accounts.set_status(db, user_id, "blocked")  # what PUT /api/internal/user does
    page.click("#create-task")
    _expect_login_for(page, app_server.url, "/tasks/new")
    expect(page.locator("#header-email")).to_have_count(0)
    with _app_db(request, app_server) as db:
        assert db.exec(select(Task.id).where(Task.owner_id == user_id)).all() == []
    figure(
        "admin block, then Create task on the open /tasks/new: -> /login?next=/tasks/new, "
        "tasks created: 0"
    )


def test_password_reset_elsewhere_ends_a_waiting_page(
    app_server, new_context, request, shots, figure
):
    """The payment page polls in the background: once the password is reset elsewhere, the poll
    finds no session and takes the page to /login."""
    page, email = _new_user(app_server, new_context)
    page.goto("/tokens")
    wait_hydrated(page, "#buy-10k")
    page.click("#buy-10k")
    expect(page).to_have_url(re.compile(r"/checkout/test/?\?session_id="))
    session_id = parse_qs(urlsplit(page.url).query)["session_id"][0]
    waiting = f"/tokens/success?session_id={session_id}"
    page.goto(waiting)  # not paid: the page waits for the webhook
    expect(page.locator("#payment-waiting")).to_be_visible()
    with _app_db(request, app_server) as db:
        link = passwords.request_password_reset(db, email).mails[0]
        token = re.search(r"token=([A-Za-z0-9_\-]+)", link.text).group(1)
        passwords.reset_password(db, token, "a brand new password")
    _expect_login_for(page, app_server.url, waiting)
    expect(page.locator("#payment-waiting")).to_have_count(0)
    shots(page, "payment-wait-after-reset")
    figure(
        "password reset elsewhere while /tokens/success polls: the poll's next session check "
        "took the page to /login?next=<that page>, no user action needed"
    )
