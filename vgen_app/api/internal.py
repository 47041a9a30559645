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
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from vgen_app.api.account import zip_response
from vgen_app.api.admin_schemas import (
    ALREADY_DELETED,
    AUTH_RESPONSES,
    BUSY,
    DELETED,
    DELETED_STATUS,
    GONE,
    NO_SUCH_USER,
    NOT_FOUND,
    TOO_LARGE,
    ZIP,
    BalanceRefused,
    BalanceRequest,
    BalanceResponse,
    DeletedOut,
    PurchaseOut,
    StatusRequest,
    StatusResponse,
    UserOut,
)
from vgen_app.api.limits import read_body
from vgen_app.config import get_settings
from vgen_app.db import run_db
from vgen_app.models import ID_PATTERN, Outcome
from vgen_app.services import accounts, admin, billing, erasure, export
from vgen_app.services.security import constant_time_equals

T = TypeVar("T")
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
    """Auth first, then the body; every call logged once, with its outcome."""

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
            finally:  # one line per call: the route's part, and the service's (`_audit`)
                log.info(
                    "admin call who=%s method=%s path=%r status=%d %s",
                    admin.ACTOR,
                    method,
                    path,
                    status,
                    getattr(request.state, "audit", ""),
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


# --- routes -----------------------------------------------------------------------------------------


def _audit(request: Request, what: str, **fields: object) -> None:
    """The service's part of this call's one audit line, written by AdminRoute."""
    request.state.audit = admin.audit(what, **fields)


async def _on_user(
    request: Request, action: str, what: dict[str, Any], change: Callable[..., T], *args: Any
) -> T:
    """An admin change to the user `what["userID"]`: an unknown user is audited and answers 404."""
    try:
        return await run_db(change, what["userID"], *args)
    except admin.UserNotFound:
        _audit(request, action, **what, outcome="not_found")
        raise HTTPException(404, NO_SUCH_USER) from None


router = APIRouter(
    route_class=AdminRoute,
    dependencies=[Depends(require_admin)],
    responses=AUTH_RESPONSES,
    strict_content_type=False,  # a body without Content-Type is read as JSON
)


@router.put(
    "/user",
    response_model=StatusResponse,
    responses={**NOT_FOUND, **DELETED, **TOO_LARGE},
    summary="Set a user's status",
    description="`blocked` revokes the user's sessions at once; `activated` lets a user who never "
    "got the activation mail log in. A deleted user stays blocked (409).",
)
async def put_user(body: StatusRequest, request: Request) -> StatusResponse:
    what = {"userID": body.userID, "status": body.status}
    if await run_db(erasure.deleted_at, body.userID) is not None:
        _audit(request, "set_status", **what, outcome="deleted")
        raise HTTPException(409, DELETED_STATUS)
    try:
        change = await _on_user(request, "set_status", what, admin.set_status, body.status)
    except accounts.AccountError as exc:
        _audit(request, "set_status", **what, outcome=exc.code)
        raise
    _audit(request, "set_status", **what, previous_status=change.previous_status, outcome="ok")
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
async def put_balance(body: BalanceRequest, request: Request) -> Any:
    what = {"userID": body.userID, "diff": body.diff}
    change = await _on_user(request, "change_balance", what, admin.change_balance, body.diff)
    _audit(
        request,
        "change_balance",
        **what,
        old_balance=change.old_balance,
        new_balance=change.new_balance,
        outcome=Outcome.APPLIED if change.applied else Outcome.REJECTED,
        ledger_entry=change.entry_id,
    )
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
    request: Request,
) -> list[UserOut]:
    try:
        views = await run_db(admin.find_by_email, email)
    except accounts.AccountError as exc:
        _audit(request, "find_by_email", outcome=exc.code)
        raise _invalid(exc.message, "value_error", ("query", "email")) from None
    _audit(
        request, "find_by_email", outcome=f"found userID={views[0].id}" if views else "not_found"
    )
    return [UserOut(**vars(view)) for view in views]


@router.get(
    "/users/{userID}", response_model=UserOut, responses=NOT_FOUND, summary="Get a user by id"
)
async def get_user(
    userID: Annotated[str, Path(pattern=ID_PATTERN, max_length=32)],
    request: Request,
) -> UserOut:
    view = await run_db(admin.get_user, userID)
    _audit(request, "get_user", userID=userID, outcome="found" if view else "not_found")
    if view is None:
        raise HTTPException(404, NO_SUCH_USER)
    return UserOut(**vars(view))


UserIDPath = Annotated[str, Path(pattern=ID_PATTERN, max_length=32)]


