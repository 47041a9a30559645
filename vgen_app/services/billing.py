"""Buying tokens: packages, checkouts, crediting exactly once (from the signed webhook, or from
the success page through `fulfill` when the webhook is late), the events after a payment
(services/payment_events.py), and the purchases a user made."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from sqlalchemy import func, insert, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from vgen_app import clock
from vgen_app.adapters.payments import (
    BadSignature,
    CheckoutRequest,
    PaymentProvider,
    PaymentsUnavailable,
    TestCheckout,
    get_payments,
    verify_event,
)
from vgen_app.config import TokenPackage, get_settings
from vgen_app.db import Batch, end_read, refresh_loaded, run_batch
from vgen_app.models import (
    CheckoutSession,
    CheckoutStatus,
    LedgerAction,
    PaymentAdjustment,
    PaymentCredit,
    PaymentEvent,
    PurchaseStatus,
    User,
)
from vgen_app.services import changes, ledger, metrics, payment_events
from vgen_app.services.cookies import safe_next
from vgen_app.services.errors import BillingError
from vgen_app.services.payment_events import WebhookResult, id_of
from vgen_app.services.purchases import Purchase, purchase_of, purchases, receipt_url, shortfalls
from vgen_app.services.stripe_events import (
    CREDITING_EVENTS,
    HANDLED_EVENTS,
    OBJECT_OF,
    MalformedEvent,
    malformed,
)

log = logging.getLogger("vgen.billing")

# What handle_webhook raises (PaymentsUnavailable: Stripe could not be asked which checkout a
# charge belongs to; the webhook answers 503 and Stripe delivers again later).
__all__ = [
    "CREDITING_EVENTS",
    "BadSignature",
    "BillingError",
    "MalformedEvent",
    "PaymentsUnavailable",
    "Purchase",
    "PurchaseStatus",
    "WebhookResult",
    "malformed",
    "purchase_of",
    "purchases",  # the Tokens page's purchase history (services/purchases.py)
    "receipt_url",
    "shortfalls",
]


def packages() -> list[TokenPackage]:
    return list(get_settings().token_packages)


def package(package_id: str) -> TokenPackage:
    for pkg in packages():
        if pkg.id == package_id:
            return pkg
    raise BillingError("unknown_package", "That package does not exist.")


# --- starting a checkout -------------------------------------------------------------------------


# The longest return path a checkout carries (a task page's path is far shorter).
BACK_MAX = 300


def return_path(back: str | None) -> str | None:
    """The app page to go back to after a checkout (`back` from /tokens?back=…), or None: only a
    path inside the app (cookies.safe_next), with no whitespace or control character (browsers
    drop a tab or newline from a URL: "/<tab>/evil.example" would become "//evil.example")."""
    if not back or len(back) > BACK_MAX or any(c.isspace() or not c.isprintable() for c in back):
        return None
    return back if safe_next(back) == back else None


def return_query(back: str | None) -> str:
    """`&back=…` (URL-encoded) for a checkout's return URLs, or "" without a valid path."""
    path = return_path(back)
    return f"&back={quote(path, safe='')}" if path else ""


def start_checkout(
    db: Session,
    user_id: str,
    package_id: str,
    provider: PaymentProvider,
    back: str | None = None,
) -> CheckoutSession:
    """Create the provider's checkout (no transaction open during the HTTP call) and remember it.
    `back`: the app page the user came to buy from; the success and cancel URLs carry it (and
    the test checkout's own page, which stands in for the provider's)."""
    pkg = package(package_id)
    user = db.get(User, user_id)
    end_read(db)
    if user is None:
        raise BillingError("unknown_user", "Please log in again.")
    app_url = get_settings().app_url
    carry = return_query(back)
    created = provider.create_checkout(
        CheckoutRequest(
            user_id=user.id,
            email=user.email,
            package=pkg,
            success_url=f"{app_url}/tokens/success?session_id={{CHECKOUT_SESSION_ID}}{carry}",
            cancel_url=f"{app_url}/tokens?canceled=1{carry}",
        )
    )
    url = created.url + carry if created.provider == TestCheckout.name else created.url
    row = CheckoutSession(
        id=created.id,
        user_id=user.id,
        provider=created.provider,
        package_id=pkg.id,
        tokens=pkg.tokens,
        amount_cents=pkg.price_cents,
        currency=pkg.currency,
        url=url,
        created_at=clock.now(),
    )
    db.add(row)
    db.commit()
    return row


