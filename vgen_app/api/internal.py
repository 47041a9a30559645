"""Admin API (SPEC §5), mounted at `/api/internal` (docs at `/api/internal/docs`, schema at
`/api/internal/openapi.json`; both public: they hold no data and no secret).

Auth: every operation needs `Authorization: Bearer <token>`, one of ADMIN_TOKEN and ADMIN_TOKENS
(several at once: rotation without downtime), compared in constant time against each of them.
- missing / malformed header, wrong token -> 401 with `WWW-Authenticate: Bearer`;
- no token configured (unset, empty or blank) -> 503 for every call, whatever is sent:
  the API is disabled, never open.
The check runs in `AdminRoute`, before the request body is read, so a caller without the token
learns nothing about validation (a junk body without a token is 401, not 422). The router-level
dependency `require_admin` checks again and declares the Bearer scheme in the OpenAPI schema.

Audit (services/audit.py): `AdminRoute` opens an `audit.Call` for every call (the route's `name` is
its action), the routes fill it in, a change writes it in its own transaction, and AdminRoute
writes it otherwise, before the answer goes out; one log line per call on `vgen.admin` as well.

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

from vgen_app.api import errors
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
    AuditEntryOut,
    AuditPageOut,
    BalanceRefused,
    BalanceRequest,
    BalanceResponse,
    DeletedOut,
    LedgerEntryOut,
    LedgerPageOut,
    PurchaseOut,
    StatusRequest,
    StatusResponse,
    UserOut,
)
from vgen_app.api.limits import read_body
from vgen_app.config import get_settings
from vgen_app.db import UNAVAILABLE_ERRORS, run_db
from vgen_app.models import ID_PATTERN
from vgen_app.services import accounts, admin, audit, billing, erasure, export
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


def bearer_token(header: str | None) -> str | None:
    """The credentials of a `Bearer …` Authorization header (any case of the scheme), else None."""
    scheme, _, credentials = (header or "").strip().partition(" ")
    return (credentials.strip() or None) if scheme.lower() == "bearer" else None


def check_authorization(header: str | None) -> Refusal | None:
    """None when `header` carries one of the admin tokens (ADMIN_TOKEN, ADMIN_TOKENS), else why
    the call is refused. Compared in constant time against every configured token."""
    expected = get_settings().admin_tokens_configured
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
    matched = False
    for token in expected:  # no early exit: the time does not tell which one, or how many
        matched |= constant_time_equals(credentials, token)
    if not matched:
        return Refusal(
            401,
            "Invalid admin token.",
            "wrong_token",
            {"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return None


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="AdminToken",
    description="The ADMIN_TOKEN of the server (or any of ADMIN_TOKENS).",
)


def require_admin(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> str:
    header = request.headers.get("authorization")
    refusal = check_authorization(header)
    if refusal is not None:
        raise HTTPException(refusal.status, refusal.detail, headers=refusal.headers)
    return audit.fingerprint(bearer_token(header)) or ""


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
    """Auth first, then the body; every call audited once (a row and a log line), with its
    outcome. The route's `name` is the audit action."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        has_body = self.body_field is not None
        action, template = self.name, self.path_format

        async def admin_handler(request: Request) -> Response:
            header = request.headers.get("authorization")
            call = audit.Call(
                method=request.method,
                route=request.scope.get("root_path", "") + template,
                path=request.url.path,
                action=action,
                token=audit.fingerprint(bearer_token(header)),
            )
            refusal = check_authorization(header)
            if refusal is not None:
                call.status, call.request = refusal.status, {"reason": refusal.reason}
                if refusal.status == 401:
                    await _record_refused(call)
                else:  # 503: the API is disabled, nobody to audit for
                    call.outcome, call.note = "disabled", "log only"
                log.warning("admin call refused %s", call.line())
                return refusal.response()
            request.state.audit = call
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
                status, call.outcome = 422, audit.INVALID
                raise
            except UNAVAILABLE_ERRORS:  # answered 503 with Retry-After (api/errors.py)
                status = 503
                raise
            finally:  # before the answer goes out: a read whose row cannot be written fails
                call.status = status
                if status >= 500:
                    call.outcome = audit.ERROR
                try:
                    if not call.written:
                        await _record(call)
                finally:
                    log.info("admin call %s", call.line())

        return admin_handler


