"""The ledger: the one place balances change.

A change is one conditional statement (`balance = balance + diff WHERE balance + diff >= 0`), never a
read-modify-write, with its ledger row and its `balance_changes` analytics row in the same
transaction. A refused change alters nothing but is recorded too (outcome `rejected`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.sql.elements import TextClause
from sqlmodel import Session, col, select

from vgen_app import clock
from vgen_app.db import end_read, is_d1, read_only, refresh_loaded, run_batch, sql
from vgen_app.models import LedgerAction, LedgerEntry, User
from vgen_app.services import outbox

APPLIED = "applied"
REJECTED = "rejected"
MAX_ABS_DIFF = 10**12


class UnknownUser(LookupError):
    pass


@dataclass(frozen=True)
class BalanceChange:
    applied: bool
    user_id: str
    email: str
    action: str
    diff: int
    old_balance: int
    new_balance: int
    entry_id: int
    reference: str | None


def apply_change(
    db: Session,
    user_id: str,
    diff: int,
    action: LedgerAction | str,
    reference: str | None = None,
    note: str | None = None,
) -> BalanceChange:
    """Change a balance inside the caller's transaction (the caller commits)."""
    action = LedgerAction(action).value
    if isinstance(diff, bool) or not isinstance(diff, int) or diff == 0:
        raise ValueError("diff must be a non-zero integer")
    if abs(diff) > MAX_ABS_DIFF:
        raise ValueError("diff is too large")
    if is_d1(db):  # D1 has no multi-request transaction: one batch, committed at once
        rows = run_batch(db, d1_statements(user_id, diff, action, reference, note, clock.now()))
        return d1_change(db, rows[1], user_id, action, diff, reference)
    row = db.exec(
        update(User)
        .where(col(User.id) == user_id, col(User.balance) + diff >= 0)
        .values(balance=col(User.balance) + diff)
        .returning(col(User.balance), col(User.email))
    ).first()
    if row is not None:
        new_balance, email = int(row[0]), row[1]
        old_balance, outcome = new_balance - diff, APPLIED
    else:
        current = db.exec(select(User.balance, User.email).where(User.id == user_id)).first()
        if current is None:
            raise UnknownUser(user_id)
        old_balance = new_balance = int(current[0])
        email, outcome = current[1], REJECTED
    now = clock.now()
    entry = LedgerEntry(
        user_id=user_id,
        email=email,
        action=action,
        diff=diff,
        old_balance=old_balance,
        new_balance=new_balance,
        outcome=outcome,
        reference=reference,
        note=note,
        created_at=now,
    )
    db.add(entry)
    db.flush()
    outbox.record(
        db,
        outbox.BALANCE_CHANGES,
        {
            "userid": user_id,
            "email": email,
            "action": action,
            "diff": diff,
            "old_balance": old_balance,
            "new_balance": new_balance,
            "outcome": outcome,
            "reference": reference,
            "ledger_entry_id": entry.id,
        },
    )
    assert entry.id is not None
    return BalanceChange(
        outcome == APPLIED,
        user_id,
        email,
        action,
        diff,
        old_balance,
        new_balance,
        entry.id,
        reference,
    )


# --- Cloudflare D1 (docs/d1.md): no transaction spans two requests, so a change is one batch -------


def d1_statements(
    user_id: str,
    diff: int,
    action: str,
    reference: str | None,
    note: str | None,
    now: datetime,
    guard: str = "1",
    **extra: Any,
) -> list[TextClause]:
    """The change as 3 statements for one all-or-nothing batch (SQLite SQL; D1 is SQLite).

    `changes()` carries "did the UPDATE apply" into the ledger INSERT, and "was a ledger row
    written" into the outbox INSERT. `guard` (SQL) must hold for anything to be written at all
    (not even a `rejected` record); `extra` binds the names it uses. The ledger INSERT returns the
    entry (no row: unknown user, or the guard failed)."""
    v: dict[str, Any] = dict(
        uid=user_id, diff=diff, action=action, reference=reference, note=note, now=now, **extra
    )
    return [
        sql(
            "UPDATE users SET balance = balance + :diff"
            f" WHERE id = :uid AND balance + :diff >= 0 AND {guard}",
            **v,
        ),
        sql(
            "INSERT INTO ledger_entries (user_id, email, action, diff, old_balance, new_balance,"
            " outcome, reference, note, created_at)"
            " SELECT id, email, :action, :diff,"
            " CASE WHEN changes() = 1 THEN balance - :diff ELSE balance END, balance,"
            " CASE WHEN changes() = 1 THEN 'applied' ELSE 'rejected' END, :reference, :note, :now"
            f" FROM users WHERE id = :uid AND {guard}"
            " RETURNING id, email, old_balance, new_balance, outcome",
            **v,
        ),
        sql(
            "INSERT INTO analytics_outbox (table_name, row, created_at, attempts)"
            " SELECT 'balance_changes', json_object('timestamp', :ts, 'userid', user_id,"
            " 'email', email, 'action', action, 'diff', diff, 'old_balance', old_balance,"
            " 'new_balance', new_balance, 'outcome', outcome, 'reference', reference,"
            " 'ledger_entry_id', id), :now, 0"
            " FROM ledger_entries WHERE changes() = 1 AND id = last_insert_rowid()",
            ts=now.isoformat(),
            **v,
        ),
    ]


