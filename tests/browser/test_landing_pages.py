"""The landing in a real browser: every page at phone and desktop widths, the gallery, the FAQ,
keyboard focus, and the utm_* parameters carried into the app's sign-up links (SPEC §6).

The landing is built into a temporary folder and served by a plain `http.server` thread, as any
static host would serve `landing/dist/`, with the headers of deploy/landing-nginx.conf (its CSP:
the violation watcher of conftest.py fails a journey that breaks it; a real nginx with that file:
tests/landing/test_landing_headers.py); the app is not started. Screenshots: test-artifacts/.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from landing.build import Site, build
from tests.landing.landing_nginx import static_headers

APP = "http://app.vgen.test"
SITE = Site(
    app_url=APP,
    telegram_support_url="https://t.me/vgen_test_support_bot",
    landing_url="http://vgen.test",
)
SIGNUP = f"{APP}/signup"
PAGES = ["/", "/terms/", "/privacy/", "/lp/lip-sync/", "/404.html"]
VIEWPORTS = {"phone": (390, 844), "desktop": (1280, 800)}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the build with the landing's own headers (deploy/landing-nginx.conf)."""

    HEADERS = static_headers()

    def end_headers(self):
        for name, value in self.HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    out = build(site=SITE, out=tmp_path_factory.mktemp("landing") / "dist").out
    handler = functools.partial(_QuietHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def page_at(browser, landing: str):
    """`page_at("phone")`: a fresh page at that viewport that records console errors and
    failed requests; requests to other sites are blocked (the landing needs none)."""
    contexts = []

    def make(viewport: str = "desktop"):
        width, height = VIEWPORTS[viewport]
        ctx = browser.new_context(
            base_url=landing,
            viewport={"width": width, "height": height},
            is_mobile=viewport == "phone",
            has_touch=viewport == "phone",
        )
        ctx.set_default_timeout(15_000)
        contexts.append(ctx)
        ctx.route(
            lambda url: not url.startswith(landing),
            lambda route: route.abort(),
        )
        page = ctx.new_page()
        page.problems = []
        page.on(
            "console",
            lambda m: m.type == "error" and page.problems.append(f"console: {m.text}"),
        )
        page.on("pageerror", lambda e: page.problems.append(f"page error: {e}"))
        page.on(
            "response",
            lambda r: (
                r.status >= 400
                and r.url.startswith(landing)
                and not r.url.endswith("/does-not-exist/")
                and page.problems.append(f"{r.status} {r.url}")
            ),
        )
        page.on(
            "requestfailed",
            lambda r: r.url.startswith(landing) and page.problems.append(f"failed {r.url}"),
        )
        return page

    yield make
    for ctx in contexts:
        ctx.close()


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.strip("/").removesuffix(".html") or "home")
def test_each_page_renders_at_phone_and_desktop_width(page_at, shots, path: str, viewport: str):
    from playwright.sync_api import expect

    page = page_at(viewport)
    response = page.goto(path, wait_until="load")
    # Under the landing's own CSP (and any violation of it fails the test: conftest.py).
    assert (
        response.headers["content-security-policy"]
        == (_QuietHandler.HEADERS["content-security-policy"])
    )
    page.evaluate("document.fonts.ready")
    width = VIEWPORTS[viewport][0]

    assert page.title().strip()
    assert page.locator("h1").count() == 1
    expect(page.locator("h1")).to_be_visible()
    # The content keeps a margin from the screen's edges.
    h1 = page.locator("h1").bounding_box()
    assert h1["x"] >= 12 and h1["x"] + h1["width"] <= width - 12
    # Nothing sticks out sideways (no horizontal scrolling on a phone).
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    # The header's sign-up call to action is on screen at once, and goes to the app.
    header_cta = page.locator("header a[data-signup]")
    expect(header_cta).to_be_visible()
    expect(header_cta).to_have_attribute("href", SIGNUP)
    assert header_cta.evaluate("a => a.getBoundingClientRect().bottom") <= VIEWPORTS[viewport][1]
    assert header_cta.evaluate("a => a.getBoundingClientRect().right") <= width
    # ... and again at the end of the page.
    closing_cta = page.locator("main > section.cta-band a[data-signup]")
    closing_cta.scroll_into_view_if_needed()
    expect(closing_cta).to_be_visible()
    expect(closing_cta).to_have_attribute("href", SIGNUP)
    expect(page.locator("footer a[href='https://t.me/vgen_test_support_bot']")).to_be_visible()
    # Touch targets of the calls to action are big enough.
    box = header_cta.bounding_box()
    assert box["height"] >= 40 and box["width"] >= 44
    # Every image is loaded (posters included) and nothing failed or complained.
    page.wait_for_function(
        "[...document.images].every(i => i.complete && i.naturalWidth > 0)", timeout=10_000
    )
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(300)  # let the video controls settle before the screenshot
    shots(page, viewport)
    assert page.problems == []