async def _record(call: audit.Call) -> None:
    try:
        await run_db(audit.record, call)
    except Exception:
        call.note = "not written"
        log.exception(
            "admin call %s %s: its audit row could not be written", call.method, call.path
        )
        if call.status not in audit.BEST_EFFORT:
            raise  # the database unreachable: 503 (api/errors.py); else a 500, and no data


async def _record_refused(call: audit.Call) -> None:
    """A row for a call refused for its token, within the cap (services/audit.py)."""
    cap = get_settings().admin_audit_refused_per_minute
    if not audit.admit_refused(call, cap):
        return
    try:
        await run_db(audit.record_refused, call, cap)
    except Exception:  # the refusal stands; the log line has it
        call.note = "not written"
        log.exception(
            "admin call refused %s %s: its audit row could not be written", call.method, call.path
        )


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


def _call(request: Request) -> audit.Call:
    """This call's audit record (opened by AdminRoute)."""
    return request.state.audit


async def _on_user(call: audit.Call, change: Callable[..., T], *args: Any) -> T:
    """An admin change to the user `call.user_id`: an unknown user answers 404."""
    try:
        return await run_db(change, call.user_id, *args)
    except admin.UserNotFound:
        call.outcome = audit.NOT_FOUND
        raise HTTPException(404, NO_SUCH_USER) from None


router = APIRouter(
    route_class=AdminRoute,
    dependencies=[Depends(require_admin)],
    responses=AUTH_RESPONSES,
    strict_content_type=False,  # a body without Content-Type is read as JSON
)


@router.put(
    "/user",
    name=audit.SET_STATUS,
    response_model=StatusResponse,
    responses={**NOT_FOUND, **DELETED, **TOO_LARGE},
    summary="Set a user's status",
    description="`blocked` revokes the user's sessions at once; `activated` lets a user who never "
    "got the activation mail log in. A deleted user stays blocked (409).",
)
async def put_user(body: StatusRequest, request: Request) -> StatusResponse:
    call = _call(request).about(body.userID)
    call.request = {"status": body.status}
    if await run_db(erasure.deleted_at, body.userID) is not None:
        call.outcome = audit.DELETED
        raise HTTPException(409, DELETED_STATUS)
    try:
        change = await _on_user(call, admin.set_status, body.status, call)
    except accounts.AccountError as exc:
        call.outcome = exc.code[:16]
        raise
    return StatusResponse(
        userID=change.user_id,
        email=change.email,
        previous_status=change.previous_status,
        status=change.status,
    )


