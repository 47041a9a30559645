"""Database tables (SQLModel). Every schema change comes with an Alembic migration."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    String,
    TypeDecorator,
    UniqueConstraint,
    true,
)
from sqlmodel import AutoString, Field, SQLModel

from vgen_app import clock


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC in Python on every backend (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use vgen_app.clock.now()")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class EnumText(TypeDecorator):
    """A StrEnum column stored as its plain string value (VARCHAR, as the migrations made it):
    written only from a member or a valid value, read back as the member."""

    impl = AutoString
    cache_ok = True

    def __init__(self, enum: type[StrEnum], length: int = 16) -> None:
        super().__init__(length=length)
        self.enum = enum

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: Any, dialect: Any) -> StrEnum | None:
        return None if value is None else self.enum(value)


def enum_column(enum: type[StrEnum], length: int = 16) -> Column:
    return Column(EnumText(enum, length), nullable=False)


def moment(*, nullable: bool = False) -> Any:
    """A UTC timestamp column (its own Column for each table), required unless `nullable`."""
    if nullable:
        return Field(default=None, sa_column=Column(UTCDateTime(), nullable=True))
    return Field(sa_column=Column(UTCDateTime(), nullable=False))


def stamped() -> Any:
    """A UTC timestamp column set to now when the row is made (created_at and the like)."""
    return Field(default_factory=clock.now, sa_column=Column(UTCDateTime(), nullable=False))


def new_id() -> str:
    """Short random ids (~72 bits): unguessable in URLs and the admin API. Never starting with
    "-", which a command line (`vgen user export <id>`) would take for an option."""
    while (value := secrets.token_urlsafe(9)).startswith("-"):
        pass
    return value


# What an id from outside (a URL, the admin API, an upload) may look like. Anything else is "not
# found" before a database sees it: PostgreSQL refuses a NUL byte in a text parameter (a 500).
ID_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"
_ID_RE = re.compile(ID_PATTERN)


def is_id(value: object) -> bool:
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


class UserStatus(StrEnum):
    NEW = "new"
    ACTIVATED = "activated"
    BLOCKED = "blocked"


class LedgerAction(StrEnum):
    """Why a balance changed: a payment, a run, a run's refund, an operator."""

    TOPUP = "topup"
    USED = "used"
    REFUND = "refund"
    MANUAL = "manual"
    CLAWBACK = "clawback"  # a payment's tokens taken back (refund, dispute); reference: its id


class Outcome(StrEnum):
    """Of a balance change: applied, or refused because the balance would go negative."""

    APPLIED = "applied"
    REJECTED = "rejected"


class CheckoutStatus(StrEnum):
    """A checkout is paid once (by the webhook, or by `fulfill` from the success page); one
    still open can fail (a delayed payment method failed) or expire, and then credits nothing."""

    OPEN = "open"
    PAID = "paid"
    FAILED = "failed"
    EXPIRED = "expired"


class DisputeStatus(StrEnum):
    """Of a paid checkout's charge: disputed (`open`), then closed as `won` or `lost`."""

    OPEN = "open"
    WON = "won"
    LOST = "lost"


class PurchaseStatus(StrEnum):
    """What a purchase shows as (services/billing.py `purchases`), from its checkout's state."""

    OPEN = "open"
    PAID = "paid"
    PARTLY_REFUNDED = "partly_refunded"
    REFUNDED = "refunded"
    DISPUTED = "disputed"
    FAILED = "failed"
    EXPIRED = "expired"


class AdjustmentKind(StrEnum):
    """What a payment adjustment row records (its primary key is the object's id and this)."""

    REFUND = "refund"
    DISPUTE = "dispute"  # charge.dispute.created
    DISPUTE_CLOSED = "dispute_closed"


class RunStatus(StrEnum):
    """queued -> processing -> succeeded | failed. A failed run is refunded once; a run in
    flight (queued or processing) keeps its task's inputs and Run button locked."""

    QUEUED = "queued"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"  # by its owner while still queued: refunded like a failure


class LinkPurpose(StrEnum):
    ACTIVATION = "activation"
    RESET = "reset"
    LOGIN_TICKET = "login_ticket"
    EMAIL_CHANGE = "email_change"  # to the new address; `new_email` says which


