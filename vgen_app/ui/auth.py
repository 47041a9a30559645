"""Sign up, log in, check your e-mail, activate, forgot password, reset password."""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import quote

import reflex as rx

from vgen_app.adapters import mail
from vgen_app.adapters.mail import send_in_background
from vgen_app.db import run_db
from vgen_app.services import accounts
from vgen_app.services.cookies import safe_next
from vgen_app.ui import routes
from vgen_app.ui.layout import auth_card, error_callout, field, info_callout
from vgen_app.ui.session import SessionState

log = logging.getLogger("vgen.auth")


def _issue_reset_link_later(email: str) -> None:
    """The account-dependent half of a reset request, after the page has its answer: how long it
    takes (a link written, a mail rendered, or nothing) must not tell whether the address has an
    account. Tracked with the mails being sent, so `mail.drain()` waits for it too."""

    async def issue() -> int:
        try:
            mails = await run_db(accounts.reset_link_mails, email)
        except Exception:
            log.exception("issuing a reset link failed")
            return 0
        send_in_background(mails)
        return len(mails)

    task = asyncio.get_running_loop().create_task(issue())
    mail._background.add(task)
    task.add_done_callback(mail._background.discard)


class SignupState(SessionState):
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
        send_in_background(result.mails)
        self.signup_busy = False
        email = accounts.normalize_email(form.get("email", ""))
        yield rx.redirect(f"{routes.CHECK_EMAIL}?email={quote(email)}")


class LoginState(SessionState):
    login_error: str = ""
    login_notice: str = ""
    login_busy: bool = False

    @rx.event
    async def on_load(self):
        self.login_error = ""
        params = self.router.url.query_parameters
        self.login_notice = (
            "Your login link expired. Please log in again." if params.get("expired") else ""
        )
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
        next_path = safe_next(self.router.url.query_parameters.get("next"))
        target = f"{routes.api(routes.SESSION_ROUTE)}?ticket={result.ticket}&next={quote(next_path, safe='')}"
        # A full page load: the new socket's handshake carries the HttpOnly cookie the route sets.
        yield rx.call_script(f"window.location.assign({json.dumps(target)})")


class VerifyState(SessionState):
    verify_status: str = "pending"  # pending | ok | error
    verify_message: str = ""

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


class ForgotState(SessionState):
    forgot_error: str = ""
    forgot_done: str = ""

    @rx.event
    def on_load(self):
        self.forgot_error, self.forgot_done = "", ""

    @rx.event
    async def submit(self, form: dict):
        self.forgot_error = ""
        self.forgot_done = ""
        try:
            email = await run_db(
                accounts.admit_reset_request, form.get("email", ""), self.client_info()
            )
        except accounts.AccountError as exc:
            self.forgot_error = exc.message
            return
        self.forgot_done = accounts.RESET_SENT.format(email=email)
        _issue_reset_link_later(email)


class ResetState(SessionState):
    reset_status: str = "checking"  # checking | form | done | error
    reset_error: str = ""
    reset_message: str = ""

    def _token(self) -> str:
        return self.router.url.query_parameters.get("token", "")

    @rx.event
    async def on_load(self):
        self.reset_error, self.reset_message = "", ""
        ok = await run_db(accounts.check_reset_token, self._token())
        self.reset_status = "form" if ok else "error"
        if not ok:
            self.reset_error = accounts.BAD_RESET_LINK

    @rx.event
    async def submit(self, form: dict):
        self.reset_error = ""
        password = form.get("password", "")
        if password != form.get("confirm", ""):
            self.reset_error = "The two passwords do not match."
            return
        try:
            result = await run_db(accounts.reset_password, self._token(), password)
        except accounts.AccountError as exc:
            self.reset_error = exc.message
            if exc.code == "bad_link":
                self.reset_status = "error"
            return
        self.reset_status, self.reset_message = "done", result.message


# --- pages -------------------------------------------------------------------------------------


class CheckEmailState(SessionState):
    @rx.var
    def check_email_address(self) -> str:
        raw = self.router.url.query_parameters.get("email", "")
        try:
            return accounts.normalize_email(raw)
        except accounts.AccountError:  # never echo arbitrary text from the URL
            return "your e-mail address"


def _footer_link(text: str, link_text: str, href: str) -> rx.Component:
    return rx.text(
        text,
        " ",
        rx.link(link_text, href=href, color_scheme="indigo"),
        size="2",
        color_scheme="gray",
    )


def _form(
    on_submit: rx.EventHandler,
    button: str,
    button_id: str,
    *fields: rx.Component,
    busy: rx.Var | bool = False,
) -> rx.Component:
    """A form whose button works only once the page is live: before hydration a native submit
    would put the password in the URL, so the form posts (never GETs) and the button waits."""
    return rx.form(
        rx.vstack(
            *fields,
            rx.button(
                button,
                type="submit",
                size="3",
                width="100%",
                loading=busy,
                disabled=~SessionState.is_hydrated,
                id=button_id,
            ),
            spacing="4",
            width="100%",
        ),
        on_submit=on_submit,
        reset_on_submit=False,
        method="post",
        width="100%",
    )


