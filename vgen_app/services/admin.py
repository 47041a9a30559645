"""Admin operations (SPEC §5): lookups, status changes and manual balance changes.

The HTTP layer (`vgen_app.api.internal`) authenticates and validates; the functions here take a
database session and already-valid values, do the work through the account and ledger services, and
write the audit line of every call to the `vgen.admin` logger: who, what, and the outcome.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlmodel import Session, select

from vgen_app.models import ID_PATTERN, User, is_id
from vgen_app.services import accounts, ledger

log = logging.getLogger("vgen.admin")

ACTOR = "admin"  # one shared token: every authenticated call is made by "admin"
REFERENCE = "admin"  # the ledger reference of manual changes made through the admin API

# User ids are `secrets.token_urlsafe` strings (models.new_id); the column holds at most 32.
USER_ID_PATTERN = ID_PATTERN


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


def _valid_id(user_id: str) -> bool:
    return is_id(user_id)


# --- lookups --------------------------------------------------------------------------------------


def get_user(db: Session, user_id: str) -> UserView | None:
    user = db.get(User, user_id) if _valid_id(user_id) else None
    view = _view(user) if user is not None else None
    db.rollback()
    log.info(
        "admin call who=%s what=get_user userID=%s outcome=%s",
        ACTOR,
        user_id,
        "found" if view else "not_found",
    )
    return view


def find_by_email(db: Session, email: str) -> list[UserView]:
    """The user with this address (normalized as at sign-up), as a list of 0 or 1."""
    normalized = accounts.normalize_email(email)  # AccountError("invalid_email") for junk
    user = db.exec(select(User).where(User.email == normalized)).first()
    views = [_view(user)] if user is not None else []
    db.rollback()
    log.info(
        "admin call who=%s what=find_by_email outcome=%s",
        ACTOR,
        f"found userID={views[0].id}" if views else "not_found",
    )
    return views


# --- changes --------------------------------------------------------------------------------------


def set_status(db: Session, user_id: str, status: str) -> accounts.StatusChange:
    """Set a user's status; blocking revokes every session at once (accounts.set_status)."""
    if not _valid_id(user_id):
        log.info(
            "admin call who=%s what=set_status userID=%s status=%s outcome=not_found",
            ACTOR,
            user_id,
            status,
        )
        raise UserNotFound(user_id)
    try:
        change = accounts.set_status(db, user_id, status)
    except accounts.AccountError as exc:
        log.info(
            "admin call who=%s what=set_status userID=%s status=%s outcome=%s",
            ACTOR,
            user_id,
            status,
            exc.code,
        )
        if exc.code == "not_found":
            raise UserNotFound(user_id) from exc
        raise
    log.info(
        "admin call who=%s what=set_status userID=%s status=%s previous_status=%s outcome=ok",
        ACTOR,
        user_id,
        change.status,
        change.previous_status,
    )
    return change


def change_balance(db: Session, user_id: str, diff: int) -> ledger.BalanceChange:
    """A manual balance change. A change that would go negative is refused but recorded
    (ledger outcome `rejected`): the caller checks `applied`."""
    if not _valid_id(user_id):
        log.info(
            "admin call who=%s what=change_balance userID=%s diff=%d outcome=not_found",
            ACTOR,
            user_id,
            diff,
        )
        raise UserNotFound(user_id)
    try:
        change = ledger.change_balance(
            db, user_id, diff, "manual", reference=REFERENCE, note="admin API"
        )
    except ledger.UnknownUser as exc:
        log.info(
            "admin call who=%s what=change_balance userID=%s diff=%d outcome=not_found",
            ACTOR,
            user_id,
            diff,
        )
        raise UserNotFound(user_id) from exc
    log.info(
        "admin call who=%s what=change_balance userID=%s diff=%d old_balance=%d new_balance=%d "
        "outcome=%s ledger_entry=%d",
        ACTOR,
        user_id,
        diff,
        change.old_balance,
        change.new_balance,
        ledger.APPLIED if change.applied else ledger.REJECTED,
        change.entry_id,
    )
    return change
