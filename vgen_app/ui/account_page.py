"""The account page's components (its state: `ui/account.py`)."""

from __future__ import annotations

import reflex as rx

from vgen_app.ui import format, routes
from vgen_app.ui.account import AccountEmailState, AccountState
from vgen_app.ui.layout import (
    app_shell,
    auth_card,
    error_callout,
    field,
    info_callout,
    link_button,
    spread,
)
from vgen_app.ui.session import SessionState


def _section(title: str, *children: rx.Component, id_: str) -> rx.Component:
    return rx.card(
        rx.vstack(rx.heading(title, size="4", as_="h2"), *children, spacing="3", width="100%"),
        width="100%",
        id=id_,
    )


def _form(on_submit, button: str, button_id: str, *fields: rx.Component) -> rx.Component:
    """Posts (never GETs: a password must not land in the URL), once the page is live."""
    return rx.form(
        rx.vstack(
            *fields,
            rx.button(
                button, type="submit", size="2", disabled=~SessionState.is_hydrated, id=button_id
            ),
            spacing="3",
            width="100%",
            max_width="420px",
        ),
        on_submit=on_submit,
        reset_on_submit=True,
        method="post",
        width="100%",
    )


def _password(label_text: str, name: str, auto: str) -> rx.Component:
    return field(label_text, name, "password", required=True, auto_complete=auto)


def _summary() -> rx.Component:
    return _section(
        "Your account",
        rx.data_list.root(
            rx.data_list.item(
                rx.data_list.label("E-mail"),
                rx.data_list.value(AccountState.email, id="account-email"),
            ),
            rx.data_list.item(
                rx.data_list.label("Member since"),
                rx.data_list.value(format.local_time(AccountState.created_iso)),
            ),
            rx.data_list.item(
                rx.data_list.label("Balance"),
                rx.data_list.value(
                    rx.link(
                        SessionState.balance_label,
                        " tokens",
                        href=routes.TOKENS,
                        id="account-balance",
                    )
                ),
            ),
            orientation=rx.breakpoints(initial="vertical", sm="horizontal"),
        ),
        id_="account-summary",
    )


def _password_section() -> rx.Component:
    return _section(
        "Password",
        _form(
            AccountState.change_password,
            "Change password",
            "password-submit",
            _password("Current password", "current_password", "current-password"),
            _password("New password", "new_password", "new-password"),
            _password("New password again", "repeat_password", "new-password"),
        ),
        error_callout(AccountState.password_error, id="password-error"),
        info_callout(AccountState.password_done),
        id_="account-password",
    )


def _email_section() -> rx.Component:
    return _section(
        "E-mail address",
        rx.text(
            "We send a link to the new address; your account moves there once you open it.",
            size="2",
            color_scheme="gray",
            high_contrast=True,
        ),
        _form(
            AccountState.change_email,
            "Send the link",
            "email-submit",
            field("New e-mail address", "new_email", "email", required=True, auto_complete="email"),
            _password("Your password", "email_password", "current-password"),
        ),
        error_callout(AccountState.email_error, id="email-error"),
        info_callout(AccountState.email_done),
        id_="account-email-change",
    )


# Columns a phone (< 30em) does without: the device, when it was last seen and Sign out stay.
_WIDE = ["none", "table-cell"]


def _session_row(row: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(
            rx.hstack(
                rx.text(row.device, weight="medium"),
                rx.cond(
                    row.current, rx.badge("This device", color_scheme="green", high_contrast=True)
                ),
                spacing="2",
                wrap="wrap",
            )
        ),
        rx.table.cell(row.ip, display=_WIDE),
        rx.table.cell(row.country, display=_WIDE),
        rx.table.cell(format.local_time(row.created_iso), display=_WIDE),
        rx.table.cell(format.local_time(row.last_seen_iso)),
        rx.table.cell(
            rx.cond(
                row.current,
                rx.fragment(),
                rx.button(
                    "Sign out",
                    size="1",
                    variant="soft",
                    color_scheme="red",
                    on_click=AccountState.revoke(row.id),
                    aria_label="Sign out " + row.device + " (" + row.ip + ")",
                    class_name="session-revoke",
                ),
            )
        ),
        class_name="session-row",
        data_current=rx.cond(row.current, "true", "false"),
    )


