"""Buying tokens: packages, checkouts, and crediting from the signed webhook exactly once."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import stripe
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from vgen_app import clock
from vgen_app.adapters.payments import CheckoutRequest, PaymentProvider, TestCheckout
from vgen_app.config import TokenPackage, get_settings
from vgen_app.db import end_read, is_d1, refresh_loaded, run_batch, sql
from vgen_app.models import CheckoutSession, LedgerAction, PaymentCredit, User
from vgen_app.services import ledger
from vgen_app.services.errors import BillingError

log = logging.getLogger("vgen.billing")

CREDITING_EVENTS = {"checkout.session.completed", "checkout.session.async_payment_succeeded"}


class BadSignature(BillingError):
    def __init__(self, message: str = "bad signature") -> None:
        super().__init__("bad_signature", message)


def packages() -> list[TokenPackage]:
    return list(get_settings().token_packages)


def package(package_id: str) -> TokenPackage:
    for pkg in packages():
        if pkg.id == package_id:
            return pkg
    raise BillingError("unknown_package", "That package does not exist.")


# --- starting a checkout -------------------------------------------------------------------------


def start_checkout(
    db: Session, user_id: str, package_id: str, provider: PaymentProvider
) -> CheckoutSession:
    """Create the provider's checkout (no transaction open during the HTTP call) and remember it."""
    pkg = package(package_id)
    user = db.get(User, user_id)
    end_read(db)
    if user is None:
        raise BillingError("unknown_user", "Please log in again.")
    app_url = get_settings().app_url
    created = provider.create_checkout(
        CheckoutRequest(
            user_id=user.id,
            email=user.email,
            package=pkg,
            success_url=f"{app_url}/tokens/success?session_id={{CHECKOUT_SESSION_ID}}",
            cancel_url=f"{app_url}/tokens?canceled=1",
        )
    )
    row = CheckoutSession(
        id=created.id,
        user_id=user.id,
        provider=created.provider,
        package_id=pkg.id,
        tokens=pkg.tokens,
        amount_cents=pkg.price_cents,
        currency=pkg.currency,
        url=created.url,
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


@dataclass(frozen=True)
class WebhookResult:
    status: str  # credited | duplicate | ignored
    detail: str = ""
    change: ledger.BalanceChange | None = None


def verify_event(
    payload: bytes | str, sig_header: str | None, secret: str | None
) -> dict[str, Any]:
    """Check the Stripe signature on the raw body (and its age); return the event as a dict."""
    if not secret:
        raise BadSignature("no webhook secret configured")
    text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
    try:
        # verify_header checks the age only when given a tolerance (Stripe's default: 5 minutes).
        stripe.WebhookSignature.verify_header(
            text, sig_header or "", secret, tolerance=stripe.Webhook.DEFAULT_TOLERANCE
        )
    except (stripe.SignatureVerificationError, ValueError, IndexError) as exc:
        raise BadSignature(str(exc)) from exc
    try:
        event = json.loads(text)
    except ValueError as exc:
        raise BadSignature("body is not JSON") from exc
    if not isinstance(event, dict):
        raise BadSignature("event is not an object")
    return event


def handle_webhook(
    db: Session, payload: bytes | str, sig_header: str | None, secret: str | None
) -> WebhookResult:
    event = verify_event(payload, sig_header, secret)
    event_type = event.get("type")
    if event_type not in CREDITING_EVENTS:
        return WebhookResult("ignored", f"event type {event_type!r} is not handled")
    obj = (event.get("data") or {}).get("object") or {}
    if not isinstance(obj, dict) or obj.get("object") != "checkout.session":
        return WebhookResult("ignored", "not a checkout session")
    if obj.get("payment_status") != "paid":
        return WebhookResult("ignored", f"payment_status is {obj.get('payment_status')!r}")
    if obj.get("mode") not in (None, "payment"):
        return WebhookResult("ignored", f"mode is {obj.get('mode')!r}")
    return credit_checkout(db, obj, str(event.get("id") or ""))


def credit_checkout(db: Session, obj: dict[str, Any], event_id: str) -> WebhookResult:
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
    if obj.get("amount_total") != price or str(obj.get("currency", "")).lower() != currency:
        db.rollback()
        log.error(
            "checkout %s: paid %r %r, expected %r %r; not credited",
            session_id,
            obj.get("amount_total"),
            obj.get("currency"),
            price,
            currency,
        )
        return WebhookResult("ignored", "amount does not match the package")

    if is_d1(db):  # D1 commits each statement on its own: the credit must be one batch
        return _credit_d1(db, session_id, event_id[:255], user_id, tokens)
    credit = PaymentCredit(
        checkout_session_id=session_id, event_id=event_id[:255], user_id=user_id, tokens=tokens
    )
    db.add(credit)
    try:
        db.flush()
    except IntegrityError:
        return _refused_credit(db, session_id, user_id)
    try:
        change = ledger.apply_change(
            db, user_id, tokens, LedgerAction.TOPUP, reference=session_id, note=f"{tokens:,} tokens"
        )
    except ledger.UnknownUser:
        db.rollback()
        return WebhookResult("ignored", "unknown user")
    credit.ledger_entry_id = change.entry_id
    if local is not None:
        local.status, local.paid_at = "paid", clock.now()
        db.add(local)
    db.commit()
    log.info("checkout %s: credited %d tokens to %s", session_id, tokens, user_id)
    return WebhookResult("credited", change=change)


def _refused_credit(db: Session, session_id: str, user_id: str) -> WebhookResult:
    """The credit row was refused: it exists (a redelivery) or its user does not."""
    db.rollback()
    if db.get(PaymentCredit, session_id) is not None:
        db.rollback()
        return WebhookResult("duplicate", "already credited")
    db.rollback()
    log.error("checkout %s: unknown user %r", session_id, user_id)
    return WebhookResult("ignored", "unknown user")


def _credit_d1(
    db: Session, session_id: str, event_id: str, user_id: str, tokens: int
) -> WebhookResult:
    """`credit_checkout` on Cloudflare D1 (docs/d1.md): the credit row, the ledger change, the
    link and the checkout's `paid` in one all-or-nothing batch. A redelivery (the credit row's
    primary key) or an unknown user (its foreign key) fails the whole batch: nothing is written."""
    now = clock.now()
    v = {"cs": session_id, "event_id": event_id, "uid": user_id, "tokens": tokens, "now": now}
    statements = [
        sql(
            "INSERT INTO payment_credits (checkout_session_id, event_id, user_id, tokens,"
            " created_at) VALUES (:cs, :event_id, :uid, :tokens, :now)",
            **v,
        ),
        *ledger.d1_statements(
            user_id, tokens, LedgerAction.TOPUP.value, session_id, f"{tokens:,} tokens", now
        ),
        sql(
            "UPDATE payment_credits SET ledger_entry_id ="
            " (SELECT max(id) FROM ledger_entries WHERE user_id = :uid)"
            " WHERE checkout_session_id = :cs",
            **v,
        ),
        sql("UPDATE checkout_sessions SET status = 'paid', paid_at = :now WHERE id = :cs", **v),
    ]
    try:
        rows = run_batch(db, statements)
    except IntegrityError:
        return _refused_credit(db, session_id, user_id)
    change = ledger.d1_change(db, rows[2], user_id, LedgerAction.TOPUP.value, tokens, session_id)
    refresh_loaded(db, CheckoutSession, session_id)
    db.commit()
    log.info("checkout %s: credited %d tokens to %s", session_id, tokens, user_id)
    return WebhookResult("credited", change=change)


# --- the built-in test checkout ------------------------------------------------------------------


def pay_test_checkout(
    db: Session, session_id: str, user_id: str, provider: TestCheckout
) -> WebhookResult:
    """The test page's Pay button: a signed event through the same webhook handler."""
    row = db.get(CheckoutSession, session_id) if session_id else None
    user = db.get(User, user_id)
    end_read(db)
    if row is None or row.user_id != user_id or row.provider != "test" or user is None:
        raise BillingError("not_found", "This checkout does not exist.")
    pkg = TokenPackage(
        id=row.package_id, tokens=row.tokens, price_cents=row.amount_cents, currency=row.currency
    )
    payload, header = provider.completed_event(row.id, user_id, pkg, user.email)
    return handle_webhook(db, payload, header, provider.webhook_secret)