@router.put(
    "/balance",
    name=audit.CHANGE_BALANCE,
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
    call = _call(request).about(body.userID)
    call.request = {"diff": body.diff}
    change = await _on_user(call, admin.change_balance, body.diff, call)
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


@router.get(
    "/users",
    name=audit.FIND_BY_EMAIL,
    response_model=list[UserOut],
    summary="Find a user by e-mail",
)
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
    call = _call(request)  # the address is not recorded: the user found is
    try:
        views = await run_db(admin.find_by_email, email)
    except accounts.AccountError as exc:
        call.outcome = audit.INVALID
        raise _invalid(exc.message, "value_error", ("query", "email")) from None
    if views:
        call.about(views[0].id)
    call.outcome = audit.OK if views else audit.NOT_FOUND
    call.after = {"found": len(views)}
    return [UserOut(**vars(view)) for view in views]


UserIDPath = Annotated[str, Path(pattern=ID_PATTERN, max_length=32)]


@router.get(
    "/users/{userID}",
    name=audit.GET_USER,
    response_model=UserOut,
    responses=NOT_FOUND,
    summary="Get a user by id",
)
async def get_user(userID: UserIDPath, request: Request) -> UserOut:
    call = _call(request).about(userID)
    view = await run_db(admin.get_user, userID)
    if view is None:
        call.outcome = audit.NOT_FOUND
        raise HTTPException(404, NO_SUCH_USER)
    return UserOut(**vars(view))


def _gone(call: audit.Call, exc: erasure.UserGone) -> HTTPException:
    """An unknown or deleted user: 404 (saying which)."""
    deleted = exc.deleted_at is not None
    call.outcome = audit.DELETED if deleted else audit.NOT_FOUND
    return HTTPException(404, ALREADY_DELETED if deleted else NO_SUCH_USER)


@router.delete(
    "/user/{userID}",
    name=audit.DELETE_USER,
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
    call = _call(request).about(userID)
    try:
        done = await run_in_threadpool(admin.delete_user, userID, call)
    except erasure.UserGone as exc:
        raise _gone(call, exc) from None
    except erasure.AccountBusy as exc:
        call.outcome = audit.BUSY
        raise HTTPException(409, exc.message) from None
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
    name=audit.EXPORT_USER,
    response_class=StreamingResponse,
    responses={**ZIP, **GONE},
    summary="Export a user's data (ZIP)",
    description="The same ZIP as the user's own Export my data: `account.json`, `ledger.csv`, "
    "`tasks.json` and the stored files of every task not deleted (`files/<task>/...`), streamed. "
    "An unknown or deleted user is 404.",
)
async def export_user(userID: UserIDPath, request: Request) -> StreamingResponse:
    call = _call(request).about(userID)
    try:
        data = await run_db(export.collect, userID)
    except erasure.UserGone as exc:
        raise _gone(call, exc) from None
    call.after = {"files": len(data.files)}
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
    name=audit.USER_PURCHASES,
    response_model=list[PurchaseOut],
    responses=NOT_FOUND,
    summary="A user's purchases",
    description="Newest first (at most 100): status, refunds, the tokens refunds and disputes took "
    "back and the `shortfall` they could not (already spent). Checkouts left open for over a day "
    "are not listed.",
)
async def user_purchases(userID: UserIDPath, request: Request) -> list[PurchaseOut]:
    call = _call(request).about(userID)
    if await run_db(admin.get_user, userID) is None:
        call.outcome = audit.NOT_FOUND
        raise HTTPException(404, NO_SUCH_USER)
    found = await run_db(billing.purchases, userID, 100)
    call.after = {"purchases": len(found)}
    return [_purchase_out(userID, p) for p in found]


@router.get(
    "/shortfalls",
    name=audit.SHORTFALLS,
    response_model=list[PurchaseOut],
    summary="Purchases whose take-back fell short",
    description="Every user's purchases with a `shortfall` > 0, newest first (at most 100): a "
    "refund or dispute wanted tokens back that had been spent already.",
)
async def list_shortfalls(request: Request) -> list[PurchaseOut]:
    found = await run_db(billing.shortfalls, 100)
    _call(request).after = {"purchases": len(found)}
    return [_purchase_out(user_id, p) for user_id, p in found]


Limit = Annotated[int, Query(ge=1, le=audit.MAX_PAGE, description="Rows per page (at most 200).")]
MAX_ROW_ID = 2**31 - 1  # audit and ledger ids are INTEGER columns (32-bit on PostgreSQL)
BeforeID = Annotated[
    int | None,
    Query(
        ge=1,
        le=MAX_ROW_ID,
        description="Only rows older than this id: the previous page's `next_before_id`.",
    ),
]


def _filters(**given: Any) -> dict[str, Any] | None:
    return {k: v for k, v in given.items() if v is not None} or None


