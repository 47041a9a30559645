"""Tokens: balance, packages, history with a chart; the payment success page; the test checkout."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import reflex as rx

from vgen_app.adapters.payments import TestCheckout, get_payments
from vgen_app.db import run_db
from vgen_app.services import billing, ledger
from vgen_app.ui import routes
from vgen_app.ui.layout import app_shell, error_callout, info_callout, pager
from vgen_app.ui.session import SessionState

PER_PAGE = 20
CONFIRM_TIMEOUT_S = 90


def _fmt_time(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


def _full_redirect(url: str) -> rx.event.EventSpec:
    return rx.call_script(f"window.location.assign({json.dumps(url)})")


class TokensState(SessionState):
    history_rows: list[dict[str, str]] = []
    history_page: int = 1
    history_pages: int = 1
    history_total: int = 0
    chart: list[dict[str, Any]] = []
    buy_error: str = ""
    buying: str = ""
    tokens_notice: str = ""

    @rx.var
    def package_cards(self) -> list[dict[str, str]]:
        return [
            {"id": p.id, "tokens": f"{p.tokens:,}", "price": p.price_label}
            for p in billing.packages()
        ]

    async def _load(self, user_id: str, with_chart: bool = True) -> None:
        page = await run_db(ledger.history, user_id, self.history_page, PER_PAGE)
        self.history_page, self.history_pages, self.history_total = (
            page.page,
            page.pages,
            page.total,
        )
        self.history_rows = [
            {
                "when": _fmt_time(e.created_at),
                "what": ledger.ACTION_LABELS.get(e.action, e.action),
                "diff": f"{e.diff:+,}",
                "sign": "plus" if e.diff > 0 else "minus",
                "after": f"{e.new_balance:,}",
            }
            for e in page.entries
        ]
        if with_chart:  # up to 500 points: not re-read and re-sent for each history page
            series = await run_db(ledger.balance_series, user_id)
            self.chart = [{"t": at[:16].replace("T", " "), "balance": b} for at, b in series]

    @rx.event
    async def on_load(self):
        self.buy_error, self.buying = "", ""
        self.tokens_notice = (
            "Payment canceled: nothing was charged."
            if self.router.url.query_parameters.get("canceled")
            else ""
        )
        self.history_page = 1
        user = await self.current_user()
        if user is None:
            return self._login_redirect()
        await self._load(user.user_id)

    @rx.event
    async def go_to_page(self, page: int):
        user = await self.current_user()
        if user is None:
            return self._login_redirect()
        self.history_page = int(page)
        await self._load(user.user_id, with_chart=False)

    @rx.event
    async def buy(self, package_id: str):
        self.buy_error = ""
        user = await self.current_user()
        if user is None:
            yield self._login_redirect()
            return
        self.buying = package_id
        yield
        try:
            row = await run_db(billing.start_checkout, user.user_id, package_id, get_payments())
        except billing.BillingError as exc:
            self.buy_error, self.buying = exc.message, ""
            return
        except Exception:  # noqa: BLE001 - the provider is down: say so, keep the page usable
            self.buy_error = "The payment provider is not reachable right now. Please try again."
            self.buying = ""
            return
        yield _full_redirect(row.url)


class PaymentSuccessState(SessionState):
    """Waits for the webhook (the only thing that credits) and shows the new balance."""

    payment_status: str = "waiting"  # waiting | paid | unknown | slow
    payment_tokens: str = ""

    @rx.event
    async def on_load(self):
        self.payment_status, self.payment_tokens = "waiting", ""
        user = await self.current_user()
        if user is None:
            return self._login_redirect()
        return PaymentSuccessState.wait_for_credit

    @rx.event(background=True)
    async def wait_for_credit(self):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONFIRM_TIMEOUT_S
        while True:
            async with self:
                # Every poll re-checks the session: a logout elsewhere, a block or a password
                # reset while this page waits ends the wait on the login page.
                user = await self.current_user()
                session_id = self.router.url.query_parameters.get("session_id", "")
            if user is None:
                return self._login_redirect()
            row = await run_db(billing.checkout_for_user, session_id, user.user_id)
            if row is None:
                async with self:
                    self.payment_status = "unknown"
                return
            if row.status == "paid":
                async with self:
                    if await self.current_user() is None:  # refreshes the header's balance too
                        return self._login_redirect()
                    self.payment_status, self.payment_tokens = "paid", f"{row.tokens:,}"
                return
            if loop.time() > deadline:
                async with self:
                    self.payment_status = "slow"
                return
            await asyncio.sleep(1)


class TestCheckoutState(SessionState):
    checkout_tokens: str = ""
    checkout_price: str = ""
    checkout_error: str = ""
    checkout_paid: bool = False
    paying: bool = False

    def _session_id(self) -> str:
        return self.router.url.query_parameters.get("session_id", "")

    @rx.event
    async def on_load(self):
        self.checkout_error, self.checkout_tokens, self.checkout_price = "", "", ""
        self.paying = False
        user = await self.current_user()
        if user is None:
            return self._login_redirect()
        row = await run_db(billing.checkout_for_user, self._session_id(), user.user_id)
        if row is None or row.provider != "test":
            self.checkout_error = "This checkout does not exist."
            return
        self.checkout_tokens = f"{row.tokens:,}"
        self.checkout_price = billing.package(row.package_id).price_label
        self.checkout_paid = row.status == "paid"

    @rx.event
    async def pay(self):
        user = await self.current_user()
        if user is None:
            yield self._login_redirect()
            return
        provider = get_payments()
        if not isinstance(provider, TestCheckout):
            self.checkout_error = "The test checkout is off: real payments are configured."
            return
        self.paying = True
        yield
        try:
            await run_db(billing.pay_test_checkout, self._session_id(), user.user_id, provider)
        except billing.BillingError as exc:
            self.checkout_error, self.paying = exc.message, False
            return
        yield rx.redirect(f"{routes.TOKENS_SUCCESS}?session_id={self._session_id()}")


# --- pages -------------------------------------------------------------------------------------


def _package_card(pkg: rx.Var) -> rx.Component:
    return rx.card(
        rx.vstack(
            rx.text(pkg["tokens"], " tokens", size="5", weight="bold"),
            rx.text(pkg["price"], size="3", color_scheme="gray"),
            rx.button(
                "Buy",
                on_click=TokensState.buy(pkg["id"]),
                loading=TokensState.buying == pkg["id"],
                disabled=TokensState.buying != "",
                width="100%",
                id="buy-" + pkg["id"].to(str),
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
        rx.card(
            rx.vstack(
                rx.icon("receipt", size=28, color="var(--gray-9)"),
                rx.text(
                    "No balance changes yet. Buy a package to get started.", color_scheme="gray"
                ),
                align="center",
                padding="24px",
            ),
            width="100%",
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
                            rx.table.cell(row["when"]),
                            rx.table.cell(row["what"]),
                            rx.table.cell(
                                rx.text(
                                    row["diff"],
                                    color_scheme=rx.cond(row["sign"] == "plus", "green", "red"),
                                    weight="medium",
                                ),
                                justify="end",
                            ),
                            rx.table.cell(row["after"], justify="end"),
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


def payment_success_page() -> rx.Component:
    return app_shell(
        rx.center(
            rx.card(
                rx.match(
                    PaymentSuccessState.payment_status,
                    (
                        "paid",
                        rx.vstack(
                            rx.icon("circle_check", size=36, color="var(--green-9)"),
                            rx.heading("Payment received", size="5", as_="h1"),
                            rx.text(
                                PaymentSuccessState.payment_tokens,
                                " tokens were added.",
                                id="payment-credited",
                            ),
                            rx.text(
                                "Your balance: ",
                                rx.text.strong(SessionState.balance_label),
                                " tokens",
                            ),
                            rx.link(rx.button("Back to tokens"), href=routes.TOKENS),
                            align="center",
                            spacing="3",
                        ),
                    ),
                    (
                        "unknown",
                        rx.vstack(
                            rx.heading("Payment not found", size="5", as_="h1"),
                            rx.text(
                                "We could not find this payment in your account.",
                                color_scheme="gray",
                            ),
                            rx.link(rx.button("Back to tokens"), href=routes.TOKENS),
                            align="center",
                            spacing="3",
                        ),
                    ),
                    (
                        "slow",
                        rx.vstack(
                            rx.heading("Still confirming…", size="5", as_="h1"),
                            rx.text(
                                "The payment provider has not confirmed yet. Your tokens will "
                                "appear on the Tokens page as soon as it does.",
                                color_scheme="gray",
                                align="center",
                            ),
                            rx.link(rx.button("Back to tokens"), href=routes.TOKENS),
                            align="center",
                            spacing="3",
                        ),
                    ),
                    rx.vstack(
                        rx.spinner(size="3"),
                        rx.heading("Confirming your payment…", size="5", as_="h1"),
                        rx.text(
                            "This usually takes a few seconds. No need to reload.",
                            color_scheme="gray",
                        ),
                        rx.progress(duration="30s", width="240px"),
                        align="center",
                        spacing="3",
                        id="payment-waiting",
                    ),
                ),
                padding="32px",
                width="100%",
                max_width="460px",
            ),
            width="100%",
            padding_top="40px",
        )
    )


def test_checkout_page() -> rx.Component:
    return app_shell(
        rx.center(
            rx.card(
                rx.vstack(
                    rx.badge(
                        "TEST PAYMENT — no money moves",
                        color_scheme="orange",
                        size="3",
                        variant="solid",
                    ),
                    rx.heading("Test checkout", size="6", as_="h1"),
                    rx.text(
                        "Real payments are not configured on this server (no STRIPE_SECRET_KEY). "
                        "This page stands in for Stripe Checkout: paying here sends a signed "
                        "payment event through the same code that handles Stripe's.",
                        size="2",
                        color_scheme="gray",
                    ),
                    error_callout(TestCheckoutState.checkout_error),
                    rx.cond(
                        TestCheckoutState.checkout_tokens != "",
                        rx.vstack(
                            rx.data_list.root(
                                rx.data_list.item(
                                    rx.data_list.label("Package"),
                                    rx.data_list.value(
                                        TestCheckoutState.checkout_tokens, " tokens"
                                    ),
                                ),
                                rx.data_list.item(
                                    rx.data_list.label("Amount"),
                                    rx.data_list.value(TestCheckoutState.checkout_price),
                                ),
                            ),
                            rx.hstack(
                                rx.button(
                                    "Pay (test)",
                                    on_click=TestCheckoutState.pay,
                                    loading=TestCheckoutState.paying,
                                    disabled=TestCheckoutState.checkout_paid,
                                    color_scheme="orange",
                                    id="test-pay",
                                ),
                                rx.link(
                                    rx.button("Cancel", variant="soft", color_scheme="gray"),
                                    href=f"{routes.TOKENS}?canceled=1",
                                ),
                                spacing="3",
                            ),
                            spacing="4",
                        ),
                    ),
                    spacing="4",
                ),
                padding="28px",
                width="100%",
                max_width="480px",
            ),
            width="100%",
            padding_top="40px",
        )
    )
