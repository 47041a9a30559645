"""Session routes: redeem a login ticket into the HttpOnly cookie; log out."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.responses import Response

from vgen_app.api import errors
from vgen_app.api.cookies import clear_session_cookie, set_session_cookie
from vgen_app.api.deps import SessionToken
from vgen_app.api.errors import RETRY_AFTER_S
from vgen_app.config import get_settings
from vgen_app.db import UNAVAILABLE_ERRORS, run_db
from vgen_app.services import accounts, clientinfo, sessions
from vgen_app.services.cookies import safe_next

router = APIRouter(prefix="/api/auth", tags=["auth"])

# The redemption is a browser navigation, not an API call: with the database away it answers a page
# a person can read, which loads the same address again after Retry-After. The ticket is still good
# then: its redemption is one transaction, and nothing of it was committed.
RETRY_WORDS = "vgen cannot reach its database just now, so your login has to wait a moment."
RETRY_PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{RETRY_AFTER_S}">
<title>Logging you in… — vgen</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 32rem; margin: 4rem auto; padding: 0 1rem">
<h1 style="font-size: 1.4rem">Logging you in…</h1>
<p role="status">{RETRY_WORDS} This page tries again by itself every {RETRY_AFTER_S} seconds:
you need not do anything.</p>
<p><a href="">Try again now</a></p>
</body></html>
"""


def _app(path: str) -> str:
    """Absolute, into the app's pages (under `make dev` the API answers on another port)."""
    return f"{get_settings().app_url}{path}"


@router.get("/session", include_in_schema=False)
async def redeem_ticket(request: Request, ticket: str = "", next: str = "/") -> Response:
    # A ticket only comes from our own login page: refuse cross-site navigations (login CSRF).
    if request.headers.get("sec-fetch-site", "same-origin") == "cross-site":
        return RedirectResponse(_app("/login"), status_code=303)
    client = clientinfo.from_request(
        request.headers, request.client.host if request.client else None
    )
    try:
        token, user = await run_db(accounts.redeem_login_ticket, ticket, client)
    except accounts.AccountError:
        return RedirectResponse(_app("/login?expired=1"), status_code=303)
    except UNAVAILABLE_ERRORS as exc:
        errors.log_unavailable(request, exc)
        return HTMLResponse(
            RETRY_PAGE,
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_S), "Cache-Control": "no-store"},
        )
    request.state.user_id = user.id
    response = RedirectResponse(_app(safe_next(next)), status_code=303)
    response.headers["Cache-Control"] = "no-store"
    set_session_cookie(response, token)
    return response


@router.post("/logout", include_in_schema=False)
async def logout(token: SessionToken) -> Response:
    if token:
        await run_db(sessions.revoke, token)
    response = JSONResponse({"ok": True})
    clear_session_cookie(response)
    return response
