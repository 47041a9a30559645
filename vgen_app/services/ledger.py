"""The ledger: the one place balances change.

A change is one conditional statement (`balance = balance + diff WHERE balance + diff >= 0`), never a
read-modify-write, with its ledger row and its `balance_changes` analytics row in the same
transaction. A refused change alters nothing but is recorded too (outcome `rejected`).

Every money operation (a manual change here, a top-up in billing, a run's debit and refund in runs)
is written once, as a `Batch` of statements that never read a result in between: the same list runs
in one transaction on SQLite and PostgreSQL and as one all-or-nothing request on Cloudflare D1.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Executable,
    ScalarSelect,
    String,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal,
    update,
)
from sqlmodel import Session, col, select

from vgen_app import clock
from vgen_app.db import Batch, Bound, end_read, json_pairs, raw_read, refresh_loaded, run_batch
from vgen_app.models import (
    AnalyticsOutbox,
    EnumText,
    LedgerAction,
    LedgerEntry,
    Outcome,
    Run,
    Task,
    User,
    UTCDateTime,
    new_id,
)
from vgen_app.services import changes, outbox

MAX_ABS_DIFF = 10**12


class UnknownUser(LookupError):
    pass


@dataclass(frozen=True)
class BalanceChange:
    applied: bool
    user_id: str
    email: str
    action: LedgerAction
    diff: int
    old_balance: int
    new_balance: int
    entry_id: int
    reference: str | None


def _value(value: object, type_: object) -> ColumnElement:
    return literal(value, type_)


def least(a: ColumnElement, b: ColumnElement) -> ColumnElement:
    """The smaller of two SQL values (LEAST on PostgreSQL, MIN(a, b) on SQLite: one CASE)."""
    return case((a < b, a), else_=b)


def greatest(a: ColumnElement, b: ColumnElement) -> ColumnElement:
    return case((a > b, a), else_=b)


@dataclass
class BalanceOp:
    """One balance change as batch statements. `guard` (SQL) must hold for anything to be written
    at all (not even a `rejected` record); the operation's own other statements test `applied()`
    or read `entry_id()`, which find its ledger row by `op_id`.

    `diff` is an integer, or an SQL expression computed from the locked user row (and anything
    else the batch has written before) when the amount is only known there: `take_at_most`
    builds the one that takes up to n tokens but never more than the balance. Such a change
    writes nothing when its guard fails (give it one that excludes 0); its ledger row records
    the amount, and the balance UPDATE applies exactly that row's diff. `reference` may be an
    SQL expression too."""

    user_id: str
    diff: int | ColumnElement
    action: LedgerAction
    reference: str | ColumnElement | None = None
    note: str | None = None
    guard: ColumnElement[bool] | None = None
    now: datetime = field(default_factory=clock.now)
    op_id: str = field(default_factory=new_id)

    def __post_init__(self) -> None:
        self.action = LedgerAction(self.action)
        if isinstance(self.diff, ColumnElement):
            return
        if isinstance(self.diff, bool) or not isinstance(self.diff, int) or self.diff == 0:
            raise ValueError("diff must be a non-zero integer")
        if abs(self.diff) > MAX_ABS_DIFF:
            raise ValueError("diff is too large")

    @classmethod
    def take_at_most(
        cls, user_id: str, most: ColumnElement, action: LedgerAction, **kwargs
    ) -> BalanceOp:
        """Take `most` tokens (SQL, evaluated in the batch), or what is left if the balance is
        smaller: never a negative balance, decided from the locked row in the one statement that
        writes the ledger row (no read-then-write). Nothing is written when `most` <= 0 or the
        balance is 0 (then `change_of` finds no row)."""
        balance = col(User.balance)
        wants = (most > 0) & (balance > 0)
        guard = kwargs.pop("guard", None)
        return cls(
            user_id,
            -least(balance, most),
            action,
            guard=wants if guard is None else wants & guard,
            **kwargs,
        )

    @property
    def computed(self) -> bool:
        return isinstance(self.diff, ColumnElement)

    @property
    def plain(self) -> bool:
        """An integer diff, no guard, a plain reference: the statements `_plain` prebuilt."""
        return (
            not self.computed
            and self.guard is None
            and not isinstance(self.reference, ColumnElement)
        )

    def _mine(self) -> ColumnElement[bool]:
        return col(LedgerEntry.op_id) == self.op_id

    def applied(self) -> ColumnElement[bool]:
        """SQL: this change was applied (its ledger row exists with outcome `applied`)."""
        return exists().where(self._mine(), col(LedgerEntry.outcome) == Outcome.APPLIED)

    def entry_id(self) -> ScalarSelect:
        return select(LedgerEntry.id).where(self._mine()).scalar_subquery()

    def add_to(self, batch: Batch, name: str = "entry") -> None:
        """Four statements: lock the user's row (PostgreSQL, in READ COMMITTED: every later
        statement sees what was committed before the lock; SQLite and D1 serialize writers), write the ledger row with the
        outcome decided from the locked balance, apply the change only if that row says so, and
        write the analytics row from the ledger row. `name` names the ledger INSERT, whose
        RETURNING row `change_of` reads (no row: unknown user, or the guard failed)."""
        if self.plain:  # the common case: its four statements are built once (`_plain`)
            params = {
                "op_user_id": self.user_id,
                "op_op_id": self.op_id,
                "op_action": self.action,
                "op_diff": self.diff,
                "op_reference": self.reference,
                "op_note": self.note,
                "op_now": self.now,
                "op_now_iso": self.now.isoformat(),
            }
            lock, entry, apply, analytics = _plain()
            batch.add(Bound(lock, params))
            batch.add(Bound(entry, params), name)
            batch.add(Bound(apply, params))
            batch.add(Bound(analytics, params))
            return
        statements = _statements(
            user_id=_value(self.user_id, String()),
            op_id=_value(self.op_id, String()),
            action=_value(self.action, EnumText(LedgerAction)),
            diff=self.diff if self.computed else _value(self.diff, BigInteger()),
            reference=(
                self.reference
                if isinstance(self.reference, ColumnElement)
                else _value(self.reference, String())
            ),
            note=_value(self.note, String()),
            now=_value(self.now, UTCDateTime()),
            now_iso=_value(self.now.isoformat(), String()),
            guard=self.guard,
            computed=self.computed,
        )
        lock, entry, apply, analytics = statements
        batch.add(lock)
        batch.add(entry, name)
        batch.add(apply)
        batch.add(analytics)

    def change_of(self, db: Session, entry_rows: list[dict]) -> BalanceChange:
        """The change from its ledger INSERT's RETURNING rows (UnknownUser if none)."""
        if not entry_rows:
            raise UnknownUser(self.user_id)
        e = entry_rows[0]
        refresh_loaded(db, User, self.user_id)
        return BalanceChange(
            applied=Outcome(e["outcome"]) == Outcome.APPLIED,
            user_id=self.user_id,
            email=e["email"],
            action=self.action,
            diff=int(e["diff"]) if self.computed else int(self.diff),
            old_balance=int(e["old_balance"]),
            new_balance=int(e["new_balance"]),
            entry_id=int(e["id"]),
            reference=e["reference"] if self.computed else self.reference,  # type: ignore[arg-type]
        )


