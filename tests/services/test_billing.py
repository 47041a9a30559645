"""Top-ups: the Checkout Session request (real Stripe client, fake server), the webhook with real
signatures (credited exactly once, also under concurrent delivery), and the test checkout."""

from __future__ import annotations

import json
import threading
import time
from typing import Any
from urllib.parse import parse_qs

import pytest
import stripe
from pytest_httpserver import HTTPServer
from sqlmodel import Session, select

from tests.helpers import make_user
from vgen_app.adapters.payments import StripePayments, TestCheckout, get_payments
from vgen_app.config import reset_settings
from vgen_app.db import session_scope
from vgen_app.models import CheckoutSession, LedgerEntry, PaymentCredit
from vgen_app.services import billing, ledger

SECRET = "whsec_test_secret_for_tests"


def paid_event(
    session_id: str,
    user_id: str,
    package_id: str = "30k",
    amount: int = 2500,
    payment_status: str = "paid",
    event_type: str = "checkout.session.completed",
    event_id: str = "evt_1",
) -> str:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": event_type,
            "data": {
                "object": {
                    "id": session_id,
                    "object": "checkout.session",
                    "mode": "payment",
                    "payment_status": payment_status,
                    "amount_total": amount,
                    "currency": "usd",
                    "metadata": {"user_id": user_id, "package_id": package_id},
                }
            },
        }
    )


def sign(payload: str, secret: str = SECRET, timestamp: int | None = None) -> str:
    return stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp)


def deliver(db: Session, payload: str, header: str | None = None) -> billing.WebhookResult:
    return billing.handle_webhook(
        db, payload, header if header is not None else sign(payload), SECRET
    )


# --- packages ------------------------------------------------------------------------------------


def test_packages_come_from_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [(p.id, p.tokens, p.price_cents, p.price_label) for p in billing.packages()] == [
        ("10k", 10_000, 1_000, "$10"),
        ("30k", 30_000, 2_500, "$25"),
        ("70k", 70_000, 5_000, "$50"),
    ]
    monkeypatch.setenv("TOKEN_PACKAGES", '[{"id": "tiny", "tokens": 5, "price_cents": 99}]')
    reset_settings()
    assert [(p.id, p.price_label) for p in billing.packages()] == [("tiny", "$0.99")]


# --- Stripe Checkout Session, real client against a local fake ----------------------------------


def test_checkout_session_request_to_stripe(db: Session, httpserver: HTTPServer) -> None:
    uid = make_user(db, "ann@example.com")
    httpserver.expect_request("/v1/checkout/sessions", method="POST").respond_with_json(
        {
            "id": "cs_live_123",
            "object": "checkout.session",
            "url": "https://checkout.stripe.com/c/pay/cs_live_123",
        }
    )
    provider = StripePayments("sk_test_abc", SECRET, httpserver.url_for("/"))
    row = billing.start_checkout(db, uid, "30k", provider)
    assert (row.id, row.url, row.tokens, row.amount_cents, row.provider) == (
        "cs_live_123",
        "https://checkout.stripe.com/c/pay/cs_live_123",
        30_000,
        2_500,
        "stripe",
    )
    (request, _) = httpserver.log[0]
    assert request.headers["Authorization"] == "Bearer sk_test_abc"
    form = {k: v[0] for k, v in parse_qs(request.get_data(as_text=True)).items()}
    assert form["mode"] == "payment"
    assert form["line_items[0][price_data][unit_amount]"] == "2500"
    assert form["line_items[0][price_data][currency]"] == "usd"
    assert form["line_items[0][quantity]"] == "1"
    assert form["metadata[user_id]"] == uid and form["metadata[package_id]"] == "30k"
    assert form["client_reference_id"] == uid and form["customer_email"] == "ann@example.com"
    assert (
        form["success_url"]
        == "http://localhost:3000/tokens/success?session_id={CHECKOUT_SESSION_ID}"
    )
    assert form["cancel_url"] == "http://localhost:3000/tokens?canceled=1"
    assert "subscription" not in form.values()
    assert db.get(CheckoutSession, "cs_live_123").status == "open"


def test_stripe_failure_creates_no_checkout(db: Session, httpserver: HTTPServer) -> None:
    uid = make_user(db, "ann@example.com")
    httpserver.expect_request("/v1/checkout/sessions").respond_with_json(
        {"error": {"type": "invalid_request_error", "message": "nope"}}, status=400
    )
    provider = StripePayments("sk_test_abc", SECRET, httpserver.url_for("/"))
    with pytest.raises(stripe.StripeError):
        billing.start_checkout(db, uid, "10k", provider)
    assert db.exec(select(CheckoutSession)).all() == []


def test_unknown_package_is_refused(db: Session) -> None:
    uid = make_user(db, "ann@example.com")
    with pytest.raises(billing.BillingError):
        billing.start_checkout(db, uid, "999k", TestCheckout("http://localhost:3000"))


# --- the webhook ---------------------------------------------------------------------------------


