"""Reading the session cookie, for both the API routes and the UI's socket handshake.

Setting and clearing it needs an HTTP response: that half is `vgen_app.api.cookies`."""

from __future__ import annotations

import functools
from http.cookies import SimpleCookie

from vgen_app.config import get_settings


def cookie_name() -> str:
    """`__Host-` on https (Secure, Path=/, no Domain), the plain name on http://localhost."""
    return "__Host-vgen_session" if get_settings().cookie_secure else "vgen_session"


def token_from_cookie_header(cookie_header: str | None) -> str | None:
    """The session token from a raw `Cookie:` header (the websocket handshake keeps one)."""
    if not cookie_header:
        return None
    return _token(cookie_header, cookie_name())


@functools.lru_cache(maxsize=4096)
def _token(cookie_header: str, name: str) -> str | None:
    """Parsed once per header: a tab sends the same handshake header with every event (the
    token is still checked against the database each time: the cache only skips the parse)."""
    jar = SimpleCookie()
    try:
        jar.load(cookie_header)
    except Exception:  # noqa: BLE001 - a malformed cookie header is simply no session
        return None
    morsel = jar.get(name)
    return morsel.value if morsel else None


def safe_next(path: str | None) -> str:
    """Only paths inside the app: no open redirect to another site."""
    if (
        not path
        or not path.startswith("/")
        or path.startswith("//")
        or "\\" in path
        # A browser drops tabs and newlines from a URL: "/\t/evil.example" would be "//evil…".
        or any(c.isspace() or not c.isprintable() for c in path)
    ):
        return "/"
    return path