def _statements(
    *,
    user_id: ColumnElement,
    op_id: ColumnElement,
    action: ColumnElement,
    diff: ColumnElement,
    reference: ColumnElement,
    note: ColumnElement,
    now: ColumnElement,
    now_iso: ColumnElement,
    guard: ColumnElement[bool] | None = None,
    computed: bool = False,
) -> tuple[Executable, Executable, Executable, Executable]:
    """`BalanceOp.add_to`'s four statements from SQL values: literals for one operation, or bound
    parameters for the prebuilt plain ones (`_plain`). `computed`: `diff` is an expression of the
    locked row; the balance UPDATE then applies exactly the diff the ledger row recorded."""
    mine = col(LedgerEntry.op_id) == op_id
    balance = col(User.balance)
    fits = balance + diff >= 0
    # FOR NO KEY UPDATE: serializes the user's money operations without waiting on (or
    # deadlocking with) the key-share locks that foreign-key checks of other rows take.
    lock = select(User.id).where(col(User.id) == user_id).with_for_update(key_share=True)
    source = select(
        op_id,
        col(User.id),
        col(User.email),
        action,
        diff,
        balance,
        case((fits, balance + diff), else_=balance),
        case(
            (fits, _value(Outcome.APPLIED, EnumText(Outcome))),
            else_=_value(Outcome.REJECTED, EnumText(Outcome)),
        ),
        reference,
        note,
        now,
    ).where(col(User.id) == user_id, *([guard] if guard is not None else []))
    columns = [
        "op_id", "user_id", "email", "action", "diff", "old_balance", "new_balance",
        "outcome", "reference", "note", "created_at",
    ]  # fmt: skip
    returned = [
        col(LedgerEntry.id),
        col(LedgerEntry.email),
        col(LedgerEntry.old_balance),
        col(LedgerEntry.new_balance),
        col(LedgerEntry.outcome),
    ]
    if computed:
        returned += [col(LedgerEntry.diff), col(LedgerEntry.reference)]
    entry = insert(LedgerEntry).from_select(columns, source).returning(*returned)
    applied = exists().where(mine, col(LedgerEntry.outcome) == Outcome.APPLIED)
    if computed:  # exactly what the ledger row recorded
        recorded = select(LedgerEntry.diff).where(mine).scalar_subquery()
        apply = (
            update(User).where(col(User.id) == user_id, applied).values(balance=balance + recorded)
        )
    else:
        apply = (
            update(User)
            .where(col(User.id) == user_id, fits, applied)
            .values(balance=balance + diff)
        )
    e = LedgerEntry
    row = json_pairs(
        timestamp=now_iso,
        userid=col(e.user_id),
        email=col(e.email),
        action=col(e.action),
        diff=col(e.diff),
        old_balance=col(e.old_balance),
        new_balance=col(e.new_balance),
        outcome=col(e.outcome),
        reference=col(e.reference),
        ledger_entry_id=col(e.id),
    )
    analytics = insert(AnalyticsOutbox).from_select(
        ["table_name", "row", "created_at", "attempts"],
        select(
            _value(outbox.BALANCE_CHANGES, String()),
            row,
            now,
            _value(0, BigInteger()),
        ).where(mine),
    )
    return lock, entry, apply, analytics