def _sessions_section() -> rx.Component:
    return _section(
        "Where you are signed in",
        rx.box(
            rx.table.root(
                rx.table.header(
                    rx.table.row(
                        rx.table.column_header_cell("Device"),
                        *[
                            rx.table.column_header_cell(h, display=_WIDE)
                            for h in ("IP", "Country", "Signed in")
                        ],
                        rx.table.column_header_cell("Last seen"),
                        rx.table.column_header_cell(""),
                    )
                ),
                rx.table.body(rx.foreach(AccountState.sessions, _session_row)),
                variant="surface",
                width="100%",
                id="sessions",
            ),
            overflow_x="auto",
            width="100%",
        ),
        spread(
            rx.button(
                "Sign out all other devices",
                variant="soft",
                color_scheme="red",
                on_click=AccountState.revoke_others,
                id="revoke-others",
            ),
        ),
        info_callout(AccountState.sessions_done),
        id_="account-sessions",
    )


def _notifications_section() -> rx.Component:
    return _section(
        "Notifications",
        rx.text(
            rx.el.label(
                rx.hstack(
                    rx.switch(
                        checked=AccountState.run_mails,
                        on_change=AccountState.toggle_run_mails,
                        id="run-mails",
                    ),
                    rx.text("E-mail me when a run finishes (the video is ready, or it failed)"),
                    spacing="2",
                    align="center",
                ),
                html_for="run-mails",
            ),
            as_child=True,
            size="2",
        ),
        id_="account-notifications",
    )


def _data_section() -> rx.Component:
    return _section(
        "Your data",
        rx.text(
            "A ZIP with your account, token history, tasks and every file you uploaded or made.",
            size="2",
            color_scheme="gray",
            high_contrast=True,
        ),
        spread(
            # A full document load: the route answers with an attachment, the page stays.
            rx.button(
                rx.icon("download", size=14),
                "Download my data",
                variant="soft",
                on_click=format.full_redirect(routes.api("/api/account/export")),
                id="export",
            ),
        ),
        _delete_dialog(),
        id_="account-data",
    )


def _delete_dialog() -> rx.Component:
    return rx.alert_dialog.root(
        rx.alert_dialog.trigger(
            rx.button(
                rx.icon("trash_2", size=14),
                "Delete my account",
                variant="soft",
                color_scheme="red",
                width="fit-content",
                id="delete-account",
            )
        ),
        rx.alert_dialog.content(
            rx.alert_dialog.title("Delete your account?"),
            rx.alert_dialog.description(
                "Your uploads, results and sessions are removed for good, and your address is "
                "freed. Unused tokens are lost. Payment and token records stay, as the privacy "
                "page says.",
            ),
            rx.form(
                rx.vstack(
                    _password("Your password", "delete_password", "current-password"),
                    error_callout(AccountState.delete_error, id="delete-error"),
                    rx.hstack(
                        rx.alert_dialog.cancel(
                            rx.button("Keep my account", variant="soft", color_scheme="gray")
                        ),
                        rx.button(
                            "Delete everything",
                            type="submit",
                            color_scheme="red",
                            id="delete-account-confirm",
                        ),
                        spacing="3",
                        justify="end",
                        width="100%",
                    ),
                    spacing="3",
                    margin_top="12px",
                ),
                on_submit=AccountState.delete_account,
                method="post",
            ),
            max_width="460px",
        ),
    )


def account_page() -> rx.Component:
    return app_shell(
        rx.vstack(
            rx.heading("Account", size="7", as_="h1"),
            rx.cond(
                AccountState.loaded,
                rx.vstack(
                    _summary(),
                    _password_section(),
                    _email_section(),
                    _sessions_section(),
                    _notifications_section(),
                    _data_section(),
                    spacing="4",
                    width="100%",
                ),
                rx.center(rx.spinner(size="3"), width="100%", padding="40px"),
            ),
            spacing="4",
            width="100%",
        )
    )


def account_email_page() -> rx.Component:
    return auth_card(
        "Your e-mail address",
        rx.cond(
            AccountEmailState.outcome == "",
            rx.center(rx.spinner(size="3")),
            rx.cond(
                AccountEmailState.failed,
                rx.callout(
                    AccountEmailState.outcome,
                    icon="triangle_alert",
                    color_scheme="red",
                    role="alert",
                    id="email-outcome",
                ),
                rx.callout(
                    AccountEmailState.outcome,
                    icon="circle_check",
                    color_scheme="green",
                    role="status",
                    id="email-outcome",
                ),
            ),
        ),
        link_button("Go to your account", href=routes.ACCOUNT, size="3", width="100%"),
    )
