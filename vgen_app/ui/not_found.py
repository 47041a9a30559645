"""Any unknown path: a page in the app's layout with a way back."""

from __future__ import annotations

import reflex as rx

from vgen_app.ui import routes
from vgen_app.ui.layout import brand_bar, content, header, link_button, notice_card
from vgen_app.ui.session import SessionState


def not_found_page() -> rx.Component:
    """The app's header for a signed-in user (`SessionState.check_session` runs on load), the
    brand bar for anyone else; a way home either way."""
    signed_in = SessionState.authenticated
    return rx.box(
        rx.cond(signed_in, header(), brand_bar()),
        content(
            rx.center(
                notice_card(
                    rx.icon("map_pin_off", size=36, color="var(--gray-9)", aria_hidden="true"),
                    rx.heading("Page not found", size="6", as_="h1"),
                    rx.text(
                        "There is no page at this address. Check the link, or ",
                        rx.cond(
                            signed_in, "start again from your tasks.", "log in to see your tasks."
                        ),
                        color_scheme="gray",
                        align="center",
                    ),
                    rx.cond(
                        signed_in,
                        link_button(rx.icon("list", size=16), "Go to My tasks", href=routes.HOME),
                        link_button("Log in", href=routes.LOGIN),
                    ),
                    padding="40px 16px",
                    max_width="520px",
                ),
                padding_top=["16px", "40px"],
            ),
        ),
        min_height="100vh",
        background="var(--gray-2)",
        id="not-found",
    )
