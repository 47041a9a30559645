"""Issue N: payments both ways, with the real `stripe` library against the fake Stripe
(tests/fakes/fake_stripe.py), on SQLite and PostgreSQL.

`fulfill` from the success page and the webhook credit once between them; every other event
(failed, expired, refunded, dispute opened and closed) is applied once whatever the number, order
and concurrency of its deliveries; a take-back never makes a balance negative (the shortfall is
recorded); the balance always equals the ledger's sum. Out of order: a refund (or dispute) that
arrives before the payment is credited is recorded, and the credit then takes it back in the
same transaction (the ledger shows the top-up and the clawback; the user never holds the
tokens); a dispute closed before it was opened nets out."""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from sqlmodel import Session, select

from tests.fakes.fake_stripe import SECRET, FakeStripe
from tests.helpers import make_user
from vgen_app import clock
from vgen_app.adapters.changes import get_feed
from vgen_app.adapters.payments import StripePayments, TestCheckout
from vgen_app.config import reset_settings
from vgen_app.db import session_scope
from vgen_app.models import AnalyticsOutbox, CheckoutSession, LedgerEntry, Outcome
from vgen_app.services import billing, ledger, sandbox

Signed = tuple[str, str]


@pytest.fixture
def fake(httpserver: HTTPServer) -> FakeStripe:
    fake = FakeStripe()
    fake.install(httpserver)
    return fake


@pytest.fixture
def stripe_pay(httpserver: HTTPServer) -> StripePayments:
    return StripePayments("sk_test_fake", SECRET, httpserver.url_for("/"))


def deliver(db: Session, signed: Signed, provider: Any) -> billing.WebhookResult:
    payload, header = signed
    return billing.handle_webhook(db, payload, header, SECRET, provider)


def concurrently(calls: list[Callable[[Session], billing.WebhookResult]]) -> list[str]:
    """Each call in its own thread and session, released at once; their statuses."""
    barrier = threading.Barrier(len(calls))
    statuses: list[str] = []
    errors: list[BaseException] = []

    def run(call: Callable[[Session], billing.WebhookResult]) -> None:
        barrier.wait()
        try:
            with session_scope() as s:
                statuses.append(call(s).status)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return statuses


def deliveries(signed: Signed, provider: Any, n: int = 10) -> list[Callable]:
    return [lambda s, signed=signed: deliver(s, signed, provider) for _ in range(n)]


def books(uid: str) -> tuple[int, int]:
    """(balance, ledger sum)."""
    with session_scope() as db:
        return ledger.balance_of(db, uid), ledger.ledger_sum(db, uid)


def row_of(session_id: str) -> CheckoutSession:
    with session_scope() as db:
        row = db.get(CheckoutSession, session_id)
        assert row is not None
        db.expunge(row)  # usable after the session ends (its rollback would expire it)
        return row


def entries(uid: str) -> list[tuple[str, int, str | None]]:
    with session_scope() as db:
        found = db.exec(
            select(LedgerEntry)
            .where(LedgerEntry.user_id == uid, LedgerEntry.outcome == Outcome.APPLIED)
            .order_by(LedgerEntry.id)
        ).all()
        return [(str(e.action), e.diff, e.reference) for e in found]


def status_of(uid: str, session_id: str) -> str:
    with session_scope() as db:
        (p,) = [p for p in billing.purchases(db, uid) if p.session_id == session_id]
        return str(p.status)


def user_and_checkout(provider: Any, package: str = "30k") -> tuple[str, str]:
    with session_scope() as db:
        uid = make_user(db, "ann@example.com")
        return uid, billing.start_checkout(db, uid, package, provider).id


def paid_and_credited(fake: FakeStripe, provider: Any) -> tuple[str, str]:
    """Ann bought 30,000 tokens for $25, credited by the webhook."""
    uid, cs = user_and_checkout(provider)
    fake.pay(cs)
    with session_scope() as db:
        signed = fake.session_event("checkout.session.completed", cs)
        assert deliver(db, signed, provider).status == "credited"
    return uid, cs


def spend(uid: str, tokens: int) -> None:
    with session_scope() as db:
        assert ledger.change_balance(db, uid, -tokens, "used", "run_x").applied


