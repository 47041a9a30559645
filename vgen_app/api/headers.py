"""Security headers on every response of the app (SPEC §11): pages, static assets, /api/..., /ping,
404s and errors.

`SecurityHeaders` is a pure ASGI middleware wrapped around the whole FastAPI app (`api/app.py`):
outside its error handling too, so a 500 carries them, and around Reflex's compiled frontend, which
`reflex run --env prod` mounts inside this app. It only adds headers to `http.response.start`;
bodies pass through as they come (a media Range read, a ZIP export stream). A header a route set
itself (the media route's own sandboxed CSP, `X-Content-Type-Options` of a download) is kept and
not sent twice. Websockets (`/_event`) pass untouched: a `101 Switching Protocols` carries no
document, and not every server accepts headers on `websocket.accept`. Left out too: CORS
preflights, which Reflex's outermost CORS middleware answers before this app sees them.

What goes on which response is decided in one place, `security_headers()`:

- **CSP of a page** (a `text/html` response):
  - `script-src 'self' 'unsafe-eval' 'sha256-…'`: the React Router build has inline `<script>`
    elements (theme, scroll restoration, route modules, hydration data); their hashes are read from
    the built HTML files (`inline_script_hashes()`, once per build; all pages' hashes in one list,
    every one of them Reflex's own script), so no `'unsafe-inline'` for scripts.
    **`'unsafe-eval'` is needed**: Reflex runs every `rx.call_script` / `rx.call_function` a handler
    returns with `eval()` in its `state.js` (`applyEvent`, `_call_script`: a server-sent event can
    only carry the code as text), and Reflex's own `rx.toast.*` from a handler is such a script
    too (`reflex_components_sonner/toast.py`: `run_script`). The app uses them for full-page loads
    after log-in and log-out (the socket must see the new HttpOnly cookie), the account deletion,
    tab titles, the upload leave guard, the dashboard's address and the task page's toasts; there
    is no other channel from a handler to the page's JavaScript, so dropping `'unsafe-eval'` would
    mean leaving these Reflex APIs. It lets no injected markup run: inline scripts still need their
    hash, and only the app's own handlers send such events.
  - `style-src 'self' 'unsafe-inline'`: emotion (every `rx.*` style prop), Radix Themes and the
    toasts insert `<style>` elements at run time, with content no build step knows; no script can
    run from a style, and `img-src`/`connect-src`/`font-src` keep CSS from sending data elsewhere.
  - `img-src 'self' data: blob:`, `media-src 'self' blob:`: posters and players load
    `/api/media/...` of this origin; icons and previews may be `data:`/`blob:` URLs.
  - `connect-src 'self'` plus APP_URL's origin and its websocket (`ws://` / `wss://`), under both
    `localhost` and `127.0.0.1` when APP_URL is a loopback address: the event socket, uploads and
    the log-out `fetch`.
  - `object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'`.
- **CSP of anything else** (JSON, media, assets, redirects): `default-src 'none'`, nothing may run
  or load in it if a browser ever renders it as a document.
- **No CSP on a `304 Not Modified`**: it carries no Content-Type, and the browser merges its
  headers into the cached response (page or asset), which keeps the policy it came with.
- `X-Frame-Options: DENY`, `X-Content-Type-Options: nosniff`, a `Permissions-Policy` denying every
  powerful feature the app does not use, and `Referrer-Policy: strict-origin-when-cross-origin`,
  or `no-referrer` where the URL holds a secret (`TOKEN_PATHS`, `SECRET_QUERY_KEYS`): a link's
  token must not reach even this origin's own logs in a `Referer`.
- `Strict-Transport-Security: max-age=63072000; includeSubDomains` only when APP_URL is https.

`make dev` serves pages from Vite's dev server on :3000, which this middleware never sees: pages
there carry no CSP at all (Vite's hot reload injects inline scripts); the backend's responses on
:8000 carry the headers above.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from vgen_app.api.limits import ASGIApp, Message, Receive, Scope, Send
from vgen_app.config import get_settings

log = logging.getLogger(__name__)

# Pages and routes whose URL carries a one-time secret: e-mail links (services/emails.py: activation,
# password reset, e-mail change), the login ticket's redemption, checkout sessions.
TOKEN_PATHS = frozenset(
    {
        "/verify",
        "/reset",
        "/account/email",
        "/api/auth/session",
        "/tokens/success",
        "/checkout/test",
    }
)
SECRET_QUERY_KEYS = frozenset({"token", "ticket", "session_id"})

PERMISSIONS_POLICY = ", ".join(
    [
        *(
            f"{feature}=()"
            for feature in (
                "accelerometer",
                "autoplay",
                "browsing-topics",
                "camera",
                "display-capture",
                "geolocation",
                "gyroscope",
                "hid",
                "idle-detection",
                "local-fonts",
                "magnetometer",
                "microphone",
                "midi",
                "otp-credentials",
                "payment",
                "publickey-credentials-get",
                "screen-wake-lock",
                "serial",
                "usb",
                "xr-spatial-tracking",
            )
        ),
        "fullscreen=(self)",  # the players' full-screen button
    ]
)
HSTS = "max-age=63072000; includeSubDomains"
RESOURCE_CSP = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"


# A loopback APP_URL opens under both names (`api/loopback.py` sends one to the other): the
# socket and the API may be reached under either. ([::1] is no valid CSP host source.)
_LOOPBACK_NAMES = ("localhost", "127.0.0.1")


def connect_sources(app_url: str) -> list[str]:
    """`connect-src` beyond 'self': APP_URL's origin and its websocket (`ws://` / `wss://`), under
    both loopback names when APP_URL is a loopback address."""
    parts = urlsplit(app_url)
    ws = "wss" if parts.scheme == "https" else "ws"
    port = f":{parts.port}" if parts.port else ""
    hosts = [parts.netloc]
    if parts.hostname in _LOOPBACK_NAMES:
        hosts += [f"{name}{port}" for name in _LOOPBACK_NAMES if name != parts.hostname]
    return [f"{scheme}://{host}" for host in hosts for scheme in (parts.scheme, ws)]


@lru_cache(maxsize=16)
def page_csp(app_url: str, script_hashes: tuple[str, ...] = ()) -> str:
    """The Content-Security-Policy of an HTML page of the app."""
    scripts = " ".join(["'self'", "'unsafe-eval'", *(f"'{h}'" for h in script_hashes)])
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src {scripts}",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data: blob:",
            "media-src 'self' blob:",
            "font-src 'self' data:",
            " ".join(["connect-src 'self'", *connect_sources(app_url)]),
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def holds_secret(path: str, query: str) -> bool:
    """Does this URL carry a token (a page of an e-mail link, a ticket, a checkout session)?"""
    if (path.rstrip("/") or "/") in TOKEN_PATHS:
        return True
    return any(key in SECRET_QUERY_KEYS for key, _ in parse_qsl(query, keep_blank_values=True))


def security_headers(
    path: str,
    query: str,
    app_url: str,
    *,
    html: bool = True,
    status: int = 200,
    script_hashes: Iterable[str] = (),
) -> list[tuple[bytes, bytes]]:
    """The security headers of a response to `path?query` (`html`: is it a page?), as ASGI
    header pairs (lower-case names). `script_hashes`: `sha256-…` of the page's inline scripts.

    A `304 Not Modified` gets no CSP: it has no Content-Type to tell a page from anything else,
    and a browser merges its headers into the cached response, so a resource policy there would
    replace the cached page's own (every script and stylesheet of a revalidated page refused)."""
    csp = page_csp(app_url, tuple(script_hashes)) if html else RESOURCE_CSP
    referrer = "no-referrer" if holds_secret(path, query) else "strict-origin-when-cross-origin"
    headers = [
        *([] if status == 304 else [("content-security-policy", csp)]),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", referrer),
        ("permissions-policy", PERMISSIONS_POLICY),
    ]
    if urlsplit(app_url).scheme == "https":
        headers.append(("strict-transport-security", HSTS))
    return [(name.encode(), value.encode("latin-1")) for name, value in headers]


