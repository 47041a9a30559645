"""The auth pages (sign up, log in, check your e-mail, activate, forgot and reset password); their
state and handlers are in auth.py."""

from __future__ import annotations

import reflex as rx

from vgen_app.ui import routes
from vgen_app.ui.auth import (
    CheckEmailState,
    ForgotState,
    LoginState,
    ResetState,
    SignupState,
    VerifyState,
)
from vgen_app.ui.layout import auth_card, error_callout, field, info_callout, link_button
from vgen_app.ui.session import SessionState


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


def _email_field(**props) -> rx.Component:
    return field(
        "E-mail",
        "email",
        "email",
        placeholder="you@example.com",
        required=True,
        auto_complete="email",
        **props,
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


def _done(
    message: rx.Var, id_: str, button: str, href: str | rx.Var, ok: bool = True
) -> rx.Component:
    return rx.vstack(
        rx.callout(
            message,
            icon="circle_check" if ok else "triangle_alert",
            color_scheme="green" if ok else "red",
            width="100%",
            id=id_,
        ),
        link_button(button, href=href, size="3", width="100%", variant="solid" if ok else "soft"),
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
            # Filled in after activation (?email=); re-mounted when it changes (uncontrolled input).
            _email_field(default_value=LoginState.login_email, key=LoginState.login_email),
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
        link_button("Go to log in", href=routes.LOGIN, size="3", width="100%", variant="soft"),
    )


def verify_page() -> rx.Component:
    return auth_card(
        "Activate your account",
        rx.match(
            VerifyState.verify_status,
            (
                "ok",
                _done(VerifyState.verify_message, "verify-ok", "Log in", VerifyState.verify_login),
            ),
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
                link_button(
                    "Ask for a new link", href=routes.FORGOT, size="3", width="100%", variant="soft"
                ),
            ),
            _checking(),
        ),
        rx.cond(
            ResetState.reset_status != "done",  # done: its own "Log in" button is the way on
            _footer_link("Changed your mind?", "Back to log in", routes.LOGIN),
        ),
        subtitle="Changing it logs you out on every device.",
    )