# --- fulfil from both sides --------------------------------------------------------------------


def test_fulfill_credits_when_the_webhook_is_late(
    database_url: str, fake: FakeStripe, stripe_pay: StripePayments
) -> None:
    uid, cs = user_and_checkout(stripe_pay)
    with session_scope() as db:
        assert billing.fulfill(db, cs, stripe_pay).status == "ignored"  # not paid yet
    assert row_of(cs).status == "open" and books(uid) == (0, 0)
    fake.pay(cs)
    with session_scope() as db:
        result = billing.fulfill(db, cs, stripe_pay)
    assert result.status == "credited" and result.change.new_balance == 30_000
    (method, path, query) = fake.requests[-1]
    assert (method, path) == ("GET", f"/v1/checkout/sessions/{cs}")
    assert {"line_items", "payment_intent.latest_charge"} <= set(query.values())
    row = row_of(cs)
    assert row.receipt_url == fake.charge_of(cs)["receipt_url"]
    assert row.payment_intent == fake.sessions[cs]["payment_intent"] and row.paid_cents == 2_500
    # The webhook arrives after all: nothing more. Fulfilled again: not even a Stripe call.
    with session_scope() as db:
        signed = fake.session_event("checkout.session.completed", cs)
        assert deliver(db, signed, stripe_pay).status == "duplicate"
        asked = len(fake.requests)
        assert billing.fulfill(db, cs, stripe_pay).status == "duplicate"
    assert len(fake.requests) == asked
    assert books(uid) == (30_000, 30_000)
    assert entries(uid) == [("topup", 30_000, cs)]


def test_fulfill_after_the_webhook_learns_the_receipt(
    database_url: str, fake: FakeStripe, stripe_pay: StripePayments
) -> None:
    uid, cs = paid_and_credited(fake, stripe_pay)
    assert row_of(cs).receipt_url is None  # Stripe's event carries no receipt
    with session_scope() as db:
        assert billing.fulfill(db, cs, stripe_pay).status == "duplicate"
        (purchase,) = billing.purchases(db, uid)
    assert purchase.receipt_url == fake.charge_of(cs)["receipt_url"]
    assert books(uid) == (30_000, 30_000)


def test_fulfill_and_webhook_at_once_credit_once(
    database_url: str, fake: FakeStripe, stripe_pay: StripePayments, figure: Any
) -> None:
    uid, cs = user_and_checkout(stripe_pay)
    fake.pay(cs)
    signed = fake.session_event("checkout.session.completed", cs)
    calls = [lambda s: billing.fulfill(s, cs, stripe_pay) for _ in range(5)]
    statuses = concurrently(calls + deliveries(signed, stripe_pay, 5))
    assert sorted(statuses) == ["credited"] + ["duplicate"] * 9
    assert books(uid) == (30_000, 30_000) and entries(uid) == [("topup", 30_000, cs)]
    figure(
        f"5 success-page fulfils + 5 webhook deliveries of one paid checkout at once: credited "
        f"{statuses.count('credited')}, duplicates {statuses.count('duplicate')}; balance 30,000 "
        f"= ledger sum"
    )


def test_fulfill_marks_an_expired_checkout(
    database_url: str, fake: FakeStripe, stripe_pay: StripePayments
) -> None:
    uid, cs = user_and_checkout(stripe_pay)
    fake.expire(cs)
    with session_scope() as db:
        assert billing.fulfill(db, cs, stripe_pay).status == "applied"
        assert billing.fulfill(db, cs, stripe_pay).status == "ignored"
    assert status_of(uid, cs) == "expired" and books(uid) == (0, 0)


def test_a_discounted_and_taxed_payment_is_credited_and_refunded_by_its_share(
    database_url: str, fake: FakeStripe, stripe_pay: StripePayments
) -> None:
    """With a promotion code (or Stripe Tax) the total differs from the price: the package is
    recognised by its subtotal, and a refund takes back its share of what was charged."""
    uid, cs = user_and_checkout(stripe_pay)
    fake.pay(cs, amount_total=2_000)  # $5 off
    with session_scope() as db:
        assert billing.fulfill(db, cs, stripe_pay).status == "credited"
        _, charge = fake.refund(cs, 500)
        assert deliver(db, fake.refunded_event(charge), stripe_pay).status == "applied"
        (purchase,) = billing.purchases(db, uid)
    assert (purchase.amount_cents, purchase.refunded_cents) == (2_000, 500)
    assert purchase.tokens_taken_back == 30_000 * 500 // 2_000 == 7_500
    assert books(uid) == (22_500, 22_500)


