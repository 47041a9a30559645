"""Any unknown path: a page in the app's layout with a way back."""

from __future__ import annotations

import reflex as rx

from vgen_app.ui import routes


def not_found_page() -> rx.Component:
    return rx.center(
        rx.vstack(
            rx.heading("Page not found", size="6", as_="h1"),
            rx.text("There is no page at this address.", color_scheme="gray"),
            rx.link("Go to My tasks", href=routes.HOME),
            align="center",
            spacing="3",
        ),
        min_height="100vh",
        id="not-found",
    )
