"""Issue K: the app works however it is opened — on 127.0.0.1 or localhost, with the server gone
and back under an open page, with a form sent right after the page loaded, in several tabs."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from conftest import _free_port, _kill_group, _scaled_env, app_env, start_app
from journey_helpers import (
    activate,
    login_ok,
    path_is,
    signup,
    unique_email,
    upload_lipsync_inputs,
    wait_for_mails,
    wait_hydrated,
)
from playwright.sync_api import expect

from tests.fakes.media_samples import make_audio, make_video

pytestmark = pytest.mark.browser
PASSWORD = "correct horse battery"


def _user(page, app) -> str:
    email = unique_email()
    signup(page, email, PASSWORD)
    activate(page, app.outbox, email)
    login_ok(page, app.url, email, PASSWORD)
    return email


def test_opened_on_either_loopback_name(app_server, new_context, shots) -> None:
    """`make run` prints http://127.0.0.1:<port>/ while APP_URL says localhost: both work."""
    port = urlsplit(app_server.url).port
    for base in (f"http://127.0.0.1:{port}", app_server.url):
        page = new_context().new_page()
        page.goto(f"{base}/signup")
        expect(page).to_have_url(path_is(app_server.url, "/signup"))  # one origin: APP_URL's
        wait_hydrated(page, "#signup-submit")
        expect(page.locator("#signup-submit")).to_be_enabled()
        email = unique_email()
        page.fill("#email", email)
        page.fill("#password", PASSWORD)
        page.click("#signup-submit")
        expect(page).to_have_url(re.compile(r"/check-email\?email="))
        activate(page, app_server.outbox, email)
        login_ok(page, app_server.url, email, PASSWORD)
        expect(page.locator("#connection-lost")).to_have_count(0)
        shots(page, f"opened-on-{urlsplit(base).hostname}")


def test_a_form_sent_right_after_the_page_loads_is_answered(app_server, new_context) -> None:
    """Second visit of /forgot in one tab, sent as soon as the button works: answered, mailed."""
    page = new_context().new_page()
    email = _user(page, app_server)
    page.click("#logout")
    expect(page).to_have_url(re.compile(r"/login/?\?logged_out=1"))
    expect(page.get_by_text("You are logged out.")).to_be_visible()
    for visit in (1, 2):
        page.goto("/forgot")
        wait_hydrated(page, "#forgot-submit")
        page.fill("#email", email)
        page.click("#forgot-submit")
        expect(page.locator("#forgot-done")).to_be_visible()
        wait_for_mails(app_server.outbox, email, "reset", visit)
        # Client-side to another page and back: the form shows again, fresh.
        page.goto("/login")
        wait_hydrated(page, "#login-submit")
        page.get_by_role("link", name="Forgot password?").click()
        expect(page.locator("#forgot-submit")).to_be_visible()
        expect(page.locator("#forgot-done")).to_have_count(0)


def test_two_tabs_of_a_task_follow_a_run_started_in_either(
    app_server, new_context, shots, tmp_path
) -> None:
    video = make_video(tmp_path / "speaker.mp4", seconds=2, size="320x240")
    audio = make_audio(tmp_path / "voice.m4a", seconds=2)
    context = new_context()
    a = context.new_page()
    _user(a, app_server)
    a.goto("/tokens")
    wait_hydrated(a, "#buy-10k")
    a.click("#buy-10k")
    wait_hydrated(a, "#test-pay")
    a.click("#test-pay")
    expect(a.locator("#payment-credited")).to_be_visible()
    a.goto("/tasks/new")
    wait_hydrated(a, "#create-task")
    a.fill("#name", "Two tabs")
    a.click("#create-task")
    expect(a.locator("#task-name")).to_have_text("Two tabs")
    expect(a).to_have_title("Two tabs · vgen")
    task_url = a.url
    upload_lipsync_inputs(a, video, audio)

    b = context.new_page()  # the same task in a second tab
    b.goto(task_url)
    expect(b.locator("#task-name")).to_have_text("Two tabs")
    dashboard = context.new_page()  # and My tasks in a third
    dashboard.goto("/")
    expect(dashboard.locator("#tasks-table")).to_contain_text("Two tabs")
    expect(b.locator("#header-balance")).to_have_text("10,000 tokens")

    a.click("#run-button")  # run in tab A: tab B and My tasks follow without a reload
    expect(b.locator("#run-1")).to_be_visible()
    expect(b.locator("#header-balance")).to_have_text("9,500 tokens")
    expect(b.locator("#run-1")).to_have_attribute("data-status", "succeeded", timeout=60_000)
    expect(dashboard.locator("#tasks-table")).to_contain_text("succeeded", timeout=30_000)
    shots(b, "tab-b-followed-tab-a")

    b.click("#run-button")  # and the other way round
    expect(a.locator("#run-2")).to_be_visible()
    expect(a.locator("#run-2")).to_have_attribute("data-status", "succeeded", timeout=60_000)
    expect(a.locator("#header-balance")).to_have_text("9,000 tokens")
    expect(a.locator("#run-error")).to_have_count(0)


def test_the_page_says_when_the_server_is_gone_and_recovers(
    browser, tmp_path_factory, shots
) -> None:
    """The server stopped under an open page and started again: the page says so in plain
    words, then works again without a reload. With PostgreSQL + Redis + 3 workers (the state
    outlives the restart there) and on the defaults (it does not: the page rebuilds it).
    `make run` builds the frontend again on the restart, with new asset names: a page module
    not loaded before the restart would make Reflex reload the page, so the page is used first."""
    for shape in ("sqlite-1-worker", "postgres-redis-3-workers"):
        workdir = tmp_path_factory.mktemp(f"restart-{shape}")
        scaled, cleanup = _scaled_env(workdir) if "postgres" in shape else ({}, None)
        port = _free_port()
        env = app_env(workdir, port, scaled)
        proc, app = start_app(workdir, port, env)
        context = browser.new_context(base_url=app.url, viewport={"width": 1200, "height": 800})
        try:
            page = context.new_page()
            email = _user(page, app)
            # Used for a while first: My tasks, a task, back (all in the page, no full load).
            page.click("#new-task")
            wait_hydrated(page, "#create-task")
            page.fill("#name", "Before the restart")
            page.click("#create-task")
            expect(page.locator("#task-name")).to_have_text("Before the restart")
            page.get_by_role("link", name="← My tasks").click()
            page.click("#new-task")
            wait_hydrated(page, "#create-task")

            _kill_group(proc)  # the server goes away under the open page
            notice = page.locator("#connection-lost")
            expect(notice).to_be_visible(timeout=30_000)
            expect(notice).to_contain_text("Reconnecting")
            shots(page, f"connection-lost-{shape}")

            proc, app = start_app(workdir, port, env)
            expect(notice).to_have_count(0, timeout=60_000)  # back by itself, no reload
            page.fill("#name", "After the restart")
            page.click("#create-task")
            expect(page.locator("#task-name")).to_have_text("After the restart")
            expect(page.locator("#header-email")).to_have_text(email)
        finally:
            context.close()
            _kill_group(proc)
            if cleanup is not None:
                cleanup()
