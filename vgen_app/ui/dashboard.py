"""My tasks (the tasks themselves arrive with issue C)."""

from __future__ import annotations

import reflex as rx

from vgen_app.ui.layout import app_shell
from vgen_app.ui.session import SessionState


def dashboard_page() -> rx.Component:
    return app_shell(
        rx.vstack(
            rx.heading("My tasks", size="7", as_="h1"),
            rx.card(
                rx.vstack(
                    rx.icon("film", size=36, color="var(--gray-9)"),
                    rx.heading("No tasks yet", size="4", as_="h2"),
                    rx.text(
                        "Lip sync, face swap and talking photos are coming here soon.",
                        color_scheme="gray",
                    ),
                    rx.text(
                        "Logged in as ",
                        rx.text.strong(SessionState.user_email),
                        size="2",
                        id="dashboard-email",
                    ),
                    align="center",
                    spacing="3",
                    padding="32px",
                ),
                width="100%",
            ),
            spacing="5",
            width="100%",
        )
    )
