"""The e-mails we send: plain text and HTML, with absolute links from APP_URL."""

from __future__ import annotations

import html
from dataclasses import dataclass

from vgen_app.config import get_settings


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    text: str
    html: str
    kind: str  # activation | reset | already_registered


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


def activation_mail(to: str, token: str) -> Mail:
    link = get_settings().link(f"/verify?token={token}")
    intro = "Welcome to vgen! Confirm your e-mail address to activate your account."
    outro = "The link works for 24 hours and only once. If you did not sign up, ignore this e-mail."
    return Mail(
        to=to,
        subject="Activate your vgen account",
        text=f"{intro}\n\nActivate your account:\n{link}\n\n{outro}\n\n— vgen\n",
        html=_html("Activate your account", intro, "Activate my account", link, outro),
        kind="activation",
    )


def reset_mail(to: str, token: str) -> Mail:
    link = get_settings().link(f"/reset?token={token}")
    intro = "Someone (hopefully you) asked to reset the password of your vgen account."
    outro = (
        "The link works for 24 hours and only once; a newer link replaces it. "
        "If you did not ask for it, ignore this e-mail: your password stays as it is."
    )
    return Mail(
        to=to,
        subject="Reset your vgen password",
        text=f"{intro}\n\nChoose a new password:\n{link}\n\n{outro}\n\n— vgen\n",
        html=_html("Reset your password", intro, "Choose a new password", link, outro),
        kind="reset",
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
