"""Helpers of the browser journeys: unique addresses, hydration, the mail outbox."""

from __future__ import annotations

import email
import email.policy
import re
import secrets
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from playwright.sync_api import Page, expect


def unique_email() -> str:
    return f"journey-{secrets.token_hex(5)}@example.com"


def wait_hydrated(page, selector: str) -> None:
    """Wait until React has hydrated `selector` (the pages are prerendered: clicking a submit
    button before hydration would do a native GET form submission instead of a Reflex event)."""
    page.wait_for_selector(selector, state="visible")
    page.wait_for_function(
        """(sel) => {
            const el = document.querySelector(sel);
            return !!el && Object.keys(el).some((k) => k.startsWith('__reactProps'));
        }""",
        arg=selector,
    )


@dataclass
class Mail:
    path: Path
    kind: str
    to: str
    subject: str
    text: str

    def link(self, path: str) -> str:
        m = re.search(
            rf"https?://[^\s\"'<>]+{re.escape(path)}\?token=[A-Za-z0-9_\-.~%]+", self.text
        )
        assert m, f"no {path} link in {self.path.name}:\n{self.text}"
        return m.group(0)


def read_mails(outbox: Path, to: str, kind: str) -> list[Mail]:
    """Mails of one kind to one address, oldest first (file names start with a timestamp)."""
    if not outbox.exists():
        return []
    found = []
    for path in sorted(outbox.glob("*.eml")):  # half-written mails are hidden `.…tmp` files
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        if msg["X-Vgen-Kind"] != kind or (msg["To"] or "").lower() != to.lower():
            continue
        body = msg.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        found.append(Mail(path, kind, msg["To"], msg["Subject"], text))
    return found


def wait_for_mails(outbox: Path, to: str, kind: str, count: int, timeout: float = 20) -> list[Mail]:
    """Poll the outbox until at least `count` such mails are there; return them all."""
    deadline = time.monotonic() + timeout
    while True:
        mails = read_mails(outbox, to, kind)
        if len(mails) >= count:
            return mails
        if time.monotonic() > deadline:
            names = sorted(p.name for p in outbox.glob("*.eml")) if outbox.exists() else []
            raise AssertionError(
                f"expected {count} {kind!r} mail(s) to {to} within {timeout} s, found {len(mails)}; "
                f"outbox: {names}"
            )
        time.sleep(0.2)


# --- steps shared by the journeys ---------------------------------------------------------------


def path_is(app_url: str, path: str) -> re.Pattern[str]:
    """The page URL is `path` (the prod server adds a trailing slash; query allowed)."""
    return re.compile(re.escape(app_url + path.rstrip("/")) + r"/?(\?.*)?$")


def submit_login(page: Page, email: str, password: str) -> None:
    page.goto("/login")
    wait_hydrated(page, "#login-submit")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#login-submit")


def login_ok(page: Page, app_url: str, email: str, password: str) -> None:
    submit_login(page, email, password)
    expect(page).to_have_url(path_is(app_url, "/"))
    expect(page.locator("#header-email")).to_have_text(email)


def signup(page: Page, email: str, password: str) -> None:
    page.goto("/signup")
    wait_hydrated(page, "#signup-submit")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("#signup-submit")
    expect(page).to_have_url(re.compile(r"/check-email\?email="))


def activate(page: Page, outbox, email: str) -> None:
    link = wait_for_mails(outbox, email, "activation", 1)[-1].link("/verify")
    page.goto(link)
    expect(page.locator("#verify-ok")).to_be_visible()


def upload_lipsync_inputs(page: Page, video: Path, audio: Path) -> None:
    """A lip-sync task page gets its two inputs through the drop zones' file inputs, each
    accepted (its file shown) before the next."""
    wait_hydrated(page, "#upload-video")
    page.locator("#upload-video input[type=file]").set_input_files(str(video))
    expect(page.locator("#slot-video-file")).to_contain_text(video.name, timeout=60_000)
    page.locator("#upload-audio input[type=file]").set_input_files(str(audio))
    expect(page.locator("#slot-audio-file")).to_contain_text(audio.name, timeout=60_000)


def new_member(page: Page, app, password: str = "correct horse battery") -> str:
    """A new user, signed up, activated and logged in on `page`; returns the address."""
    email = unique_email()
    signup(page, email, password)
    activate(page, app.outbox, email)
    login_ok(page, app.url, email, password)
    return email


def buy_10k(page: Page) -> None:
    """10,000 tokens through the test checkout."""
    page.goto("/tokens")
    wait_hydrated(page, "#buy-10k")
    page.click("#buy-10k")
    wait_hydrated(page, "#test-pay")
    page.click("#test-pay")
    expect(page.locator("#payment-credited")).to_be_visible()


def create_task(page: Page, name: str, model: str = "lipsync") -> str:
    """A new task of `model` from the New task page; returns its path."""
    page.goto("/tasks/new")
    wait_hydrated(page, "#create-task")
    page.click(f"#model-{model}")
    page.fill("#name", name)
    page.click("#create-task")
    expect(page.locator("#task-name")).to_have_text(name)
    return re.sub(r"^https?://[^/]+", "", page.url).split("?")[0].rstrip("/")
