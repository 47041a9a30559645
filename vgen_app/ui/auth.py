"""Sign up, log in, check your e-mail, activate, forgot password, reset password: the pages' state
and handlers (the pages themselves are in auth_pages.py)."""

from __future__ import annotations

import json
from typing import ClassVar
from urllib.parse import quote

import reflex as rx

from vgen_app.adapters.mail import send_in_background
from vgen_app.db import UNAVAILABLE, UNAVAILABLE_ERRORS, run_db
from vgen_app.services import accounts, passwords
from vgen_app.services.cookies import safe_next
from vgen_app.ui import routes
from vgen_app.ui.session import SessionState

LOGIN_NOTICES = {  # ?<key>=1 on /login, and what the page then says
    "expired": "Your login link expired. Please log in again.",
    "logged_out": "You are logged out.",
    "ended": "Your session has ended. Please log in again.",
    "deleted": "Your account is deleted, with its files. Thank you for trying vgen.",
}


class SignupState(SessionState):
    PAGE: ClassVar[str] = routes.SIGNUP
    signup_error: str = ""
    signup_busy: bool = False

    @rx.event
    async def submit(self, form: dict):
        self.signup_error = ""
        self.signup_busy = True
        yield
        try:
            params = self.router.url.query_parameters
            utm = {k: v for k, v in params.items() if k.startswith("utm_")}
            result = await run_db(
                accounts.signup,
                form.get("email", ""),
                form.get("password", ""),
                self.client_info(),
                utm,
            )
        except accounts.AccountError as exc:
            self.signup_error = exc.message
            self.signup_busy = False
            return
        except UNAVAILABLE_ERRORS:  # the database is down: say so, and the form works again
            self.signup_error, self.signup_busy = UNAVAILABLE, False
            return
        send_in_background(result.mails)
        self.signup_busy = False
        email = accounts.normalize_email(form.get("email", ""))
        yield rx.redirect(f"{routes.CHECK_EMAIL}?email={quote(email)}")


class LoginState(SessionState):
    PAGE: ClassVar[str] = routes.LOGIN
    login_error: str = ""
    login_notice: str = ""
    login_busy: bool = False
    login_email: str = ""  # filled in from ?email= (after activation)

    @rx.event
    async def on_load(self):
        params = self.router.url.query_parameters
        self.login_notice = next((t for key, t in LOGIN_NOTICES.items() if params.get(key)), "")
        try:
            self.login_email = accounts.normalize_email(params.get("email", ""))
        except accounts.AccountError:  # never echo arbitrary text from the URL
            self.login_email = ""
        if await self.current_user() is not None:
            return rx.redirect(safe_next(params.get("next")))

    @rx.event
    async def submit(self, form: dict):
        self.login_error = ""
        self.login_notice = ""
        self.login_busy = True
        yield
        try:
            result = await run_db(
                accounts.login, form.get("email", ""), form.get("password", ""), self.client_info()
            )
        except accounts.UnverifiedLogin as exc:
            send_in_background(exc.mails)
            self.login_error = exc.message
            self.login_busy = False
            return
        except accounts.AccountError as exc:
            self.login_error = exc.message
            self.login_busy = False
            return
        except UNAVAILABLE_ERRORS:  # the database is down: say so, and the form works again
            self.login_error, self.login_busy = UNAVAILABLE, False
            return
        next_path = safe_next(self.router.url.query_parameters.get("next"))
        target = f"{routes.api(routes.SESSION_ROUTE)}?ticket={result.ticket}&next={quote(next_path, safe='')}"
        # A full page load: the new socket's handshake carries the HttpOnly cookie the route sets.
        yield rx.call_script(f"window.location.assign({json.dumps(target)})")


class VerifyState(SessionState):
    PAGE: ClassVar[str] = routes.VERIFY
    verify_status: str = "pending"  # pending | ok | error
    verify_message: str = ""
    verify_login: str = routes.LOGIN  # where "Log in" goes: the e-mail filled in

    @rx.event
    async def on_load(self):
        self.verify_status, self.verify_message = "pending", ""
        token = self.router.url.query_parameters.get("token", "")
        try:
            result = await run_db(accounts.activate, token)
        except accounts.AccountError as exc:
            self.verify_status, self.verify_message = "error", exc.message
            return
        self.verify_status, self.verify_message = "ok", result.message
        self.verify_login = f"{routes.LOGIN}?email={quote(result.email)}"


class ForgotState(SessionState):
    PAGE: ClassVar[str] = routes.FORGOT
    forgot_error: str = ""
    forgot_done: str = ""

    @rx.event
    async def submit(self, form: dict):
        self.forgot_error = ""
        self.forgot_done = ""
        try:
            # The link (or nothing) is made after this answer is on the page (see the service).
            answer = await passwords.answer_reset_request(form.get("email", ""), self.client_info())
        except accounts.AccountError as exc:
            self.forgot_error = exc.message
            return
        self.forgot_done = answer


class ResetState(SessionState):
    PAGE: ClassVar[str] = routes.RESET
    reset_status: str = "checking"  # checking | form | done | error
    reset_error: str = ""
    reset_message: str = ""

    def _token(self) -> str:
        return self.router.url.query_parameters.get("token", "")

    @rx.event
    async def on_load(self):
        if self.reset_status == "done":  # changed right after the page loaded: keep the answer
            return
        ok = await run_db(passwords.check_reset_token, self._token())
        self.reset_status = "form" if ok else "error"
        if not ok:
            self.reset_error = passwords.BAD_RESET_LINK

    @rx.event
    async def submit(self, form: dict):
        self.reset_error = ""
        password = form.get("password", "")
        if password != form.get("confirm", ""):
            self.reset_error = "The two passwords do not match."
            return
        try:
            result = await run_db(passwords.reset_password, self._token(), password)
        except accounts.AccountError as exc:
            self.reset_error = exc.message
            if exc.code == "bad_link":
                self.reset_status = "error"
            return
        self.reset_status, self.reset_message = "done", result.message


class CheckEmailState(SessionState):
    @rx.var
    def check_email_address(self) -> str:
        raw = self.router.url.query_parameters.get("email", "")
        try:
            return accounts.normalize_email(raw)
        except accounts.AccountError:  # never echo arbitrary text from the URL
            return "your e-mail address"
