"""Tokens: the balance (top-ups, history and the chart arrive with issue B)."""

from __future__ import annotations

import reflex as rx

from vgen_app.ui.layout import app_shell
from vgen_app.ui.session import SessionState


def tokens_page() -> rx.Component:
    return app_shell(
        rx.vstack(
            rx.heading("Tokens", size="7", as_="h1"),
            rx.card(
                rx.vstack(
                    rx.text("Your balance", size="2", color_scheme="gray"),
                    rx.heading(SessionState.balance, " tokens", size="8", id="tokens-balance"),
                    rx.text("Buying tokens opens here soon.", color_scheme="gray", size="2"),
                    spacing="2",
                    padding="16px",
                ),
                width="100%",
            ),
            spacing="5",
            width="100%",
        )
    )
