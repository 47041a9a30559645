"""Page frames: the centred card of the auth pages and the app shell."""

from __future__ import annotations

import reflex as rx

from vgen_app.config import get_settings
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
    return rx.el.main(
        rx.center(
            rx.vstack(
                brand(),
                rx.card(
                    rx.vstack(
                        rx.heading(title, size="6", as_="h1"),
                        rx.text(subtitle, color_scheme="gray", size="2")
                        if subtitle
                        else rx.fragment(),
                        *children,
                        spacing="4",
                        width="100%",
                    ),
                    size="3",
                    width="100%",
                ),
                footer(),
                spacing="5",
                align="center",
                width="100%",
                max_width="420px",
            ),
            min_height="100vh",
            padding=["32px 12px", "16px"],
            # On a phone the card starts near the top (above the on-screen keyboard).
            align_items=["flex-start", "center"],
            background="var(--gray-2)",
        )
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


def label(text: str, html_for: str, **props) -> rx.Component:
    """A <label for=…> in the theme's text style (`rx.text(as_="label")` drops `html_for`)."""
    return rx.text(
        rx.el.label(text, html_for=html_for),
        as_child=True,
        size=props.pop("size", "2"),
        weight=props.pop("weight", "medium"),
        **props,
    )


def field(label_text: str, name: str, type_: str = "text", **props) -> rx.Component:
    return rx.vstack(
        label(label_text, name),
        rx.input(name=name, id=name, type=type_, size="3", width="100%", **props),
        spacing="1",
        width="100%",
    )


# Below this width (Reflex's "sm" breakpoint, 48em = 768 px) the header folds its links, the
# e-mail and Log out into a menu. Responsive lists are [phone, >= 30em, >= 48em].
PHONE_ONLY = ["flex", "flex", "none"]
WIDE_ONLY = ["none", "none", "flex"]

# The browser's path without the trailing slash the production server adds ("/" stays "/").
_NORMALIZE = rx.vars.FunctionStringVar.create("((p) => (p || '/').replace(/\\/+$/, '') || '/')")


def current_path() -> rx.Var:
    return _NORMALIZE.call(SessionState.router.url.path.to(str)).to(str)


# Each nav entry: label, href, the path prefixes of its pages (shown as "this section").
_NAV = (
    ("My tasks", routes.HOME, ("/tasks/",)),
    ("Tokens", routes.TOKENS, ("/tokens/", "/checkout/")),
    ("Account", routes.ACCOUNT, ("/account/",)),
)


def _where(href: str, prefixes: tuple[str, ...]) -> tuple[rx.Var, rx.Var]:
    """(on this very page, in this section) for a nav entry."""
    path = current_path()
    here = path == href
    inside = here
    for prefix in prefixes:
        inside = inside | path.startswith(prefix)
    return here, inside


def _aria_current(here: rx.Var, inside: rx.Var) -> rx.Var:
    return rx.cond(here, "page", rx.cond(inside, "true", None))


def _nav_link(label: str, href: str, prefixes: tuple[str, ...]) -> rx.Component:
    here, inside = _where(href, prefixes)
    return rx.link(
        label,
        href=href,
        size="2",
        weight=rx.cond(inside, "bold", "medium"),
        underline="none",
        color_scheme=rx.cond(inside, "gray", "indigo"),
        high_contrast=inside,
        aria_current=_aria_current(here, inside),
        padding_y="6px",
        border_bottom=rx.cond(inside, "2px solid var(--accent-9)", "2px solid transparent"),
        _hover={"border_bottom_color": "var(--accent-8)"},
    )


def _balance_link() -> rx.Component:
    """The header's balance: a link to the Tokens page."""
    return rx.link(
        rx.badge(
            rx.icon("coins", size=14, aria_hidden="true"),
            rx.text(SessionState.balance_label, " tokens", id="header-balance"),
            size="2",
            color_scheme="amber",
            variant="soft",
            high_contrast=True,
            white_space="nowrap",
        ),
        href=routes.TOKENS,
        underline="none",
        aria_label="Balance: " + SessionState.balance_label + " tokens. Buy tokens",
        title="Buy tokens",
        border_radius="var(--radius-2)",
        id="balance-link",
    )


def _menu_link(label: str, href: str, prefixes: tuple[str, ...], id_: str) -> rx.Component:
    here, inside = _where(href, prefixes)
    return rx.menu.item(
        rx.link(
            rx.cond(inside, rx.icon("check", size=14), rx.box(width="14px")),
            label,
            href=href,
            underline="none",
            weight=rx.cond(inside, "bold", "regular"),
            color_scheme="gray",
            high_contrast=True,
            aria_current=_aria_current(here, inside),
            _hover={},
        ),
        as_child=True,
        id=id_,
    )


def _phone_menu() -> rx.Component:
    """The header's links, the e-mail and Log out on a narrow screen."""
    return rx.menu.root(
        rx.menu.trigger(
            rx.icon_button(
                rx.icon("menu", size=20),
                variant="soft",
                color_scheme="gray",
                size="2",
                aria_label="Menu",
                id="menu-button",
            ),
        ),
        rx.menu.content(
            rx.box(
                rx.text("Signed in as", size="1", color_scheme="gray"),
                rx.text(SessionState.user_email, size="2", weight="medium", id="menu-email"),
                padding="4px 12px 8px",
                max_width="calc(100vw - 32px)",
                overflow_wrap="anywhere",
            ),
            rx.menu.separator(),
            *[
                _menu_link(label, href, prefixes, f"menu-{slug}")
                for (label, href, prefixes), slug in zip(
                    _NAV, ("tasks", "tokens", "account"), strict=True
                )
            ],
            rx.menu.separator(),
            rx.menu.item(
                rx.icon("log_out", size=14),
                "Log out",
                on_select=SessionState.logout,
                id="menu-logout",
            ),
            align="end",
            min_width="220px",
        ),
        # Not modal: a modal menu hides the rest of the page with aria-hidden while its links
        # stay focusable underneath; Escape, Tab or a click outside close it either way.
        modal=False,
    )


def _bar(*children: rx.Component) -> rx.Component:
    """The strip at the top of every app page (the banner landmark)."""
    return rx.el.header(
        rx.hstack(
            *children,
            align="center",
            spacing="4",
            width="100%",
            max_width="1100px",
            margin="0 auto",
        ),
        padding=["10px 12px", "10px 16px", "12px 20px"],
        border_bottom="1px solid var(--gray-5)",
        background="var(--color-panel-solid)",
        position="sticky",
        top="0",
        z_index="10",
    )


def header() -> rx.Component:
    return _bar(
        brand(),
        rx.el.nav(
            rx.hstack(
                *[_nav_link(label, href, prefixes) for label, href, prefixes in _NAV],
                spacing="4",
                align="center",
            ),
            aria_label="Main",
            display=WIDE_ONLY,
        ),
        rx.spacer(),
        _balance_link(),
        rx.text(
            SessionState.user_email,
            size="2",
            color_scheme="gray",
            id="header-email",
            title=SessionState.user_email,
            max_width="260px",
            overflow="hidden",
            text_overflow="ellipsis",
            white_space="nowrap",
            display=["none", "none", "block"],
        ),
        rx.button(
            rx.icon("log_out", size=14),
            "Log out",
            variant="soft",
            color_scheme="gray",
            size="2",
            on_click=SessionState.logout,
            id="logout",
            display=WIDE_ONLY,
        ),
        rx.box(_phone_menu(), display=PHONE_ONLY),
    )


def brand_bar() -> rx.Component:
    """The header of a page anyone may see, for a visitor who is not signed in."""
    return _bar(
        brand(),
        rx.spacer(),
        rx.link("Log in", href=routes.LOGIN, size="2", weight="medium"),
        link_button("Sign up", href=routes.SIGNUP, size="2"),
    )


def spread(*children: rx.Component) -> rx.Component:
    """A row whose first and last items go to the two ends (wrapping on a phone)."""
    return rx.hstack(
        *children, align="center", justify="between", spacing="3", wrap="wrap", width="100%"
    )


def link_button(*children: rx.Component | str, href: str | rx.Var, **props) -> rx.Component:
    """A link that looks like a button: one element, one Tab stop (a button inside a link is
    two). `props` go to the button (variant, size, id, width…)."""
    # The link's own data-accent-color wins over the button's: give it the same colour.
    color = {"color_scheme": props["color_scheme"]} if "color_scheme" in props else {}
    return rx.button(
        rx.link(*children, href=href, underline="none", _hover={}, **color),
        as_child=True,
        **props,
    )


def content(*children: rx.Component) -> rx.Component:
    """The page's main landmark, centred, with the app's padding."""
    return rx.el.main(
        *children,
        width="100%",
        max_width="1100px",
        margin="0 auto",
        padding=["16px 12px", "20px 16px", "24px 20px"],
        id="main",
    )


def footer() -> rx.Component:
    """The small print of every app page: the landing's terms and privacy pages, and support."""
    settings = get_settings()
    landing = settings.landing_url.rstrip("/")
    links = (
        ("Terms", f"{landing}/terms/"),
        ("Privacy", f"{landing}/privacy/"),
        ("Support on Telegram", settings.telegram_support_url),
    )
    return rx.el.footer(
        rx.hstack(
            *[
                rx.link(text, href=href, size="1", color_scheme="gray", high_contrast=True)
                for text, href in links
            ],
            rx.text("© vgen", size="1", color_scheme="gray"),
            spacing="4",
            wrap="wrap",
            justify="center",
        ),
        padding="20px 12px 28px",
        id="footer",
    )


def app_shell(*children: rx.Component) -> rx.Component:
    """The signed-in frame: header, the page, footer. It is in the page from the start
    (prerendered and hydrated with the defaults, hidden), and shown once the server has confirmed
    the session — a spinner until then — so confirming it only flips its display and fills in
    the data, instead of React building the whole page from nothing at that moment
    (bench/time_to_usable.py; BENCHMARKS.md note 7). Before the session delta it holds the
    defaults only, no user's data. `follow` starts when the session is confirmed, as
    the frame's own mount did when it was built then."""
    confirmed = SessionState.authenticated
    return rx.fragment(
        rx.box(
            header(),
            content(*children),
            footer(),
            min_height="100vh",
            background="var(--gray-2)",
            display=rx.cond(confirmed, "block", "none"),
        ),
        rx.cond(
            confirmed,
            # Every signed-in page follows what changes elsewhere (SessionState.follow: one per tab).
            rx.box(on_mount=SessionState.follow, display="none"),
            rx.center(rx.spinner(size="3"), min_height="100vh"),
        ),
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
