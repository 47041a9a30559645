"""The built-in test checkout's receipt page: its test-only Refund and Dispute buttons sign
`charge.refunded`, `charge.dispute.created` and `charge.dispute.closed` (won) events and deliver
them through the one webhook handler, so the whole cycle can be tried without Stripe."""

from __future__ import annotations

from sqlmodel import Session

from vgen_app.adapters.payments import TestCheckout
from vgen_app.models import CheckoutSession, CheckoutStatus, DisputeStatus
from vgen_app.services.billing import WebhookResult, handle_webhook, own_test_checkout
from vgen_app.services.errors import BillingError

TEST_PARTIAL_REFUND = 4  # a partial test refund gives back a quarter of the amount


def _paid_test_checkout(db: Session, session_id: str, user_id: str) -> CheckoutSession:
    row = own_test_checkout(db, session_id, user_id)
    if row.status != CheckoutStatus.PAID or not row.payment_intent:
        raise BillingError("not_paid", "This test checkout is not paid.")
    return row


def refund(
    db: Session, session_id: str, user_id: str, provider: TestCheckout, full: bool
) -> WebhookResult:
    """The receipt page's test-only Refund buttons: a signed `charge.refunded` (the rest, or a
    quarter of the amount more) through the same webhook handler."""
    row = _paid_test_checkout(db, session_id, user_id)
    amount = row.paid_cents or row.amount_cents
    if row.refunded_cents >= amount:
        raise BillingError("refunded", "This test payment is refunded in full already.")
    step = amount if full else max(1, amount // TEST_PARTIAL_REFUND)
    refunded = min(amount, row.refunded_cents + step)
    payload, header = provider.refunded_event(
        str(row.payment_intent), amount, refunded, row.currency
    )
    return handle_webhook(db, payload, header, provider.webhook_secret, provider)


def dispute(
    db: Session, session_id: str, user_id: str, provider: TestCheckout, won: bool
) -> WebhookResult:
    """The receipt page's test-only Dispute buttons: a signed `charge.dispute.created`, or
    `charge.dispute.closed` as won, through the same webhook handler."""
    row = _paid_test_checkout(db, session_id, user_id)
    if won and row.dispute_status != DisputeStatus.OPEN:
        raise BillingError("no_dispute", "This test payment has no open dispute.")
    if not won and row.dispute_status is not None:
        raise BillingError("disputed", "This test payment was disputed already.")
    payload, header = provider.dispute_event(
        str(row.payment_intent),
        row.paid_cents or row.amount_cents,
        row.currency,
        "won" if won else "needs_response",
    )
    return handle_webhook(db, payload, header, provider.webhook_secret, provider)
