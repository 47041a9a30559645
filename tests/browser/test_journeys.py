"""The account journeys of the issue's "Done when", in a real Chromium against `make run`."""

from __future__ import annotations

import re

import pytest
from journey_helpers import (
    activate,
    login_ok,
    path_is,
    signup,
    submit_login,
    unique_email,
    wait_for_mails,
    wait_hydrated,
)
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

SESSION_COOKIE = "vgen_session"  # plain http here; `__Host-vgen_session` on https


def _session_cookies(context) -> list[dict]:
    return [c for c in context.cookies() if c["name"] == SESSION_COOKIE]


def test_signup_verify_login_logout(app_server, new_context, shots):
    email, password = unique_email(), "correct horse battery"
    page = new_context().new_page()

    # Sign up.
    page.goto("/signup")
    wait_hydrated(page, "#signup-submit")
    page.fill("#email", email)
    page.fill("#password", password)
    shots(page, "signup")
    page.click("#signup-submit")

    # "Check your e-mail", naming the address; one activation mail went out.
    expect(page).to_have_url(re.compile(r"/check-email\?email="))
    expect(page.get_by_role("heading", name="Check your e-mail")).to_be_visible()
    expect(page.get_by_text(email)).to_be_visible()
    shots(page, "check-email")
    assert len(wait_for_mails(app_server.outbox, email, "activation", 1)) == 1

    # The right password before activation is refused, and a fresh activation mail goes out.
    submit_login(page, email, password)
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text(re.compile(r"verify your e-mail", re.IGNORECASE))
    expect(page).to_have_url(path_is(app_server.url, "/login"))
    shots(page, "login-unverified")
    mails = wait_for_mails(app_server.outbox, email, "activation", 2)
    assert len(mails) == 2, [m.path.name for m in mails]
    assert mails[0].link("/verify") != mails[1].link("/verify")
    assert not _session_cookies(page.context)

    # The newest link activates the account.
    newest = mails[-1].link("/verify")
    assert newest.startswith(app_server.url + "/verify?token=")
    page.goto(newest)
    expect(page.locator("#verify-ok")).to_be_visible()
    expect(page.locator("#verify-ok")).to_contain_text("verified")
    shots(page, "verify-ok")

    # Log in: the app, with the address in the header.
    login_ok(page, app_server.url, email, password)
    expect(page.locator("#tasks-empty")).to_be_visible()  # the dashboard, empty for a new user
    shots(page, "dashboard")

    # The session cookie is HttpOnly and SameSite=Lax: invisible to scripts.
    (cookie,) = _session_cookies(page.context)
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["path"] == "/"
    assert SESSION_COOKIE not in page.evaluate("document.cookie")

    # A reload keeps the session.
    page.reload()
    expect(page.locator("#header-email")).to_have_text(email)
    expect(page).to_have_url(path_is(app_server.url, "/"))

    # Log out: back on /login, cookie cleared, and the app is closed again.
    page.click("#logout")
    expect(page).to_have_url(path_is(app_server.url, "/login"))
    wait_hydrated(page, "#login-submit")
    assert not _session_cookies(page.context)
    shots(page, "logged-out")
    page.goto("/")
    expect(page).to_have_url(re.compile(re.escape(app_server.url) + r"/login/?\?next="))
    expect(page.locator("#header-email")).to_have_count(0)


def test_forgot_reset_revokes_sessions(app_server, new_context, shots):
    email, old_password, new_password = unique_email(), "old password 1", "new password 2"
    page = new_context().new_page()
    signup(page, email, old_password)
    activate(page, app_server.outbox, email)

    # A second browser, logged in before the reset: its session must not survive it.
    other = new_context().new_page()
    login_ok(other, app_server.url, email, old_password)

    # Forgot password.
    page.goto("/forgot")
    wait_hydrated(page, "#forgot-submit")
    page.fill("#email", email)
    shots(page, "forgot")
    page.click("#forgot-submit")
    expect(page.locator("#forgot-done")).to_be_visible()
    expect(page.locator("#forgot-done")).to_contain_text(email)
    shots(page, "forgot-done")

    # The reset mail, and its link.
    (mail,) = wait_for_mails(app_server.outbox, email, "reset", 1)
    link = mail.link("/reset")
    assert link.startswith(app_server.url + "/reset?token=")
    page.goto(link)
    wait_hydrated(page, "#reset-submit")
    page.fill("#password", new_password)
    page.fill("#confirm", new_password)
    shots(page, "reset")
    page.click("#reset-submit")
    expect(page.locator("#reset-done")).to_be_visible()
    shots(page, "reset-done")

    # The other browser's session is gone: reloading the app lands on /login.
    other.reload()
    expect(other).to_have_url(re.compile(re.escape(app_server.url) + r"/login/?\?next="))
    expect(other.locator("#header-email")).to_have_count(0)

    # The old password is refused, the new one works.
    submit_login(page, email, old_password)
    expect(page.get_by_role("alert")).to_contain_text("Wrong e-mail or password")
    expect(page).to_have_url(path_is(app_server.url, "/login"))
    assert not _session_cookies(page.context)
    shots(page, "login-old-password")

    login_ok(page, app_server.url, email, new_password)
    assert len(_session_cookies(page.context)) == 1

    # The used reset link does not work twice.
    page.goto(link)
    expect(page.get_by_role("alert")).to_contain_text("invalid, expired or already used")
