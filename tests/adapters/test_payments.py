"""The Stripe adapter with the real `stripe` library against the fake Stripe (tests/fakes): the
Checkout switches, retrieving a session with its line items and latest charge, finding a session
by its PaymentIntent and a charge's PaymentIntent; Stripe not knowing (None) and Stripe down
(PaymentsUnavailable)."""

from __future__ import annotations

import pytest
import stripe
from pytest_httpserver import HTTPServer

from tests.fakes.fake_stripe import SECRET, FakeStripe
from vgen_app.adapters.payments import (
    CheckoutOptions,
    CheckoutRequest,
    PaymentsUnavailable,
    StripePayments,
    TestCheckout,
    get_payments,
)
from vgen_app.config import TokenPackage, reset_settings

PKG = TokenPackage(id="30k", tokens=30_000, price_cents=2_500)


def request() -> CheckoutRequest:
    return CheckoutRequest(
        user_id="u1",
        email="ann@example.com",
        package=PKG,
        success_url="http://localhost:3000/tokens/success?session_id={CHECKOUT_SESSION_ID}",
        cancel_url="http://localhost:3000/tokens?canceled=1",
    )


@pytest.fixture
def fake(httpserver: HTTPServer) -> FakeStripe:
    fake = FakeStripe()
    fake.install(httpserver)
    return fake


def stripe_at(httpserver: HTTPServer, options: CheckoutOptions | None = None) -> StripePayments:
    return StripePayments("sk_test_fake", SECRET, httpserver.url_for("/"), options)


SWITCHES = {
    "allow_promotion_codes": "true",
    "automatic_tax[enabled]": "true",
    "invoice_creation[enabled]": "true",
}


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"STRIPE_ALLOW_PROMOTION_CODES": "true"},
        {"STRIPE_AUTOMATIC_TAX": "1"},
        {"STRIPE_INVOICE_CREATION": "true"},
        {
            "STRIPE_ALLOW_PROMOTION_CODES": "true",
            "STRIPE_AUTOMATIC_TAX": "true",
            "STRIPE_INVOICE_CREATION": "true",
        },
    ],
    ids=["defaults", "promotion codes", "automatic tax", "invoice", "all three"],
)
def test_checkout_switches_reach_stripe(
    fake: FakeStripe, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch, env: dict
) -> None:
    """Each switch is off by default (nothing sent); on, Checkout gets it."""
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_fake")
    monkeypatch.setenv("STRIPE_API_BASE", httpserver.url_for("/"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_settings()
    provider = get_payments()
    assert isinstance(provider, StripePayments)
    created = provider.create_checkout(request())
    assert created.provider == "stripe" and created.id.startswith("cs_fake")
    (method, path, form) = fake.requests[-1]
    assert (method, path) == ("POST", "/v1/checkout/sessions")
    wanted = {
        "STRIPE_ALLOW_PROMOTION_CODES": "allow_promotion_codes",
        "STRIPE_AUTOMATIC_TAX": "automatic_tax[enabled]",
        "STRIPE_INVOICE_CREATION": "invoice_creation[enabled]",
    }
    on = {wanted[name] for name in env}
    assert {k: form.get(k) for k in SWITCHES if k in form} == {k: SWITCHES[k] for k in on}
    assert form["mode"] == "payment" and form["line_items[0][price_data][unit_amount]"] == "2500"


def test_retrieve_and_lookups(fake: FakeStripe, httpserver: HTTPServer) -> None:
    stripe_pay = stripe_at(httpserver)
    session_id = stripe_pay.create_checkout(request()).id
    unpaid = stripe_pay.retrieve_checkout(session_id)
    assert unpaid is not None
    assert (unpaid["payment_status"], unpaid["payment_intent"]) == ("unpaid", None)
    assert [i["amount_subtotal"] for i in unpaid["line_items"]["data"]] == [2500]
    intent = fake.pay(session_id)
    paid = stripe_pay.retrieve_checkout(session_id)
    assert paid["payment_status"] == "paid"
    assert paid["payment_intent"]["id"] == intent
    charge = paid["payment_intent"]["latest_charge"]
    assert charge["receipt_url"].startswith("https://pay.stripe.test/receipts/")
    (_, _, query) = fake.requests[-1]
    assert {v for k, v in query.items() if k.startswith("expand[")} == {
        "line_items",
        "payment_intent.latest_charge",
    }
    assert stripe_pay.checkout_of_payment_intent(intent) == session_id
    assert stripe_pay.payment_intent_of_charge(charge["id"]) == intent
    # Unknown to Stripe: None, not an error.
    assert stripe_pay.retrieve_checkout("cs_nope") is None
    assert stripe_pay.checkout_of_payment_intent("pi_nope") is None
    assert stripe_pay.payment_intent_of_charge("ch_nope") is None


def test_stripe_down_is_payments_unavailable(fake: FakeStripe, httpserver: HTTPServer) -> None:
    stripe_pay = stripe_at(httpserver)
    base = {"api": httpserver.url_for("/").rstrip("/")}
    stripe_pay.client = stripe.StripeClient("sk_test_fake", base_addresses=base)  # no retries
    fake.down = True
    with pytest.raises(PaymentsUnavailable):
        stripe_pay.retrieve_checkout("cs_x")
    with pytest.raises(PaymentsUnavailable):
        stripe_pay.checkout_of_payment_intent("pi_x")
    with pytest.raises(PaymentsUnavailable):
        stripe_pay.payment_intent_of_charge("ch_x")


def test_the_test_checkout_asks_nobody() -> None:
    test = TestCheckout("http://localhost:3000")
    assert test.retrieve_checkout("cs_test_x") is None
    assert test.checkout_of_payment_intent("pi_test_x") is None
    assert test.payment_intent_of_charge("ch_test_x") is None
    assert test.receipt_path("cs_test_x") == "/checkout/test?session_id=cs_test_x"
