"""Admin operations (SPEC §5): lookups, status changes and manual balance changes.

The HTTP layer (`vgen_app.api.internal`) authenticates and validates; the functions here take a
database session and already-valid values and do the work through the account and ledger services.
The API writes one audit line per call to the `vgen.admin` logger (who, what, the outcome), with
the service's part from `audit()`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, select

from vgen_app.models import LedgerAction, User, is_id
from vgen_app.services import accounts, ledger

ACTOR = "admin"  # one shared token: every authenticated call is made by "admin"
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


def audit(what: str, **fields: object) -> str:
    """The service's part of a call's one audit line (the API adds who, method, path, status)."""
    return " ".join([f"what={what}", *(f"{k}={v}" for k, v in fields.items())])


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


def set_status(db: Session, user_id: str, status: str) -> accounts.StatusChange:
    """Set a user's status; blocking revokes every session at once (accounts.set_status)."""
    if not is_id(user_id):
        raise UserNotFound(user_id)
    try:
        return accounts.set_status(db, user_id, status)
    except accounts.AccountError as exc:
        if exc.code == "not_found":
            raise UserNotFound(user_id) from exc
        raise


def change_balance(db: Session, user_id: str, diff: int) -> ledger.BalanceChange:
    """A manual balance change. A change that would go negative is refused but recorded
    (ledger outcome `rejected`): the caller checks `applied`."""
    if not is_id(user_id):
        raise UserNotFound(user_id)
    try:
        return ledger.change_balance(
            db, user_id, diff, LedgerAction.MANUAL, reference=REFERENCE, note="admin API"
        )
    except ledger.UnknownUser as exc:
        raise UserNotFound(user_id) from exc
