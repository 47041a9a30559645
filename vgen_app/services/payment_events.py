"""After a payment: checkouts that fail or expire, refunds, disputes, and what they take back.

Each event is applied once, whatever the number, order or concurrency of its deliveries: its
batch writes a `payment_events` row (keyed by the event id) and, for a refund or a dispute, a
`payment_adjustments` row (keyed by the refund's or dispute's id): a second delivery fails on a
primary key and changes nothing.

A purchase (its `checkout_sessions` row) keeps facts that only grow: the charge's largest
`amount_refunded` seen and its share of the tokens (`refund_tokens` = tokens x refunded / charged,
rounded down), and the dispute's state (open, then won or lost). From them follows what should
be taken back: nothing before the purchase is credited; all its tokens while a dispute is open
or lost; else the refunded share. `settle` moves the balance to that, in SQL from the locked rows
(never read-then-write): it takes what is missing but at most what is left of the balance (the
rest is the purchase's `shortfall`), or gives back what a won dispute no longer holds (the
shortfall forgiven first: the user never lost those tokens). So a refund or dispute that arrives
before the payment is credited is recorded, and the credit then takes it back in the same
transaction; several partial refunds add up whatever their order; a dispute closed before it was
opened nets out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Executable, case, func, insert, literal, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from vgen_app import clock
from vgen_app.adapters.payments import PaymentProvider
from vgen_app.db import Batch, end_read, refresh_loaded, run_batch
from vgen_app.models import (
    AdjustmentKind,
    CheckoutSession,
    CheckoutStatus,
    DisputeStatus,
    LedgerAction,
    LedgerEntry,
    PaymentAdjustment,
    PaymentEvent,
)
from vgen_app.services import changes, ledger

log = logging.getLogger("vgen.billing")

CLOSING_EVENTS = {
    "checkout.session.async_payment_failed": CheckoutStatus.FAILED,
    "checkout.session.expired": CheckoutStatus.EXPIRED,
}
REFUNDED = "charge.refunded"
DISPUTE_CREATED = "charge.dispute.created"
DISPUTE_CLOSED = "charge.dispute.closed"
CHARGE_EVENTS = {REFUNDED, DISPUTE_CREATED, DISPUTE_CLOSED}
# A closed dispute's status: the money stayed with us (won; an inquiry closed without a
# chargeback; prevented), or it went back to the cardholder.
KEPT = {"won", "warning_closed", "prevented"}
LOST = {"lost"}

CS = CheckoutSession


@dataclass(frozen=True)
class WebhookResult:
    status: str  # credited | applied | duplicate | ignored
    detail: str = ""
    change: ledger.BalanceChange | None = None


def id_of(value: Any) -> str | None:
    """An expandable field's id: the string itself, or the expanded object's `id`."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


MAX_AMOUNT = 10**12  # cents: far above any Stripe amount, far below BIGINT's limit


