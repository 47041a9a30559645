"""Issue N in a real Chromium: buy → receipt → refund and dispute through the test checkout's
test-only buttons (signed events through the same webhook handler); an open Tokens page follows
its balance and purchase history live."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from journey_helpers import new_member, wait_hydrated
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_buy_refund_and_dispute_show_live(app_server, new_context, shots):
    context = new_context()
    page = context.new_page()
    new_member(page, app_server)
    page.goto("/tokens")
    expect(page.locator("#purchases-empty")).to_be_visible()
    wait_hydrated(page, "#buy-10k")
    page.click("#buy-10k")
    wait_hydrated(page, "#test-pay")
    session_id = parse_qs(urlsplit(page.url).query)["session_id"][0]
    page.click("#test-pay")
    expect(page.locator("#payment-credited")).to_have_text("10,000 tokens were added.")
    receipt = page.locator("#payment-receipt")
    expect(receipt).to_be_visible()

    # The Tokens page, open in its own tab, shows the purchase as paid.
    tokens = context.new_page()
    tokens.goto("/tokens")
    row = tokens.locator(".purchase-row").first
    expect(row).to_have_attribute("data-status", "paid")
    expect(row).to_contain_text("10,000 tokens")
    expect(tokens.locator("#tokens-balance")).to_contain_text("10,000")
    receipt_link = row.get_by_role("link", name=re.compile("Receipt"))
    expect(receipt_link).to_have_attribute("href", re.compile(re.escape(session_id)))

    # The receipt: a quarter refunded, then a dispute opened and won — each seen live on /tokens.
    page.goto(f"/checkout/test?session_id={session_id}")
    wait_hydrated(page, "#test-refund-partial")
    shots(page, "receipt")
    page.click("#test-refund-partial")
    expect(page.locator("#test-taken-back")).to_contain_text("2,500")
    expect(row).to_have_attribute("data-status", "partly_refunded")
    expect(tokens.locator("#tokens-balance")).to_contain_text("7,500")
    expect(tokens.locator("#header-balance")).to_have_text("7,500 tokens")
    expect(tokens.locator("#history")).to_contain_text("Taken back")

    wait_hydrated(page, "#test-dispute")
    page.click("#test-dispute")
    expect(row).to_have_attribute("data-status", "disputed")
    expect(tokens.locator("#tokens-balance")).to_contain_text(re.compile(r"^\s*0 tokens"))
    page.click("#test-dispute-won")
    expect(row).to_have_attribute("data-status", "partly_refunded")
    expect(tokens.locator("#tokens-balance")).to_contain_text("7,500")

    page.click("#test-refund-full")
    expect(row).to_have_attribute("data-status", "refunded")
    expect(tokens.locator("#tokens-balance")).to_contain_text(re.compile(r"^\s*0 tokens"))
    expect(row).to_contain_text("10,000 tokens taken back")
    shots(tokens, "purchases")