# --- the inline scripts of the built frontend ------------------------------------------------------

_SCRIPT = re.compile(rb"<script\b([^>]*)>(.*?)</script\s*>", re.IGNORECASE | re.DOTALL)
_SRC = re.compile(rb"\ssrc\s*=", re.IGNORECASE)
_TYPE = re.compile(rb"""\stype\s*=\s*["']?([^"'\s>]+)""", re.IGNORECASE)
_SCRIPT_TYPES = frozenset({b"", b"module", b"text/javascript", b"application/javascript"})


def script_hashes_of(html: bytes) -> list[str]:
    """`sha256-…` of each inline script a browser would run in this HTML (no `src`, a JS type)."""
    found = []
    for attrs, body in _SCRIPT.findall(html):
        if _SRC.search(attrs):
            continue
        kind = _TYPE.search(attrs)
        if (kind.group(1).lower() if kind else b"") not in _SCRIPT_TYPES:
            continue
        digest = hashlib.sha256(body).digest()
        found.append("sha256-" + base64.b64encode(digest).decode())
    return found


def frontend_dir() -> Path:
    """Where Reflex's prod build puts the pages it serves (`reflex.utils.exec.get_frontend_mount`)."""
    from reflex.utils import prerequisites
    from reflex_base import constants
    from reflex_base.config import get_config

    frontend_path = get_config().frontend_path.strip("/")
    return prerequisites.get_web_dir() / constants.Dirs.STATIC / frontend_path


@lru_cache(maxsize=4)
def _hashes_in(directory: Path, _stamp: int) -> tuple[str, ...]:
    hashes: dict[str, None] = {}
    for page in sorted(directory.rglob("*.html")):
        try:
            hashes.update(dict.fromkeys(script_hashes_of(page.read_bytes())))
        except OSError:
            continue
    log.info("csp: %d inline script hashes from %s", len(hashes), directory)
    return tuple(hashes)


def inline_script_hashes(directory: Path | None = None) -> tuple[str, ...]:
    """Every inline script hash of the built pages: read once per build (a rebuild replaces the
    folder, and its modification time with it); none when nothing is built (in-process tests)."""
    directory = directory or frontend_dir()
    try:
        stamp = os.stat(directory).st_mtime_ns
    except OSError:
        return ()
    return _hashes_in(directory, stamp)


# --- the middleware ------------------------------------------------------------------------------


def _is_html(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name.lower() == b"content-type":
            return bytes(value).split(b";", 1)[0].strip().lower() == b"text/html"
    return False


class SecurityHeaders:
    """Pure ASGI: adds `security_headers()` to every HTTP response start (see the module docstring).
    `hashes`: the inline script hashes of pages (default: read from Reflex's build)."""

    def __init__(self, app: ASGIApp, hashes=inline_script_hashes) -> None:
        self.app = app
        self.hashes = hashes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", "/"))
        query = bytes(scope.get("query_string", b"")).decode("latin-1")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
                html = _is_html(headers)
                present = {name.lower() for name, _ in headers}
                extra = security_headers(
                    path,
                    query,
                    get_settings().app_url,
                    html=html,
                    status=int(message.get("status", 200)),
                    script_hashes=self.hashes() if html else (),
                )
                headers += [(name, value) for name, value in extra if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