def _email_field() -> rx.Component:
    return field(
        "E-mail",
        "email",
        "email",
        placeholder="you@example.com",
        required=True,
        auto_complete="email",
    )


def _new_password_field(label: str = "Password") -> rx.Component:
    return field(
        label,
        "password",
        "password",
        placeholder="8 to 128 characters",
        required=True,
        min_length=8,
        max_length=128,
        auto_complete="new-password",
    )


def _done(message: rx.Var, id_: str, button: str, href: str, ok: bool = True) -> rx.Component:
    return rx.vstack(
        rx.callout(
            message,
            icon="circle_check" if ok else "triangle_alert",
            color_scheme="green" if ok else "red",
            width="100%",
            id=id_,
        ),
        rx.link(
            rx.button(button, size="3", width="100%", variant="solid" if ok else "soft"),
            href=href,
            width="100%",
        ),
        width="100%",
        spacing="4",
    )


def _checking() -> rx.Component:
    return rx.hstack(rx.spinner(), rx.text("Checking your link…"), align="center")


def signup_page() -> rx.Component:
    return auth_card(
        "Create your account",
        error_callout(SignupState.signup_error),
        _form(
            SignupState.submit,
            "Sign up",
            "signup-submit",
            _email_field(),
            _new_password_field(),
            busy=SignupState.signup_busy,
        ),
        _footer_link("Already have an account?", "Log in", routes.LOGIN),
        subtitle="Make AI videos from your own material. Pay only for what you generate.",
    )


def login_page() -> rx.Component:
    return auth_card(
        "Log in",
        info_callout(LoginState.login_notice),
        error_callout(LoginState.login_error),
        _form(
            LoginState.submit,
            "Log in",
            "login-submit",
            _email_field(),
            field(
                "Password", "password", "password", required=True, auto_complete="current-password"
            ),
            busy=LoginState.login_busy,
        ),
        rx.hstack(
            rx.link("Forgot password?", href=routes.FORGOT, size="2"),
            rx.spacer(),
            rx.link("Create an account", href=routes.SIGNUP, size="2"),
            width="100%",
        ),
    )


def check_email_page() -> rx.Component:
    return auth_card(
        "Check your e-mail",
        rx.callout(
            rx.text(
                "We have sent a link to ",
                rx.text.strong(CheckEmailState.check_email_address),
                ". Open it to activate your account; it works for 24 hours.",
            ),
            icon="mail",
            color_scheme="green",
            width="100%",
        ),
        rx.text(
            "No e-mail? Check the spam folder, or simply log in: an unverified account "
            "gets a fresh activation link.",
            size="2",
            color_scheme="gray",
        ),
        rx.link(
            rx.button("Go to log in", size="3", width="100%", variant="soft"),
            href=routes.LOGIN,
            width="100%",
        ),
    )


def verify_page() -> rx.Component:
    return auth_card(
        "Activate your account",
        rx.match(
            VerifyState.verify_status,
            ("ok", _done(VerifyState.verify_message, "verify-ok", "Log in", routes.LOGIN)),
            (
                "error",
                _done(
                    VerifyState.verify_message,
                    "verify-error",
                    "Go to log in",
                    routes.LOGIN,
                    ok=False,
                ),
            ),
            _checking(),
        ),
    )


def forgot_page() -> rx.Component:
    return auth_card(
        "Forgot your password?",
        error_callout(ForgotState.forgot_error),
        rx.cond(
            ForgotState.forgot_done != "",
            rx.callout(
                ForgotState.forgot_done,
                icon="mail",
                color_scheme="green",
                width="100%",
                id="forgot-done",
            ),
            _form(ForgotState.submit, "Send me a reset link", "forgot-submit", _email_field()),
        ),
        _footer_link("Remembered it?", "Log in", routes.LOGIN),
        subtitle="Enter your e-mail and we will send you a link to choose a new password.",
    )


def reset_page() -> rx.Component:
    return auth_card(
        "Choose a new password",
        error_callout(ResetState.reset_error),
        rx.match(
            ResetState.reset_status,
            (
                "form",
                _form(
                    ResetState.submit,
                    "Change password",
                    "reset-submit",
                    _new_password_field("New password"),
                    field(
                        "Repeat it",
                        "confirm",
                        "password",
                        required=True,
                        auto_complete="new-password",
                    ),
                ),
            ),
            ("done", _done(ResetState.reset_message, "reset-done", "Log in", routes.LOGIN)),
            (
                "error",
                rx.link(
                    rx.button("Ask for a new link", size="3", width="100%", variant="soft"),
                    href=routes.FORGOT,
                    width="100%",
                ),
            ),
            _checking(),
        ),
        _footer_link("Changed your mind?", "Back to log in", routes.LOGIN),
        subtitle="Changing it logs you out on every device.",
    )
