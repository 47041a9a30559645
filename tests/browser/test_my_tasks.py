"""My tasks and the token history in a real Chromium (issue L): filters, search and page are in
the URL and still there after a visit to a task; no match offers to clear the filters; the
history names each run's task with a link; a top-up started from a task ends with the way back
to it."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from a11y_helpers import sample_media
from journey_helpers import (
    create_task,
    new_member,
    path_is,
    upload_lipsync_inputs,
    wait_hydrated,
)
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser


def _query(page: Page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def _choose(page: Page, select: str, option: str) -> None:
    wait_hydrated(page, select)
    page.click(select)
    page.get_by_role("option", name=option, exact=True).click()


def test_filters_search_and_page_stay_through_a_visit_to_a_task(app_server, new_context, shots):
    page = new_context().new_page()
    new_member(page, app_server)
    for i in range(1, 22):
        create_task(page, f"Promo {i:02d}")
    create_task(page, "Interview", "faceswap")

    page.goto("/")
    table = page.locator("#tasks-table")
    expect(table.locator("tbody tr")).to_have_count(20)
    expect(page.get_by_text("Page 1 of 2")).to_be_visible()
    expect(page.locator("#tasks-count")).to_have_text("22 tasks")

    _choose(page, "#filter-status", "Not run yet")
    expect(page).to_have_url(re.compile(r"/\?status=not_run$"))
    _choose(page, "#filter-model", "Lip sync")
    expect(page).to_have_url(re.compile(r"/\?status=not_run&model=lipsync$"))
    expect(page.locator("#tasks-count")).to_have_text("21 tasks")
    search = page.get_by_role("searchbox", name="Search tasks by name")
    search.fill("PROMO")
    expect(page).to_have_url(re.compile(r"/\?status=not_run&model=lipsync&q=PROMO$"))
    page.get_by_role("button", name="Older").click()
    expect(page.get_by_text("Page 2 of 2")).to_be_visible()
    expect(table.locator("tbody tr")).to_have_count(1)
    expect(table).to_contain_text("Promo 01")
    expect(page).to_have_url(re.compile(r"/\?page=2&status=not_run&model=lipsync&q=PROMO$"))
    kept = page.url
    expect(table.locator("tbody tr").first.locator("svg")).to_have_count(1)  # no result yet
    shots(page, "filtered-page-2")

    # Into the task and back with its "← My tasks" link (to "/"): the list as it was left.
    table.get_by_role("link", name="Promo 01").click()
    expect(page.locator("#task-name")).to_have_text("Promo 01")
    page.get_by_role("link", name="← My tasks").click()
    expect(page).to_have_url(kept)
    expect(page.get_by_text("Page 2 of 2")).to_be_visible()
    expect(table).to_contain_text("Promo 01")
    expect(search).to_have_value("PROMO")
    expect(page.locator("#filter-status")).to_contain_text("Not run yet")
    expect(page.locator("#filter-model")).to_contain_text("Lip sync")

    # Into it again, then the browser's Back: the same.
    table.get_by_role("link", name="Promo 01").click()
    expect(page.locator("#task-name")).to_have_text("Promo 01")
    page.go_back()
    expect(page).to_have_url(kept)
    expect(table).to_contain_text("Promo 01")
    expect(page.get_by_text("Page 2 of 2")).to_be_visible()

    # The header's "My tasks" too.
    page.goto("/tokens")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="My tasks").click()
    expect(page).to_have_url(kept)
    expect(table).to_contain_text("Promo 01")

    # Nothing matches: said so, with a way out.
    search.fill("no such task")
    expect(page.locator("#tasks-no-match")).to_be_visible()
    expect(page.get_by_role("heading", name="No task matches these filters")).to_be_visible()
    shots(page, "no-match")
    page.locator("#clear-filters").click()
    expect(page).to_have_url(re.compile(re.escape(app_server.url) + r"/?$"))  # no query
    expect(page.locator("#tasks-count")).to_have_text("22 tasks")
    expect(search).to_have_value("")
    expect(table).to_contain_text("Interview")

    # Search wildcards are plain characters.
    search.fill("%")
    expect(page.locator("#tasks-no-match")).to_be_visible()
    search.fill("o 2")
    expect(page.locator("#tasks-count")).to_have_text("2 tasks")  # Promo 20, Promo 21


def test_top_up_from_a_task_and_its_run_in_the_history(app_server, new_context, shots, tmp_path):
    page = new_context().new_page()
    new_member(page, app_server)
    task_path = create_task(page, "Birthday clip")
    video, audio = sample_media(tmp_path)
    upload_lipsync_inputs(page, video, audio)

    # What the task page's "Buy tokens" link opens; a foreign `back` is dropped.
    page.goto("/tokens?back=//evil.example")
    expect(page.locator("#tokens-balance")).to_be_visible()
    expect(page.locator("#tokens-back")).to_have_count(0)
    page.goto(f"/tokens?back={task_path}")
    expect(page.locator("#tokens-back")).to_have_attribute("href", task_path)

    # A canceled checkout comes back to the Tokens page with `back` kept.
    wait_hydrated(page, "#buy-10k")
    page.click("#buy-10k")
    expect(page).to_have_url(re.compile(r"/checkout/test/?\?session_id=cs_test_[^&]+&back="))
    page.get_by_role("link", name="Cancel").click()
    expect(page.get_by_text("Payment canceled: nothing was charged.")).to_be_visible()
    assert _query(page)["back"] == [task_path]
    expect(page.locator("#tokens-back")).to_have_attribute("href", task_path)

    wait_hydrated(page, "#buy-10k")
    page.click("#buy-10k")
    wait_hydrated(page, "#test-pay")
    page.click("#test-pay")
    expect(page.locator("#payment-credited")).to_have_text("10,000 tokens were added.")
    back = page.get_by_role("link", name="Back to your task")
    expect(back).to_be_visible()
    expect(page.get_by_role("link", name="Back to tokens")).to_be_visible()
    shots(page, "paid-back-to-task")
    back.click()
    expect(page).to_have_url(path_is(app_server.url, task_path))
    expect(page.locator("#task-name")).to_have_text("Birthday clip")

    wait_hydrated(page, "#run-button")
    page.click("#run-button")
    expect(page.locator("#run-1")).to_have_attribute("data-status", "succeeded", timeout=60_000)

    page.goto("/tokens")
    history = page.locator("#history")
    expect(history).to_contain_text("Run of Birthday clip (attempt 1)")
    expect(history).to_contain_text("Top-up")
    shots(page, "history")
    history.get_by_role("link", name="Birthday clip").click()
    expect(page).to_have_url(path_is(app_server.url, task_path))

    page.goto("/?status=succeeded")
    table = page.locator("#tasks-table")
    expect(table.get_by_role("link", name="Birthday clip")).to_be_visible()
    expect(page.locator("#tasks-count")).to_have_text("1 task")
    page.goto("/?status=failed")
    expect(page.locator("#tasks-no-match")).to_be_visible()