@functools.cache
def _plain() -> tuple[Executable, Executable, Executable, Executable]:
    """The four statements of a plain change (an integer diff, no guard), built once with named
    bound parameters (op_user_id, op_op_id, op_action, op_diff, op_reference, op_note, op_now,
    op_now_iso): the same SQL as any other change, without building it for every change."""
    return _statements(
        user_id=bindparam("op_user_id", type_=String()),
        op_id=bindparam("op_op_id", type_=String()),
        action=bindparam("op_action", type_=EnumText(LedgerAction)),
        diff=bindparam("op_diff", type_=BigInteger()),
        reference=bindparam("op_reference", type_=String()),
        note=bindparam("op_note", type_=String()),
        now=bindparam("op_now", type_=UTCDateTime()),
        now_iso=bindparam("op_now_iso", type_=String()),
    )


def change_statements(
    user_id: str,
    diff: int,
    action: LedgerAction | str,
    reference: str | None = None,
    note: str | None = None,
    now: datetime | None = None,
) -> list[Executable]:
    """A plain change as its batch statements (the ledger INSERT is the second)."""
    batch = Batch()
    BalanceOp(user_id, diff, LedgerAction(action), reference, note, now=now or clock.now()).add_to(
        batch
    )
    return batch.statements


def change_balance(
    db: Session,
    user_id: str,
    diff: int,
    action: LedgerAction | str,
    reference: str | None = None,
    note: str | None = None,
    also: Callable[[BalanceOp], Executable] | None = None,
) -> BalanceChange:
    """Change a balance in its own transaction; a refused change is committed as a record too.

    `also` builds one more statement of the same batch from the operation (it runs after the
    ledger row is written and finds it by `op.op_id`): the admin audit row of a manual change.
    Should it fail, nothing of the change is written either."""
    op = BalanceOp(user_id, diff, LedgerAction(action), reference, note)
    batch = Batch()
    op.add_to(batch)
    if also is not None:
        batch.add(also(op))
    try:
        results = run_batch(db, batch.statements)
        change = op.change_of(db, batch.rows(results, "entry"))
    except Exception:
        db.rollback()
        raise
    changes.touch(db, user_id)
    db.commit()
    return change


