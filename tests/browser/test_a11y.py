"""Issue K for screen readers, in a real Chromium: axe-core (from the npm registry) finds no
serious or critical violation on any page of the app, signed in and signed out, at desktop
size, nor in the phone menu."""

from __future__ import annotations

import pytest
from a11y_helpers import (
    DESKTOP,
    PHONE,
    SIGNED_OUT_PAGES,
    axe_violations,
    describe,
    install_axe,
    log_in,
    make_member,
    new_page,
    open_page,
    signed_in_pages,
)
from journey_helpers import wait_hydrated
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


@pytest.fixture(scope="session")
def axe_script(tmp_path_factory):
    return install_axe(tmp_path_factory.mktemp("axe"))


@pytest.fixture(scope="module")
def member(app_server, browser, tmp_path_factory):
    return make_member(app_server, browser, tmp_path_factory.mktemp("media"))


def test_no_serious_violations_signed_in(app_server, browser, member, axe_script, shots):
    page = new_page(browser, app_server, DESKTOP)
    log_in(page, app_server, member.email)
    found = {}
    for app_page in signed_in_pages(member):
        open_page(page, app_page)
        shots(page, f"desktop-{app_page.name}")
        if violations := axe_violations(page, axe_script):
            found[app_page.path] = describe(violations)
    page.context.close()
    assert not found, "\n".join(f"{path}:\n{text}" for path, text in found.items())


def test_no_serious_violations_signed_out(app_server, browser, axe_script, shots):
    page = new_page(browser, app_server, DESKTOP)
    found = {}
    for app_page in SIGNED_OUT_PAGES:
        open_page(page, app_page)
        shots(page, f"desktop-{app_page.name}")
        if violations := axe_violations(page, axe_script):
            found[app_page.path] = describe(violations)
    page.context.close()
    assert not found, "\n".join(f"{path}:\n{text}" for path, text in found.items())


def test_controls_say_what_they_do(app_server, browser, member):
    """Names a screen reader announces: each Buy button its package, each drop zone its slot;
    a link styled as a button is one link (one Tab stop), not a button inside a link."""
    page = new_page(browser, app_server, DESKTOP)
    log_in(page, app_server, member.email)
    new_task = page.get_by_role("link", name="New task")
    expect(new_task).to_have_count(1)
    expect(new_task.get_by_role("button")).to_have_count(0)
    page.goto("/tokens")
    for tokens, price in [("10,000", "$10"), ("30,000", "$25"), ("70,000", "$50")]:
        expect(page.get_by_role("button", name=f"Buy {tokens} tokens for {price}")).to_be_visible()
    page.goto(member.task_path)
    expect(page.get_by_role("button", name="Replace the video of the speaker")).to_be_visible()
    expect(page.get_by_role("button", name="Replace the voice track")).to_be_visible()
    expect(page.locator("#upload-video input[type=file]")).to_have_attribute(
        "accept", "video/mp4,.mp4,video/quicktime,.mov,video/webm,.webm,video/x-matroska,.mkv"
    )
    page.context.close()


def test_no_serious_violations_in_the_phone_menu(app_server, browser, member, axe_script):
    page = new_page(browser, app_server, PHONE)
    log_in(page, app_server, member.email)
    wait_hydrated(page, "#menu-button")
    page.click("#menu-button")
    expect(page.get_by_role("menu")).to_be_visible()
    violations = axe_violations(page, axe_script)
    page.context.close()
    assert not violations, describe(violations)