def test_the_gallery_videos_play(page_at):
    page = page_at("desktop")
    page.goto("/#examples", wait_until="load")
    videos = page.locator("#examples video")
    assert 5 <= videos.count() <= 10
    assert page.evaluate(
        "document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.64001e\"')"
    )
    # preload="none": nothing of the clips is fetched until the visitor presses play.
    assert all(
        page.evaluate("v => v.readyState", videos.nth(i).element_handle()) == 0
        for i in range(videos.count())
    )
    first = videos.first
    first.evaluate("v => { v.muted = true; return v.play(); }")
    page.wait_for_function(
        "v => v.currentTime > 0.3 && v.videoWidth === 640", arg=first.element_handle()
    )
    assert page.problems == []


def test_faq_opens_and_the_keyboard_shows_where_it_is(page_at, shots):
    from playwright.sync_api import expect

    page = page_at("desktop")
    page.goto("/", wait_until="load")
    # The first Tab lands on the skip link, which becomes visible and jumps to <main>.
    page.keyboard.press("Tab")
    skip = page.locator("a.skip-link")
    expect(skip).to_be_focused()
    assert skip.evaluate("a => a.getBoundingClientRect().top") >= 0
    outline = skip.evaluate("a => getComputedStyle(a).outlineStyle")
    assert outline != "none"
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    # Links show a focus ring.
    page.keyboard.press("Tab")
    focused_outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert focused_outline != "none"

    details = page.locator("#faq details").filter(
        has=page.locator("summary", has_text="How much does it cost?")
    )
    question, answer = details.locator("summary"), details.locator("p")
    expect(answer).to_be_hidden()
    question.focus()
    page.keyboard.press("Enter")
    expect(answer).to_be_visible()
    expect(answer).to_contain_text("inside the app")
    page.evaluate("window.scrollTo(0, 0)")  # the sticky header at the top of the full-page shot
    shots(page, "faq-open")
    assert page.problems == []


def _signup_queries(page) -> list[dict[str, list[str]]]:
    hrefs = page.locator("a[data-signup]").evaluate_all("as => as.map(a => a.href)")
    assert hrefs
    for href in hrefs:
        assert href.startswith(SIGNUP)
    return [parse_qs(urlsplit(h).query) for h in hrefs]


def test_signup_links_carry_the_visitors_utm_parameters(page_at):
    page = page_at("phone")
    # A visitor without campaign parameters gets plain sign-up links.
    page.goto("/", wait_until="load")
    assert all(q == {} for q in _signup_queries(page))

    # An ad click on a campaign page: every sign-up link carries the utm_* parameters ...
    page.goto(
        "/lp/lip-sync/?utm_source=youtube&utm_medium=cpc&utm_campaign=dub%20it&gclid=x&ref=y",
        wait_until="load",
    )
    expected = {"utm_source": ["youtube"], "utm_medium": ["cpc"], "utm_campaign": ["dub it"]}
    assert all(q == expected for q in _signup_queries(page))

    # ... still after browsing on within the landing (same tab) ...
    page.locator("a", has_text="More about vgen").click()
    page.wait_for_url("**/")
    assert all(q == expected for q in _signup_queries(page))

    # ... and a click lands on the app's /signup with them.
    page.route(f"{APP}/**", lambda route: route.fulfill(status=200, body="signup page"))
    page.locator("header a[data-signup]").click()
    page.wait_for_url(f"{APP}/signup?*")
    assert parse_qs(urlsplit(page.url).query) == expected

    # A new visit with other parameters replaces the old ones (the latest campaign counts).
    page.goto("/terms/?utm_source=newsletter", wait_until="load")
    assert all(q == {"utm_source": ["newsletter"]} for q in _signup_queries(page))


def test_a_missing_page_is_a_404_with_the_landings_404_page(page_at):
    # SimpleHTTPRequestHandler does not serve /404.html for unknown paths (static hosts such as
    # Cloudflare Pages, Netlify or nginx with error_page do); here the page itself is checked.
    page = page_at("desktop")
    response = page.goto("/does-not-exist/")
    assert response.status == 404
    response = page.goto("/404.html", wait_until="load")
    assert response.status == 200
    assert "Page not found" in page.locator("h1").inner_text()
    assert Path(urlsplit(page.url).path).name == "404.html"
