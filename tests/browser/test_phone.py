"""Issue K on a phone (390×844) in a real Chromium: every page fits the screen (nothing scrolls
sideways), the header's menu reaches My tasks, Tokens and Log out, the balance links to Tokens,
and unknown addresses show the 404 page."""

from __future__ import annotations

import re

import pytest
from a11y_helpers import (
    DESKTOP,
    PHONE,
    SIGNED_OUT_PAGES,
    log_in,
    make_member,
    new_page,
    open_page,
    scroll_width,
    signed_in_pages,
)
from journey_helpers import path_is, wait_hydrated
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

SESSION_COOKIE = "vgen_session"


@pytest.fixture(scope="module")
def member(app_server, browser, tmp_path_factory):
    return make_member(app_server, browser, tmp_path_factory.mktemp("media"))


def test_every_page_fits_a_phone(app_server, browser, member, shots):
    page = new_page(browser, app_server, PHONE)
    log_in(page, app_server, member.email)
    too_wide = {}
    for app_page in signed_in_pages(member):
        open_page(page, app_page)
        expect(page.locator("#menu-button")).to_be_visible()  # the phone header
        expect(page.locator("#logout")).to_be_hidden()
        shots(page, f"phone-{app_page.name}")
        if (width := scroll_width(page)) > PHONE["width"]:
            too_wide[app_page.path] = width
    page.context.close()

    out = new_page(browser, app_server, PHONE)
    for app_page in SIGNED_OUT_PAGES:
        open_page(out, app_page)
        shots(out, f"phone-{app_page.name}")
        if (width := scroll_width(out)) > PHONE["width"]:
            too_wide[app_page.path] = width
    out.context.close()
    assert not too_wide, f"pages wider than the phone's {PHONE['width']} px: {too_wide}"


def _open_menu(page):
    wait_hydrated(page, "#menu-button")
    page.click("#menu-button")
    expect(page.get_by_role("menu")).to_be_visible()


def test_the_phone_menu_reaches_every_page_and_logs_out(app_server, browser, member, shots):
    page = new_page(browser, app_server, PHONE)
    log_in(page, app_server, member.email)
    expect(page.locator("#header-balance")).to_be_visible()
    expect(page.locator("#header-email")).to_be_hidden()  # in the menu instead

    _open_menu(page)
    expect(page.locator("#menu-email")).to_have_text(member.email)
    expect(page.locator("#menu-tasks")).to_have_attribute("aria-current", "page")
    page.wait_for_timeout(300)  # the menu's fade-in
    shots(page, "phone-menu-open")
    page.click("#menu-tokens")
    expect(page).to_have_url(path_is(app_server.url, "/tokens"))
    expect(page.locator("#tokens-balance")).to_have_text("10,000 tokens")

    _open_menu(page)
    expect(page.locator("#menu-tokens")).to_have_attribute("aria-current", "page")
    expect(page.locator("#menu-tasks")).not_to_have_attribute("aria-current", "page")
    page.click("#menu-tasks")
    expect(page).to_have_url(path_is(app_server.url, "/"))
    expect(page.locator("#tasks-table")).to_contain_text("Phone promo")

    # The balance in the header is a link to the Tokens page.
    page.get_by_role("link", name=re.compile(r"^Balance: 10,000 tokens")).click()
    expect(page).to_have_url(path_is(app_server.url, "/tokens"))

    _open_menu(page)
    page.click("#menu-logout")
    expect(page).to_have_url(path_is(app_server.url, "/login"))
    wait_hydrated(page, "#login-submit")
    assert not [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE]
    page.goto("/")
    expect(page).to_have_url(re.compile(re.escape(app_server.url) + r"/login/?\?next="))
    page.context.close()


def test_the_desktop_nav_shows_the_current_page(app_server, browser, member):
    page = new_page(browser, app_server, DESKTOP)
    log_in(page, app_server, member.email)
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="My tasks")).to_have_attribute("aria-current", "page")
    expect(nav.get_by_role("link", name="Tokens")).not_to_have_attribute("aria-current", "page")
    expect(page.locator("#menu-button")).to_be_hidden()
    page.goto("/tokens")
    expect(nav.get_by_role("link", name="Tokens")).to_have_attribute("aria-current", "page")
    expect(nav.get_by_role("link", name="My tasks")).not_to_have_attribute("aria-current", "page")
    page.goto(member.task_path)  # a page inside My tasks: that section, not that page
    expect(nav.get_by_role("link", name="My tasks")).to_have_attribute("aria-current", "true")
    page.context.close()


@pytest.mark.parametrize("path", ["/accounts", "/settings", "/typo"])
def test_unknown_pages_show_the_404_page(app_server, browser, member, shots, path):
    page = new_page(browser, app_server, PHONE)
    response = page.goto(path)
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    expect(page.locator("#header-email")).to_have_count(0)  # the brand bar: nobody signed in
    expect(page.get_by_role("link", name="Log in").first).to_be_visible()
    shots(page, "signed-out")

    log_in(page, app_server, member.email)
    page.goto(path)
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    expect(page.locator("#header-email")).to_have_text(member.email)  # the app's header
    assert scroll_width(page) <= PHONE["width"]
    shots(page, "signed-in")
    page.get_by_role("link", name="Go to My tasks").click()
    expect(page).to_have_url(path_is(app_server.url, "/"))
    expect(page.locator("#tasks-table")).to_contain_text("Phone promo")
    page.context.close()


# Each word of a name on its own line or with its neighbours, never split (one word longer than
# the column may break: it has to, to fit).
_SPLIT_WORDS = """(el) => {
    const split = [];
    const walk = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    for (let node = walk.nextNode(); node; node = walk.nextNode()) {
        for (const m of node.data.matchAll(/\\S+/g)) {
            const range = document.createRange();
            range.setStart(node, m.index);
            range.setEnd(node, m.index + m[0].length);
            const lines = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
            if (lines.size > 1) split.push(m[0]);
        }
    }
    return split;
}"""


def test_task_names_on_a_phone_wrap_between_words(app_server, browser, member, shots):
    from journey_helpers import create_task

    page = new_page(browser, app_server, PHONE)
    log_in(page, app_server, member.email)
    names = ["Usable task 3", "Wedding anniversary toast for Grandma Josephine"]
    long_word = "Supercalifragilisticexpialidocious-extended-final-cut"
    for name in [*names, long_word]:
        create_task(page, name)
    page.goto("/")
    table = page.locator("#tasks-table")
    for name in names:
        link = table.get_by_role("link", name=name)
        expect(link).to_be_visible()
        assert link.evaluate(_SPLIT_WORDS) == [], name
    expect(table.get_by_role("link", name=long_word)).to_be_visible()
    shots(page, "phone-task-names")
    assert scroll_width(page) <= PHONE["width"]  # the one long word broke to fit
    # ... and the table's three phone columns stay in view, none scrolled off to the side.
    for header in ("Task", "Last run", "Created"):
        box = table.get_by_role("columnheader", name=header).bounding_box()
        assert box is not None and box["x"] + box["width"] <= PHONE["width"], (header, box)