def checkout_for_user(db: Session, session_id: str, user_id: str) -> CheckoutSession | None:
    """A checkout, only for its owner."""
    row = db.get(CheckoutSession, session_id) if session_id else None
    end_read(db)
    return row if row is not None and row.user_id == user_id else None


# --- the webhook -----------------------------------------------------------------------------------


def handle_webhook(
    db: Session,
    payload: bytes | str,
    sig_header: str | None,
    secret: str | None,
    provider: PaymentProvider | None = None,
) -> WebhookResult:
    """A delivery of the webhook: its signature checked (BadSignature), its shape checked
    (MalformedEvent), then applied once or ignored. No database work before both checks.
    `provider` (default: the configured one) is asked which checkout a charge belongs to when
    the event does not tell (PaymentsUnavailable if it cannot be asked)."""
    try:
        event = verify_event(payload, sig_header, secret)
        problem = malformed(event)
    except (BadSignature, UnicodeDecodeError):
        metrics.webhook(None, "refused")
        raise
    except RecursionError:  # signed, but nested too deeply for the JSON parser
        problem = "nested too deeply"
    if problem:
        metrics.webhook(None, "malformed")
        raise MalformedEvent(problem)
    event_type = event.get("type")
    kind = event_type if event_type in HANDLED_EVENTS else "other"  # the metric's label
    try:
        result = _apply_event(db, event, event_type, provider)
    except PaymentsUnavailable:
        metrics.webhook(kind, "deferred")
        raise
    except Exception:
        metrics.webhook(kind, "error")
        raise
    metrics.webhook(kind, result.status)
    return result


def _apply_event(
    db: Session, event: dict[str, Any], event_type: Any, provider: PaymentProvider | None
) -> WebhookResult:
    if event_type not in HANDLED_EVENTS:
        return WebhookResult("ignored", f"event type {event_type!r} is not handled")
    obj = (event.get("data") or {}).get("object") or {}
    if not isinstance(obj, dict) or obj.get("object") != OBJECT_OF[event_type]:
        return WebhookResult("ignored", f"not a {OBJECT_OF[event_type]}")
    event_id = str(event.get("id") or "")
    if event_type in payment_events.CLOSING_EVENTS:
        return payment_events.close_checkout(db, obj, event_id, event_type)
    if event_type == payment_events.REFUNDED:
        return payment_events.refund(db, obj, event_id, provider or get_payments())
    if event_type in payment_events.CHARGE_EVENTS:
        return payment_events.dispute(db, obj, event_id, event_type, provider or get_payments())
    if not _paid(obj):
        return WebhookResult("ignored", f"payment_status is {obj.get('payment_status')!r}")
    if obj.get("mode") not in (None, "payment"):
        return WebhookResult("ignored", f"mode is {obj.get('mode')!r}")
    return credit_checkout(db, obj, event_id, event_type)


def _paid(obj: dict[str, Any]) -> bool:
    """Paid, or nothing to pay (a 100 % promotion code: Stripe's `no_payment_required`)."""
    status = obj.get("payment_status")
    return status == "paid" or (status == "no_payment_required" and obj.get("amount_total") == 0)


def _priced(obj: dict[str, Any]) -> Any:
    """What the session's items cost before discounts and taxes (`amount_subtotal`; the total
    where Stripe sent no subtotal): a promotion code or Stripe Tax changes only the total."""
    subtotal = obj.get("amount_subtotal")
    return subtotal if isinstance(subtotal, int) else obj.get("amount_total")


def _receipt_of(obj: dict[str, Any]) -> str | None:
    """Stripe's receipt link, from a session retrieved with its PaymentIntent's latest charge."""
    intent = obj.get("payment_intent")
    charge = intent.get("latest_charge") if isinstance(intent, dict) else None
    url = charge.get("receipt_url") if isinstance(charge, dict) else None
    return url if isinstance(url, str) and 0 < len(url) <= 2000 and "\x00" not in url else None