def count(value: Any) -> int | None:
    """An amount from an event: an int (not a bool) from 0 to MAX_AMOUNT, else None."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_AMOUNT:
        return None
    return value


# --- the statements every payment batch shares -------------------------------------------------


def lock(session_id: str) -> Executable:
    """The purchase's row, locked first by every payment batch (then the user's): two events
    of one purchase queue on it (PostgreSQL; SQLite and D1 serialize writers) and never
    deadlock."""
    return select(CS.id).where(col(CS.id) == session_id).with_for_update()


def event_row(batch: Batch, event_id: str, event_type: str, session_id: str) -> None:
    """The event's row (its primary key refuses a second delivery); none for an event without
    an id (its object's own key dedupes it)."""
    if event_id:
        batch.add(
            insert(PaymentEvent).values(
                event_id=event_id[:255],
                type=event_type[:64],
                checkout_session_id=session_id,
                created_at=clock.now(),
            )
        )


def _of(session_id: str, expr: ColumnElement) -> ColumnElement:
    """A value computed from the purchase's row, inside a statement about another table."""
    return select(expr).where(col(CS.id) == session_id).scalar_subquery()


def _zero() -> ColumnElement:
    return literal(0, BigInteger())


def wanted() -> ColumnElement:
    """SQL: the tokens the purchase's facts say should be taken back by now."""
    return case(
        (col(CS.status) != CheckoutStatus.PAID, _zero()),
        (col(CS.dispute_status).in_([DisputeStatus.OPEN, DisputeStatus.LOST]), col(CS.tokens)),
        else_=col(CS.refund_tokens),
    )


def settle(
    batch: Batch, session_id: str, user_id: str, reference: str | ColumnElement, note: str
) -> tuple[ledger.BalanceOp, ledger.BalanceOp]:
    """Take back (or give back) what the purchase's facts now call for, once: `clawback` of
    what is missing but at most what is left of the balance (the rest added to the shortfall),
    or `topup` of what a won dispute no longer holds beyond the shortfall it forgives. Both
    computed in SQL from the locked rows; at most one of them writes anything."""
    delta = wanted() - (col(CS.tokens_taken_back) + col(CS.shortfall))
    give = -delta - ledger.least(col(CS.shortfall), -delta)
    take_op = ledger.BalanceOp.take_at_most(
        user_id, _of(session_id, delta), LedgerAction.CLAWBACK, reference=reference, note=note
    )
    give_op = ledger.BalanceOp(
        user_id,
        _of(session_id, give),
        LedgerAction.TOPUP,
        reference=reference,
        note=note,
        guard=_of(session_id, give) > 0,
    )
    take_op.add_to(batch, "take")
    give_op.add_to(batch, "give")
    moved = func.coalesce(
        select(LedgerEntry.diff)
        .where(col(LedgerEntry.op_id).in_([take_op.op_id, give_op.op_id]))
        .scalar_subquery(),
        _zero(),
    )
    batch.add(
        update(CS)
        .where(col(CS.id) == session_id)
        .values(
            tokens_taken_back=col(CS.tokens_taken_back) - moved,
            shortfall=wanted() - (col(CS.tokens_taken_back) - moved),
        )
    )
    return take_op, give_op


def settled_change(
    db: Session, ops: tuple[ledger.BalanceOp, ...], batch: Batch, results: list
) -> ledger.BalanceChange | None:
    """The change `settle` made (None if it had nothing to move)."""
    for op, name in zip(ops, ("take", "give"), strict=True):
        rows = batch.rows(results, name)
        if rows:
            return op.change_of(db, rows)
    return None


def moved_entry(ops: tuple[ledger.BalanceOp, ...]) -> ColumnElement:
    """SQL: the ledger entry `settle` wrote, NULL if none."""
    return func.coalesce(*(op.entry_id() for op in ops))


# --- finding the purchase ---------------------------------------------------------------------


def find_purchase(
    db: Session, provider: PaymentProvider, payment_intent: str | None, charge_id: str | None
) -> tuple[CheckoutSession | None, str | None]:
    """The purchase a charge or dispute is about, and its PaymentIntent: by the PaymentIntent
    stored when it was credited, else through Stripe (the charge's PaymentIntent, then the
    Checkout Session that made it: a refund can arrive before the payment's own event). Stripe
    is asked with no transaction open."""
    if payment_intent:
        row = db.exec(select(CS).where(col(CS.payment_intent) == payment_intent)).first()
        if row is not None:
            return row, payment_intent
    end_read(db)
    if not payment_intent and charge_id:
        payment_intent = provider.payment_intent_of_charge(charge_id)
        if payment_intent:
            row = db.exec(select(CS).where(col(CS.payment_intent) == payment_intent)).first()
            end_read(db)
            if row is not None:
                return row, payment_intent
    if not payment_intent:
        return None, None
    session_id = provider.checkout_of_payment_intent(payment_intent)
    row = db.get(CS, session_id) if session_id else None
    end_read(db)
    return row, payment_intent


def _unknown(kind: str, object_id: str, payment_intent: str | None) -> WebhookResult:
    log.warning(
        "%s %s (payment_intent %s): no checkout of ours; acknowledged, nothing changed",
        kind,
        object_id,
        payment_intent,
    )
    return WebhookResult("ignored", f"{kind} of no checkout of ours")


def _run(
    db: Session,
    batch: Batch,
    row: CheckoutSession,
    dedupe: tuple[str, AdjustmentKind] | None,
    event_id: str,
    ops: tuple[ledger.BalanceOp, ...] = (),
) -> tuple[list, ledger.BalanceChange | None] | None:
    """Run an event's batch and commit it (None: a duplicate, nothing written)."""
    try:
        results = run_batch(db, batch.statements)
    except IntegrityError:
        db.rollback()
        seen = bool(event_id) and db.get(PaymentEvent, event_id[:255]) is not None
        if dedupe is not None and not seen:
            seen = db.get(PaymentAdjustment, dedupe) is not None
        db.rollback()
        if seen:
            return None
        raise
    change = settled_change(db, ops, batch, results) if ops else None
    refresh_loaded(db, CheckoutSession, row.id)
    changes.touch(db, row.user_id)
    db.commit()
    return results, change


# --- checkouts that end unpaid ----------------------------------------------------------------


def close_checkout(
    db: Session, obj: dict[str, Any], event_id: str, event_type: str
) -> WebhookResult:
    """`async_payment_failed` / `expired`: an open checkout becomes failed / expired (a paid one
    stays paid). Nothing is credited."""
    session_id = id_of(obj.get("id"))
    row = db.get(CS, session_id) if session_id else None
    if row is None:
        db.rollback()
        return WebhookResult("ignored", "no checkout of ours")
    status = CLOSING_EVENTS.get(event_type, CheckoutStatus.EXPIRED)
    batch = Batch()
    batch.add(lock(row.id))
    event_row(batch, event_id, event_type, row.id)
    batch.add(
        update(CS)
        .where(col(CS.id) == row.id, col(CS.status) == CheckoutStatus.OPEN)
        .values(status=status, closed_at=clock.now())
        .returning(col(CS.id)),
        "closed",
    )
    done = _run(db, batch, row, None, event_id)
    if done is None:
        return WebhookResult("duplicate", "already applied")
    if not batch.rows(done[0], "closed"):
        return WebhookResult("ignored", "the checkout is not open")
    log.info("checkout %s: %s", row.id, status)
    return WebhookResult("applied", f"checkout {status}")


# --- refunds ------------------------------------------------------------------------------------


def _refund_id(charge: dict[str, Any], refunded: int) -> str:
    """The newest refund the charge lists (the one this event is about), else the charge and
    its refunded total (which only one refund reaches)."""
    listed = charge.get("refunds")
    data = listed.get("data") if isinstance(listed, dict) else None
    refunds = [r for r in data or [] if isinstance(r, dict) and id_of(r.get("id"))]
    if refunds:
        newest = max(refunds, key=lambda r: (count(r.get("created")) or 0, str(r["id"])))
        return str(newest["id"])
    return f"{charge.get('id')}:{refunded}"[-255:]


def refund(
    db: Session, charge: dict[str, Any], event_id: str, provider: PaymentProvider
) -> WebhookResult:
    """`charge.refunded` (full or partial): the refunded share of the purchase's tokens taken
    back, once; `amount_refunded` is the charge's running total, so refunds add up in any order."""
    charge_id = id_of(charge.get("id"))
    amount, refunded = count(charge.get("amount")), count(charge.get("amount_refunded"))
    if not charge_id or not amount or refunded is None:
        db.rollback()
        return WebhookResult("ignored", "no charge id or amounts")
    refunded = min(refunded, amount)
    row, payment_intent = find_purchase(
        db, provider, id_of(charge.get("payment_intent")), charge_id
    )
    if row is None:
        return _unknown("refund of charge", charge_id, payment_intent)
    refund_id = _refund_id(charge, refunded)
    share = row.tokens * refunded // amount
    receipt = charge.get("receipt_url") if isinstance(charge.get("receipt_url"), str) else None
    batch = Batch()
    batch.add(lock(row.id))
    event_row(batch, event_id, REFUNDED, row.id)
    batch.add(
        insert(PaymentAdjustment).values(
            object_id=refund_id,
            kind=AdjustmentKind.REFUND,
            checkout_session_id=row.id,
            user_id=row.user_id,
            event_id=event_id[:255] or None,
            amount_cents=refunded,
            created_at=clock.now(),
        )
    )
    batch.add(
        update(CS)
        .where(col(CS.id) == row.id)
        .values(
            refunded_cents=ledger.greatest(col(CS.refunded_cents), literal(refunded, BigInteger())),
            refund_tokens=ledger.greatest(col(CS.refund_tokens), literal(share, BigInteger())),
            payment_intent=func.coalesce(col(CS.payment_intent), payment_intent),
            receipt_url=func.coalesce(receipt, col(CS.receipt_url)),
        )
    )
    ops = settle(batch, row.id, row.user_id, refund_id, f"refund of {refunded} of {amount} cents")
    _link(batch, refund_id, AdjustmentKind.REFUND, ops)
    done = _run(db, batch, row, (refund_id, AdjustmentKind.REFUND), event_id, ops)
    if done is None:
        return WebhookResult("duplicate", "already applied")
    change = done[1]
    log.info(
        "checkout %s: refund %s (%d of %d cents): %s tokens taken back",
        row.id,
        refund_id,
        refunded,
        amount,
        -change.diff if change else 0,
    )
    return WebhookResult("applied", f"refund {refund_id}", change)


def _link(
    batch: Batch, object_id: str, kind: AdjustmentKind, ops: tuple[ledger.BalanceOp, ...]
) -> None:
    batch.add(
        update(PaymentAdjustment)
        .where(col(PaymentAdjustment.object_id) == object_id, col(PaymentAdjustment.kind) == kind)
        .values(ledger_entry_id=moved_entry(ops))
    )


# --- disputes -----------------------------------------------------------------------------------


def dispute(
    db: Session,
    obj: dict[str, Any],
    event_id: str,
    event_type: str,
    provider: PaymentProvider,
) -> WebhookResult:
    """`charge.dispute.created`: the purchase's tokens taken back; `charge.dispute.closed` as won
    (or an inquiry closed without a chargeback): given back; as lost: they stay taken. Each
    once; a dispute closed before it was opened nets out."""
    dispute_id = id_of(obj.get("id"))
    status = obj.get("status") if isinstance(obj.get("status"), str) else None
    if not dispute_id:
        db.rollback()
        return WebhookResult("ignored", "no dispute id")
    if event_type == DISPUTE_CLOSED:
        if status in KEPT:
            state = DisputeStatus.WON
        elif status in LOST:
            state = DisputeStatus.LOST
        else:
            db.rollback()
            return WebhookResult("ignored", f"dispute status {status!r}")
        kind, detail = AdjustmentKind.DISPUTE_CLOSED, str(status)
        fact: ColumnElement = literal(state.value)
    else:
        kind, detail = AdjustmentKind.DISPUTE, None
        final = col(CS.dispute_status).in_([DisputeStatus.WON, DisputeStatus.LOST])
        fact = case((final, col(CS.dispute_status)), else_=literal(DisputeStatus.OPEN.value))
    row, payment_intent = find_purchase(
        db, provider, id_of(obj.get("payment_intent")), id_of(obj.get("charge"))
    )
    if row is None:
        return _unknown("dispute", dispute_id, payment_intent)
    batch = Batch()
    batch.add(lock(row.id))
    event_row(batch, event_id, event_type, row.id)
    batch.add(
        insert(PaymentAdjustment).values(
            object_id=dispute_id,
            kind=kind,
            checkout_session_id=row.id,
            user_id=row.user_id,
            event_id=event_id[:255] or None,
            amount_cents=count(obj.get("amount")) or 0,
            detail=detail,
            created_at=clock.now(),
        )
    )
    batch.add(
        update(CS)
        .where(col(CS.id) == row.id)
        .values(
            dispute_status=fact,
            payment_intent=func.coalesce(col(CS.payment_intent), payment_intent),
        )
    )
    note = f"dispute {'closed: ' + detail if detail else 'opened'}"
    ops = settle(batch, row.id, row.user_id, dispute_id, note)
    _link(batch, dispute_id, kind, ops)
    done = _run(db, batch, row, (dispute_id, kind), event_id, ops)
    if done is None:
        return WebhookResult("duplicate", "already applied")
    change = done[1]
    log.info(
        "checkout %s: %s %s: %+d tokens", row.id, note, dispute_id, change.diff if change else 0
    )
    return WebhookResult("applied", f"{note} {dispute_id}", change)
