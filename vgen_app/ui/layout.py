"""Page frames: the centred card of the auth pages and the app shell."""

from __future__ import annotations

import reflex as rx

from vgen_app.ui import routes
from vgen_app.ui.session import SessionState


def brand() -> rx.Component:
    return rx.link(
        rx.hstack(
            rx.icon("clapperboard", size=22),
            rx.text("vgen", size="5", weight="bold"),
            align="center",
            spacing="2",
        ),
        href=routes.HOME,
        underline="none",
        color_scheme="gray",
        high_contrast=True,
    )


def auth_card(title: str, *children: rx.Component, subtitle: str | None = None) -> rx.Component:
    return rx.center(
        rx.vstack(
            brand(),
            rx.card(
                rx.vstack(
                    rx.heading(title, size="6", as_="h1"),
                    rx.text(subtitle, color_scheme="gray", size="2") if subtitle else rx.fragment(),
                    *children,
                    spacing="4",
                    width="100%",
                ),
                size="3",
                width="100%",
            ),
            spacing="5",
            align="center",
            width="100%",
            max_width="420px",
        ),
        min_height="100vh",
        padding="16px",
        background="var(--gray-2)",
    )


def error_callout(message: rx.Var, *after: rx.Component, **props) -> rx.Component:
    """A red alert while `message` is set; `after` follows the message (e.g. a link)."""
    text = rx.hstack(rx.text(message), *after, spacing="2") if after else message
    return rx.cond(
        message != "",
        rx.callout(
            text, icon="triangle_alert", color_scheme="red", role="alert", width="100%", **props
        ),
    )


def info_callout(message: rx.Var) -> rx.Component:
    return rx.cond(
        message != "",
        rx.callout(message, icon="info", color_scheme="blue", role="status", width="100%"),
    )


def notice_card(*children: rx.Component, padding: str = "24px", **props) -> rx.Component:
    """A full-width card with its content centred: empty states, "not found", outcomes."""
    return rx.card(
        rx.vstack(*children, align="center", spacing="3", padding=padding), width="100%", **props
    )


def page_card(*children: rx.Component, max_width: str) -> rx.Component:
    """One card in the middle of the page (the payment pages)."""
    return rx.center(
        rx.card(*children, padding="28px", width="100%", max_width=max_width),
        width="100%",
        padding_top="40px",
    )


def field(label: str, name: str, type_: str = "text", **props) -> rx.Component:
    return rx.vstack(
        rx.text(label, as_="label", size="2", weight="medium", html_for=name),
        rx.input(name=name, id=name, type=type_, size="3", width="100%", **props),
        spacing="1",
        width="100%",
    )


def header() -> rx.Component:
    return rx.box(
        rx.hstack(
            brand(),
            rx.hstack(
                rx.link("My tasks", href=routes.HOME, size="2"),
                rx.link("Tokens", href=routes.TOKENS, size="2"),
                spacing="4",
                display=["none", "flex"],
            ),
            rx.spacer(),
            rx.badge(
                rx.icon("coins", size=14),
                rx.text(SessionState.balance_label, " tokens", id="header-balance"),
                size="2",
                color_scheme="amber",
                variant="soft",
            ),
            rx.text(SessionState.user_email, size="2", color_scheme="gray", id="header-email"),
            rx.button(
                rx.icon("log_out", size=14),
                "Log out",
                variant="soft",
                color_scheme="gray",
                size="2",
                on_click=SessionState.logout,
                id="logout",
            ),
            align="center",
            spacing="4",
            width="100%",
            max_width="1100px",
            margin="0 auto",
        ),
        padding="12px 20px",
        border_bottom="1px solid var(--gray-5)",
        background="var(--color-panel-solid)",
        position="sticky",
        top="0",
        z_index="10",
    )


def app_shell(*children: rx.Component) -> rx.Component:
    """Shown only once the server has confirmed the session; a spinner until then."""
    return rx.cond(
        SessionState.authenticated,
        rx.box(
            header(),
            rx.box(
                *children,
                width="100%",
                max_width="1100px",
                margin="0 auto",
                padding="24px 20px",
            ),
            min_height="100vh",
            background="var(--gray-2)",
        ),
        rx.center(rx.spinner(size="3"), min_height="100vh"),
    )


def pager(page: rx.Var, pages: rx.Var, go_to_page: rx.EventHandler) -> rx.Component:
    """Newer / Page N of M / Older, for lists shown newest first."""
    return rx.hstack(
        rx.button(
            "Newer", variant="soft", size="1", disabled=page <= 1, on_click=go_to_page(page - 1)
        ),
        rx.text("Page ", page, " of ", pages, size="2", color_scheme="gray"),
        rx.button(
            "Older",
            variant="soft",
            size="1",
            disabled=page >= pages,
            on_click=go_to_page(page + 1),
        ),
        align="center",
        spacing="3",
    )
