"""After a checkout: the success page that waits for the webhook, and the test checkout."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import reflex as rx

from vgen_app.adapters.payments import TestCheckout, get_payments
from vgen_app.db import run_db
from vgen_app.services import billing
from vgen_app.ui import routes
from vgen_app.ui.layout import app_shell, error_callout, link_button, page_card
from vgen_app.ui.session import SessionState, signed_in

CONFIRM_TIMEOUT_S = 90


class PaymentSuccessState(SessionState):
    """Waits for the webhook (the only thing that credits) and shows the new balance."""

    PAGE: ClassVar[str] = routes.TOKENS_SUCCESS
    payment_status: str = "waiting"  # waiting | paid | unknown | slow
    payment_tokens: str = ""
    back: str = ""  # the app page the user came to buy from, "" if none

    @rx.event
    @signed_in
    async def on_load(self):
        self.payment_status, self.payment_tokens = "waiting", ""
        self.back = _back_of(self)
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


def _back_of(state: SessionState) -> str:
    """The page's `back` query parameter if it is an app path to return to, else ""."""
    return billing.return_path(state.router.url.query_parameters.get("back")) or ""


class TestCheckoutState(SessionState):
    PAGE: ClassVar[str] = routes.TEST_CHECKOUT
    checkout_tokens: str = ""
    checkout_price: str = ""
    checkout_error: str = ""
    checkout_paid: bool = False
    paying: bool = False
    # Where Cancel goes: the Tokens page, with the page the user came to buy from (as the
    # provider's cancel_url would carry it).
    cancel_href: str = f"{routes.TOKENS}?canceled=1"

    def _session_id(self) -> str:
        return self.router.url.query_parameters.get("session_id", "")

    @rx.event
    @signed_in
    async def on_load(self):
        self.checkout_error, self.checkout_tokens, self.checkout_price = "", "", ""
        self.paying = False
        self.cancel_href = f"{routes.TOKENS}?canceled=1{billing.return_query(_back_of(self))}"
        row = await run_db(billing.checkout_for_user, self._session_id(), self._user_id)
        if row is None or row.provider != "test":
            self.checkout_error = "This checkout does not exist."
            return
        self.checkout_tokens = f"{row.tokens:,}"
        self.checkout_price = billing.package(row.package_id).price_label
        self.checkout_paid = row.status == "paid"

    @rx.event
    @signed_in
    async def pay(self):
        provider = get_payments()
        if not isinstance(provider, TestCheckout):
            self.checkout_error = "The test checkout is off: real payments are configured."
            return
        self.paying = True
        yield
        try:
            await run_db(billing.pay_test_checkout, self._session_id(), self._user_id, provider)
        except billing.BillingError as exc:
            self.checkout_error, self.paying = exc.message, False
            return
        back = billing.return_query(_back_of(self))
        yield rx.redirect(f"{routes.TOKENS_SUCCESS}?session_id={self._session_id()}{back}")


# --- pages -------------------------------------------------------------------------------------


def _ways_back() -> rx.Component:
    """Back to the page the user came to buy from (a task) first, when there is one; else (and
    then as the second choice) back to the Tokens page."""
    return rx.cond(
        PaymentSuccessState.back != "",
        rx.flex(
            link_button("Back to your task", href=PaymentSuccessState.back, id="back-to-task"),
            link_button(
                "Back to tokens",
                href=routes.TOKENS,
                variant="soft",
                color_scheme="gray",
                id="back-to-tokens",
            ),
            spacing="3",
            wrap="wrap",
            justify="center",
        ),
        link_button("Back to tokens", href=routes.TOKENS, id="back-to-tokens"),
    )


def _outcome(title: str, *body: rx.Component, back: bool = True, **props) -> rx.Component:
    """One state of the success page: a heading, what happened, the way back."""
    return rx.vstack(
        rx.heading(title, size="5", as_="h1"),
        *body,
        *([_ways_back()] if back else []),
        align="center",
        spacing="3",
        **props,
    )


def payment_success_page() -> rx.Component:
    paid = _outcome(
        "Payment received",
        rx.text(PaymentSuccessState.payment_tokens, " tokens were added.", id="payment-credited"),
        rx.text("Your balance: ", rx.text.strong(SessionState.balance_label), " tokens"),
    )
    unknown = _outcome(
        "Payment not found",
        rx.text(
            "We could not find this payment in your account.", color_scheme="gray", align="center"
        ),
    )
    slow = _outcome(
        "Still confirming…",
        rx.text(
            "The payment provider has not confirmed yet. Your tokens will "
            "appear on the Tokens page as soon as it does.",
            color_scheme="gray",
            align="center",
        ),
    )
    waiting = _outcome(
        "Confirming your payment…",
        rx.text("This usually takes a few seconds. No need to reload.", color_scheme="gray"),
        rx.progress(duration="30s", width="240px", max_width="100%", aria_label="Confirming"),
        back=False,
        id="payment-waiting",
    )
    return app_shell(
        page_card(
            rx.match(
                PaymentSuccessState.payment_status,
                (
                    "paid",
                    rx.vstack(
                        rx.icon("circle_check", size=36, color="var(--green-9)"),
                        paid,
                        align="center",
                    ),
                ),
                ("unknown", unknown),
                ("slow", slow),
                rx.vstack(rx.spinner(size="3"), waiting, align="center"),
            ),
            max_width="460px",
        )
    )


def test_checkout_page() -> rx.Component:
    return app_shell(
        page_card(
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
                                rx.data_list.value(TestCheckoutState.checkout_tokens, " tokens"),
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
                            link_button(
                                "Cancel",
                                href=TestCheckoutState.cancel_href,
                                variant="soft",
                                color_scheme="gray",
                            ),
                            spacing="3",
                        ),
                        spacing="4",
                    ),
                ),
                spacing="4",
            ),
            max_width="480px",
        )
    )
