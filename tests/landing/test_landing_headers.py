"""The landing's security headers (SPEC §11): deploy/landing-nginx.conf, mounted by compose.yaml's
`landing` service, sends the app's headers with a static CSP; its hashes are exactly those of the
inline scripts and styles of a fresh build (none today), so the file cannot go stale; and a real
nginx with that file sends them on every page, asset, redirect and 404 (HSTS only over https).
(The landing under that CSP in Chromium, with no violation: tests/browser/test_landing_pages.py.)
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from landing.build import build
from tests.conftest import REQUIRE_PG
from tests.landing.landing_nginx import (
    CONF,
    INLINE_ATTRIBUTE,
    ROOT,
    conf_headers,
    conf_text,
    directives,
    inline_hashes,
    nginx_binary,
    running_nginx,
    static_headers,
)
from vgen_app.api import headers as app_headers

# CI installs nginx (.ci/run) and says so (VGEN_REQUIRE_PG / CI): there it must run, not skip.
REQUIRE_NGINX = REQUIRE_PG
SECURITY = (
    "content-security-policy",
    "x-frame-options",
    "x-content-type-options",
    "referrer-policy",
    "permissions-policy",
)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The landing as `make landing` builds it (this machine's settings), in a temporary folder."""
    return build(out=tmp_path_factory.mktemp("landing-headers") / "dist").out


def _hashes(sources: list[str]) -> set[str]:
    return {s.strip("'") for s in sources if s.startswith("'sha256-")}


def test_the_csp_lists_exactly_the_inline_hashes_of_the_built_landing(dist: Path) -> None:
    csp = directives(conf_headers()["content-security-policy"])
    scripts, styles = inline_hashes(dist)
    assert _hashes(csp["script-src"]) == scripts, "script-src hashes ≠ the build's inline scripts"
    assert _hashes(csp["style-src"]) == styles, "style-src hashes ≠ the build's <style> elements"
    assert "'self'" in csp["script-src"] and "'self'" in csp["style-src"]
    assert not any(word.startswith("'unsafe-") for words in csp.values() for word in words)
    # Style attributes, on…= handlers and javascript: URLs would need 'unsafe-inline': none.
    pages = sorted(dist.rglob("*.html"))
    assert len(pages) >= 5
    offenders = [p.relative_to(dist) for p in pages if INLINE_ATTRIBUTE.search(p.read_bytes())]
    assert not offenders, f"inline style/handler/javascript: URL in {offenders}"


def test_an_inline_script_or_style_would_need_its_hash(tmp_path: Path) -> None:
    """The check above can fail: a page with inline code yields hashes the file does not list."""
    (tmp_path / "index.html").write_text(
        "<html><head><style>h1{color:red}</style></head>"
        "<body><script>console.log(1)</script><script src='/a.js'></script></body></html>"
    )
    (tmp_path / "ok.html").write_text("<p>plain</p>")
    scripts, styles = inline_hashes(tmp_path)
    assert len(scripts) == 1 and len(styles) == 1
    csp = directives(conf_headers()["content-security-policy"])
    assert not scripts & _hashes(csp["script-src"]) and not styles & _hashes(csp["style-src"])
    assert INLINE_ATTRIBUTE.search(b'<a href="#" onclick="go()">') is not None
    assert INLINE_ATTRIBUTE.search(b'<p style="color:red">') is not None
    assert INLINE_ATTRIBUTE.search(b'<a href="javascript:go()">') is not None
    assert INLINE_ATTRIBUTE.search(b'<a href="/x" data-signup="1">') is None


def test_the_landing_sends_the_same_headers_as_the_app() -> None:
    conf = conf_headers()
    app = {
        k.decode(): v.decode()
        for k, v in app_headers.security_headers("/", "", "https://app.vgen.example", html=False)
    }
    for name in ("x-frame-options", "x-content-type-options", "referrer-policy"):
        assert conf[name] == app[name], name
    assert conf["permissions-policy"] == app_headers.PERMISSIONS_POLICY
    csp = directives(conf["content-security-policy"])
    assert csp["default-src"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"]
    assert csp["object-src"] == ["'none'"] and csp["base-uri"] == ["'none'"]
    # HSTS: a variable, the app's value when the request came over https, else empty (not sent).
    assert conf["strict-transport-security"] == "$landing_hsts"
    assert conf_text().count(f'"{app_headers.HSTS}"') == 2  # https directly, or via the proxy


def test_compose_serves_the_landing_with_this_file() -> None:
    compose = (ROOT / "compose.yaml").read_text()
    landing = compose.split("\n  landing:\n", 1)[1].split("\n\n", 1)[0]
    assert "image: nginx:" in landing
    mount = f"./{CONF.relative_to(ROOT)}:/etc/nginx/conf.d/default.conf:ro"
    assert mount in landing, landing
    assert "./landing/dist:/usr/share/nginx/html:ro" in landing


def _get(url: str, headers: dict[str, str] | None = None):
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    request = urllib.request.Request(url, headers=headers or {})
    try:
        resp = urllib.request.build_opener(NoRedirect).open(request, timeout=20)
    except urllib.error.HTTPError as err:
        resp = err
    with resp:
        return resp.status, resp.headers, resp.read()


@pytest.fixture
def nginx_url(dist: Path, tmp_path: Path):
    if nginx_binary() is None:
        if REQUIRE_NGINX:
            pytest.fail("nginx is required here (.ci/run installs it)", pytrace=False)
        pytest.skip("nginx is not installed (apt-get install nginx)")
    with running_nginx(dist, tmp_path) as url:
        yield url


def test_a_real_nginx_sends_them_on_every_response(nginx_url: str, dist: Path) -> None:
    expected = static_headers()
    assert set(SECURITY) <= set(expected)
    css = next(p for p in (dist / "static").rglob("*.css"))
    cases = {
        "/": 200,
        "/terms/": 200,
        "/privacy/": 200,
        "/lp/lip-sync/": 200,
        "/404.html": 200,
        "/no/such/page/": 404,
        "/terms": 301,
        "/static/js/utm.js": 200,
        f"/{css.relative_to(dist).as_posix()}?v=1": 200,
        "/static/favicon.svg": 200,
    }
    for path, status in cases.items():
        got, headers, body = _get(nginx_url + path)
        assert got == status, (path, got)
        for name in SECURITY:
            assert headers.get_all(name) == [expected[name]], (path, name, headers.get_all(name))
        assert headers.get("strict-transport-security") is None, path  # plain http
        assert "nginx/" not in (headers.get("server") or ""), path  # no version
    # The 404 is the landing's own page; a redirect stays on the visitor's host and port.
    _, _, body = _get(nginx_url + "/no/such/page/")
    assert body == (dist / "404.html").read_bytes()
    _, headers, _ = _get(nginx_url + "/terms")
    assert headers["location"] == "/terms/"
    # Static files are cached for a year, and keep every header (no add_header of their own).
    _, headers, _ = _get(nginx_url + "/static/js/utm.js")
    assert headers["cache-control"] == "max-age=31536000"
    # HSTS over https: the TLS proxy in front says so.
    for proto, hsts in (("https", [app_headers.HSTS]), ("http", None)):
        _, headers, _ = _get(nginx_url + "/", {"X-Forwarded-Proto": proto})
        assert headers.get_all("strict-transport-security") == hsts, proto