# --- each event, 10 deliveries at once ----------------------------------------------------------


def _refund(part: int) -> Callable[[FakeStripe, str], Signed]:
    def make(fake: FakeStripe, cs: str) -> Signed:
        return fake.refunded_event(fake.refund(cs, part)[1])

    return make


def _dispute(status: str) -> Callable[[FakeStripe, str], Signed]:
    def make(fake: FakeStripe, cs: str) -> Signed:
        return fake.dispute_event(fake.dispute(cs, status))

    return make


# kind: (paid and credited first?, events applied before, the event, first status, balance,
#        purchase status, ledger after the credit)
KINDS: dict[str, tuple[bool, list, Callable, str, int, str, list[int]]] = {
    "completed": (
        False,
        [],
        lambda f, cs: (f.pay(cs), f.session_event("checkout.session.completed", cs))[1],
        "credited",
        30_000,
        "paid",
        [30_000],
    ),
    "async_payment_failed": (
        False,
        [],
        lambda f, cs: f.session_event("checkout.session.async_payment_failed", cs),
        "applied",
        0,
        "failed",
        [],
    ),
    "expired": (
        False,
        [],
        lambda f, cs: (f.expire(cs), f.session_event("checkout.session.expired", cs))[1],
        "applied",
        0,
        "expired",
        [],
    ),
    "refunded (partial)": (
        True,
        [],
        _refund(1_000),
        "applied",
        18_000,
        "partly_refunded",
        [-12_000],
    ),
    "refunded (full)": (True, [], _refund(2_500), "applied", 0, "refunded", [-30_000]),
    "dispute created": (True, [], _dispute("needs_response"), "applied", 0, "disputed", [-30_000]),
    "dispute closed (won)": (
        True,
        [_dispute("needs_response")],
        _dispute("won"),
        "applied",
        30_000,
        "paid",
        [-30_000, 30_000],
    ),
    "dispute closed (lost)": (
        True,
        [_dispute("needs_response")],
        _dispute("lost"),
        "applied",
        0,
        "disputed",
        [-30_000],
    ),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_event_ten_times_at_once_is_applied_once(
    database_url: str, fake: FakeStripe, stripe_pay: StripePayments, kind: str, figure: Any
) -> None:
    credited_first, before, make, first, balance, status, diffs = KINDS[kind]
    if credited_first:
        uid, cs = paid_and_credited(fake, stripe_pay)
    else:
        uid, cs = user_and_checkout(stripe_pay)
    for earlier in before:
        with session_scope() as db:
            assert deliver(db, earlier(fake, cs), stripe_pay).status == "applied"
    signed = make(fake, cs)
    version = get_feed().version(uid)
    statuses = concurrently(deliveries(signed, stripe_pay))
    assert sorted(statuses) == [first] + ["duplicate"] * 9
    assert books(uid) == (balance, balance)
    got = [d for _, d, _ in entries(uid)]
    assert got == ([30_000] if credited_first else []) + diffs
    assert status_of(uid, cs) == status
    assert get_feed().version(uid) > version  # the open /tokens page is told
    with session_scope() as db:  # a fresh replay, later: still nothing
        assert deliver(db, signed, stripe_pay).status == "duplicate"
    assert books(uid) == (balance, balance)
    figure(
        f"{kind}: 10 deliveries at once + 1 replay -> {first} 1, duplicates 10; balance "
        f"{balance:,} = ledger sum, purchase {status}"
    )


# --- out of order ---------------------------------------------------------------------------


@pytest.mark.parametrize("listed", [False, True], ids=["refunds not listed", "refunds listed"])
def test_partial_refunds_add_up_whatever_their_order(
    database_url: str, fake: FakeStripe, stripe_pay: StripePayments, listed: bool, figure: Any
) -> None:
    """Three partial refunds ($5, $7, $3 of $25): each event carries the charge's running total,
    so late, early or repeated deliveries take back exactly 15/25 of the tokens in all."""
    uid, cs = paid_and_credited(fake, stripe_pay)
    events = []
    for part in (500, 700, 300):
        refund_id, charge = fake.refund(cs, part)
        events.append((refund_id, charge["amount_refunded"], fake.refunded_event(charge, listed)))
    # The second first (it takes 12/25), then the first (nothing more), then the third.
    order = [events[1], events[0], events[2], events[1], events[0]]
    with session_scope() as db:
        statuses = [deliver(db, signed, stripe_pay).status for _, _, signed in order]
    assert statuses == ["applied", "applied", "applied", "duplicate", "duplicate"]
    want = 30_000 - 30_000 * 1_500 // 2_500
    assert books(uid) == (want, want) == (12_000, 12_000)
    charge_id = fake.charge_of(cs)["id"]
    key = {r: (r if listed else f"{charge_id}:{total}") for r, total, _ in events}
    assert entries(uid)[1:] == [
        ("clawback", -14_400, key[events[1][0]]),
        ("clawback", -3_600, key[events[2][0]]),
    ]
    with session_scope() as db:
        (purchase,) = billing.purchases(db, uid)
    assert (purchase.status, purchase.refunded_cents, purchase.tokens_taken_back) == (
        "partly_refunded",
        1_500,
        18_000,
    )
    # All three again, 10 times each, at once: nothing more.
    calls = [c for _, _, signed in events for c in deliveries(signed, stripe_pay)]
    random.Random(7).shuffle(calls)
    again = concurrently(calls)
    assert again.count("duplicate") == 30 and books(uid) == (12_000, 12_000)
    figure(
        f"3 partial refunds ({'listed' if listed else 'not listed'} on the charge) delivered "
        f"out of order, then 30x at once: 18,000 of 30,000 tokens taken back once; balance "
        f"12,000 = ledger sum"
    )


@pytest.mark.parametrize("with_intent", [True, False], ids=["names its PI", "charge only"])
def test_a_refund_before_the_payment_is_taken_back_when_it_is_credited(
    database_url: str,
    fake: FakeStripe,
    stripe_pay: StripePayments,
    with_intent: bool,
    figure: Any,
) -> None:
    """The refund arrives before checkout.session.completed: Stripe tells which checkout it is
    (by the PaymentIntent, or the charge's), the refund is recorded, nothing is taken (nothing
    was credited); the credit then tops up 30,000 and takes back the refunded 12,000 in the same
    transaction."""
    uid, cs = user_and_checkout(stripe_pay)
    fake.pay(cs)
    _, charge = fake.refund(cs, 1_000)
    refunded = fake.refunded_event(charge, with_intent=with_intent)
    with session_scope() as db:
        first = deliver(db, refunded, stripe_pay)
    assert (first.status, first.change) == ("applied", None)
    row = row_of(cs)
    assert (row.refunded_cents, row.refund_tokens, row.status) == (1_000, 12_000, "open")
    assert row.payment_intent == charge["payment_intent"]  # learnt from Stripe
    assert books(uid) == (0, 0)
    with session_scope() as db:
        credited = deliver(db, fake.session_event("checkout.session.completed", cs), stripe_pay)
        assert credited.status == "credited"
        assert deliver(db, refunded, stripe_pay).status == "duplicate"
    key = f"{charge['id']}:1000"
    assert entries(uid) == [("topup", 30_000, cs), ("clawback", -12_000, key)]
    assert books(uid) == (18_000, 18_000)
    assert status_of(uid, cs) == "partly_refunded"
    figure(
        f"refund before the payment event ({'with' if with_intent else 'without'} its "
        f"PaymentIntent): recorded, then credited 30,000 and 12,000 taken back in the same "
        f"transaction; balance 18,000 = ledger sum"
    )


def test_refund_and_payment_events_racing_end_the_same(
    database_url: str, fake: FakeStripe, stripe_pay: StripePayments, figure: Any
) -> None:
    uid, cs = user_and_checkout(stripe_pay)
    fake.pay(cs)
    refunded = fake.refunded_event(fake.refund(cs, 1_000)[1])
    completed = fake.session_event("checkout.session.completed", cs)
    calls = deliveries(refunded, stripe_pay) + deliveries(completed, stripe_pay)
    random.Random(3).shuffle(calls)
    statuses = concurrently(calls)
    assert statuses.count("credited") == 1 and statuses.count("applied") == 1
    assert books(uid) == (18_000, 18_000)
    assert sorted(d for _, d, _ in entries(uid)) == [-12_000, 30_000]
    figure(
        "a refund and its payment's completed event, 10x each at once in random order: "
        "credited 1, refund applied 1, 18 duplicates; balance 18,000 = ledger sum"
    )


@pytest.mark.parametrize("outcome", ["won", "lost"])
def test_a_dispute_closed_before_it_was_opened(
    database_url: str, fake: FakeStripe, stripe_pay: StripePayments, outcome: str, figure: Any
) -> None:
    uid, cs = paid_and_credited(fake, stripe_pay)
    opened = fake.dispute_event(fake.dispute(cs, "needs_response"))
    closed = fake.dispute_event(fake.dispute(cs, outcome))
    with session_scope() as db:
        assert deliver(db, closed, stripe_pay).status == "applied"
        assert deliver(db, opened, stripe_pay).status == "applied"
        assert deliver(db, closed, stripe_pay).status == "duplicate"
    balance = 30_000 if outcome == "won" else 0
    assert books(uid) == (balance, balance)
    assert status_of(uid, cs) == ("paid" if outcome == "won" else "disputed")
    assert entries(uid)[1:] == (
        [] if outcome == "won" else [("clawback", -30_000, closed_id(closed))]
    )
    # And the two racing, 10 deliveries each, on a second purchase.
    with session_scope() as db:
        cs2 = billing.start_checkout(db, uid, "30k", stripe_pay).id
    fake.pay(cs2)
    with session_scope() as db:
        assert (
            deliver(db, fake.session_event("checkout.session.completed", cs2), stripe_pay).status
            == "credited"
        )
    opened2 = fake.dispute_event(fake.dispute(cs2, "needs_response"))
    closed2 = fake.dispute_event(fake.dispute(cs2, outcome))
    calls = deliveries(opened2, stripe_pay) + deliveries(closed2, stripe_pay)
    random.Random(5).shuffle(calls)
    statuses = concurrently(calls)
    assert statuses.count("applied") == 2 and statuses.count("duplicate") == 18
    balance += 30_000 if outcome == "won" else 0
    assert books(uid) == (balance, balance)
    figure(
        f"dispute closed ({outcome}) before it was opened, then both 10x at once on another "
        f"purchase: {'nothing taken' if outcome == 'won' else 'taken back once'}; balance "
        f"{balance:,} = ledger sum"
    )


def closed_id(signed: Signed) -> str:
    return json.loads(signed[0])["data"]["object"]["id"]


# --- a take-back never goes negative ----------------------------------------------------------


def test_a_refund_of_spent_tokens_records_the_shortfall(
    database_url: str, fake: FakeStripe, stripe_pay: StripePayments, figure: Any
) -> None:
    uid, cs = paid_and_credited(fake, stripe_pay)
    spend(uid, 25_000)
    _, charge = fake.refund(cs, 2_500)
    statuses = concurrently(deliveries(fake.refunded_event(charge), stripe_pay))
    assert sorted(statuses) == ["applied"] + ["duplicate"] * 9
    assert books(uid) == (0, 0)
    with session_scope() as db:
        (purchase,) = billing.purchases(db, uid)
        (short,) = billing.shortfalls(db)
    assert (purchase.status, purchase.tokens_taken_back, purchase.shortfall) == (
        "refunded",
        5_000,
        25_000,
    )
    assert short == (uid, purchase)
    assert entries(uid)[-1][:2] == ("clawback", -5_000)
    # Nothing left at all: a later dispute takes nothing and only adds to nothing.
    with session_scope() as db:
        dispute = fake.dispute_event(fake.dispute(cs))
        assert deliver(db, dispute, stripe_pay).status == "applied"
    assert books(uid) == (0, 0) and row_of(cs).shortfall == 25_000
    figure(
        "full refund of 30,000 tokens after 25,000 were spent, 10x at once: 5,000 taken back "
        "once, balance 0 (never negative), shortfall 25,000 recorded for the operator"
    )


def test_a_won_dispute_gives_back_what_it_took_and_forgives_the_shortfall(
    database_url: str, fake: FakeStripe, stripe_pay: StripePayments
) -> None:
    uid, cs = paid_and_credited(fake, stripe_pay)
    spend(uid, 20_000)  # 10,000 left
    with session_scope() as db:
        _, charge = fake.refund(cs, 500)  # a fifth refunded: 6,000 tokens
        assert deliver(db, fake.refunded_event(charge), stripe_pay).status == "applied"
        assert ledger.balance_of(db, uid) == 4_000
        opened = deliver(db, fake.dispute_event(fake.dispute(cs)), stripe_pay)
        assert (opened.status, opened.change.diff) == ("applied", -4_000)
        row = row_of(cs)
        assert (row.tokens_taken_back, row.shortfall) == (10_000, 20_000)
        assert ledger.change_balance(db, uid, 1_000, "manual", "admin").applied  # meanwhile
        won = deliver(db, fake.dispute_event(fake.dispute(cs, "won")), stripe_pay)
    # The dispute took 4,000 and wanted 20,000 more; won, its 20,000 are forgiven and its
    # 4,000 come back; the refund's 6,000 stay taken.
    assert (won.status, won.change.action, won.change.diff) == ("applied", "topup", 4_000)
    row = row_of(cs)
    assert (row.tokens_taken_back, row.shortfall) == (6_000, 0)
    assert books(uid) == (5_000, 5_000)
    assert status_of(uid, cs) == "partly_refunded"


# --- unknown objects, Stripe down, the HTTP route --------------------------------------------


def test_unknown_charges_and_disputes_are_acknowledged_and_stripe_down_is_retried(
    asgi_app: Any,
    database_url: str,
    fake: FakeStripe,
    httpserver: HTTPServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from starlette.testclient import TestClient

    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_fake")
    monkeypatch.setenv("STRIPE_API_BASE", httpserver.url_for("/"))
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", SECRET)
    reset_settings()
    stripe_pay = StripePayments("sk_test_fake", SECRET, httpserver.url_for("/"))
    uid, cs = paid_and_credited(fake, stripe_pay)

    def post(client: TestClient, signed: Signed) -> Any:
        payload, header = signed
        return client.post(
            "/api/webhooks/stripe",
            content=payload,
            headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        )

    stranger = {
        "id": "ch_not_ours",
        "object": "charge",
        "amount": 999,
        "amount_refunded": 999,
        "payment_intent": "pi_not_ours",
    }
    other_dispute = {
        "id": "dp_not_ours",
        "object": "dispute",
        "charge": "ch_gone",
        "status": "lost",
    }
    with TestClient(asgi_app, base_url="http://localhost:3000") as client:
        with caplog.at_level(logging.WARNING, logger="vgen.billing"):
            r1 = post(client, fake.event("charge.refunded", stranger))
            r2 = post(client, fake.event("charge.dispute.closed", other_dispute))
        for r in (r1, r2):
            assert r.status_code == 200 and r.json()["status"] == "ignored", r.text
        assert "ch_not_ours" in caplog.text and "dp_not_ours" in caplog.text
        # Stripe is down while a refund's checkout must be looked up: 503, nothing changed;
        # Stripe delivers again once it is back.
        _, charge = fake.refund(cs, 2_500)
        late = fake.refunded_event(charge, with_intent=False)
        fake.down = True
        down = post(client, late)
        assert down.status_code == 503 and books(uid) == (30_000, 30_000)
        fake.down = False
        again = post(client, late)
        assert again.status_code == 200 and again.json()["status"] == "applied"
        assert post(client, late).json()["status"] == "duplicate"
    assert books(uid) == (0, 0)


# --- the purchase history -----------------------------------------------------------------------


def test_purchases_newest_first_with_their_status_and_receipt(
    database_url: str, fake: FakeStripe, stripe_pay: StripePayments
) -> None:
    uid, old_open = user_and_checkout(stripe_pay, "10k")  # abandoned
    clock.travel(timedelta(days=2))
    ids = {}
    with session_scope() as db:
        for name in ("paid", "refunded", "failed", "open"):
            clock.travel(timedelta(minutes=1))
            ids[name] = billing.start_checkout(db, uid, "30k", stripe_pay).id
        for name in ("paid", "refunded"):
            fake.pay(ids[name])
            assert billing.fulfill(db, ids[name], stripe_pay).status == "credited"
        _, charge = fake.refund(ids["refunded"], 2_500)
        assert deliver(db, fake.refunded_event(charge), stripe_pay).status == "applied"
        failed = fake.session_event("checkout.session.async_payment_failed", ids["failed"])
        assert deliver(db, failed, stripe_pay).status == "applied"
        test_row = billing.start_checkout(db, uid, "10k", TestCheckout("http://localhost:3000"))
        billing.pay_test_checkout(db, test_row.id, uid, TestCheckout("http://localhost:3000"))
        got = billing.purchases(db, uid)
        other = make_user(db, "eve@example.com")
        assert billing.purchases(db, other) == []
    assert [(p.session_id, str(p.status)) for p in got] == [
        (test_row.id, "paid"),
        (ids["open"], "open"),
        (ids["failed"], "failed"),
        (ids["refunded"], "refunded"),
        (ids["paid"], "paid"),
    ]
    assert old_open not in {p.session_id for p in got}  # open for over a day: abandoned
    by_id = {p.session_id: p for p in got}
    assert by_id[test_row.id].receipt_url == f"/checkout/test?session_id={test_row.id}"
    assert by_id[ids["paid"]].receipt_url == fake.charge_of(ids["paid"])["receipt_url"]
    assert by_id[ids["open"]].receipt_url is None and by_id[ids["failed"]].receipt_url is None
    refunded = by_id[ids["refunded"]]
    assert (refunded.refunded_cents, refunded.tokens_taken_back, refunded.shortfall) == (
        2_500,
        30_000,
        0,
    )
    assert (refunded.package_id, refunded.tokens, refunded.amount_cents, refunded.currency) == (
        "30k",
        30_000,
        2_500,
        "usd",
    )
    with session_scope() as db:
        assert len(billing.purchases(db, uid, limit=2)) == 2
        rows = db.exec(select(AnalyticsOutbox)).all()
        actions = [r.row["action"] for r in rows if r.table_name == "balance_changes"]
    assert actions.count("clawback") == 1


# --- the test checkout's receipt buttons --------------------------------------------------------


def test_the_test_checkout_runs_the_whole_cycle(database_url: str) -> None:
    provider = TestCheckout("http://localhost:3000")
    with session_scope() as db:
        uid = make_user(db, "ann@example.com")
        cs = billing.start_checkout(db, uid, "30k", provider).id
        with pytest.raises(billing.BillingError):
            sandbox.refund(db, cs, uid, provider, full=True)  # not paid yet
        assert billing.pay_test_checkout(db, cs, uid, provider).status == "credited"
        steps = [
            (lambda: sandbox.refund(db, cs, uid, provider, full=False), 22_500, "partly_refunded"),
            (lambda: sandbox.dispute(db, cs, uid, provider, won=False), 0, "disputed"),
            (lambda: sandbox.dispute(db, cs, uid, provider, won=True), 22_500, "partly_refunded"),
            (lambda: sandbox.refund(db, cs, uid, provider, full=False), 15_000, "partly_refunded"),
            (lambda: sandbox.refund(db, cs, uid, provider, full=True), 0, "refunded"),
        ]
        for step, balance, status in steps:
            assert step().status == "applied"
            assert (ledger.balance_of(db, uid), status_of(uid, cs)) == (balance, status)
        for refused in (
            lambda: sandbox.refund(db, cs, uid, provider, full=True),  # refunded in full
            lambda: sandbox.dispute(db, cs, uid, provider, won=True),  # no open dispute
            lambda: sandbox.dispute(db, cs, uid, provider, won=False),  # disputed before
        ):
            with pytest.raises(billing.BillingError):
                refused()
        eve = make_user(db, "eve@example.com")
        with pytest.raises(billing.BillingError):
            sandbox.refund(db, cs, eve, provider, full=True)  # not hers
    assert books(uid) == (0, 0)
    assert [a for a, _, _ in entries(uid)] == [
        "topup",
        "clawback",
        "clawback",
        "topup",
        "clawback",
        "clawback",
    ]


# --- everything at once --------------------------------------------------------------------


def test_every_event_of_a_purchase_ten_times_at_once_in_random_order(
    database_url: str, fake: FakeStripe, stripe_pay: StripePayments, figure: Any
) -> None:
    """Completed, a partial refund, a dispute opened and won: 40 deliveries at once in random
    order. Whatever ran first, the end is the same."""
    uid, cs = user_and_checkout(stripe_pay)
    fake.pay(cs)
    events = [
        fake.session_event("checkout.session.completed", cs),
        fake.refunded_event(fake.refund(cs, 1_000)[1]),
        fake.dispute_event(fake.dispute(cs)),
        fake.dispute_event(fake.dispute(cs, "won")),
    ]
    calls = [c for signed in events for c in deliveries(signed, stripe_pay)]
    random.Random(11).shuffle(calls)
    statuses = concurrently(calls)
    assert statuses.count("duplicate") == 36
    assert books(uid) == (18_000, 18_000)
    row = row_of(cs)
    assert (row.tokens_taken_back, row.shortfall, row.dispute_status) == (12_000, 0, "won")
    assert status_of(uid, cs) == "partly_refunded"
    figure(
        "completed + partial refund + dispute opened + won, 10x each at once in random order: "
        "each applied once, 36 duplicates; balance 18,000 = ledger sum, shortfall 0"
    )


# --- malformed events -------------------------------------------------------------------------


def _signed(event_type: str, obj: dict[str, Any]) -> Signed:
    return FakeStripe().event(event_type, obj)


@pytest.mark.parametrize(
    ("event_type", "obj", "outcome"),
    [
        ("charge.refunded", {"object": "charge", "id": "ch_\x00"}, "refused"),
        ("charge.refunded", {"object": "charge", "id": "ch_" + "x" * 300}, "refused"),
        ("charge.refunded", {"object": "charge", "id": ["ch"]}, "refused"),
        (
            "charge.refunded",
            {"object": "charge", "id": "ch", "payment_intent": {"id": 7}},
            "refused",
        ),
        ("charge.refunded", {"object": "charge", "id": "ch", "receipt_url": "u" * 3000}, "refused"),
        (
            "charge.refunded",
            {"object": "charge", "id": "ch", "refunds": {"data": [{"id": "re_\x00"}]}},
            "refused",
        ),
        ("charge.refunded", {"object": "charge", "id": "ch", "amount": "2500"}, "ignored"),
        ("charge.refunded", {"object": "charge", "id": "ch", "amount": 10**40}, "ignored"),
        ("charge.refunded", {"object": "charge", "id": "ch", "amount": 0}, "ignored"),
        ("charge.refunded", {"object": "refund", "id": "re"}, "ignored"),
        ("charge.dispute.created", {"object": "dispute", "id": {"a": 1}}, "refused"),
        ("charge.dispute.created", {"object": "dispute", "id": "dp", "charge": "c\x00"}, "refused"),
        ("charge.dispute.closed", {"object": "dispute", "id": "dp", "status": ["won"]}, "ignored"),
        ("charge.dispute.closed", {"object": "dispute", "id": "dp", "status": "weird"}, "ignored"),
        ("checkout.session.expired", {"object": "checkout.session", "id": "cs_\x00"}, "refused"),
        ("checkout.session.expired", {"object": "checkout.session", "id": "cs_none"}, "ignored"),
    ],
)
def test_malformed_refund_and_dispute_events(
    db: Session, stripe_pay: StripePayments, event_type: str, obj: dict, outcome: str
) -> None:
    if outcome == "refused":
        with pytest.raises(billing.MalformedEvent):
            deliver(db, _signed(event_type, obj), stripe_pay)
    else:
        assert deliver(db, _signed(event_type, obj), stripe_pay).status == "ignored"
