"""Tokens: balance, packages, history with a chart. The payment pages are `ui/payment.py`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import reflex as rx

from vgen_app import clock
from vgen_app.adapters.payments import get_payments
from vgen_app.db import run_db
from vgen_app.models import LedgerAction, LedgerEntry
from vgen_app.services import billing, ledger, tokens_view
from vgen_app.ui import format, routes
from vgen_app.ui.layout import app_shell, error_callout, info_callout, notice_card, pager
from vgen_app.ui.purchases import PurchaseRow, purchase_row, purchases_table
from vgen_app.ui.session import SessionState, signed_in

PER_PAGE = 20

_MINUTE, _HOUR, _DAY = 60_000, 3_600_000, 86_400_000
# Tick steps of the chart's time axis (ms), the smallest giving at most _TICKS ticks is used;
# past a few weeks the ticks are the first days of months.
_STEPS = (
    _MINUTE,
    5 * _MINUTE,
    15 * _MINUTE,
    30 * _MINUTE,
    _HOUR,
    3 * _HOUR,
    6 * _HOUR,
    12 * _HOUR,
    _DAY,
    2 * _DAY,
    7 * _DAY,
)
_MONTH_STEPS = (1, 2, 3, 6, 12, 24, 60)
_TICKS = 5
_MIN_SPAN = 20 * _MINUTE  # a chart of changes made a moment ago still spans 20 minutes


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
    what: str  # the whole label, e.g. "Run of Spanish promo (attempt 2)"
    diff: str
    credit: bool  # tokens in (green), else out (red)
    after: str
    # A run's entry names its task: what comes before the name, the name, what follows, and the
    # task page ("" for a deleted task: its name without a link). No task: `what` alone.
    what_before: str = ""
    task_name: str = ""
    what_after: str = ""
    href: str = ""


# The words around a task's name in the history, by ledger action.
_RUN_LABELS = {LedgerAction.USED: "Run of ", LedgerAction.REFUND: "Refund: "}


def history_row(e: LedgerEntry, runs: dict[str, ledger.RunRef] | None = None) -> HistoryRow:
    row = HistoryRow(
        when=format.when_utc(e.created_at),
        when_iso=format.iso(e.created_at),
        what=ledger.ACTION_LABELS.get(e.action, e.action),
        diff=f"{e.diff:+,}",
        credit=e.diff > 0,
        after=f"{e.new_balance:,}",
    )
    run = (runs or {}).get(e.reference or "") if e.action in _RUN_LABELS else None
    if run is not None:
        row.what_before, row.task_name = _RUN_LABELS[e.action], run.task_name
        row.what_after = f" (attempt {run.attempt})"
        row.what = row.what_before + row.task_name + row.what_after
        row.href = "" if run.task_deleted else f"/tasks/{run.task_id}"
    return row


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _month_starts(start: int, end: int, months: int) -> list[int]:
    """The first days of every `months`-th month (UTC) between start and end."""
    day = datetime.fromtimestamp(start / 1000, UTC)
    index = (day.year * 12 + day.month - 1) // months * months
    ticks = []
    while (at := _ms(datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC))) <= end:
        if at >= start:
            ticks.append(at)
        index += months
    return ticks


def time_ticks(start: int, end: int) -> list[int]:
    """Up to _TICKS round moments (UTC) between start and end, all distinct: minutes or hours,
    midnights, or the first days of months."""
    span = max(end - start, 1)
    for step in _STEPS:
        if span / step <= _TICKS:
            first = -(-start // step) * step
            return list(range(first, end + 1, step))
    for months in _MONTH_STEPS:
        ticks = _month_starts(start, end, months)
        if len(ticks) <= _TICKS:
            return ticks
    return [start, end]


def chart_points(series: list[tuple[str, int]], now: datetime) -> dict[str, Any]:
    """The balance line on a time axis: points (epoch ms, balance) up to now, the axis' domain
    and its ticks."""
    points = [{"ms": _ms(datetime.fromisoformat(at)), "balance": b} for at, b in series]
    if not points:
        return {"points": [], "domain": [], "ticks": []}
    start, end = points[0]["ms"], max(_ms(now), points[-1]["ms"])
    points.append({"ms": end, "balance": points[-1]["balance"]})  # the balance holds until now
    if end - start < _MIN_SPAN:  # changes a moment ago: in the middle of a short stretch
        pad = (_MIN_SPAN - (end - start)) // 2
        start, end = start - pad, end + pad
    return {"points": points, "domain": [start, end], "ticks": time_ticks(start, end)}


class TokensState(SessionState):
    PAGE: ClassVar[str] = routes.TOKENS
    history_rows: list[HistoryRow] = []
    history_page: int = 1
    history_pages: int = 1
    history_total: int = 0
    chart: list[dict[str, Any]] = []  # {"ms": epoch ms, "balance": tokens}, oldest first
    chart_domain: list[int] = []
    chart_ticks: list[int] = []
    buy_error: str = ""
    buying: str = ""
    tokens_notice: str = ""
    back: str = ""  # the app page the user came to buy from (/tokens?back=…), "" if none
    purchase_rows: list[PurchaseRow] = []

    @rx.var
    def package_cards(self) -> list[PackageCard]:
        return [PackageCard(p.id, f"{p.tokens:,}", p.price_label) for p in billing.packages()]

    def _show(self, view: tokens_view.TokensView) -> None:
        page = view.history
        self.history_page, self.history_pages, self.history_total = (
            page.page,
            page.pages,
            page.total,
        )
        self.history_rows = [history_row(e, page.runs) for e in page.entries]
        if view.purchases is not None:
            self.purchase_rows = [purchase_row(p) for p in view.purchases]
        if view.series is not None:  # up to 500 points: not re-read for each history page
            chart = chart_points(view.series, clock.now())
            self.chart, self.chart_domain = chart["points"], chart["domain"]
            self.chart_ticks = chart["ticks"]

    async def _load_for_session(self, with_chart: bool = True) -> bool:
        """The session check and the page's read in one database call; False without a
        session (the caller sends the tab to the login page)."""
        user, view = await self.current_user_and(
            tokens_view.tokens_view, self.history_page, PER_PAGE, with_chart
        )
        if user is None or view is None:
            return False
        self._show(view)
        return True

    @rx.event
    async def on_load(self):
        params = self.page_url().query_parameters
        self._put(
            buy_error="",
            buying="",
            tokens_notice="Payment canceled: nothing was charged."
            if params.get("canceled")
            else "",
            back=billing.return_path(params.get("back")) or "",
            history_page=1,
        )
        if not await self._load_for_session():
            return self._login_redirect()
        return None

    async def _on_change(self):
        """A payment, a run or a refund (here or elsewhere): the history and the chart show it."""
        await self._load_for_session()

    @rx.event
    async def go_to_page(self, page: int):
        self.history_page = int(page)
        if not await self._load_for_session(with_chart=False):
            return self._login_redirect()
        return None

    @rx.event
    @signed_in
    async def buy(self, package_id: str):
        self.buy_error = ""
        self.buying = package_id
        yield
        try:
            row = await run_db(
                billing.start_checkout, self._user_id, package_id, get_payments(), self.back
            )
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
                aria_label="Buy " + pkg.tokens + " tokens for " + pkg.price,
                id="buy-" + pkg.id.to(str),
            ),
            spacing="2",
            align="start",
            width="100%",
        ),
        flex="1",
        min_width="180px",
    )


# A column a phone (< 30em) does without (the chart above shows the balance).
_WIDE = ["none", "table-cell"]


def _what(row: rx.Var) -> rx.Component:
    """What a change was; a run's names its task, linked to the task's page (unless deleted)."""
    return rx.cond(
        row.task_name != "",
        rx.text(
            row.what_before,
            rx.cond(
                row.href != "",
                rx.link(row.task_name, href=row.href, weight="medium"),
                rx.text(row.task_name, as_="span", weight="medium"),
            ),
            row.what_after,
            as_="span",
        ),
        rx.text(row.what, as_="span"),
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
                        rx.table.column_header_cell("Balance after", justify="end", display=_WIDE),
                    )
                ),
                rx.table.body(
                    rx.foreach(
                        TokensState.history_rows,
                        lambda row: rx.table.row(
                            rx.table.cell(format.local_time(row.when_iso)),
                            rx.table.cell(_what(row), overflow_wrap="anywhere"),
                            rx.table.cell(
                                rx.text(
                                    row.diff,
                                    color_scheme=rx.cond(row.credit, "green", "red"),
                                    weight="medium",
                                ),
                                justify="end",
                            ),
                            rx.table.cell(row.after, justify="end", display=_WIDE),
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


# The chart's labels in the browser's locale and time zone. Ticks at midnight UTC (steps of a
# day or more) are labelled with their date, the first of a month with month and year.
_TIME_TICK = """(v) => {
  const d = new Date(v);
  if (v % 86400000 !== 0) return d.toLocaleTimeString([], {hour: '2-digit', minute: '2-digit'});
  if (d.getUTCDate() === 1) {
    return d.toLocaleDateString([], {month: 'short', year: 'numeric', timeZone: 'UTC'});
  }
  return d.toLocaleDateString([], {month: 'short', day: 'numeric', timeZone: 'UTC'});
}"""
_TIME_LABEL = (
    "(v) => new Date(v).toLocaleString([], "
    "{year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit'})"
)
_THOUSANDS = "(v) => Number(v).toLocaleString()"
_TOOLTIP_VALUE = "(v) => [Number(v).toLocaleString() + ' tokens', 'Balance']"


def _chart() -> rx.Component:
    return rx.cond(
        TokensState.chart.length() > 0,
        rx.card(
            rx.heading("Balance over time", size="2", weight="medium", as_="h3"),
            rx.recharts.area_chart(
                rx.recharts.cartesian_grid(stroke_dasharray="3 3", vertical=False),
                rx.recharts.area(
                    data_key="balance",
                    name="Balance",
                    type_="stepAfter",
                    stroke="var(--accent-9)",
                    fill="var(--accent-4)",
                    is_animation_active=False,
                ),
                rx.recharts.x_axis(
                    data_key="ms",
                    type_="number",
                    scale="time",
                    domain=TokensState.chart_domain,
                    ticks=TokensState.chart_ticks,
                    tick_formatter=_TIME_TICK,
                    tick={"fontSize": 11},
                ),
                rx.recharts.y_axis(tick={"fontSize": 11}, width=64, tick_formatter=_THOUSANDS),
                rx.recharts.graphing_tooltip(
                    separator=": ",
                    custom_attrs={
                        "labelFormatter": rx.Var(_TIME_LABEL),
                        "formatter": rx.Var(_TOOLTIP_VALUE),
                    },
                ),
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
            rx.cond(
                TokensState.back != "",
                rx.link("← Back to your task", href=TokensState.back, size="2", id="tokens-back"),
            ),
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
                spacing="3",
                wrap="wrap",
                width="100%",
            ),
            rx.heading("Purchases", size="4", as_="h2"),
            purchases_table(TokensState.purchase_rows),
            rx.heading("History", size="4", as_="h2"),
            _chart(),
            _history(),
            spacing="4",
            width="100%",
        )
    )