def credit_checkout(
    db: Session,
    obj: dict[str, Any],
    event_id: str,
    event_type: str = "checkout.session.completed",
) -> WebhookResult:
    """Credit a paid Checkout Session's tokens once, whatever the number of deliveries.

    The `payment_credits` row keyed by the session id is written in the same transaction as the
    balance change: a second delivery (even concurrent) hits the primary key and credits nothing.
    """
    session_id = str(obj.get("id") or "")
    metadata = obj.get("metadata") or {}
    if not session_id or not isinstance(metadata, dict):
        return WebhookResult("ignored", "no session id or metadata")
    local = db.get(CheckoutSession, session_id)
    if local is not None:  # our own record wins over anything in the event
        user_id, tokens = local.user_id, local.tokens
        price, currency = local.amount_cents, local.currency
    else:
        try:
            pkg = package(str(metadata.get("package_id", "")))
        except BillingError:
            db.rollback()
            log.error("checkout %s: unknown package %r", session_id, metadata.get("package_id"))
            return WebhookResult("ignored", "unknown package")
        user_id, tokens = str(metadata.get("user_id", "")), pkg.tokens
        price, currency = pkg.price_cents, pkg.currency
    if _priced(obj) != price or str(obj.get("currency", "")).lower() != currency:
        db.rollback()
        log.error(
            "checkout %s: paid %r %r, expected %r %r; not credited",
            session_id,
            _priced(obj),
            obj.get("currency"),
            price,
            currency,
        )
        return WebhookResult("ignored", "amount does not match the package")
    total = obj.get("amount_total")
    facts = {
        "payment_intent": id_of(obj.get("payment_intent")),
        "paid_cents": total if isinstance(total, int) and 0 <= total <= 10**12 else None,
        "receipt_url": _receipt_of(obj),
    }
    return _credit(db, session_id, event_id[:255], event_type, user_id, tokens, local, facts)


def _credit(
    db: Session,
    session_id: str,
    event_id: str,
    event_type: str,
    user_id: str,
    tokens: int,
    local: CheckoutSession | None,
    facts: dict[str, Any],
) -> WebhookResult:
    """The credit row, the ledger change, the link between them and the checkout's `paid`: one
    batch. A redelivery (the credit row's or the event's primary key) or an unknown user (its
    foreign key) fails the whole batch, so nothing is written, whoever delivers how often and
    concurrently. A refund or dispute recorded before (it arrived first) is taken back in the
    same batch (`payment_events.settle`): the user never holds those tokens."""
    now = clock.now()
    op = ledger.BalanceOp(
        user_id,
        tokens,
        LedgerAction.TOPUP,
        reference=session_id,
        note=f"{tokens:,} tokens",
        now=now,
    )
    batch = Batch()
    if local is not None:
        batch.add(payment_events.lock(session_id))
        payment_events.event_row(batch, event_id, event_type, session_id)
    batch.add(
        insert(PaymentCredit).values(
            checkout_session_id=session_id,
            event_id=event_id,
            user_id=user_id,
            tokens=tokens,
            created_at=now,
        )
    )
    op.add_to(batch)
    batch.add(
        update(PaymentCredit)
        .where(col(PaymentCredit.checkout_session_id) == session_id)
        .values(ledger_entry_id=op.entry_id())
    )
    cs = CheckoutSession
    batch.add(
        update(cs)
        .where(col(cs.id) == session_id)
        .values(
            status=CheckoutStatus.PAID,
            paid_at=now,
            payment_intent=func.coalesce(facts["payment_intent"], col(cs.payment_intent)),
            paid_cents=facts["paid_cents"],
            receipt_url=func.coalesce(facts["receipt_url"], col(cs.receipt_url)),
        )
    )
    ops: tuple[ledger.BalanceOp, ...] = ()
    if local is not None:
        earlier = (
            select(PaymentAdjustment.object_id)
            .where(col(PaymentAdjustment.checkout_session_id) == session_id)
            .order_by(col(PaymentAdjustment.created_at).desc())
            .limit(1)
            .scalar_subquery()
        )
        note = "refunded or disputed before the payment was confirmed"
        ops = payment_events.settle(batch, session_id, user_id, earlier, note)
    try:
        results = run_batch(db, batch.statements)
    except IntegrityError:
        return _refused_credit(db, session_id, event_id, user_id)
    change = op.change_of(db, batch.rows(results, "entry"))
    taken = payment_events.settled_change(db, ops, batch, results) if ops else None
    refresh_loaded(db, CheckoutSession, session_id)
    changes.touch(db, user_id)
    db.commit()
    log.info("checkout %s: credited %d tokens to %s", session_id, tokens, user_id)
    if taken is not None:
        log.info("checkout %s: %+d tokens at once (%s)", session_id, taken.diff, taken.reference)
    return WebhookResult("credited", change=change)