def test_paid_checkout_is_credited_once_for_ten_deliveries(db: Session) -> None:
    uid = make_user(db, "ann@example.com")
    payload = paid_event("cs_1", uid)
    results = [deliver(db, payload).status for _ in range(10)]
    assert results == ["credited"] + ["duplicate"] * 9
    assert ledger.balance_of(db, uid) == 30_000
    entries = db.exec(select(LedgerEntry)).all()
    assert [(e.action, e.diff, e.reference) for e in entries] == [("topup", 30_000, "cs_1")]


def test_concurrent_deliveries_credit_once(database_url: str, figure) -> None:
    with session_scope() as db:
        uid = make_user(db, "ann@example.com")
    payload = paid_event("cs_conc", uid)
    header = sign(payload)
    statuses: list[str] = []
    barrier = threading.Barrier(10)

    def worker() -> None:
        barrier.wait()
        with session_scope() as s:
            statuses.append(billing.handle_webhook(s, payload, header, SECRET).status)

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == ["credited"] + ["duplicate"] * 9
    # Stripe replays it later, freshly signed (each delivery attempt carries its own signature).
    time.sleep(1.1)
    with session_scope() as s:
        replay = billing.handle_webhook(s, payload, sign(payload), SECRET).status
    assert replay == "duplicate"
    with session_scope() as db:
        assert ledger.balance_of(db, uid) == 30_000
        assert ledger.ledger_sum(db, uid) == 30_000
        assert len(db.exec(select(PaymentCredit)).all()) == 1
        balance, total = ledger.balance_of(db, uid), ledger.ledger_sum(db, uid)
    outcomes = [*statuses, replay]
    figure(
        f"1 paid checkout delivered 10x at once + 1 replay later: credited "
        f"{outcomes.count('credited')}, duplicates {outcomes.count('duplicate')}; "
        f"balance {balance:,}, ledger sum {total:,}"
    )


def test_bad_signature_is_refused(db: Session, figure) -> None:
    uid = make_user(db, "ann@example.com")
    payload = paid_event("cs_bad", uid)
    refused = 0
    for header in [
        sign(payload, "whsec_wrong"),
        "",
        "t=1,v1=deadbeef",
        "garbage",
        sign(payload, timestamp=int(time.time()) - 3600),
    ]:
        with pytest.raises(billing.BadSignature):
            deliver(db, payload, header)
        refused += 1
    # A valid signature over another body does not cover a tampered one.
    tampered = payload.replace("30k", "70k")
    with pytest.raises(billing.BadSignature):
        deliver(db, tampered, sign(payload))
    refused += 1
    with pytest.raises(billing.BadSignature):
        billing.handle_webhook(db, payload, sign(payload), None)
    refused += 1
    balance = ledger.balance_of(db, uid)
    assert balance == 0
    figure(
        f"7 forged, stale (1 h old), tampered or unverifiable deliveries: {refused} refused, "
        f"balance {balance}"
    )


def test_unpaid_and_other_events_are_ignored(db: Session) -> None:
    uid = make_user(db, "ann@example.com")
    assert deliver(db, paid_event("cs_u", uid, payment_status="unpaid")).status == "ignored"
    assert (
        deliver(db, paid_event("cs_u", uid, event_type="payment_intent.created")).status
        == "ignored"
    )
    assert deliver(db, paid_event("cs_u", uid, amount=1)).status == "ignored"  # wrong amount
    assert deliver(db, paid_event("cs_u", "nobody")).status == "ignored"
    assert ledger.balance_of(db, uid) == 0
    # The delayed-payment success event credits (once) too.
    ok = paid_event("cs_u", uid, event_type="checkout.session.async_payment_succeeded")
    assert deliver(db, ok).status == "credited"
    assert deliver(db, paid_event("cs_u", uid)).status == "duplicate"
    assert ledger.balance_of(db, uid) == 30_000


def test_our_checkout_record_wins_over_event_metadata(db: Session) -> None:
    uid = make_user(db, "ann@example.com")
    other = make_user(db, "eve@example.com")
    row = billing.start_checkout(db, uid, "10k", TestCheckout("http://localhost:3000"))
    # Metadata claims another user and a bigger package; amounts match the big package.
    forged = paid_event(row.id, other, package_id="70k", amount=5000)
    assert deliver(db, forged).status == "ignored"
    honest = paid_event(row.id, other, package_id="70k", amount=1000)
    assert deliver(db, honest).status == "credited"
    assert ledger.balance_of(db, uid) == 10_000 and ledger.balance_of(db, other) == 0
    assert db.get(CheckoutSession, row.id).status == "paid"


# --- the built-in test checkout ------------------------------------------------------------------


def test_test_checkout_goes_through_the_webhook_handler(db: Session) -> None:
    uid = make_user(db, "ann@example.com")
    provider = get_payments()
    assert isinstance(provider, TestCheckout)  # no STRIPE_SECRET_KEY: the default
    row = billing.start_checkout(db, uid, "30k", provider)
    assert row.url.startswith("http://localhost:3000/checkout/test?session_id=cs_test_")
    result = billing.pay_test_checkout(db, row.id, uid, provider)
    assert result.status == "credited" and result.change.new_balance == 30_000
    assert billing.pay_test_checkout(db, row.id, uid, provider).status == "duplicate"
    # Someone else cannot pay (or see) my checkout.
    other = make_user(db, "eve@example.com")
    with pytest.raises(billing.BillingError):
        billing.pay_test_checkout(db, row.id, other, provider)
    assert billing.checkout_for_user(db, row.id, other) is None
    assert billing.checkout_for_user(db, row.id, uid).status == "paid"


