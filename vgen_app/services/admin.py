"""Admin operations (SPEC §5): lookups, status changes, manual balance changes and deletions.

The HTTP layer (`vgen_app.api.internal`) authenticates and validates; the functions here take a
database session and already-valid values and do the work through the account, ledger and erasure
services. Each change takes the call's `audit.Call` and writes its audit row in the change's own
transaction (services/audit.py), then marks it written; the other calls' rows are written by the
API once their answer is known.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, String, literal, update
from sqlmodel import Session, col, select

from vgen_app.db import one_writer, with_db
from vgen_app.models import AdminAudit, LedgerAction, User, UserStatus, is_id
from vgen_app.services import accounts, audit, erasure, ledger

log = logging.getLogger("vgen.admin")

REFERENCE = "admin"  # the ledger reference of manual changes made through the admin API


class UserNotFound(LookupError):
    def __init__(self, user_id: str) -> None:
        super().__init__(user_id)
        self.user_id = user_id


@dataclass(frozen=True)
class UserView:
    id: str
    email: str
    status: str
    balance: int
    created_at: str  # ISO 8601, UTC


def _view(user: User) -> UserView:
    return UserView(
        user.id, user.email, user.status, int(user.balance), user.created_at.isoformat()
    )


# --- lookups --------------------------------------------------------------------------------------


def get_user(db: Session, user_id: str) -> UserView | None:
    user = db.get(User, user_id) if is_id(user_id) else None
    view = _view(user) if user is not None else None
    db.rollback()
    return view


def find_by_email(db: Session, email: str) -> list[UserView]:
    """The user with this address (normalized as at sign-up), as a list of 0 or 1."""
    normalized = accounts.normalize_email(email)  # AccountError("invalid_email") for junk
    user = db.exec(select(User).where(User.email == normalized)).first()
    views = [_view(user)] if user is not None else []
    db.rollback()
    return views


# --- changes --------------------------------------------------------------------------------------


def set_status(
    db: Session, user_id: str, status: str, call: audit.Call | None = None
) -> accounts.StatusChange:
    """Set a user's status; blocking revokes every session at once (accounts.set_status). With
    `call`, its audit row (status before and after, sessions revoked) in the same transaction."""
    if not is_id(user_id):
        raise UserNotFound(user_id)

    def audited(sql: accounts.StatusSQL) -> Any:
        assert call is not None
        return call.insert_where(
            sql.found,
            before={"status": sql.previous},
            after={"status": literal(status, String()), "sessions_revoked": sql.revoking},
            outcome=audit.OK,
            status=200,
        )

    try:
        change = accounts.set_status(db, user_id, status, also=audited if call else None)
    except accounts.AccountError as exc:
        if exc.code == "not_found":
            raise UserNotFound(user_id) from exc
        raise
    if call is not None:  # what the row says, for the log line
        call.before = {"status": change.previous_status}
        call.after = {"status": change.status, "sessions_revoked": change.sessions_revoked}
        call.outcome, call.status = audit.OK, 200
        call.id = int(change.also_rows[0]["id"]) if change.also_rows else None
        call.written = True
    return change


@one_writer
def change_balance(
    db: Session, user_id: str, diff: int, call: audit.Call | None = None
) -> ledger.BalanceChange:
    """A manual balance change. A change that would go negative is refused but recorded
    (ledger outcome `rejected`): the caller checks `applied`. With `call`, its audit row is one
    more statement of the ledger's batch (`audit.balance_row`): one transaction, one D1 request."""
    if not is_id(user_id):
        raise UserNotFound(user_id)
    note = "admin API" if call is None or not call.token else f"admin API, token {call.token}"

    def audited(op: ledger.BalanceOp) -> Any:
        assert call is not None
        return audit.balance_row(call, op.op_id)

    try:
        change = ledger.change_balance(
            db,
            user_id,
            diff,
            LedgerAction.MANUAL,
            reference=REFERENCE,
            note=note,
            also=audited if call else None,
        )
    except ledger.UnknownUser as exc:
        raise UserNotFound(user_id) from exc
    if call is not None:  # what the row says, for the log line
        call.before = {"balance": change.old_balance}
        call.after = {"balance": change.new_balance, "ledger_entry": change.entry_id}
        call.outcome = audit.OK if change.applied else audit.REJECTED
        call.status = 200 if change.applied else 409
        call.written = True
    return change


def delete_user(user_id: str, call: audit.Call | None = None) -> erasure.Erasure:
    """The operator deletes a user (erasure.delete_user; blocking: a worker thread). With `call`,
    its audit row is one more statement of the deletion's batch: `before` counts what goes
    (live tasks, sessions, links, stored inputs, results, posters), `after` the status. Storage
    is no transaction: the files removed and failed are added to the row once they went (a
    second write; should it fail, the log line still has them)."""
    if call is None:
        return erasure.delete_user(user_id)

    def audited(erased: ColumnElement[bool]) -> Any:
        return call.insert_where(
            erased,
            before=erasure.removing(user_id),
            after={"status": UserStatus.BLOCKED.value},
            outcome=audit.OK,
            status=200,
        )

    done = erasure.delete_user(user_id, also=audited)
    # What the row says (and, once the files went, will say), for the log line.
    call.outcome, call.status, call.written = audit.OK, 200, True
    call.id = int(done.also_rows[0]["id"]) if done.also_rows else None
    call.after = {
        "status": UserStatus.BLOCKED.value,
        "deleted_at": done.deleted_at.isoformat(),
        "tasks_deleted": done.tasks_deleted,
        "sessions_deleted": done.sessions,
        "links_deleted": done.links,
        "files_removed": done.files_removed,
        "files_failed": done.files_failed,
    }
    if call.id is not None:
        try:
            with_db(_set_after, call.id, call.after)
        except Exception:  # the deletion stands; the log line has the numbers
            log.exception("audit row %s: could not add the files removed", call.id)
    return done


def _set_after(db: Session, row_id: int, after: dict[str, Any]) -> None:
    db.execute(update(AdminAudit).where(col(AdminAudit.id) == row_id).values(after=after))
    db.commit()