def _gone(request: Request, action: str, user_id: str, exc: erasure.UserGone) -> HTTPException:
    """An unknown or deleted user: audited, 404 (saying which)."""
    deleted = exc.deleted_at is not None
    _audit(request, action, userID=user_id, outcome="deleted" if deleted else "not_found")
    return HTTPException(404, ALREADY_DELETED if deleted else NO_SUCH_USER)


@router.delete(
    "/user/{userID}",
    response_model=DeletedOut,
    responses={**GONE, **BUSY},
    summary="Delete a user's account",
    description="What the user's own Delete my account does (SPEC §9): their uploads, results and "
    "posters removed from storage, sessions and links deleted, the user row anonymised (e-mail "
    "`deleted-<userID>@deleted.invalid`, status `blocked`; the address can sign up again as a new "
    "account); ledger and payment records kept. Refused (409, nothing changed) while a run of "
    "theirs is queued or processing: cancel it or wait until it finishes. An unknown or already "
    "deleted user is 404.",
)
async def delete_user(userID: UserIDPath, request: Request) -> DeletedOut:
    try:
        done = await run_in_threadpool(erasure.delete_user, userID)
    except erasure.UserGone as exc:
        raise _gone(request, "delete_user", userID, exc) from None
    except erasure.AccountBusy as exc:
        _audit(request, "delete_user", userID=userID, outcome="busy")
        raise HTTPException(409, exc.message) from None
    _audit(
        request,
        "delete_user",
        userID=userID,
        tasks=done.tasks_deleted,
        sessions=done.sessions,
        links=done.links,
        files_removed=done.files_removed,
        files_failed=done.files_failed,
        outcome="ok",
    )
    return DeletedOut(
        userID=done.user_id,
        deleted_at=done.deleted_at.isoformat(),
        tasks_deleted=done.tasks_deleted,
        sessions_deleted=done.sessions,
        links_deleted=done.links,
        files_removed=done.files_removed,
        files_failed=done.files_failed,
    )


@router.get(
    "/users/{userID}/export",
    response_class=StreamingResponse,
    responses={**ZIP, **GONE},
    summary="Export a user's data (ZIP)",
    description="The same ZIP as the user's own Export my data: `account.json`, `ledger.csv`, "
    "`tasks.json` and the stored files of every task not deleted (`files/<task>/...`), streamed. "
    "An unknown or deleted user is 404.",
)
async def export_user(userID: UserIDPath, request: Request) -> StreamingResponse:
    try:
        data = await run_db(export.collect, userID)
    except erasure.UserGone as exc:
        raise _gone(request, "export_user", userID, exc) from None
    _audit(request, "export_user", userID=userID, files=len(data.files), outcome="ok")
    return zip_response(data)


def _purchase_out(user_id: str, p: billing.Purchase) -> PurchaseOut:
    return PurchaseOut(
        session_id=p.session_id,
        userID=user_id,
        created_at=p.created_at.isoformat(),
        package_id=p.package_id,
        tokens=p.tokens,
        amount_cents=p.amount_cents,
        currency=p.currency,
        status=p.status.value,
        refunded_cents=p.refunded_cents,
        tokens_taken_back=p.tokens_taken_back,
        shortfall=p.shortfall,
        receipt_url=p.receipt_url,
    )


@router.get(
    "/users/{userID}/purchases",
    response_model=list[PurchaseOut],
    responses=NOT_FOUND,
    summary="A user's purchases",
    description="Newest first (at most 100): status, refunds, the tokens refunds and disputes took "
    "back and the `shortfall` they could not (already spent). Checkouts left open for over a day "
    "are not listed.",
)
async def user_purchases(userID: UserIDPath, request: Request) -> list[PurchaseOut]:
    if await run_db(admin.get_user, userID) is None:
        _audit(request, "user_purchases", userID=userID, outcome="not_found")
        raise HTTPException(404, NO_SUCH_USER)
    found = await run_db(billing.purchases, userID, 100)
    _audit(request, "user_purchases", userID=userID, purchases=len(found), outcome="ok")
    return [_purchase_out(userID, p) for p in found]


@router.get(
    "/shortfalls",
    response_model=list[PurchaseOut],
    summary="Purchases whose take-back fell short",
    description="Every user's purchases with a `shortfall` > 0, newest first (at most 100): a "
    "refund or dispute wanted tokens back that had been spent already.",
)
async def list_shortfalls(request: Request) -> list[PurchaseOut]:
    found = await run_db(billing.shortfalls, 100)
    _audit(request, "shortfalls", purchases=len(found), outcome="ok")
    return [_purchase_out(user_id, p) for user_id, p in found]


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