@router.get(
    "/audit",
    name=audit.READ_AUDIT,
    response_model=AuditPageOut,
    summary="The admin audit",
    description="Every admin API call, newest first: when, which token (`token`: the first 8 "
    "hex digits of its SHA-256), method, route and path, action, the user it is about, what was "
    "asked, before/after, outcome and HTTP status. Paged: pass `next_before_id` as `before_id` "
    "for older rows. Calls refused for their token are rows too, at most "
    "ADMIN_AUDIT_REFUSED_PER_MINUTE a minute. Reading the audit is itself audited (its row is "
    "written after the page is read).",
)
async def read_audit(
    request: Request,
    limit: Limit = audit.DEFAULT_PAGE,
    before_id: BeforeID = None,
    userID: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=32)] = None,
    action: Annotated[
        str | None,
        Query(pattern=r"^[a-z_]{1,32}$", description=f"One of: {', '.join(audit.ACTIONS)}."),
    ] = None,
    token: Annotated[
        str | None,
        Query(pattern=r"^[0-9a-f]{8}$", description="A token's fingerprint (rotation)."),
    ] = None,
) -> AuditPageOut:
    call = _call(request).about(userID)
    call.request = _filters(
        limit=limit, before_id=before_id, userID=userID, action=action, token=token
    )
    page = await run_db(audit.read, limit, before_id, userID, action, token)
    call.after = {"rows": len(page.rows)}
    return AuditPageOut(
        items=[
            AuditEntryOut(
                id=int(r.id or 0),
                created_at=r.created_at.isoformat(),
                token=r.token,
                method=r.method,
                route=r.route,
                path=r.path,
                action=r.action,
                userID=r.user_id,
                request=r.request,
                before=r.before,
                after=r.after,
                outcome=r.outcome,
                status=r.status,
            )
            for r in page.rows
        ],
        next_before_id=page.next_before_id,
    )


@router.get(
    "/users/{userID}/ledger",
    name=audit.USER_LEDGER,
    response_model=LedgerPageOut,
    responses=NOT_FOUND,
    summary="A user's ledger",
    description="Every balance change of the user, and every refused attempt (outcome "
    "`rejected`: old = new balance), newest first, paged like /audit. A deleted user's ledger "
    "is kept and listed; an unknown user is 404.",
)
async def user_ledger(
    userID: UserIDPath,
    request: Request,
    limit: Limit = audit.DEFAULT_PAGE,
    before_id: BeforeID = None,
) -> LedgerPageOut:
    call = _call(request).about(userID)
    call.request = _filters(limit=limit, before_id=before_id)
    if await run_db(admin.get_user, userID) is None:
        call.outcome = audit.NOT_FOUND
        raise HTTPException(404, NO_SUCH_USER)
    page = await run_db(audit.ledger_page, userID, limit, before_id)
    call.after = {"rows": len(page.rows)}
    return LedgerPageOut(
        items=[
            LedgerEntryOut(
                id=int(e.id or 0),
                created_at=e.created_at.isoformat(),
                action=e.action.value,
                diff=e.diff,
                old_balance=e.old_balance,
                new_balance=e.new_balance,
                outcome=e.outcome.value,
                reference=e.reference,
                note=e.note,
            )
            for e in page.rows
        ],
        next_before_id=page.next_before_id,
    )


def create_internal_api() -> FastAPI:
    api = FastAPI(
        title="vgen admin API",
        version="1",
        description="Operator calls (SPEC §5). Every call needs `Authorization: Bearer "
        "<ADMIN_TOKEN>` (or any of ADMIN_TOKENS); with no token configured every call is refused "
        "(503). Every call is recorded in the audit (GET /audit).",
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    api.add_exception_handler(RequestValidationError, _validation_error)
    errors.install(api)  # the database unreachable: 503 with Retry-After, as the rest of /api
    api.include_router(router)
    return api
