"""Issue N in-process: the success page fulfils from Stripe when the webhook is late (the real
`stripe` library against the fake Stripe), says "failed" / "expired", links the receipt; the test
checkout's receipt page and its test-only Refund and Dispute buttons."""

from __future__ import annotations

from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from tests.fakes.fake_stripe import SECRET, FakeStripe
from tests.helpers import login_session, make_user, ui_state
from tests.scenarios.abuse_helpers import _js, _run
from vgen_app.adapters.payments import get_payments
from vgen_app.config import reset_settings
from vgen_app.db import session_scope
from vgen_app.services import billing, ledger
from vgen_app.ui import payment as payment_ui


@pytest.fixture
def fake(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> FakeStripe:
    """Stripe configured, and it is the fake."""
    fake = FakeStripe()
    fake.install(httpserver)
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_fake")
    monkeypatch.setenv("STRIPE_API_BASE", httpserver.url_for("/"))
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", SECRET)
    reset_settings()
    return fake


def signed_in_with_checkout(package: str = "30k") -> tuple[str, str, str]:
    with session_scope() as db:
        uid = make_user(db, "ann@example.com")
        cookie = f"vgen_session={login_session(db, 'ann@example.com')}"
        return uid, cookie, billing.start_checkout(db, uid, package, get_payments()).id


def success_page(cookie: str, session_id: str) -> Any:
    state = ui_state(
        payment_ui.PaymentSuccessState, f"/tokens/success?session_id={session_id}", cookie
    )
    assert _run(state, "on_load")
    _run(state, "wait_for_credit")
    return state


def test_the_success_page_fulfils_when_the_webhook_is_late(
    database_url: str, fake: FakeStripe
) -> None:
    uid, cookie, cs = signed_in_with_checkout()
    fake.pay(cs)  # paid at Stripe; its webhook has not arrived
    state = success_page(cookie, cs)
    assert (state.payment_status, state.payment_tokens, state.balance) == ("paid", "30,000", 30_000)
    assert state.receipt_url == fake.charge_of(cs)["receipt_url"] and state.receipt_external
    with session_scope() as db:
        assert ledger.balance_of(db, uid) == 30_000 == ledger.ledger_sum(db, uid)
    # The webhook then arrives: nothing more.
    payload, header = fake.session_event("checkout.session.completed", cs)
    with session_scope() as db:
        assert billing.handle_webhook(db, payload, header, SECRET).status == "duplicate"
        assert ledger.balance_of(db, uid) == 30_000


def test_the_success_page_says_failed_or_expired(database_url: str, fake: FakeStripe) -> None:
    uid, cookie, failed = signed_in_with_checkout()
    payload, header = fake.session_event("checkout.session.async_payment_failed", failed)
    with session_scope() as db:
        assert billing.handle_webhook(db, payload, header, SECRET).status == "applied"
        expired = billing.start_checkout(db, uid, "10k", get_payments()).id
    fake.expire(expired)  # Stripe says so when the page asks (its webhook is late)
    assert success_page(cookie, failed).payment_status == "failed"
    state = success_page(cookie, expired)
    assert (state.payment_status, state.receipt_url) == ("expired", "")
    with session_scope() as db:
        assert ledger.balance_of(db, uid) == 0


def test_the_test_checkout_receipt_and_its_test_buttons(database_url: str) -> None:
    uid, cookie, cs = signed_in_with_checkout()
    page = f"/checkout/test?session_id={cs}"
    state = ui_state(payment_ui.TestCheckoutState, page, cookie)
    _run(state, "on_load")
    assert (state.checkout_paid, state.receipt_status, state.can_refund) == (False, "", False)
    assert "/tokens/success" in _js(_run(state, "pay"))
    success = success_page(cookie, cs)
    assert success.payment_status == "paid" and success.receipt_url == page
    assert not success.receipt_external

    state = ui_state(payment_ui.TestCheckoutState, page, cookie)  # the receipt link opens it
    _run(state, "on_load")
    assert (state.checkout_paid, state.receipt_status) == (True, "paid")
    assert (state.can_refund, state.can_dispute, state.can_win) == (True, True, False)
    _run(state, "refund", "partial")
    assert (state.receipt_status, state.receipt_refunded, state.receipt_taken_back) == (
        "partly_refunded",
        "$6.25",
        "7,500",
    )
    _run(state, "dispute", "created")
    assert (state.receipt_status, state.can_refund, state.can_dispute, state.can_win) == (
        "disputed",
        False,
        False,
        True,
    )
    _run(state, "dispute", "won")
    assert (state.receipt_status, state.can_win, state.can_dispute) == (
        "partly_refunded",
        False,
        False,  # one dispute per charge
    )
    with session_scope() as db:
        ledger.change_balance(db, uid, -22_000, "used", "run_x")
    _run(state, "refund", "full")
    assert (state.receipt_status, state.receipt_shortfall, state.checkout_error) == (
        "refunded",
        "22,000",
        "",
    )
    _run(state, "refund", "full")
    assert state.checkout_error == "This test payment is refunded in full already."
    with session_scope() as db:
        assert ledger.balance_of(db, uid) == 0 == ledger.ledger_sum(db, uid)


def test_the_test_buttons_are_off_with_real_payments(database_url: str, fake: FakeStripe) -> None:
    _uid, cookie, cs = signed_in_with_checkout()
    state = ui_state(payment_ui.TestCheckoutState, f"/checkout/test?session_id={cs}", cookie)
    _run(state, "refund", "full")
    assert state.checkout_error == "The test checkout is off: real payments are configured."