# --- reading -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRef:
    """The run a `used` or `refund` entry is about (its reference is the run's id)."""

    run_id: str
    attempt: int
    task_id: str
    task_name: str
    task_deleted: bool  # the task was deleted: its name stays, its page is gone


@dataclass(frozen=True)
class HistoryPage:
    entries: list[LedgerEntry]
    page: int
    pages: int
    total: int
    runs: dict[str, RunRef] = field(default_factory=dict)  # by run id: the entries' runs


RUN_ACTIONS = (LedgerAction.USED, LedgerAction.REFUND)  # their reference is a run id


_APPLIED_OF = (
    col(LedgerEntry.user_id) == bindparam("user_id"),
    col(LedgerEntry.outcome) == Outcome.APPLIED,
)
_HISTORY_COUNT = select(func.count()).select_from(LedgerEntry).where(*_APPLIED_OF)
_HISTORY_PAGE = (
    select(LedgerEntry.__table__)
    .where(*_APPLIED_OF)
    .order_by(col(LedgerEntry.id).desc())
    .limit(bindparam("limit"))
    .offset(bindparam("offset"))
)
_HISTORY_RUNS = (
    select(Run.id, Run.attempt, Task.id, Task.name, Task.deleted_at)
    .join(Task, col(Task.id) == col(Run.task_id))
    .where(
        col(Run.id).in_(bindparam("run_ids", expanding=True)),
        col(Run.owner_id) == bindparam("user_id"),
    )
)
_SERIES = (
    select(LedgerEntry.created_at, LedgerEntry.old_balance, LedgerEntry.new_balance)
    .where(*_APPLIED_OF)
    .order_by(col(LedgerEntry.id).desc())
    .limit(bindparam("limit"))
)


@raw_read
def history(db: Session, user_id: str, page: int = 1, per_page: int = 20) -> HistoryPage:
    """Applied changes, newest first, paginated, with the task and attempt of each run they
    name (one query for the whole page: no N+1). Statements built once, read as Core rows (each
    with the ledger row's attribute names), no ORM objects."""
    conn = db.connection()
    total = int(conn.execute(_HISTORY_COUNT, {"user_id": user_id}).scalar_one())
    pages = max(1, -(-total // per_page))
    page = min(max(1, page), pages)
    entries = list(
        conn.execute(
            _HISTORY_PAGE, {"user_id": user_id, "limit": per_page, "offset": (page - 1) * per_page}
        )
    )
    run_ids = sorted({e.reference for e in entries if e.action in RUN_ACTIONS and e.reference})
    runs: dict[str, RunRef] = {}
    if run_ids:
        for run_id, attempt, task_id, name, deleted_at in conn.execute(
            _HISTORY_RUNS, {"run_ids": run_ids, "user_id": user_id}
        ):
            runs[run_id] = RunRef(run_id, attempt, task_id, name, deleted_at is not None)
    end_read(db)
    return HistoryPage(entries, page, pages, total, runs)  # type: ignore[arg-type]


@raw_read
def balance_series(db: Session, user_id: str, limit: int = 500) -> list[tuple[str, int]]:
    """(ISO time, balance) points of the latest applied changes, oldest first: the chart's line.

    It starts with the balance before the oldest change shown, so even one change draws a step.
    """
    rows = db.connection().execute(_SERIES, {"user_id": user_id, "limit": limit}).all()
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
            LedgerEntry.user_id == user_id, LedgerEntry.outcome == Outcome.APPLIED
        )
    ).one()
    end_read(db)
    return int(total)


ACTION_LABELS = {
    LedgerAction.TOPUP: "Top-up",
    LedgerAction.USED: "Task run",
    LedgerAction.REFUND: "Refund",
    LedgerAction.MANUAL: "Manual adjustment",
    LedgerAction.CLAWBACK: "Taken back",
}
