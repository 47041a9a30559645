"""Tokens: balance, packages, history with a chart. The payment pages are `ui/payment.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import reflex as rx

from vgen_app.adapters.payments import get_payments
from vgen_app.db import run_db
from vgen_app.models import LedgerEntry
from vgen_app.services import billing, ledger
from vgen_app.ui import format
from vgen_app.ui.layout import app_shell, error_callout, info_callout, notice_card, pager
from vgen_app.ui.session import SessionState, signed_in

PER_PAGE = 20


@dataclass
class PackageCard:
    id: str
    tokens: str
    price: str


@dataclass
class HistoryRow:
    """One balance change, as the history table shows it."""

    when: str
    when_iso: str  # UTC, ISO 8601: the page shows it in the browser's time zone
    what: str
    diff: str
    credit: bool  # tokens in (green), else out (red)
    after: str


def history_row(e: LedgerEntry) -> HistoryRow:
    return HistoryRow(
        when=format.when_utc(e.created_at),
        when_iso=format.iso(e.created_at),
        what=ledger.ACTION_LABELS.get(e.action, e.action),
        diff=f"{e.diff:+,}",
        credit=e.diff > 0,
        after=f"{e.new_balance:,}",
    )


class TokensState(SessionState):
    history_rows: list[HistoryRow] = []
    history_page: int = 1
    history_pages: int = 1
    history_total: int = 0
    chart: list[dict[str, Any]] = []
    buy_error: str = ""
    buying: str = ""
    tokens_notice: str = ""

    @rx.var
    def package_cards(self) -> list[PackageCard]:
        return [PackageCard(p.id, f"{p.tokens:,}", p.price_label) for p in billing.packages()]

    async def _load(self, user_id: str, with_chart: bool = True) -> None:
        page = await run_db(ledger.history, user_id, self.history_page, PER_PAGE)
        self.history_page, self.history_pages, self.history_total = (
            page.page,
            page.pages,
            page.total,
        )
        self.history_rows = [history_row(e) for e in page.entries]
        if with_chart:  # up to 500 points: not re-read and re-sent for each history page
            series = await run_db(ledger.balance_series, user_id)
            self.chart = [{"t": at[:16].replace("T", " "), "balance": b} for at, b in series]

    @rx.event
    @signed_in
    async def on_load(self):
        self.buy_error, self.buying = "", ""
        self.tokens_notice = (
            "Payment canceled: nothing was charged."
            if self.router.url.query_parameters.get("canceled")
            else ""
        )
        self.history_page = 1
        await self._load(self._user_id)

    @rx.event
    @signed_in
    async def go_to_page(self, page: int):
        self.history_page = int(page)
        await self._load(self._user_id, with_chart=False)

    @rx.event
    @signed_in
    async def buy(self, package_id: str):
        self.buy_error = ""
        self.buying = package_id
        yield
        try:
            row = await run_db(billing.start_checkout, self._user_id, package_id, get_payments())
        except billing.BillingError as exc:
            self.buy_error, self.buying = exc.message, ""
            return
        except Exception:  # noqa: BLE001 - the provider is down: say so, keep the page usable
            self.buy_error = "The payment provider is not reachable right now. Please try again."
            self.buying = ""
            return
        yield format.full_redirect(row.url)


# --- the page ------------------------------------------------------------------------------


def _package_card(pkg: rx.Var) -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.text(pkg.tokens, " tokens", size="5", weight="bold"),
            rx.text(pkg.price, size="3", color_scheme="gray"),
            rx.button(
                "Buy",
                on_click=TokensState.buy(pkg.id),
                loading=TokensState.buying == pkg.id,
                disabled=TokensState.buying != "",
                width="100%",
                id="buy-" + pkg.id.to(str),
            ),
            spacing="2",
            align="start",
            width="100%",
        ),
        flex="1",
        min_width="180px",
    )


def _history() -> rx.Component:
    return rx.cond(
        TokensState.history_total == 0,
        notice_card(
            rx.icon("receipt", size=28, color="var(--gray-9)"),
            rx.text("No balance changes yet. Buy a package to get started.", color_scheme="gray"),
        ),
        rx.vstack(
            rx.table.root(
                rx.table.header(
                    rx.table.row(
                        rx.table.column_header_cell("When"),
                        rx.table.column_header_cell("What"),
                        rx.table.column_header_cell("Change", justify="end"),
                        rx.table.column_header_cell("Balance after", justify="end"),
                    )
                ),
                rx.table.body(
                    rx.foreach(
                        TokensState.history_rows,
                        lambda row: rx.table.row(
                            rx.table.cell(row.when),
                            rx.table.cell(row.what),
                            rx.table.cell(
                                rx.text(
                                    row.diff,
                                    color_scheme=rx.cond(row.credit, "green", "red"),
                                    weight="medium",
                                ),
                                justify="end",
                            ),
                            rx.table.cell(row.after, justify="end"),
                        ),
                    )
                ),
                variant="surface",
                width="100%",
                id="history",
            ),
            pager(TokensState.history_page, TokensState.history_pages, TokensState.go_to_page),
            width="100%",
            spacing="3",
        ),
    )


def _chart() -> rx.Component:
    return rx.cond(
        TokensState.chart.length() > 0,
        rx.card(
            rx.text("Balance over time", size="2", weight="medium"),
            rx.recharts.area_chart(
                rx.recharts.cartesian_grid(stroke_dasharray="3 3", vertical=False),
                rx.recharts.area(
                    data_key="balance",
                    type_="linear",
                    stroke="var(--accent-9)",
                    fill="var(--accent-4)",
                    is_animation_active=False,
                ),
                rx.recharts.x_axis(data_key="t", tick={"fontSize": 11}),
                rx.recharts.y_axis(tick={"fontSize": 11}, width=70),
                rx.recharts.graphing_tooltip(),
                data=TokensState.chart,
                width="100%",
                height=220,
            ),
            width="100%",
            id="balance-chart",
        ),
    )


def tokens_page() -> rx.Component:
    return app_shell(
        rx.vstack(
            rx.heading("Tokens", size="7", as_="h1"),
            info_callout(TokensState.tokens_notice),
            error_callout(TokensState.buy_error),
            rx.card(
                rx.vstack(
                    rx.text("Your balance", size="2", color_scheme="gray"),
                    rx.heading(
                        SessionState.balance_label,
                        " tokens",
                        size="8",
                        as_="p",
                        id="tokens-balance",
                    ),
                    spacing="1",
                ),
                width="100%",
            ),
            rx.heading("Buy tokens", size="4", as_="h2"),
            rx.text(
                "One-off payments, no subscription. Tokens never expire.",
                size="2",
                color_scheme="gray",
            ),
            rx.flex(
                rx.foreach(TokensState.package_cards, _package_card),
                gap="3",
                wrap="wrap",
                width="100%",
            ),
            rx.heading("History", size="4", as_="h2"),
            _chart(),
            _history(),
            spacing="4",
            width="100%",
        )
    )