def test_test_checkout_secret_is_not_guessable() -> None:
    a, b = TestCheckout("http://x"), TestCheckout("http://x")
    assert a.webhook_secret != b.webhook_secret and len(a.webhook_secret) > 40


# --- through the HTTP route ----------------------------------------------------------------------


def test_webhook_route_status_codes(
    asgi_app: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from starlette.testclient import TestClient

    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", SECRET)
    reset_settings()
    with session_scope() as db:
        uid = make_user(db, "ann@example.com")
    payload = paid_event("cs_http", uid)
    with TestClient(asgi_app, base_url="http://localhost:3000") as client:
        url = "/api/webhooks/stripe"
        headers = {"Stripe-Signature": sign(payload), "Content-Type": "application/json"}
        first = client.post(url, content=payload, headers=headers)
        assert first.status_code == 200 and first.json()["status"] == "credited"
        again = client.post(url, content=payload, headers=headers)
        assert again.status_code == 200 and again.json()["status"] == "duplicate"
        bad = client.post(
            url, content=payload, headers={"Stripe-Signature": sign(payload, "whsec_x")}
        )
        assert bad.status_code == 400
        assert client.post(url, content=payload).status_code == 400  # no signature header
        assert client.post(url, content=b"\xff\xfe", headers=headers).status_code == 400
        huge = client.post(url, content=b"x" * (600 * 1024), headers=headers)
        assert huge.status_code == 413
        ignored = paid_event("cs_http2", uid, event_type="customer.created")
        resp = client.post(url, content=ignored, headers={"Stripe-Signature": sign(ignored)})
        assert resp.status_code == 200 and resp.json()["status"] == "ignored"
    with session_scope() as db:
        assert ledger.balance_of(db, uid) == 30_000


def test_checkout_read_is_usable_after_the_session_closes(database_url: str) -> None:
    from vgen_app.db import with_db

    with session_scope() as db:
        uid = make_user(db, "ann@example.com")
        row = billing.start_checkout(db, uid, "10k", TestCheckout("http://localhost:3000"))
    found = with_db(billing.checkout_for_user, row.id, uid)
    assert (found.status, found.tokens, found.provider) == ("open", 10_000, "test")


# --- after the payment (issue N; tests/services/test_payment_events.py has the rest) -----------


def test_refunds_and_disputes_through_the_test_checkout(db: Session) -> None:
    """The test checkout's receipt buttons end in the same webhook handler: a quarter refunded,
    a dispute opened (the rest taken back) and won (given back), all refunded; each batch of
    statements also runs as one request on D1."""
    from vgen_app.services import sandbox

    uid = make_user(db, "ann@example.com")
    provider = get_payments()
    assert isinstance(provider, TestCheckout)
    row = billing.start_checkout(db, uid, "30k", provider)
    assert billing.pay_test_checkout(db, row.id, uid, provider).status == "credited"
    balances = []
    for step in (
        lambda: sandbox.refund(db, row.id, uid, provider, full=False),
        lambda: sandbox.dispute(db, row.id, uid, provider, won=False),
        lambda: sandbox.dispute(db, row.id, uid, provider, won=True),
        lambda: sandbox.refund(db, row.id, uid, provider, full=True),
    ):
        assert step().status == "applied"
        balances.append(ledger.balance_of(db, uid))
    assert balances == [22_500, 0, 22_500, 0]
    assert ledger.ledger_sum(db, uid) == 0
    (purchase,) = billing.purchases(db, uid)
    assert (purchase.status, purchase.refunded_cents, purchase.tokens_taken_back) == (
        "refunded",
        2_500,
        30_000,
    )
    assert purchase.receipt_url == f"/checkout/test?session_id={row.id}"
    entries = db.exec(select(LedgerEntry).order_by(LedgerEntry.id)).all()
    assert [(e.action, e.diff) for e in entries] == [
        ("topup", 30_000),
        ("clawback", -7_500),
        ("clawback", -22_500),
        ("topup", 22_500),
        ("clawback", -22_500),
    ]


def test_a_failed_delayed_payment_is_shown_and_credits_nothing(db: Session) -> None:
    uid = make_user(db, "ann@example.com")
    row = billing.start_checkout(db, uid, "10k", TestCheckout("http://localhost:3000"))
    failed = paid_event(
        row.id, uid, "10k", 1000, "unpaid", "checkout.session.async_payment_failed", "evt_f"
    )
    assert [deliver(db, failed).status for _ in range(3)] == ["applied", "duplicate", "duplicate"]
    assert billing.checkout_for_user(db, row.id, uid).status == "failed"
    assert ledger.balance_of(db, uid) == 0
