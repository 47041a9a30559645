"""Security headers on what `make run` really serves (SPEC §11, `vgen_app/api/headers.py`): every
page (prerendered, the dynamic task route's fallback, the 404 page), the compiled assets, Reflex's
own routes, the API and the loopback redirect; each page's inline scripts allowed by their hash
(no `'unsafe-inline'` for scripts); and in Chromium: the policy is enforced, an injected inline
script is refused and reported by the violation watcher of conftest.py, and a page whose URL
holds a token sends no `Referer`, even to its own origin.

(The rules themselves and the in-process responses, 500s included: tests/api/test_security_headers.py.)
"""

from __future__ import annotations

import re
import secrets
import urllib.error
import urllib.request
from urllib.parse import urljoin

import pytest
from journey_helpers import wait_hydrated

from vgen_app.api.headers import script_hashes_of

pytestmark = pytest.mark.browser

# Every page route of the app, with and without the token of its e-mail link; a task that does not
# exist (the dynamic route's fallback page); an unknown address (the 404 page).
PAGES = {
    "/": "strict-origin-when-cross-origin",
    "/signup/": "strict-origin-when-cross-origin",
    "/login/?next=%2Ftokens": "strict-origin-when-cross-origin",
    "/check-email/?email=ann%40example.com": "strict-origin-when-cross-origin",
    "/forgot/": "strict-origin-when-cross-origin",
    "/tasks/new/": "strict-origin-when-cross-origin",
    f"/tasks/{secrets.token_hex(8)}": "strict-origin-when-cross-origin",
    "/tokens/": "strict-origin-when-cross-origin",
    "/account/": "strict-origin-when-cross-origin",
    "/no/such/page": "strict-origin-when-cross-origin",
    "/verify/?token=T0KEN": "no-referrer",
    "/reset/?token=T0KEN": "no-referrer",
    "/account/email/?token=T0KEN": "no-referrer",
    "/verify/": "no-referrer",
    "/tokens/success/?session_id=cs_test_1": "no-referrer",
    "/checkout/test/?session_id=cs_test_1": "no-referrer",
}
_ASSET = re.compile(r"""<(?:script|link)\b[^>]*?\s(?:src|href)="(/assets/[^"]+)\"""")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def fetch(
    url: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, list[str]], bytes]:
    """Status, headers (lower-case name → every value) and body, redirects not followed."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with _OPENER.open(request, timeout=30) as resp:
            status, headers, body = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        status, headers, body = err.code, err.headers, err.read()
    found: dict[str, list[str]] = {}
    for name, value in headers.items():
        found.setdefault(name.lower(), []).append(value)
    return status, found, body


def directives(csp: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in (p.strip() for p in csp.split(";")) if d}


def assert_secured(url: str, headers: dict[str, list[str]], referrer: str) -> dict[str, list[str]]:
    for name in (
        "content-security-policy",
        "x-frame-options",
        "x-content-type-options",
        "referrer-policy",
        "permissions-policy",
    ):
        assert len(headers.get(name, [])) == 1, (url, name, headers.get(name))
    csp = directives(headers["content-security-policy"][0])
    assert csp["frame-ancestors"] == ["'none'"], url
    assert headers["x-frame-options"] == ["DENY"], url
    assert headers["x-content-type-options"] == ["nosniff"], url
    assert headers["referrer-policy"] == [referrer], url
    assert "camera=()" in headers["permissions-policy"][0], url
    assert "strict-transport-security" not in headers, url  # APP_URL is http here
    return csp


def test_every_page_allows_exactly_its_inline_scripts(app_server) -> None:
    assets: set[str] = set()
    for path, referrer in PAGES.items():
        url = app_server.url + path
        status, headers, body = fetch(url)
        assert status == (404 if path == "/no/such/page" else 200), (url, status)
        assert headers["content-type"][0].startswith("text/html"), url
        csp = assert_secured(url, headers, referrer)
        scripts = csp["script-src"]
        assert "'unsafe-inline'" not in scripts and "'self'" in scripts, url
        inline = script_hashes_of(body)
        assert inline, f"{url}: no inline script found; the hash check would prove nothing"
        missing = [h for h in inline if f"'{h}'" not in scripts]
        assert not missing, f"{url}: inline scripts without their hash in script-src: {missing}"
        # The event socket and the API, under both loopback names.
        port = app_server.url.rsplit(":", 1)[1]
        for origin in ("localhost", "127.0.0.1"):
            assert f"ws://{origin}:{port}" in csp["connect-src"], url
            assert f"http://{origin}:{port}" in csp["connect-src"], url
        assets.update(_ASSET.findall(body.decode()))
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in sorted(assets)[:40]:
        status, headers, _ = fetch(urljoin(app_server.url, asset))
        assert status == 200, asset
        csp = assert_secured(asset, headers, "strict-origin-when-cross-origin")
        assert csp["default-src"] == ["'none'"], asset  # not a page: nothing may run in it


def test_reflex_routes_the_api_and_redirects_carry_them(app_server) -> None:
    base = app_server.url
    port = base.rsplit(":", 1)[1]
    cases = [
        ("GET", f"{base}/ping", 200, "strict-origin-when-cross-origin"),
        ("GET", f"{base}/api/health", 200, "strict-origin-when-cross-origin"),
        ("GET", f"{base}/api/account/export", 401, "strict-origin-when-cross-origin"),
        # The admin API: refused (401), or off (503) with no admin token configured, as here.
        ("GET", f"{base}/api/internal/users?email=a%40b.c", 503, "strict-origin-when-cross-origin"),
        # No such route: the frontend's 404 page answers (a page: the page policy).
        ("GET", f"{base}/api/no-such-route", 404, "strict-origin-when-cross-origin"),
        ("POST", f"{base}/_upload", 400, "strict-origin-when-cross-origin"),  # Reflex's own
        ("GET", f"{base}/api/auth/session?ticket=nope", 303, "no-referrer"),
        ("GET", f"{base}/login", 307, "strict-origin-when-cross-origin"),  # → /login/
        ("GET", f"http://127.0.0.1:{port}/reset?token=T0KEN", 307, "no-referrer"),
    ]
    for method, url, expected, referrer in cases:
        status, headers, _ = fetch(url, method)
        assert status == expected, (method, url, status)
        csp = assert_secured(url, headers, referrer)
        page = headers.get("content-type", [""])[0].startswith("text/html")
        assert csp["default-src"] == (["'self'"] if page else ["'none'"]), url


def test_the_policy_is_enforced_and_a_violation_is_reported(new_context, csp_problems) -> None:
    """The watcher every context carries (conftest.py) sees a refused inline script: the check
    after each journey can fail. The one violation made here is taken off the list again."""
    page = new_context().new_page()
    page.goto("/login/", wait_until="load")
    wait_hydrated(page, "#login-submit")
    assert not csp_problems, csp_problems  # the page itself ran cleanly
    page.evaluate(
        "() => { const s = document.createElement('script');"
        " s.textContent = 'window.__injected = 1'; document.body.appendChild(s); }"
    )
    assert page.evaluate("window.__injected") is None  # refused
    _wait_for_problems(page, csp_problems)
    problems = list(csp_problems)
    csp_problems.clear()
    assert any("script-src" in p and "inline" in p for p in problems), problems


def _wait_for_problems(page, problems: list[str]) -> None:
    """The report reaches Python asynchronously (a binding call, a console message): let the page
    turn its event loop until it did; Playwright dispatches it while we wait on the page."""
    for _ in range(100):
        if problems:
            return
        page.evaluate("() => new Promise((r) => setTimeout(r, 20))")
    raise AssertionError("the injected inline script was not reported")


def test_a_page_whose_url_holds_a_token_sends_no_referrer(new_context) -> None:
    page = new_context().new_page()
    referers: dict[str, str | None] = {}
    page.on(
        "request",
        lambda r: "/api/health" in r.url and referers.setdefault(r.url, r.headers.get("referer")),
    )
    page.goto("/login/?next=%2Ftokens", wait_until="load")
    page.evaluate("() => fetch('/api/health?from=login').then((r) => r.text())")
    page.goto("/reset/?token=T0KEN", wait_until="load")
    page.evaluate("() => fetch('/api/health?from=reset').then((r) => r.text())")
    by_page = {url.rsplit("=", 1)[1]: ref for url, ref in referers.items()}
    # A same-origin request of an ordinary page carries the page's URL (the policy is in force) …
    assert by_page["login"] and by_page["login"].endswith("/login/?next=%2Ftokens"), by_page
    # … one of a page with a token in its address carries nothing.
    assert not by_page["reset"], by_page


def test_a_revalidated_page_keeps_its_policy(app_server, new_context, csp_problems) -> None:
    """A `304 Not Modified` carries no CSP (the browser merges its headers into the cached page:
    a resource policy there refused every script of /tokens/ on the second visit), and a page
    opened again from the cache runs cleanly."""
    url = app_server.url + "/login/"
    _, first, _ = fetch(url)
    status, headers, body = fetch(url, headers={"If-None-Match": first["etag"][0]})
    assert status == 304 and body == b""
    assert "content-security-policy" not in headers
    assert headers["x-content-type-options"] == ["nosniff"]
    page = new_context().new_page()
    for _ in range(3):
        page.goto("/login/", wait_until="load")
        wait_hydrated(page, "#login-submit")
    page.reload(wait_until="load")
    wait_hydrated(page, "#login-submit")
    assert not csp_problems, csp_problems
