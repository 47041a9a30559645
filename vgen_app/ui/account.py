"""The account page (`/account`): who you are, password, e-mail address, where you are signed in,
notifications, your data (export, delete). Rules: `services/account.py`, `services/erasure.py`,
`services/export.py`. The e-mail change link opens `/account/email` (AccountEmailState)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import ClassVar

import reflex as rx

from vgen_app.adapters.mail import send_in_background
from vgen_app.db import run_db
from vgen_app.services import account, erasure
from vgen_app.services.errors import ServiceError
from vgen_app.ui import format, routes
from vgen_app.ui.session import SessionState, signed_in


@dataclass
class SessionRow:
    id: int
    device: str
    ip: str
    country: str
    created_iso: str
    last_seen_iso: str
    current: bool


class AccountState(SessionState):
    PAGE: ClassVar[str] = routes.ACCOUNT
    email: str = ""
    created_iso: str = ""
    run_mails: bool = True
    sessions: list[SessionRow] = []
    loaded: bool = False
    password_error: str = ""
    password_done: str = ""
    email_error: str = ""
    email_done: str = ""
    sessions_done: str = ""
    delete_error: str = ""

    async def _load(self) -> None:
        try:
            view = await run_db(account.overview, self._user_id, self.session_token())
        except ServiceError:
            return
        self.email, self.created_iso = view.email, format.iso(view.created_at)
        self.run_mails = view.run_mails
        self.sessions = [
            SessionRow(
                s.id,
                s.device,
                s.ip,
                s.country,
                format.iso(s.created_at),
                format.iso(s.last_seen_at),
                s.current,
            )
            for s in view.sessions
        ]
        self.loaded = True

    @rx.event
    @signed_in
    async def on_load(self):
        await self._load()

    async def _on_change(self):
        """Another tab or device changed something (a session ended, the address moved)."""
        await self._load()

    @rx.event
    @signed_in
    async def change_password(self, form: dict):
        self.password_error = self.password_done = ""
        if (form.get("new_password") or "") != (form.get("repeat_password") or ""):
            self.password_error = "The two new passwords are not the same."
            return
        try:
            mails = await run_db(
                account.change_password,
                self._user_id,
                self.session_token() or "",
                form.get("current_password") or "",
                form.get("new_password") or "",
            )
        except ServiceError as exc:
            self.password_error = exc.message
            return
        send_in_background(mails)
        self.password_done = "Your password is changed. Every other device was signed out."
        await self._load()

    @rx.event
    @signed_in
    async def change_email(self, form: dict):
        self.email_error = self.email_done = ""
        try:
            answer, mails = await run_db(
                account.request_email_change,
                self._user_id,
                form.get("email_password") or "",
                form.get("new_email") or "",
            )
        except ServiceError as exc:
            self.email_error = exc.message
            return
        send_in_background(mails)
        self.email_done = answer

    @rx.event
    @signed_in
    async def toggle_run_mails(self, on: bool):
        await run_db(account.set_run_mails, self._user_id, bool(on))
        self.run_mails = bool(on)

    @rx.event
    @signed_in
    async def revoke(self, session_id: int):
        self.sessions_done = ""
        if await run_db(account.revoke_session, self._user_id, int(session_id)):
            self.sessions_done = "That device is signed out."
        await self._load()

    @rx.event
    @signed_in
    async def revoke_others(self):
        ended = await run_db(account.revoke_other_sessions, self._user_id, self.session_token())
        self.sessions_done = (
            f"{ended} other device{'s' if ended != 1 else ''} signed out."
            if ended
            else "No other device was signed in."
        )
        await self._load()

    @rx.event
    @signed_in
    async def delete_account(self, form: dict):
        """Everything of the account goes (erasure.delete_account); then this tab's cookie, and
        the login page says so."""
        self.delete_error = ""
        try:
            await asyncio.to_thread(
                erasure.delete_account, self._user_id, form.get("delete_password") or ""
            )
        except ServiceError as exc:
            self.delete_error = exc.message
            return
        self.user_email, self.balance, self.authenticated = "", 0, False
        return rx.call_script(
            f"fetch({json.dumps(routes.api(routes.LOGOUT_ROUTE))}, "
            "{method: 'POST', credentials: 'include'})"
            f".finally(() => window.location.assign({json.dumps(routes.LOGIN + '?deleted=1')}))"
        )


class AccountEmailState(SessionState):
    """The e-mail change link: opened, it moves the account to the new address (signed in or not:
    the link is the proof)."""

    PAGE: ClassVar[str] = routes.ACCOUNT_EMAIL
    outcome: str = ""
    failed: bool = False

    @rx.event
    async def on_load(self):
        token = self.router.url.query_parameters.get("token", "")
        self.outcome, self.failed = "", False
        try:
            self.outcome, mails = await run_db(account.confirm_email_change, token)
        except ServiceError as exc:
            self.outcome, self.failed = exc.message, True
            return
        send_in_background(mails)
        await self.current_user()  # the header shows the new address
