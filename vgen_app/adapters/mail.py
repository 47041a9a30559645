"""Mail: `.eml` files in the outbox folder by default, Resend when RESEND_API_KEY is set."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Protocol

import resend

from vgen_app import clock
from vgen_app.config import Settings, get_settings

log = logging.getLogger("vgen.mail")


@dataclass(frozen=True)
class Mail:
    """One message as we send it (services/emails.py writes them)."""

    to: str
    subject: str
    text: str
    html: str
    kind: str  # activation | reset | already_registered


class Mailer(Protocol):
    def send(self, mail: Mail) -> str:
        """Send one mail; return an id. Raises on failure."""


class OutboxMailer:
    """Writes each mail as a readable `.eml` file (the development and test default)."""

    def __init__(self, folder: Path, sender: str) -> None:
        self.folder = Path(folder)
        self.sender = sender

    def send(self, mail: Mail) -> str:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = mail.to
        msg["Subject"] = mail.subject
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain="vgen.local")
        msg["X-Vgen-Kind"] = mail.kind
        msg.set_content(mail.text)
        msg.add_alternative(mail.html, subtype="html")
        self.folder.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^a-z0-9]+", "-", mail.to.lower()).strip("-")[:60]
        name = f"{clock.now():%Y%m%dT%H%M%S%f}-{mail.kind}-{slug}-{secrets.token_hex(3)}.eml"
        tmp = self.folder / f".{name}.tmp"
        tmp.write_bytes(bytes(msg))
        os.replace(tmp, self.folder / name)  # readers never see a half-written mail
        return name


class ResendMailer:
    """The real system, through the `resend` client library."""

    def __init__(self, api_key: str, sender: str, api_url: str | None = None) -> None:
        self.api_key = api_key
        self.sender = sender
        self.api_url = api_url

    def send(self, mail: Mail) -> str:
        resend.api_key = self.api_key
        if self.api_url:
            resend.api_url = self.api_url
        result = resend.Emails.send(
            {
                "from": self.sender,
                "to": [mail.to],
                "subject": mail.subject,
                "text": mail.text,
                "html": mail.html,
                "tags": [{"name": "kind", "value": mail.kind}],
            }
        )
        return str(result["id"])


def make_mailer(settings: Settings) -> Mailer:
    if settings.resend_api_key:
        return ResendMailer(settings.resend_api_key, settings.mail_from, settings.resend_api_url)
    return OutboxMailer(settings.mail_outbox_dir, settings.mail_from)


def send_all(mails: list[Mail], mailer: Mailer | None = None) -> int:
    """Send each mail; a failure is logged and never raised: the action that asked stays done."""
    mailer = mailer or make_mailer(get_settings())
    sent = 0
    for mail in mails:
        try:
            mailer.send(mail)
            sent += 1
        except Exception:
            log.exception("sending %s mail failed", mail.kind)
    return sent


_background: set[asyncio.Task[int]] = set()


def track(task: asyncio.Task[int]) -> None:
    """Count a task that sends mails among those being sent: `drain()` waits for it too."""
    _background.add(task)
    task.add_done_callback(_background.discard)


def send_in_background(mails: list[Mail]) -> None:
    """Send off the event loop without making the user wait for the provider."""
    if not mails:
        return
    task = asyncio.get_running_loop().create_task(asyncio.to_thread(send_all, list(mails)))
    _background.add(task)
    task.add_done_callback(_background.discard)


async def drain() -> None:
    """Wait for mails still being sent (tests, shutdown)."""
    while _background:
        await asyncio.gather(*list(_background), return_exceptions=True)