class User(SQLModel, table=True):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("balance >= 0", name="ck_users_balance_nonnegative"),
        CheckConstraint("status IN ('new', 'activated', 'blocked')", name="ck_users_status"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    email: str = Field(sa_column=Column(String(320), nullable=False, unique=True))
    password_hash: str = Field(max_length=100)
    status: UserStatus = Field(default=UserStatus.NEW, sa_column=enum_column(UserStatus))
    balance: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )
    # utm_* parameters the visitor arrived with (campaign attribution).
    signup_utm: dict[str, str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = stamped()
    # An e-mail when a run finishes (succeeded or failed); the account page turns it off.
    run_mails: bool = Field(
        default=True, sa_column=Column(Boolean, nullable=False, server_default=true())
    )
    # Deleted by its owner (or the operator): the row stays for the ledger, anonymised, its
    # address freed.
    deleted_at: datetime | None = moment(nullable=True)


class OneTimeLink(SQLModel, table=True):
    """Activation and reset links, and the short-lived login tickets. Only the token's hash is kept."""

    __tablename__ = "one_time_links"
    __table_args__ = (
        Index("ix_one_time_links_user_purpose", "user_id", "purpose"),
        Index("ix_one_time_links_expires_at", "expires_at"),  # the retention job
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(foreign_key="users.id", max_length=32)
    purpose: LinkPurpose = Field(sa_column=enum_column(LinkPurpose))
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    # For login tickets: where the session is created from.
    ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=512)
    created_at: datetime = stamped()
    expires_at: datetime = moment()
    used_at: datetime | None = moment(nullable=True)
    # For e-mail change links: the address the account moves to once the link is opened.
    new_email: str | None = Field(default=None, max_length=320)


class UserSession(SQLModel, table=True):
    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_expires_at", "expires_at"),)  # the retention job

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    user_id: str = Field(foreign_key="users.id", max_length=32, index=True)
    created_at: datetime = stamped()
    last_seen_at: datetime = stamped()
    expires_at: datetime = moment()
    revoked_at: datetime | None = moment(nullable=True)
    ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=512)
    country: str | None = Field(default=None, max_length=2)  # ISO 3166 code from the edge, if any


class AuthEvent(SQLModel, table=True):
    """What the auth rate limits count: failed logins, sign-ups and link requests."""

    __tablename__ = "auth_events"
    __table_args__ = (
        Index("ix_auth_events_kind_email_at", "kind", "email", "created_at"),
        Index("ix_auth_events_kind_ip_at", "kind", "ip", "created_at"),
        Index("ix_auth_events_created_at", "created_at"),  # the retention job
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)
    email: str | None = Field(default=None, max_length=320)
    ip: str | None = Field(default=None, max_length=64)
    created_at: datetime = stamped()


