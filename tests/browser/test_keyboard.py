"""Issue K with the keyboard only, in a real Chromium: sign up, log in, create a task, upload
both inputs from the drop zones (Enter and Space open the file picker), run it and see the run;
no mouse. And the task page's Tab order is the order its slot cards are shown in."""

from __future__ import annotations

import re

import pytest
from a11y_helpers import (
    DESKTOP,
    PASSWORD,
    log_in,
    make_member,
    new_page,
    sample_media,
    tab_stops,
    tab_to,
)
from journey_helpers import activate, path_is, unique_email, wait_hydrated
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def _type_into(page, selector: str, text: str) -> None:
    tab_to(page, selector)
    page.keyboard.type(text)


def _upload_with(page, key: str, path) -> None:
    """The drop zone's button has the focus: `key` opens the file picker, which gets `path`."""
    with page.expect_file_chooser() as chooser:
        page.keyboard.press(key)
    chooser.value.set_files(str(path))


def test_keyboard_only_signup_to_a_run(app_server, browser, shots, tmp_path):
    video, audio = sample_media(tmp_path)
    email = unique_email()
    # A browser far from UTC: the page shows its local time, UTC on hover.
    page = new_page(browser, app_server, DESKTOP, timezone_id="Asia/Tokyo", locale="en-US")
    # Playwright intercepts the file picker only while a listener is on: one from the start, so
    # the interception is on before the key is pressed (expect_file_chooser alone races it).
    page.on("filechooser", lambda _chooser: None)

    page.goto("/signup")
    wait_hydrated(page, "#signup-submit")
    _type_into(page, "#email", email)
    _type_into(page, "#password", PASSWORD)
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/check-email\?email="))
    activate(page, app_server.outbox, email)  # the mail's link, opened like a mail client does

    page.goto("/login")
    wait_hydrated(page, "#login-submit")
    _type_into(page, "#email", email)
    _type_into(page, "#password", PASSWORD)
    page.keyboard.press("Enter")
    expect(page).to_have_url(path_is(app_server.url, "/"))
    expect(page.locator("#header-email")).to_have_text(email)

    # Tokens first (a run costs 500): the balance in the header is a link to the Tokens page.
    wait_hydrated(page, "#new-task")
    tab_to(page, "#balance-link")
    page.keyboard.press("Enter")
    expect(page).to_have_url(path_is(app_server.url, "/tokens"))
    wait_hydrated(page, "#buy-10k")
    tab_to(page, "#buy-10k")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/checkout/test/?\?session_id="))
    wait_hydrated(page, "#test-pay")
    tab_to(page, "#test-pay")
    page.keyboard.press("Enter")
    expect(page.locator("#payment-credited")).to_have_text("10,000 tokens were added.")

    # A task: "New task" on My tasks is one Tab stop (a link, not a button inside a link).
    page.goto("/")
    wait_hydrated(page, "#new-task")
    tab_to(page, "#new-task")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.closest('#new-task') === null")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")
    expect(page).to_have_url(path_is(app_server.url, "/tasks/new"))
    wait_hydrated(page, "#create-task")
    _type_into(page, "#name", "Keyboard promo")
    page.keyboard.press("Enter")
    expect(page.locator("#task-name")).to_have_text("Keyboard promo")

    # The drop zones: Enter on the first, Space on the second, open the file picker.
    wait_hydrated(page, "#upload-video")
    tab_to(page, "#upload-video-button")
    expect(page.locator("#upload-video-button")).to_have_accessible_name(
        "Upload the video of the speaker"
    )
    _upload_with(page, "Enter", video)
    expect(page.locator("#slot-video-file")).to_contain_text("speaker.mp4", timeout=60_000)
    expect(page.locator("#upload-video-button")).to_have_accessible_name(
        "Replace the video of the speaker"
    )
    tab_to(page, "#upload-audio-button")
    _upload_with(page, "Space", audio)
    expect(page.locator("#slot-audio-file")).to_contain_text("voice.m4a", timeout=60_000)
    expect(page.locator("#run-price")).to_have_text("500 tokens")
    expect(page.locator("#price-note")).to_have_text(re.compile(r"minimum price"))
    shots(page, "ready")

    # Run, and see the run.
    expect(page.locator("#run-button")).to_be_enabled()
    tab_to(page, "#run-button")
    page.keyboard.press("Enter")
    run = page.locator("#run-1")
    expect(run).to_have_attribute("data-status", "succeeded", timeout=60_000)
    expect(page.locator("#header-balance")).to_have_text("9,500 tokens")
    tab_to(page, "#download-1")  # the result is reachable by keyboard too
    when = run.locator("time")
    title = when.get_attribute("title")
    assert title and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", title), title
    utc_hour = int(title[11:13])
    shown = when.inner_text()
    hour = int(re.search(r"(\d{1,2}):\d\d", shown).group(1)) % 12
    assert hour == (utc_hour + 9) % 12, (shown, title)  # Tokyo is UTC+9
    shots(page, "run")
    page.context.close()


def test_tab_order_follows_the_slot_cards(app_server, browser, tmp_path_factory):
    """The slot cards are in the DOM in the order shown (no CSS reordering): the first Tab stops
    of the task page reach the upload buttons from the first card to the last. (Lip sync shows
    the video before the audio; by name the audio would come first.)"""
    member = make_member(app_server, browser, tmp_path_factory.mktemp("media"))
    page = new_page(browser, app_server, DESKTOP)
    log_in(page, app_server, member.email)
    page.goto(member.task_path)
    wait_hydrated(page, "#upload-video-button")
    expect(page.locator("#slot-audio-file")).to_be_visible()
    stops = [s for s in tab_stops(page, 40) if s.startswith("#upload-")]
    assert stops[:2] == ["#upload-video-button", "#upload-audio-button"], stops

    # What is shown: cards left to right (or top to bottom), in the same order.
    boxes = page.evaluate(
        """() => [...document.querySelectorAll('[id^=upload-][id$=-button]')].map((b) => {
            // The card's place (a preview above a button makes the buttons' heights differ).
            const r = (b.closest('.rt-Card') || b).getBoundingClientRect();
            return ['#' + b.id, Math.round(r.top), Math.round(r.left)];
        })"""
    )
    shown = [b[0] for b in sorted(boxes, key=lambda b: (b[1], b[2]))]
    assert shown == stops[:2], (shown, stops)
    page.context.close()
