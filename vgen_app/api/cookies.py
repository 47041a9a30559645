"""The session cookie: HttpOnly, SameSite=Lax, Secure (and `__Host-`) on https."""

from __future__ import annotations

from http.cookies import SimpleCookie

from starlette.responses import Response

from vgen_app.config import get_settings


def cookie_name() -> str:
    return "__Host-vgen_session" if get_settings().cookie_secure else "vgen_session"


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


def token_from_cookie_header(cookie_header: str | None) -> str | None:
    """The session token from a raw `Cookie:` header (the websocket handshake keeps one)."""
    if not cookie_header:
        return None
    jar = SimpleCookie()
    try:
        jar.load(cookie_header)
    except Exception:  # noqa: BLE001 - a malformed cookie header is simply no session
        return None
    morsel = jar.get(cookie_name())
    return morsel.value if morsel else None


def safe_next(path: str | None) -> str:
    """Only paths inside the app: no open redirect to another site."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path
