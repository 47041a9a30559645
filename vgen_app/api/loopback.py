"""Both loopback names open the app: on a machine where APP_URL is a loopback address
(`http://localhost:3000`, the default), a page opened as `127.0.0.1` or `[::1]` is redirected to
APP_URL's own name before it loads. The page's socket, its CORS origin and the session cookie all
belong to one origin; opened under another name, the socket's handshake would be refused."""

from __future__ import annotations

import functools
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import RedirectResponse

from vgen_app.api.limits import ASGIApp, Receive, Scope, Send
from vgen_app.config import get_settings

LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


@functools.lru_cache(maxsize=256)  # a pure function of two short strings, asked on every request
def other_loopback_name(host_header: str, app_url: str) -> bool:
    """True when `host_header` names this machine differently from `app_url` (same port)."""
    app = urlsplit(app_url)
    if app.hostname not in LOOPBACK:
        return False
    try:
        asked = urlsplit(f"//{host_header}")
        asked_port = asked.port
    except ValueError:  # a malformed Host: not ours to fix
        return False
    app_port = app.port or (443 if app.scheme == "https" else 80)
    return (
        asked.hostname in LOOPBACK
        and asked.hostname != app.hostname
        and (asked_port or app_port) == app_port
    )


class LoopbackRedirect:
    """Pure ASGI: GET/HEAD under another loopback name → 307 to the same path on APP_URL."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            settings = get_settings()
            host = Headers(scope=scope).get("host", "")
            if other_loopback_name(host, settings.app_url):
                query = scope.get("query_string", b"").decode("latin-1")
                target = (
                    settings.app_origin + scope.get("path", "/") + (f"?{query}" if query else "")
                )
                await RedirectResponse(target, status_code=307)(scope, receive, send)
                return
        await self.app(scope, receive, send)
