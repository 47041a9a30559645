"""Buying tokens: packages, checkouts, and crediting from the signed webhook exactly once."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from vgen_app import clock
from vgen_app.adapters.payments import (
    BadSignature,
    CheckoutRequest,
    PaymentProvider,
    TestCheckout,
    verify_event,
)
from vgen_app.config import TokenPackage, get_settings
from vgen_app.db import Batch, end_read, refresh_loaded, run_batch
from vgen_app.models import CheckoutSession, CheckoutStatus, LedgerAction, PaymentCredit, User
from vgen_app.services import changes, ledger
from vgen_app.services.cookies import safe_next
from vgen_app.services.errors import BillingError

log = logging.getLogger("vgen.billing")

__all__ = ["BadSignature", "BillingError", "MalformedEvent"]  # what handle_webhook raises

CREDITING_EVENTS = {"checkout.session.completed", "checkout.session.async_payment_succeeded"}


class MalformedEvent(BillingError):
    """Signed, so it came from whoever holds the secret, but Stripe never sends this shape."""

    def __init__(self, problem: str) -> None:
        super().__init__("malformed_event", f"malformed event: {problem}")
        self.problem = problem


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


@dataclass(frozen=True)
class WebhookResult:
    status: str  # credited | duplicate | ignored
    detail: str = ""
    change: ledger.BalanceChange | None = None


def handle_webhook(
    db: Session, payload: bytes | str, sig_header: str | None, secret: str | None
) -> WebhookResult:
    """A delivery of the webhook: its signature checked (BadSignature), its shape checked
    (MalformedEvent), then credited once or ignored. No database work before both checks."""
    try:
        event = verify_event(payload, sig_header, secret)
        problem = malformed(event)
    except RecursionError:  # signed, but nested too deeply for the JSON parser
        problem = "nested too deeply"
    if problem:
        raise MalformedEvent(problem)
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

    return _credit(db, session_id, event_id[:255], user_id, tokens)


def _credit(
    db: Session, session_id: str, event_id: str, user_id: str, tokens: int
) -> WebhookResult:
    """The credit row, the ledger change, the link between them and the checkout's `paid`: one
    batch. A redelivery (the credit row's primary key) or an unknown user (its foreign key)
    fails the whole batch, so nothing is written, whoever delivers how often and concurrently."""
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
    batch.add(
        update(CheckoutSession)
        .where(col(CheckoutSession.id) == session_id)
        .values(status=CheckoutStatus.PAID, paid_at=now)
    )
    try:
        results = run_batch(db, batch.statements)
    except IntegrityError:
        return _refused_credit(db, session_id, user_id)
    change = op.change_of(db, batch.rows(results, "entry"))
    refresh_loaded(db, CheckoutSession, session_id)
    changes.touch(db, user_id)
    db.commit()
    log.info("checkout %s: credited %d tokens to %s", session_id, tokens, user_id)
    return WebhookResult("credited", change=change)


def _refused_credit(db: Session, session_id: str, user_id: str) -> WebhookResult:
    """The credit row was refused: it exists (a redelivery) or its user does not."""
    db.rollback()
    duplicate = db.get(PaymentCredit, session_id) is not None
    db.rollback()
    if duplicate:
        return WebhookResult("duplicate", "already credited")
    log.error("checkout %s: unknown user %r", session_id, user_id)
    return WebhookResult("ignored", "unknown user")


def _unstorable(value: Any, most: int) -> bool:
    text = str(value or "")
    return len(text) > most or "\x00" in text  # PostgreSQL refuses NUL in text


def malformed(event: dict[str, Any]) -> str | None:
    """Why a verified event would break the billing code (None if it would not): a `type` that is
    not a string, a crediting event whose `data` is not an object, or ids it would store that are
    not strings, do not fit their columns or hold a NUL byte. Only what `handle_webhook` reads is checked,
    so any event Stripe sends (other types, nulls, extra fields) passes and is handled or ignored."""
    event_type = event.get("type")
    if not isinstance(event_type, str):
        return "type"
    if event_type not in CREDITING_EVENTS:
        return None  # ignored whatever it holds
    data = event.get("data")
    if data and not isinstance(data, dict):
        return "data"
    obj = (data or {}).get("object")
    if not isinstance(obj, dict):
        return None  # not a Checkout Session: ignored
    event_id, session_id = event.get("id"), obj.get("id")
    if not isinstance(event_id, str | None) or _unstorable(event_id, 10_000):
        return "id"  # Stripe's ids are strings
    if not isinstance(session_id, str | None) or _unstorable(session_id, 255):
        return "data.object.id"
    metadata = obj.get("metadata")
    if isinstance(metadata, dict) and _unstorable(metadata.get("user_id"), 32):
        return "data.object.metadata.user_id"  # ours are user ids (32 at most)
    return None


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
