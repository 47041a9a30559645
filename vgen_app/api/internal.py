"""Admin API (SPEC §5), mounted at `/api/internal` (docs at `/api/internal/docs`, schema at
`/api/internal/openapi.json`; both public: they hold no data and no secret).

Auth: every operation needs `Authorization: Bearer <ADMIN_TOKEN>`, compared in constant time.
- missing / malformed header, wrong token -> 401 with `WWW-Authenticate: Bearer`;
- no ADMIN_TOKEN configured (unset, empty or blank) -> 503 for every call, whatever is sent:
  the API is disabled, never open.
The check runs in `AdminRoute`, before the request body is read, so a caller without the token
learns nothing about validation (a junk body without a token is 401, not 422). The router-level
dependency `require_admin` checks again and declares the Bearer scheme in the OpenAPI schema.

Bodies are JSON objects (Content-Type `application/json`, or none). Anything that is not — bad JSON,
non-UTF-8 bytes, numbers too long to parse, nesting too deep, another content type — is 422, like a
body that fails validation; a body over 64 KiB is 413. 422 bodies are FastAPI's
`{"detail": [{"type", "loc", "msg"}]}` without the echoed `input`.

`diff` grammar (PUT /balance): a JSON integer, or a string `[+-]?[1-9][0-9]*` (no spaces, no
leading zeros, no decimal point, exponent or separators), non-zero, |diff| <= 10**12. So 100, -100,
"100", "-100", "+100" are accepted; 0, "0", 1.5, 1.0, "1.5", "1e3", " 12 ", "007", "", true, null,
lists and objects are 422.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from vgen_app.api.limits import read_body
from vgen_app.config import get_settings
from vgen_app.db import run_db
from vgen_app.services import accounts, admin
from vgen_app.services.ledger import MAX_ABS_DIFF
from vgen_app.services.security import constant_time_equals

log = logging.getLogger("vgen.admin")

MAX_BODY_BYTES = 64 * 1024

# --- auth -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    status: int
    detail: str
    reason: str
    headers: dict[str, str] | None = None

    def response(self) -> JSONResponse:
        return JSONResponse({"detail": self.detail}, status_code=self.status, headers=self.headers)


def check_authorization(header: str | None) -> Refusal | None:
    """None when `header` carries the admin token, else why the call is refused."""
    expected = (get_settings().admin_token or "").strip()
    if not expected:
        return Refusal(
            503, "The admin API is disabled: ADMIN_TOKEN is not configured.", "not_configured"
        )
    if not header or not header.strip():
        return Refusal(
            401,
            "Authorization required: send 'Authorization: Bearer <ADMIN_TOKEN>'.",
            "missing",
            {"WWW-Authenticate": "Bearer"},
        )
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        return Refusal(
            401,
            "Malformed Authorization header: expected 'Bearer <ADMIN_TOKEN>'.",
            "malformed",
            {"WWW-Authenticate": 'Bearer error="invalid_request"'},
        )
    if not constant_time_equals(credentials, expected):
        return Refusal(
            401,
            "Invalid admin token.",
            "wrong_token",
            {"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return None


_bearer = HTTPBearer(
    auto_error=False, scheme_name="AdminToken", description="The ADMIN_TOKEN of the server."
)


def require_admin(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> str:
    refusal = check_authorization(request.headers.get("authorization"))
    if refusal is not None:
        raise HTTPException(refusal.status, refusal.detail, headers=refusal.headers)
    return admin.ACTOR


# --- request bodies ---------------------------------------------------------------------------------


def _invalid(
    msg: str, kind: str = "json_invalid", loc: tuple[str | int, ...] = ("body",)
) -> Exception:
    return RequestValidationError([{"type": kind, "loc": loc, "msg": msg, "input": None}])


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def _read_json_body(request: Request) -> None:
    """Read and decode the body (cached on the request for FastAPI), or refuse it."""
    # Refused by its declared length, or as soon as a body sent without one passes the cap.
    body = await read_body(request, MAX_BODY_BYTES)
    if not body:
        return  # FastAPI reports the missing body
    content_type = request.headers.get("content-type")
    if content_type and not _is_json(content_type):
        raise _invalid("Send the body as JSON with 'Content-Type: application/json'.")
    try:
        await request.json()
    except json.JSONDecodeError as exc:
        raise _invalid(f"Malformed JSON: {exc.msg} (at character {exc.pos}).") from exc
    except UnicodeDecodeError as exc:
        raise _invalid("Malformed JSON: the body is not valid UTF-8.") from exc
    except RecursionError as exc:
        raise _invalid("Malformed JSON: nested too deeply.") from exc
    except ValueError as exc:  # e.g. an integer literal of thousands of digits
        raise _invalid(f"Malformed JSON: {exc}.") from exc


class AdminRoute(APIRoute):
    """Auth first, then the body; every call logged with its outcome."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        has_body = self.body_field is not None

        async def admin_handler(request: Request) -> Response:
            method, path = request.method, request.url.path
            refusal = check_authorization(request.headers.get("authorization"))
            if refusal is not None:
                log.warning(
                    "admin call refused who=anonymous method=%s path=%r status=%d reason=%s",
                    method,
                    path,
                    refusal.status,
                    refusal.reason,
                )
                return refusal.response()
            status = 500
            try:
                if has_body:
                    await _read_json_body(request)
                response = await handler(request)
                status = response.status_code
                return response
            except HTTPException as exc:
                status = exc.status_code
                raise
            except RequestValidationError:
                status = 422
                raise
            finally:
                log.info(
                    "admin call who=%s method=%s path=%r status=%d",
                    admin.ACTOR,
                    method,
                    path,
                    status,
                )

        return admin_handler


