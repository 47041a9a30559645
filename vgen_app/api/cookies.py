"""Setting and clearing the session cookie: HttpOnly, SameSite=Lax, Secure (and `__Host-`) on
https. Reading it is `vgen_app.services.cookies` (the UI reads it too)."""

from __future__ import annotations

from starlette.responses import Response

from vgen_app.config import get_settings
from vgen_app.services.cookies import cookie_name


def set_session_cookie(response: Response, token: str) -> None:
    settings = get_settings()
    response.set_cookie(
        cookie_name(),
        token,
        max_age=settings.session_ttl_days * 86400,
        path="/",
        httponly=True,
        secure=settings.cookie_secure,
        samesite="lax",
    )


def clear_session_cookie(response: Response) -> None:
    settings = get_settings()
    response.delete_cookie(
        cookie_name(), path="/", httponly=True, secure=settings.cookie_secure, samesite="lax"
    )
