"""What a page says while its socket to the server is down, instead of Reflex's technical toast.

Reflex retries the connection by itself (with backoff) and rehydrates the page when it is back;
this notice is shown while it cannot connect and disappears once it has."""

from __future__ import annotations

import reflex as rx
from reflex_components_core.core.banner import has_connection_errors

LOST = "Lost the connection to vgen. Reconnecting… This page picks up again by itself."


def connection_notice() -> rx.Component:
    return rx.cond(
        has_connection_errors,
        rx.box(
            rx.callout(
                LOST,
                icon="wifi_off",
                color_scheme="amber",
                variant="surface",
                role="status",
                aria_live="polite",
            ),
            position="fixed",
            bottom="16px",
            left="50%",
            transform="translateX(-50%)",
            width="min(560px, calc(100vw - 32px))",
            z_index="1000",
            id="connection-lost",
        ),
    )


def overlay(stateful: bool) -> rx.Component | None:
    """For `app.app_wraps[(5, "Overlay")]`: the slot of Reflex's default connection toast."""
    return connection_notice() if stateful else None