def _refused_credit(db: Session, session_id: str, event_id: str, user_id: str) -> WebhookResult:
    """The credit row was refused: it exists (a redelivery) or its user does not."""
    db.rollback()
    duplicate = db.get(PaymentCredit, session_id) is not None or (
        bool(event_id) and db.get(PaymentEvent, event_id) is not None
    )
    db.rollback()
    if duplicate:
        return WebhookResult("duplicate", "already credited")
    log.error("checkout %s: unknown user %r", session_id, user_id)
    return WebhookResult("ignored", "unknown user")


# --- from the success page: fulfil when the webhook is late ------------------------------------


def fulfill(db: Session, session_id: str, provider: PaymentProvider | None = None) -> WebhookResult:
    """Stripe's "fulfil from both sides": what the webhook does, from the success page when the
    webhook has not credited yet. The Checkout Session is retrieved from Stripe (line items and
    the PaymentIntent's latest charge expanded, with no transaction open) and, if paid, credited
    through the same `credit_checkout` (once: the credit row's key); an expired one is marked so.
    Also stores the receipt link of a session credited before it was known. PaymentsUnavailable
    if Stripe cannot be asked. The caller checks the session is the user's own."""
    provider = provider or get_payments()
    row = db.get(CheckoutSession, session_id) if session_id else None
    end_read(db)
    if row is None or row.provider != provider.name or row.provider == TestCheckout.name:
        return WebhookResult("ignored", "no checkout of this provider to retrieve")
    if row.status == CheckoutStatus.PAID and row.receipt_url:
        return WebhookResult("duplicate", "already credited")
    if row.status in (CheckoutStatus.FAILED, CheckoutStatus.EXPIRED):
        return WebhookResult("ignored", f"the checkout is {row.status}")
    obj = provider.retrieve_checkout(session_id)
    if obj is None or obj.get("id") != session_id or malformed(_as_event(obj)):
        log.error("checkout %s: Stripe does not know it (or sent junk)", session_id)
        return WebhookResult("ignored", "unknown to the provider")
    if not _paid(obj):
        if obj.get("status") == "expired":
            return payment_events.close_checkout(db, obj, "", "checkout.session.expired")
        return WebhookResult("ignored", f"payment_status is {obj.get('payment_status')!r}")
    if row.status == CheckoutStatus.PAID:
        return _store_receipt(db, row, _receipt_of(obj))
    items = (obj.get("line_items") or {}).get("data")
    if isinstance(items, list) and sum(
        i.get("amount_subtotal") or 0 for i in items if isinstance(i, dict)
    ) != _priced(obj):
        log.error("checkout %s: line items do not add up to the subtotal", session_id)
        return WebhookResult("ignored", "line items do not match")
    return credit_checkout(db, obj, "", "fulfill")


def _as_event(obj: dict[str, Any]) -> dict[str, Any]:
    return {"id": None, "type": "checkout.session.completed", "data": {"object": obj}}


def _store_receipt(db: Session, row: CheckoutSession, url: str | None) -> WebhookResult:
    if url:
        db.exec(
            update(CheckoutSession)
            .where(col(CheckoutSession.id) == row.id, col(CheckoutSession.receipt_url).is_(None))
            .values(receipt_url=url)
        )
        refresh_loaded(db, CheckoutSession, row.id)
        changes.touch(db, row.user_id)
        db.commit()
    return WebhookResult("duplicate", "already credited")


# --- the built-in test checkout ------------------------------------------------------------------


def own_test_checkout(db: Session, session_id: str, user_id: str) -> CheckoutSession:
    row = db.get(CheckoutSession, session_id) if session_id else None
    end_read(db)
    if row is None or row.user_id != user_id or row.provider != TestCheckout.name:
        raise BillingError("not_found", "This checkout does not exist.")
    return row


def pay_test_checkout(
    db: Session, session_id: str, user_id: str, provider: TestCheckout
) -> WebhookResult:
    """The test page's Pay button: a signed event through the same webhook handler."""
    row = own_test_checkout(db, session_id, user_id)
    user = db.get(User, user_id)
    end_read(db)
    if user is None:
        raise BillingError("not_found", "This checkout does not exist.")
    pkg = TokenPackage(
        id=row.package_id, tokens=row.tokens, price_cents=row.amount_cents, currency=row.currency
    )
    payload, header = provider.completed_event(row.id, user_id, pkg, user.email)
    return handle_webhook(db, payload, header, provider.webhook_secret, provider)