def d1_change(
    db: Session,
    entry_rows: list[dict[str, Any]],
    user_id: str,
    action: str,
    diff: int,
    reference: str | None,
) -> BalanceChange:
    """The BalanceChange from the ledger INSERT's RETURNING rows of a D1 batch."""
    if not entry_rows:
        raise UnknownUser(user_id)
    e = entry_rows[0]
    refresh_loaded(db, User, user_id)
    return BalanceChange(
        e["outcome"] == APPLIED,
        user_id,
        e["email"],
        action,
        diff,
        int(e["old_balance"]),
        int(e["new_balance"]),
        int(e["id"]),
        reference,
    )


def change_balance(
    db: Session,
    user_id: str,
    diff: int,
    action: LedgerAction | str,
    reference: str | None = None,
    note: str | None = None,
) -> BalanceChange:
    """Change a balance in its own transaction; a refused change is committed as a record too."""
    try:
        change = apply_change(db, user_id, diff, action, reference, note)
    except Exception:
        db.rollback()
        raise
    db.commit()
    return change


# --- reading -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryPage:
    entries: list[LedgerEntry]
    page: int
    pages: int
    total: int


@read_only
def history(db: Session, user_id: str, page: int = 1, per_page: int = 20) -> HistoryPage:
    """Applied changes, newest first, paginated."""
    base = select(LedgerEntry).where(LedgerEntry.user_id == user_id, LedgerEntry.outcome == APPLIED)
    total = int(
        db.exec(
            select(func.count())
            .select_from(LedgerEntry)
            .where(LedgerEntry.user_id == user_id, LedgerEntry.outcome == APPLIED)
        ).one()
    )
    pages = max(1, -(-total // per_page))
    page = min(max(1, page), pages)
    entries = list(
        db.exec(
            base.order_by(col(LedgerEntry.id).desc()).offset((page - 1) * per_page).limit(per_page)
        )
    )
    end_read(db)
    return HistoryPage(entries, page, pages, total)


@read_only
def balance_series(db: Session, user_id: str, limit: int = 500) -> list[tuple[str, int]]:
    """(ISO time, balance) points of the latest applied changes, oldest first: the chart's line.

    It starts with the balance before the oldest change shown, so even one change draws a step.
    """
    rows = db.exec(
        select(LedgerEntry.created_at, LedgerEntry.old_balance, LedgerEntry.new_balance)
        .where(LedgerEntry.user_id == user_id, LedgerEntry.outcome == APPLIED)
        .order_by(col(LedgerEntry.id).desc())
        .limit(limit)
    ).all()
    end_read(db)
    if not rows:
        return []
    rows = list(reversed(rows))
    first_at, first_old, _ = rows[0]
    points = [(first_at.isoformat(), int(first_old))]
    points += [(at.isoformat(), int(new)) for at, _, new in rows]
    return points


def balance_of(db: Session, user_id: str) -> int:
    balance = db.exec(select(User.balance).where(User.id == user_id)).first()
    end_read(db)
    if balance is None:
        raise UnknownUser(user_id)
    return int(balance)


def ledger_sum(db: Session, user_id: str) -> int:
    total = db.exec(
        select(func.coalesce(func.sum(LedgerEntry.diff), 0)).where(
            LedgerEntry.user_id == user_id, LedgerEntry.outcome == APPLIED
        )
    ).one()
    end_read(db)
    return int(total)


ACTION_LABELS = {
    LedgerAction.TOPUP.value: "Top-up",
    LedgerAction.USED.value: "Task run",
    LedgerAction.REFUND.value: "Refund",
    LedgerAction.MANUAL.value: "Manual adjustment",
}
