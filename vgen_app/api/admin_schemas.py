"""Request and response bodies of the admin API (api/internal.py), with the `diff` grammar:
a JSON integer, or a string `[+-]?[1-9][0-9]*` (no spaces, no leading zeros, no decimal point,
exponent or separators), non-zero, |diff| <= 10**12."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from vgen_app.models import ID_PATTERN
from vgen_app.services.ledger import MAX_ABS_DIFF

UserID = Annotated[
    str,
    Field(
        pattern=ID_PATTERN,
        min_length=1,
        max_length=32,
        description="The user's id, as returned by GET /users.",
        examples=["q9XyZ3abCd-_"],
    ),
]

_DIGITS_RE = re.compile(r"[+-]?[0-9]+")
DIFF_STRING_PATTERN = r"^[+-]?([1-9][0-9]{0,11}|1000000000000)$"  # 1 <= |n| <= 10**12
DIFF_SCHEMA: dict[str, Any] = {
    "title": "Diff",
    "description": (
        "Tokens to add (positive) or take away (negative): a non-zero integer with |diff| <= 10^12, "
        'as a JSON number or a string of digits with an optional sign ("-100", "+100").'
    ),
    "anyOf": [
        {"type": "integer", "minimum": -MAX_ABS_DIFF, "maximum": MAX_ABS_DIFF, "not": {"const": 0}},
        {"type": "string", "pattern": DIFF_STRING_PATTERN},
    ],
    "examples": [100, "-100"],
}


def _diff_error(msg: str) -> PydanticCustomError:
    return PydanticCustomError("diff_invalid", msg)


def parse_diff(value: Any) -> int:
    """The diff grammar (see the module docstring)."""
    if isinstance(value, bool) or value is None:
        raise _diff_error('diff must be a non-zero integer such as 100 or "-100".')
    if isinstance(value, float):
        raise _diff_error("diff must be a whole number: decimals such as 1.5 or 1.0 are refused.")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        if not _DIGITS_RE.fullmatch(value):
            raise _diff_error(
                "diff must be an integer or a string of digits with an optional sign, such as "
                '"100", "-100" or "+100" (no spaces, decimals, exponents or separators).'
            )
        digits = value.lstrip("+-")
        if digits.strip("0") and digits.startswith("0"):
            raise _diff_error("diff must not have leading zeros.")
        number = int(value) if len(digits) <= 20 else MAX_ABS_DIFF + 1
    else:
        raise _diff_error("diff must be an integer or a string of digits, not a list or object.")
    if number == 0:
        raise _diff_error("diff must not be 0.")
    if abs(number) > MAX_ABS_DIFF:
        raise _diff_error(f"diff is too large: at most {MAX_ABS_DIFF} either way.")
    return number


Diff = Annotated[int, PlainValidator(parse_diff), WithJsonSchema(DIFF_SCHEMA)]


class StatusRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    userID: UserID
    status: Literal["activated", "new", "blocked"]


class StatusResponse(BaseModel):
    userID: str
    email: str
    previous_status: str
    status: str


class BalanceRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"userID": "q9XyZ3abCd-_", "diff": 100}]}
    )

    userID: UserID
    diff: Diff


class BalanceResponse(BaseModel):
    userID: str
    old_balance: int
    diff: int
    new_balance: int


class BalanceRefused(BaseModel):
    detail: str
    userID: str
    old_balance: int
    diff: int


class UserOut(BaseModel):
    id: str
    email: str
    status: str
    balance: int
    created_at: str = Field(description="ISO 8601, UTC")


class PurchaseOut(BaseModel):
    session_id: str = Field(
        description="The Checkout Session's id (the test checkout's: cs_test_…)."
    )
    userID: str
    created_at: str = Field(description="ISO 8601, UTC")
    package_id: str
    tokens: int
    amount_cents: int = Field(description="What was charged when known, else the price.")
    currency: str
    status: Literal["open", "paid", "partly_refunded", "refunded", "disputed", "failed", "expired"]
    refunded_cents: int
    tokens_taken_back: int = Field(description="Taken back from the balance (refunds, disputes).")
    shortfall: int = Field(
        description="Tokens a refund or dispute should have taken back but the user had spent "
        "already: the balance stayed at 0 (never negative); settle it with the user by hand."
    )
    receipt_url: str | None


class ErrorOut(BaseModel):
    detail: str


class DeletedOut(BaseModel):
    userID: str
    deleted_at: str = Field(description="ISO 8601, UTC")
    tasks_deleted: int = Field(description="Tasks marked deleted now (their rows stay).")
    sessions_deleted: int
    links_deleted: int
    files_removed: int = Field(description="Uploads, results and posters removed from storage.")
    files_failed: int = Field(
        description="Files that could not be removed (logged as errors for the operator)."
    )


class AuditEntryOut(BaseModel):
    id: int
    created_at: str = Field(description="ISO 8601, UTC")
    token: str | None = Field(
        description="The first 8 hex digits of the SHA-256 of the token sent (never the token); "
        "null when none was sent."
    )
    method: str
    route: str = Field(description="The route template, e.g. /api/internal/users/{userID}.")
    path: str = Field(description="The path that was called.")
    action: str
    userID: str | None = Field(description="The user the call is about (may not exist).")
    request: dict[str, Any] | None = Field(description="What was asked (never an address).")
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    outcome: str = Field(
        description="ok, not_found, rejected, deleted, busy, invalid, too_large, refused, error"
    )
    status: int = Field(description="The HTTP status answered.")


class AuditPageOut(BaseModel):
    items: list[AuditEntryOut]
    next_before_id: int | None = Field(
        description="Pass as `before_id` for the next (older) page; null on the last page."
    )


class LedgerEntryOut(BaseModel):
    id: int
    created_at: str = Field(description="ISO 8601, UTC")
    action: Literal["topup", "used", "refund", "manual", "clawback"]
    diff: int
    old_balance: int
    new_balance: int = Field(description="The balance after (= old_balance when rejected).")
    outcome: Literal["applied", "rejected"]
    reference: str | None = Field(
        description="A run id (used, refund), a checkout or refund id, or `admin`."
    )
    note: str | None


class LedgerPageOut(BaseModel):
    items: list[LedgerEntryOut]
    next_before_id: int | None = Field(
        description="Pass as `before_id` for the next (older) page; null on the last page."
    )


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing, malformed or wrong admin token."},
    503: {
        "model": ErrorOut,
        "description": "No ADMIN_TOKEN (or ADMIN_TOKENS) configured: every call is refused.",
    },
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such user."}
}
TOO_LARGE: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorOut, "description": "Body over 64 KiB."}
}
GONE: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such user, or the user is deleted."}
}
BUSY: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorOut,
        "description": "A run of the user's is queued or processing: nothing changed. Cancel it "
        "(while it is queued) or wait until it finishes, then delete again.",
    }
}
DELETED: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "The user was deleted: its status stays blocked."}
}
ZIP: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The user's data as one ZIP (account.json, ledger.csv, tasks.json, "
        "files/...), streamed.",
        "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
    }
}
NO_SUCH_USER = "No such user."
ALREADY_DELETED = "This user is deleted."
DELETED_STATUS = "This user is deleted: its status stays blocked."
