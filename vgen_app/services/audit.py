"""The admin audit (SPEC §11): every admin API call is one `admin_audit` row, and one log line on
`vgen.admin`.

A row says when, which token (`fingerprint`: the first 8 hex digits of its SHA-256, never the
token), the method, the route template and the concrete path, the action, the user it is about
(an id asked for is recorded even when no such user exists), what was asked (`request`: the
diff, the status, the filters; never an e-mail address or a token), `before` and `after` (the
balance, the status, what a deletion removed), the outcome and the HTTP status.

`api/internal.py` `AdminRoute` opens a `Call` for every request and makes sure it is written
exactly once:
- a change writes its row **in the change's own transaction** (services/admin.py): the balance
  row is one more statement of the ledger's batch (`ledger.change_balance(also=…)`), built from
  the ledger row in SQL, so it says `ok` or `rejected` exactly as the ledger row does, and on
  Cloudflare D1 it is part of the same one request; the status change and the deletion the same
  way, one more statement of their batch (`accounts.set_status(also=…)`,
  `erasure.delete_user(also=…)`). No change without its row; no row for a change that did not
  happen (`Call.written` is set once the commit returned; a change that failed leaves the Call
  as it was, and AdminRoute writes its `error` row).
- every other call (reads, unknown users, refusals after auth) is written by AdminRoute in a
  transaction of its own once the answer is known, before the answer is sent (`record`): a read
  whose row cannot be written fails (500, or 503 when the database is unreachable) and sends no
  data. A call refused before any work (413, 422), or answered 503 because the database is
  unreachable, is written as best effort: the failure is logged, the answer stays.
- a call refused for its token (401: missing, malformed or wrong; the fingerprint of what was
  sent, if anything) is a row too, but at most ADMIN_AUDIT_REFUSED_PER_MINUTE of them a minute:
  counted in each process before any database work (a flood of wrong tokens costs no database
  write past the cap) and again in the INSERT across the cluster (`record_refused`). Past the
  cap such calls are in the log only; the next refused row says how many this process left out
  (`after.suppressed_before`). With no token configured (503) the API is disabled: log only.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Insert,
    Integer,
    String,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal,
)
from sqlmodel import Session, col, select

from vgen_app import clock
from vgen_app.db import Bound, end_read, json_pairs, one_writer, read_only
from vgen_app.models import AdminAudit, LedgerEntry, Outcome, UTCDateTime, is_id

log = logging.getLogger("vgen.admin")

FINGERPRINT_HEX = 8
MAX_PAGE = 200
DEFAULT_PAGE = 50

# Actions, one per admin route (the route's `name`).
SET_STATUS = "set_status"
CHANGE_BALANCE = "change_balance"
FIND_BY_EMAIL = "find_by_email"
GET_USER = "get_user"
DELETE_USER = "delete_user"
EXPORT_USER = "export_user"
USER_PURCHASES = "user_purchases"
SHORTFALLS = "shortfalls"
READ_AUDIT = "read_audit"
USER_LEDGER = "user_ledger"
ACTIONS = (
    SET_STATUS,
    CHANGE_BALANCE,
    FIND_BY_EMAIL,
    GET_USER,
    DELETE_USER,
    EXPORT_USER,
    USER_PURCHASES,
    SHORTFALLS,
    READ_AUDIT,
    USER_LEDGER,
)

# Outcomes.
OK = "ok"
NOT_FOUND = "not_found"
REJECTED = "rejected"  # a balance change that would go negative: recorded, not applied
DELETED = "deleted"  # the user is deleted
BUSY = "busy"  # a run in flight: the deletion refused
INVALID = "invalid"  # 422
TOO_LARGE = "too_large"  # 413
REFUSED = "refused"  # 401: no, a malformed or a wrong token
ERROR = "error"  # 5xx

# Answers that carry no data and change nothing: refused before any work (413, 422), or the
# database unreachable (503, api/errors.py). A failure to write their row is only logged.
BEST_EFFORT = {413, 422, 503}


def fingerprint(token: str | None) -> str | None:
    """Which token, without the token: the first 8 hex digits of its SHA-256 (None if none)."""
    if not token:
        return None
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:FINGERPRINT_HEX]


def outcome_of(status: int) -> str:
    """The outcome of a call that set none itself, from its HTTP status."""
    if status >= 500:
        return ERROR
    return {401: REFUSED, 404: NOT_FOUND, 413: TOO_LARGE, 422: INVALID}.get(
        status, OK if status < 400 else REJECTED
    )


def _short(text: str, most: int) -> str:
    """At most `most` characters, NUL shown as U+FFFD (PostgreSQL stores no NUL in text)."""
    text = text.replace("\x00", "\ufffd")
    return text if len(text) <= most else text[: most - 1] + "…"


@dataclass
class Call:
    """One admin API call being audited. The route fills in what it learns (`about`, `request`,
    `before`, `after`, `outcome`); a change writes it in its own transaction and sets
    `written`; AdminRoute writes it otherwise, with the HTTP status."""

    method: str
    route: str
    path: str
    action: str
    token: str | None = None  # the fingerprint
    user_id: str | None = None
    request: dict[str, Any] | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    outcome: str | None = None
    status: int | None = None
    at: datetime = field(default_factory=clock.now)
    written: bool = False
    id: int | None = None  # the row's, when written by a change
    note: str = ""  # for the log line only: "suppressed", "not written"

    def about(self, user_id: object) -> Call:
        """The user the call is about (anything that is not an id is not recorded)."""
        self.user_id = user_id if is_id(user_id) else None
        return self

    def values(self) -> dict[str, Any]:
        return {
            "created_at": self.at,
            "token": self.token,
            "method": self.method[:8],
            "route": _short(self.route, 200),
            "path": _short(self.path, 500),
            "action": self.action,
            "user_id": self.user_id,
            "request": self.request,
            "before": self.before,
            "after": self.after,
            "outcome": self.outcome or outcome_of(self.status or 500),
            "status": self.status or 500,
        }

    def statement(self) -> Insert:
        """The row as an INSERT (in the caller's transaction)."""
        return insert(AdminAudit).values(**self.values()).returning(col(AdminAudit.id))

    def insert_where(
        self, condition: ColumnElement[bool], **sql: dict[str, Any] | ColumnElement
    ) -> Insert:
        """The row as an `INSERT … SELECT … WHERE condition`, for a batch: written only if the
        condition holds when it runs. `before`, `after` (dicts whose values may be SQL, e.g. from
        a row an earlier statement of the batch wrote), `outcome` and `status` may be SQL."""
        values = self.values()
        table = AdminAudit.__table__
        columns, selected = [], []
        for name, value in {**values, **sql}.items():
            if isinstance(value, dict) and any(
                isinstance(v, ColumnElement) for v in value.values()
            ):
                value = json_pairs(**value)
            if not isinstance(value, ColumnElement):
                value = literal(value, table.c[name].type)
            columns.append(name)
            selected.append(value)
        return (
            insert(AdminAudit)
            .from_select(columns, select(*selected).where(condition))
            .returning(col(AdminAudit.id))
        )

    def line(self) -> str:
        """The call's one log line (after `admin call `)."""
        parts = [
            f"who={f'token:{self.token}' if self.token else 'anonymous'}",
            f"method={self.method}",
            f"path={self.path!r}",
            f"route={self.route}",
            f"status={self.status}",
            f"what={self.action}",
        ]
        if self.user_id:
            parts.append(f"userID={self.user_id}")
        parts.append(f"outcome={self.outcome or outcome_of(self.status or 500)}")
        for name, prefix in (("request", "request."), ("before", "before."), ("after", "after.")):
            for key, value in (getattr(self, name) or {}).items():
                parts.append(f"{prefix}{key}={json.dumps(value, default=str).strip(chr(34))}")
        if self.note:
            parts.append(f"audit={self.note}")
        return " ".join(parts)


@one_writer
def record(db: Session, call: Call) -> int:
    """Write the call's row in a transaction of its own; its id."""
    try:
        row_id = db.execute(call.statement()).scalar_one()
        db.commit()
    except Exception:
        db.rollback()
        raise
    call.written, call.id = True, int(row_id)
    return call.id


# --- the balance row, in the ledger's batch --------------------------------------------------------


def balance_row(call: Call, op_id: str) -> Bound:
    """The audit row of a manual balance change, as one more statement of its ledger batch: read
    from the ledger row the batch wrote (found by `op_id`), so it exists exactly when that row
    does and says what it says (`ok` 200 or `rejected` 409, the balance before and after). The
    statement is built once (`_balance_row`, which reads the ledger row's outcome in SQL); this
    call's values are its bound parameters."""
    values = call.values()
    params = {f"audit_{k}": values[k] for k in _BALANCE_ROW_GIVEN}
    params["audit_op_id"] = op_id
    return Bound(_balance_row(), params)


_BALANCE_ROW_GIVEN = (
    "created_at",
    "token",
    "method",
    "route",
    "path",
    "action",
    "user_id",
    "request",
)


@functools.cache
def _balance_row() -> Insert:
    table = AdminAudit.__table__
    mine = col(LedgerEntry.op_id) == bindparam("audit_op_id", type_=String())
    applied = exists().where(mine, col(LedgerEntry.outcome) == Outcome.APPLIED)

    def entry(column: Any) -> Any:
        return select(column).where(mine).scalar_subquery()

    selected: dict[str, Any] = {
        name: bindparam(f"audit_{name}", type_=table.c[name].type) for name in _BALANCE_ROW_GIVEN
    }
    selected.update(
        before=json_pairs(balance=entry(LedgerEntry.old_balance)),
        after=json_pairs(
            balance=entry(LedgerEntry.new_balance), ledger_entry=entry(LedgerEntry.id)
        ),
        outcome=case((applied, literal(OK, String())), else_=literal(REJECTED, String())),
        status=case((applied, literal(200, Integer())), else_=literal(409, Integer())),
    )
    return (
        insert(AdminAudit)
        .from_select(list(selected), select(*selected.values()).where(exists().where(mine)))
        .returning(col(AdminAudit.id))
    )


# --- refused calls: rows, but capped ---------------------------------------------------------------


class _Window:
    """This process's count of refused calls in the current minute."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.minute = -1
        self.admitted = 0
        self.suppressed = 0

    def admit(self, cap: int) -> int | None:
        """None: past the cap (log only). Else how many were left out before this one."""
        now = int(clock.now().timestamp() // 60)
        with self.lock:
            if now != self.minute:
                self.minute, self.admitted = now, 0
            if self.admitted >= cap:
                self.suppressed += 1
                return None
            self.admitted += 1
            left_out, self.suppressed = self.suppressed, 0
            return left_out

    def reset(self) -> None:
        with self.lock:
            self.minute, self.admitted, self.suppressed = -1, 0, 0


_refused = _Window()


def forget_refused() -> None:
    """Start this process's refused-call count afresh (tests)."""
    _refused.reset()


def admit_refused(call: Call, cap: int) -> bool:
    """Whether this refused call may become a row (this process's part of the cap)."""
    if cap <= 0:
        call.note = "log only"
        return False
    left_out = _refused.admit(cap)
    if left_out is None:
        call.note = "suppressed"
        return False
    if left_out:
        call.after = {**(call.after or {}), "suppressed_before": left_out}
    return True


def record_refused(db: Session, call: Call, cap: int) -> bool:
    """Write a refused call's row unless `cap` refused rows were written in the last minute
    across the cluster (one conditional INSERT). True if it was written."""
    since = call.at - timedelta(minutes=1)
    recent = (
        select(func.count())
        .select_from(AdminAudit)
        .where(
            col(AdminAudit.outcome) == REFUSED,
            col(AdminAudit.created_at) >= literal(since, UTCDateTime()),
        )
        .scalar_subquery()
    )
    try:
        rows = db.execute(call.insert_where(recent < cap)).all()
        db.commit()
    except Exception:
        db.rollback()
        raise
    if rows:
        call.written, call.id = True, int(rows[0][0])
    else:
        call.note = "suppressed"
    return call.written


# --- reading ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    rows: list[AdminAudit]
    next_before_id: int | None  # pass as `before_id` for the next (older) page; None: the last


def _page(rows: list[Any], limit: int) -> tuple[list[Any], int | None]:
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (int(rows[-1].id) if more and rows else None)


@read_only
def read(
    db: Session,
    limit: int = DEFAULT_PAGE,
    before_id: int | None = None,
    user_id: str | None = None,
    action: str | None = None,
    token: str | None = None,
) -> Page:
    """Audit rows, newest first, `limit` at a time (at most 200), older than `before_id`;
    filtered by user, action and token fingerprint."""
    limit = max(1, min(limit, MAX_PAGE))
    query = select(AdminAudit)
    if before_id is not None:
        query = query.where(col(AdminAudit.id) < before_id)
    if user_id is not None:
        query = query.where(col(AdminAudit.user_id) == user_id)
    if action is not None:
        query = query.where(col(AdminAudit.action) == action)
    if token is not None:
        query = query.where(col(AdminAudit.token) == token)
    rows = list(db.exec(query.order_by(col(AdminAudit.id).desc()).limit(limit + 1)))
    end_read(db)
    rows, next_id = _page(rows, limit)
    return Page(rows, next_id)


@dataclass(frozen=True)
class LedgerPage:
    rows: list[LedgerEntry]
    next_before_id: int | None


@read_only
def ledger_page(
    db: Session, user_id: str, limit: int = DEFAULT_PAGE, before_id: int | None = None
) -> LedgerPage:
    """A user's ledger rows (applied and rejected), newest first, paged like `read`."""
    limit = max(1, min(limit, MAX_PAGE))
    query = select(LedgerEntry).where(col(LedgerEntry.user_id) == user_id)
    if before_id is not None:
        query = query.where(col(LedgerEntry.id) < before_id)
    rows = list(db.exec(query.order_by(col(LedgerEntry.id).desc()).limit(limit + 1)))
    end_read(db)
    rows, next_id = _page(rows, limit)
    return LedgerPage(rows, next_id)
