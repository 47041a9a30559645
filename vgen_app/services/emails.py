"""The e-mails we send: plain text and HTML, with absolute links from APP_URL."""

from __future__ import annotations

import html
import tomllib
from pathlib import Path

from vgen_app.adapters.mail import Mail
from vgen_app.config import get_settings

LINK_MAILS: dict[str, dict[str, str]] = tomllib.loads(
    (Path(__file__).resolve().parents[1] / "mails.toml").read_text(encoding="utf-8")
)


def _html(title: str, intro: str, button: str | None, link: str | None, outro: str) -> str:
    button_html = ""
    if link and button:
        safe = html.escape(link, quote=True)
        button_html = (
            f'<p><a href="{safe}" style="display:inline-block;padding:10px 18px;background:#3e63dd;'
            f'color:#fff;border-radius:6px;text-decoration:none">{html.escape(button)}</a></p>'
            f'<p style="color:#666;font-size:13px">Or paste this link into your browser:<br>{safe}</p>'
        )
    return (
        '<!doctype html><html><body style="font-family:system-ui,sans-serif;line-height:1.5;'
        'color:#111;max-width:560px;margin:auto;padding:24px">'
        f"<h2>{html.escape(title)}</h2><p>{html.escape(intro)}</p>{button_html}"
        f'<p style="color:#666;font-size:13px">{html.escape(outro)}</p>'
        "<p>— vgen</p></body></html>"
    )


def _link_mail(to: str, kind: str, link: str, **fill: object) -> Mail:
    """A mail whose point is one link, in the words `mails.toml` has for `kind` (its {names}
    filled in from `fill`)."""
    words = {k: v.format(**fill) if fill else v for k, v in LINK_MAILS[kind].items()}
    return Mail(
        to=to,
        subject=words["subject"],
        text=f"{words['intro']}\n\n{words['action']}:\n{link}\n\n{words['outro']}\n\n— vgen\n",
        html=_html(words["title"], words["intro"], words["button"], link, words["outro"]),
        kind=kind,
    )


def activation_mail(to: str, token: str) -> Mail:
    return _link_mail(to, "activation", get_settings().link(f"/verify?token={token}"))


def reset_mail(to: str, token: str) -> Mail:
    return _link_mail(to, "reset", get_settings().link(f"/reset?token={token}"))


def run_finished_mail(
    to: str, task_id: str, task: str, attempt: int, succeeded: bool, reason: str, tokens: int
) -> Mail:
    """A run ended: the result is ready (a link to watch it), or it failed (why, tokens back)."""
    kind = "run_succeeded" if succeeded else "run_failed"
    link = get_settings().link(f"/tasks/{task_id}")
    return _link_mail(
        to, kind, link, task=task, attempt=attempt, reason=reason, tokens=f"{tokens:,}"
    )


def email_change_mail(to: str, token: str) -> Mail:
    return _link_mail(to, "email_change", get_settings().link(f"/account/email?token={token}"))


def notice_mail(to: str, kind: str, **fill: object) -> Mail:
    """A mail that tells something and links to nothing but the account page (`mails.toml`)."""
    words = {k: v.format(**fill) if fill else v for k, v in LINK_MAILS[kind].items()}
    account = get_settings().link("/account")
    outro = f"{words['outro']} Your account: {account}"
    return Mail(
        to=to,
        subject=words["subject"],
        text=f"{words['intro']}\n\n{outro}\n\n— vgen\n",
        html=_html(words["title"], words["intro"], None, None, outro),
        kind=kind,
    )


def already_registered_mail(to: str) -> Mail:
    login = get_settings().link("/login")
    forgot = get_settings().link("/forgot")
    intro = (
        "Someone tried to sign up for vgen with this e-mail address, which already has an account."
    )
    outro = f"If it was you, log in at {login} or reset your password at {forgot}. Otherwise ignore this."
    return Mail(
        to=to,
        subject="You already have a vgen account",
        text=f"{intro}\n\n{outro}\n\n— vgen\n",
        html=_html("You already have an account", intro, "Log in", login, outro),
        kind="already_registered",
    )