class AnalyticsOutbox(SQLModel, table=True):
    """Analytics events, written in the same transaction as what they describe, shipped later."""

    __tablename__ = "analytics_outbox"
    __table_args__ = (Index("ix_analytics_outbox_pending", "delivered_at", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    table_name: str = Field(max_length=64)
    row: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = stamped()
    delivered_at: datetime | None = moment(nullable=True)
    attempts: int = Field(default=0)
    last_error: str | None = Field(default=None)


class LedgerEntry(SQLModel, table=True):
    """Every balance change, and every attempted one (outcome `rejected`, old = new balance)."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        Index("ix_ledger_entries_user_id_id", "user_id", "id"),
        Index("ix_ledger_entries_op_id", "op_id", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    # The operation that wrote the row (random, unique): how the later statements of the same
    # batch find it without reading a result in between (services/ledger.py). NULL before 0004.
    op_id: str | None = Field(default=None, max_length=32)
    user_id: str = Field(foreign_key="users.id", max_length=32)
    email: str = Field(max_length=320)
    action: LedgerAction = Field(sa_column=enum_column(LedgerAction))
    diff: int = Field(sa_column=Column(BigInteger, nullable=False))
    old_balance: int = Field(sa_column=Column(BigInteger, nullable=False))
    new_balance: int = Field(sa_column=Column(BigInteger, nullable=False))
    outcome: Outcome = Field(sa_column=enum_column(Outcome))
    reference: str | None = Field(default=None, max_length=255)
    note: str | None = Field(default=None, max_length=500)
    created_at: datetime = stamped()


def _count() -> Any:
    """A non-negative amount that starts at 0 (tokens or cents)."""
    return Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))


class CheckoutSession(SQLModel, table=True):
    """A checkout we started (Stripe Checkout Session or the built-in test checkout): the
    purchase. After it is paid, its charge's refunds and dispute are recorded here as facts
    (`refunded_cents`, `refund_tokens`, `dispute_status`), and what they took back as
    `tokens_taken_back` (taken from the balance) + `shortfall` (wanted, but already spent)."""

    __tablename__ = "checkout_sessions"
    __table_args__ = (Index("ix_checkout_sessions_payment_intent", "payment_intent"),)

    id: str = Field(primary_key=True, max_length=255)
    user_id: str = Field(foreign_key="users.id", max_length=32, index=True)
    provider: str = Field(max_length=16)  # stripe | test
    package_id: str = Field(max_length=32)
    tokens: int = Field(sa_column=Column(BigInteger, nullable=False))
    amount_cents: int
    currency: str = Field(max_length=8)
    status: CheckoutStatus = Field(
        default=CheckoutStatus.OPEN, sa_column=enum_column(CheckoutStatus)
    )
    url: str = Field(max_length=2000)
    created_at: datetime = stamped()
    paid_at: datetime | None = moment(nullable=True)
    # Stripe's PaymentIntent of the payment (charges and disputes name it), stored when credited
    # or when a refund or dispute found the checkout through Stripe first.
    payment_intent: str | None = Field(default=None, max_length=255)
    # What the checkout charged (after discounts, with taxes), as Stripe said when crediting.
    paid_cents: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    receipt_url: str | None = Field(default=None, max_length=2000)  # Stripe's, of the charge
    closed_at: datetime | None = moment(nullable=True)  # failed or expired
    refunded_cents: int = _count()  # the charge's amount_refunded (the largest seen)
    refund_tokens: int = _count()  # tokens x refunded / charged, rounded down (largest seen)
    dispute_status: DisputeStatus | None = Field(
        default=None, sa_column=Column(EnumText(DisputeStatus), nullable=True)
    )
    tokens_taken_back: int = _count()
    shortfall: int = _count()


class PaymentCredit(SQLModel, table=True):
    """One row per credited Checkout Session: its primary key is what makes crediting exactly-once."""

    __tablename__ = "payment_credits"

    checkout_session_id: str = Field(primary_key=True, max_length=255)
    event_id: str = Field(max_length=255)
    user_id: str = Field(foreign_key="users.id", max_length=32)
    tokens: int = Field(sa_column=Column(BigInteger, nullable=False))
    ledger_entry_id: int | None = Field(default=None, foreign_key="ledger_entries.id")
    created_at: datetime = stamped()


class PaymentEvent(SQLModel, table=True):
    """A Stripe event that changed a purchase: its primary key refuses a second delivery."""

    __tablename__ = "payment_events"

    event_id: str = Field(primary_key=True, max_length=255)
    type: str = Field(max_length=64)
    checkout_session_id: str = Field(foreign_key="checkout_sessions.id", max_length=255)
    created_at: datetime = stamped()


class PaymentAdjustment(SQLModel, table=True):
    """A refund or a dispute's opening or closing applied to a purchase, once per object: the
    primary key (the refund's or dispute's id, and the kind) refuses a second one."""

    __tablename__ = "payment_adjustments"
    __table_args__ = (Index("ix_payment_adjustments_checkout", "checkout_session_id"),)

    object_id: str = Field(primary_key=True, max_length=255)
    kind: AdjustmentKind = Field(
        sa_column=Column(EnumText(AdjustmentKind), primary_key=True, nullable=False)
    )
    checkout_session_id: str = Field(foreign_key="checkout_sessions.id", max_length=255)
    user_id: str = Field(foreign_key="users.id", max_length=32)
    event_id: str | None = Field(default=None, max_length=255)
    # A refund: the charge's amount_refunded after it; a dispute: its amount.
    amount_cents: int = Field(sa_column=Column(BigInteger, nullable=False))
    detail: str | None = Field(default=None, max_length=32)  # a closed dispute's status
    # The clawback (or, for a won dispute, topup) entry it wrote; none if there was nothing to
    # take (or give) back.
    ledger_entry_id: int | None = Field(default=None, foreign_key="ledger_entries.id")
    created_at: datetime = stamped()


class Task(SQLModel, table=True):
    __tablename__ = "tasks"
    __table_args__ = (Index("ix_tasks_owner_created", "owner_id", "created_at"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    owner_id: str = Field(foreign_key="users.id", max_length=32)
    model: str = Field(max_length=32)
    name: str = Field(max_length=120)
    created_at: datetime = stamped()
    updated_at: datetime = stamped()
    # Deleted by its owner: its files are gone from storage, the row stays for the ledger's sake.
    deleted_at: datetime | None = moment(nullable=True)


class TaskInput(SQLModel, table=True):
    """The file in one slot of a task (a replaced file's row is replaced)."""

    __tablename__ = "task_inputs"
    __table_args__ = (UniqueConstraint("task_id", "slot", name="uq_task_inputs_task_slot"),)

    id: int | None = Field(default=None, primary_key=True)
    task_id: str = Field(foreign_key="tasks.id", max_length=32, index=True)
    slot: str = Field(max_length=32)
    storage_key: str = Field(max_length=500)
    filename: str = Field(max_length=255)
    size_bytes: int = Field(sa_column=Column(BigInteger, nullable=False))
    media: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = stamped()


class Run(SQLModel, table=True):
    """One generation of a task (attempt N). Runs are never deleted."""

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint("task_id", "attempt", name="uq_runs_task_attempt"),
        Index("ix_runs_status", "status"),
        # The worker's run-finished e-mail round looks up the few runs not mailed yet.
        Index("ix_runs_mail_pending", "finished_mail_at", "status"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    task_id: str = Field(foreign_key="tasks.id", max_length=32, index=True)
    owner_id: str = Field(foreign_key="users.id", max_length=32)
    attempt: int
    status: RunStatus = Field(default=RunStatus.QUEUED, sa_column=enum_column(RunStatus))
    progress: float = Field(default=0.0)
    price: int = Field(sa_column=Column(BigInteger, nullable=False))
    model: str = Field(max_length=32)
    # What was sent: slot -> {storage_key, filename, size_bytes, duration_s, ...}
    inputs: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    provider: str | None = Field(default=None, max_length=32)
    provider_job_id: str | None = Field(default=None, max_length=255)
    submit_attempts: int = Field(default=0)
    error: str | None = Field(default=None, max_length=1000)
    result_key: str | None = Field(default=None, max_length=500)
    result_bytes: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    poster_key: str | None = Field(default=None, max_length=500)  # a frame of the result (JPEG)
    refunded_at: datetime | None = moment(nullable=True)
    created_at: datetime = stamped()
    submitted_at: datetime | None = moment(nullable=True)
    finished_at: datetime | None = moment(nullable=True)
    # The run-finished e-mail went out (or was not wanted): sent once per run.
    finished_mail_at: datetime | None = moment(nullable=True)
    updated_at: datetime = stamped()


class AdminAudit(SQLModel, table=True):
    """One admin API call (services/audit.py): when, which token (a fingerprint, never the token),
    what (method, route, concrete path, action, target user, what was asked), before and after,
    the outcome and the HTTP status. A change's row is written in the change's own transaction."""

    __tablename__ = "admin_audit"
    __table_args__ = (
        Index("ix_admin_audit_user_id_id", "user_id", "id"),
        Index("ix_admin_audit_action_id", "action", "id"),
        Index("ix_admin_audit_outcome_created_at", "outcome", "created_at"),  # the refused cap
    )

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = stamped()
    # The first 8 hex digits of sha256(token) presented (None: no token was sent).
    token: str | None = Field(default=None, max_length=16)
    method: str = Field(max_length=8)
    route: str = Field(max_length=200)  # the route template, e.g. /api/internal/users/{userID}
    path: str = Field(max_length=500)  # the concrete path that was called
    action: str = Field(max_length=32)
    # The user the call is about (no foreign key: an unknown id asked for is recorded too).
    user_id: str | None = Field(default=None, max_length=32)
    request: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    before: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    after: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    outcome: str = Field(max_length=16)
    status: int


class Lease(SQLModel, table=True):
    """A named lease: the holder runs a cluster-wide job until it stops renewing it."""

    __tablename__ = "leases"

    name: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=128)
    expires_at: datetime = moment()
