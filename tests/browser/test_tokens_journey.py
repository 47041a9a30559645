"""Buying tokens in a real Chromium: test checkout → webhook handler → balance, history, chart."""

from __future__ import annotations

import re

import pytest
from journey_helpers import activate, login_ok, signup, unique_email, wait_hydrated
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_buy_30000_tokens_through_the_test_checkout(app_server, new_context, shots):
    email, password = unique_email(), "correct horse battery"
    page = new_context().new_page()
    signup(page, email, password)
    activate(page, app_server.outbox, email)
    login_ok(page, app_server.url, email, password)
    expect(page.locator("#header-balance")).to_have_text("0 tokens")

    page.goto("/tokens")
    expect(page.locator("#tokens-balance")).to_have_text("0 tokens")
    expect(page.get_by_text("No balance changes yet")).to_be_visible()
    for tokens, price in [("10,000", "$10"), ("30,000", "$25"), ("70,000", "$50")]:
        expect(page.get_by_text(f"{tokens} tokens", exact=True)).to_be_visible()
        expect(page.get_by_text(price, exact=True)).to_be_visible()
    shots(page, "tokens-empty")

    wait_hydrated(page, "#buy-30k")
    page.click("#buy-30k")
    expect(page).to_have_url(re.compile(r"/checkout/test/?\?session_id=cs_test_"))
    expect(page.get_by_text("TEST PAYMENT — no money moves")).to_be_visible()
    expect(page.get_by_text("30,000 tokens")).to_be_visible()
    shots(page, "test-checkout")
    wait_hydrated(page, "#test-pay")
    page.click("#test-pay")

    expect(page).to_have_url(re.compile(r"/tokens/success/?\?session_id=cs_test_"))
    expect(page.locator("#payment-credited")).to_have_text("30,000 tokens were added.")
    expect(page.locator("#header-balance")).to_have_text("30,000 tokens")
    shots(page, "payment-success")

    page.goto("/tokens")
    expect(page.locator("#tokens-balance")).to_have_text("30,000 tokens")
    history = page.locator("#history")
    expect(history).to_contain_text("Top-up")
    expect(history).to_contain_text("+30,000")
    shots(page, "tokens-after")
    chart = page.locator("#balance-chart")
    expect(chart.locator("svg.recharts-surface")).to_be_visible()
    expect(chart.locator(".recharts-area-area")).to_have_count(1)