class _SafeJSONResponse(JSONResponse):
    """ASCII-escaped: a lone surrogate in an echoed key or message can't break the encoding."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    detail = [
        {
            "type": str(error.get("type", "value_error")),
            "loc": [part if isinstance(part, int) else str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "Invalid value.")),
        }
        for error in exc.errors()
    ]
    return _SafeJSONResponse({"detail": detail}, status_code=422)


# --- schemas ----------------------------------------------------------------------------------------

UserID = Annotated[
    str,
    Field(
        pattern=admin.USER_ID_PATTERN,
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


class ErrorOut(BaseModel):
    detail: str


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing, malformed or wrong admin token."},
    503: {
        "model": ErrorOut,
        "description": "ADMIN_TOKEN is not configured: every call is refused.",
    },
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such user."}
}
TOO_LARGE: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorOut, "description": "Body over 64 KiB."}
}
NO_SUCH_USER = "No such user."

# --- routes -----------------------------------------------------------------------------------------

router = APIRouter(
    route_class=AdminRoute,
    dependencies=[Depends(require_admin)],
    responses=AUTH_RESPONSES,
    strict_content_type=False,  # a body without Content-Type is read as JSON
)


@router.put(
    "/user",
    response_model=StatusResponse,
    responses={**NOT_FOUND, **TOO_LARGE},
    summary="Set a user's status",
    description="`blocked` revokes the user's sessions at once; `activated` lets a user who never "
    "got the activation mail log in.",
)
async def put_user(body: StatusRequest) -> StatusResponse:
    try:
        change = await run_db(admin.set_status, body.userID, body.status)
    except admin.UserNotFound:
        raise HTTPException(404, NO_SUCH_USER) from None
    return StatusResponse(
        userID=change.user_id,
        email=change.email,
        previous_status=change.previous_status,
        status=change.status,
    )


@router.put(
    "/balance",
    response_model=BalanceResponse,
    responses={
        **NOT_FOUND,
        409: {
            "model": BalanceRefused,
            "description": "The balance would go negative: nothing changed, the attempt is logged.",
        },
        **TOO_LARGE,
    },
    summary="Change a user's balance",
    description="Recorded in the ledger as action `manual`, reference `admin`.",
)
async def put_balance(body: BalanceRequest) -> Any:
    try:
        change = await run_db(admin.change_balance, body.userID, body.diff)
    except admin.UserNotFound:
        raise HTTPException(404, NO_SUCH_USER) from None
    if not change.applied:
        refused = BalanceRefused(
            detail=f"Refused: the balance ({change.old_balance}) would become negative.",
            userID=change.user_id,
            old_balance=change.old_balance,
            diff=change.diff,
        )
        return JSONResponse(refused.model_dump(), status_code=409)
    return BalanceResponse(
        userID=change.user_id,
        old_balance=change.old_balance,
        diff=change.diff,
        new_balance=change.new_balance,
    )


@router.get("/users", response_model=list[UserOut], summary="Find a user by e-mail")
async def find_users(
    email: Annotated[
        str,
        Query(
            min_length=1,
            max_length=320,
            description="Any case; trimmed.",
            json_schema_extra={"format": "email"},
        ),
    ],
) -> list[UserOut]:
    try:
        views = await run_db(admin.find_by_email, email)
    except accounts.AccountError as exc:
        raise _invalid(exc.message, "value_error", ("query", "email")) from None
    return [UserOut(**vars(view)) for view in views]


@router.get(
    "/users/{userID}", response_model=UserOut, responses=NOT_FOUND, summary="Get a user by id"
)
async def get_user(
    userID: Annotated[str, Path(pattern=admin.USER_ID_PATTERN, max_length=32)],
) -> UserOut:
    view = await run_db(admin.get_user, userID)
    if view is None:
        raise HTTPException(404, NO_SUCH_USER)
    return UserOut(**vars(view))


def create_internal_api() -> FastAPI:
    api = FastAPI(
        title="vgen admin API",
        version="1",
        description="Operator calls (SPEC §5). Every call needs `Authorization: Bearer "
        "<ADMIN_TOKEN>`; with no token configured every call is refused (503).",
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    api.add_exception_handler(RequestValidationError, _validation_error)
    api.include_router(router)
    return api
