"""A user's purchases (their checkouts and what became of them), for the Tokens page, and the
purchases whose take-back fell short, for the operator."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, or_
from sqlmodel import Session, col, select

from vgen_app import clock
from vgen_app.adapters.payments import TestCheckout
from vgen_app.db import end_read, raw_read, read_only
from vgen_app.models import CheckoutSession, CheckoutStatus, DisputeStatus, PurchaseStatus


@dataclass(frozen=True)
class Purchase:
    """A checkout the user started, as the Tokens page lists it."""

    session_id: str
    created_at: datetime
    package_id: str
    tokens: int
    amount_cents: int  # what was charged (after discounts, with taxes) when known, else the price
    currency: str
    status: PurchaseStatus
    refunded_cents: int
    tokens_taken_back: int
    shortfall: int  # tokens a refund or dispute wanted back that had been spent already
    receipt_url: str | None  # Stripe's receipt, or the test checkout's receipt page (a path)


OPEN_SHOWN = timedelta(days=1)  # an open checkout older than this was abandoned: not listed


def purchase_status(row: CheckoutSession) -> PurchaseStatus:
    if row.status != CheckoutStatus.PAID:
        return PurchaseStatus(row.status.value)
    if row.dispute_status in (DisputeStatus.OPEN, DisputeStatus.LOST):
        return PurchaseStatus.DISPUTED
    if row.refund_tokens >= row.tokens:
        return PurchaseStatus.REFUNDED
    if row.refunded_cents > 0:
        return PurchaseStatus.PARTLY_REFUNDED
    return PurchaseStatus.PAID


def receipt_url(row: CheckoutSession) -> str | None:
    if row.provider == TestCheckout.name:
        paid = row.status == CheckoutStatus.PAID
        return TestCheckout.receipt_path(row.id) if paid else None
    return row.receipt_url


def purchase_of(row: CheckoutSession) -> Purchase:
    return Purchase(
        session_id=row.id,
        created_at=row.created_at,
        package_id=row.package_id,
        tokens=row.tokens,
        amount_cents=row.paid_cents if row.paid_cents is not None else row.amount_cents,
        currency=row.currency,
        status=purchase_status(row),
        refunded_cents=row.refunded_cents,
        tokens_taken_back=row.tokens_taken_back,
        shortfall=row.shortfall,
        receipt_url=receipt_url(row),
    )


_MINE = (
    select(CheckoutSession.__table__)
    .where(
        col(CheckoutSession.user_id) == bindparam("user_id"),
        or_(
            col(CheckoutSession.status) != CheckoutStatus.OPEN,
            col(CheckoutSession.created_at) >= bindparam("since"),
        ),
    )
    .order_by(col(CheckoutSession.created_at).desc(), col(CheckoutSession.id).desc())
    .limit(bindparam("limit"))
)


@raw_read
def purchases(db: Session, user_id: str, limit: int = 20) -> list[Purchase]:
    """The user's purchases, newest first: every checkout they started but those left open (an
    open one younger than a day is listed: it may still be paid). One statement built once,
    Core rows (the Tokens page reads this on every load)."""
    params = {
        "user_id": user_id,
        "since": clock.now() - OPEN_SHOWN,
        "limit": max(1, min(limit, 500)),
    }
    rows = db.connection().execute(_MINE, params).all()
    end_read(db)
    return [purchase_of(row) for row in rows]  # type: ignore[arg-type]


@read_only
def shortfalls(db: Session, limit: int = 100) -> list[tuple[str, Purchase]]:
    """(user id, purchase) of the purchases whose take-back fell short, newest first: for the
    operator (the admin API)."""
    cs = CheckoutSession
    rows = db.exec(
        select(cs)
        .where(col(cs.shortfall) > 0)
        .order_by(col(cs.created_at).desc(), col(cs.id).desc())
        .limit(max(1, min(limit, 500)))
    ).all()
    end_read(db)
    return [(row.user_id, purchase_of(row)) for row in rows]
