"""After a checkout: the success page (waits for the webhook, fulfils from Stripe when it is late),
and the test checkout, whose page is also the test purchase's receipt."""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

import reflex as rx

from vgen_app.adapters.payments import TestCheckout, get_payments
from vgen_app.config import money_label
from vgen_app.db import run_db
from vgen_app.models import CheckoutSession, DisputeStatus
from vgen_app.services import billing, sandbox
from vgen_app.ui import routes
from vgen_app.ui.layout import app_shell, error_callout, link_button, page_card
from vgen_app.ui.session import SessionState, signed_in

log = logging.getLogger("vgen.ui.payment")

CONFIRM_TIMEOUT_S = 90
# While the webhook is late, Stripe is asked for the Checkout Session (`billing.fulfill`) on the
# first poll and then every this many polls (one a second).
FULFILL_EVERY = 5
ENDED = {"failed", "expired"}  # checkouts that ended unpaid


class PaymentSuccessState(SessionState):
    """Waits for the payment to be credited (by the webhook, or by `fulfill` when the webhook is
    late) and shows the new balance; says so when the payment failed or the checkout expired."""

    PAGE: ClassVar[str] = routes.TOKENS_SUCCESS
    payment_status: str = "waiting"  # waiting | paid | failed | expired | unknown | slow
    payment_tokens: str = ""
    receipt_url: str = ""  # Stripe's receipt, or the test checkout's receipt page
    back: str = ""  # the app page the user came to buy from, "" if none

    @rx.var
    def receipt_external(self) -> bool:
        return self.receipt_url.startswith("http")

    @rx.event
    @signed_in
    async def on_load(self):
        self.payment_status, self.payment_tokens, self.receipt_url = "waiting", "", ""
        self.back = _back_of(self)
        return PaymentSuccessState.wait_for_credit

    @rx.event(background=True)
    async def wait_for_credit(self):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONFIRM_TIMEOUT_S
        polls = 0
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
            remote = row.provider != TestCheckout.name
            if row.status == "paid" and remote and not row.receipt_url and polls == 0:
                # Credited by the webhook: Stripe is asked once more, for the receipt link.
                await _fulfill(session_id)
                row = await run_db(billing.checkout_for_user, session_id, user.user_id) or row
            if row.status == "paid" or row.status in ENDED:
                async with self:
                    if await self.current_user() is None:  # refreshes the header's balance too
                        return self._login_redirect()
                    self.payment_status, self.payment_tokens = str(row.status), f"{row.tokens:,}"
                    self.receipt_url = billing.receipt_url(row) or ""
                return
            if remote and polls % FULFILL_EVERY == 0 and await _fulfill(session_id):
                polls += 1
                continue  # credited (or ended) from Stripe's answer: read it back at once
            polls += 1
            if loop.time() > deadline:
                async with self:
                    self.payment_status = "slow"
                return
            await asyncio.sleep(1)


async def _fulfill(session_id: str) -> bool:
    """The webhook is late: ask Stripe (`billing.fulfill`). True if that changed the checkout."""
    try:
        result = await run_db(billing.fulfill, session_id)
    except billing.PaymentsUnavailable as exc:
        log.warning("checkout %s: Stripe could not be asked (%s); waiting on", session_id, exc)
        return False
    return result.status in ("credited", "applied")


def _back_of(state: SessionState) -> str:
    """The page's `back` query parameter if it is an app path to return to, else ""."""
    return billing.return_path(state.router.url.query_parameters.get("back")) or ""


# What a test purchase's receipt says it is.
RECEIPT_STATUS = {
    "paid": "Paid",
    "partly_refunded": "Partly refunded",
    "refunded": "Refunded",
    "disputed": "Disputed",
}


class TestCheckoutState(SessionState):
    """The test checkout's page; once paid, the test purchase's receipt, with test-only Refund
    and Dispute buttons that send signed events through the webhook handler."""

    PAGE: ClassVar[str] = routes.TEST_CHECKOUT
    checkout_tokens: str = ""
    checkout_price: str = ""
    checkout_error: str = ""
    checkout_paid: bool = False
    paying: bool = False
    # Where Cancel goes: the Tokens page, with the page the user came to buy from (as the
    # provider's cancel_url would carry it).
    cancel_href: str = f"{routes.TOKENS}?canceled=1"
    # The receipt, once paid.
    receipt_status: str = ""  # a PurchaseStatus value, "" until paid
    receipt_refunded: str = ""  # "$2.50", "" if nothing was refunded
    receipt_taken_back: str = ""  # "2,500", "" if nothing was taken back
    receipt_shortfall: str = ""  # "1,000", "" if none
    can_refund: bool = False
    can_dispute: bool = False
    can_win: bool = False
    acting: str = ""  # the test button at work: refund-full | refund-part | dispute | won
    _checkout_id: str = ""

    def _session_id(self) -> str:
        return self.router.url.query_parameters.get("session_id", "")

    def _show(self, row: CheckoutSession) -> None:
        purchase = billing.purchase_of(row)
        status = str(purchase.status)
        self.checkout_paid = row.status == "paid"
        self.receipt_status = status if self.checkout_paid else ""
        refunded = purchase.refunded_cents
        self.receipt_refunded = money_label(refunded, row.currency) if refunded else ""
        taken = purchase.tokens_taken_back
        self.receipt_taken_back = f"{taken:,}" if taken else ""
        self.receipt_shortfall = f"{purchase.shortfall:,}" if purchase.shortfall else ""
        self.can_refund = status in ("paid", "partly_refunded")
        self.can_dispute = self.can_refund and row.dispute_status is None
        self.can_win = row.dispute_status == DisputeStatus.OPEN

    async def _reload(self) -> None:
        row = await run_db(billing.checkout_for_user, self._checkout_id, self._user_id)
        if row is not None:
            self._show(row)

    @rx.event
    @signed_in
    async def on_load(self):
        self.checkout_error, self.checkout_tokens, self.checkout_price = "", "", ""
        self.paying, self.acting, self._checkout_id = False, "", ""
        self.cancel_href = f"{routes.TOKENS}?canceled=1{billing.return_query(_back_of(self))}"
        row = await run_db(billing.checkout_for_user, self._session_id(), self._user_id)
        if row is None or row.provider != "test":
            self.checkout_error = "This checkout does not exist."
            return
        self._checkout_id = row.id
        self.checkout_tokens = f"{row.tokens:,}"
        self.checkout_price = billing.package(row.package_id).price_label
        self._show(row)

    async def _on_change(self):
        """Paid, refunded or disputed (here, in another tab): the receipt shows it."""
        if self._checkout_id:
            await self._reload()

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

    async def _act(self, acting: str, call, *args):
        provider = get_payments()
        if not isinstance(provider, TestCheckout):
            self.checkout_error = "The test checkout is off: real payments are configured."
            return
        self.checkout_error, self.acting = "", acting
        yield
        try:
            await run_db(call, self._checkout_id, self._user_id, provider, *args)
        except billing.BillingError as exc:
            self.checkout_error = exc.message
        self.acting = ""
        await self._reload()

    @rx.event
    @signed_in
    async def refund(self, part: str):
        """Test only: refund the rest ("full") or a quarter more ("partial")."""
        full = part == "full"
        async for update in self._act(
            "refund-full" if full else "refund-part", sandbox.refund, full
        ):
            yield update

    @rx.event
    @signed_in
    async def dispute(self, outcome: str):
        """Test only: open a dispute ("created"), or close the open one as won ("won")."""
        won = outcome == "won"
        async for update in self._act("won" if won else "dispute", sandbox.dispute, won):
            yield update


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


def _receipt_link() -> rx.Component:
    return rx.cond(
        PaymentSuccessState.receipt_url != "",
        rx.link(
            "View the receipt",
            href=PaymentSuccessState.receipt_url,
            is_external=PaymentSuccessState.receipt_external,
            id="payment-receipt",
        ),
    )


def payment_success_page() -> rx.Component:
    paid = _outcome(
        "Payment received",
        rx.text(PaymentSuccessState.payment_tokens, " tokens were added.", id="payment-credited"),
        rx.text("Your balance: ", rx.text.strong(SessionState.balance_label), " tokens"),
        _receipt_link(),
    )
    failed = _outcome(
        "Payment failed",
        rx.text(
            "The payment did not go through, so no tokens were added and nothing was charged. "
            "You can try again from the Tokens page.",
            color_scheme="gray",
            align="center",
            id="payment-failed",
        ),
    )
    expired = _outcome(
        "Checkout expired",
        rx.text(
            "This checkout expired before it was paid: nothing was charged. "
            "Start a new one from the Tokens page.",
            color_scheme="gray",
            align="center",
            id="payment-expired",
        ),
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
                ("failed", rx.vstack(rx.icon("circle_x", size=36, color="var(--red-9)"), failed)),
                ("expired", expired),
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
                        rx.cond(
                            TestCheckoutState.checkout_paid,
                            _test_receipt(),
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
                        ),
                        spacing="4",
                    ),
                ),
                spacing="4",
            ),
            max_width="480px",
        )
    )


def _receipt_item(label: str, value: rx.Var, suffix: str = "", **props) -> rx.Component:
    return rx.cond(
        value != "",
        rx.data_list.item(rx.data_list.label(label), rx.data_list.value(value, suffix, **props)),
    )


def _test_button(label: str, event: rx.EventSpec, acting: str, enabled: rx.Var, id_: str):
    return rx.button(
        label,
        on_click=event,
        loading=TestCheckoutState.acting == acting,
        disabled=~enabled | (TestCheckoutState.acting != ""),
        variant="soft",
        color_scheme="orange",
        id=id_,
    )


def _test_receipt() -> rx.Component:
    """The test purchase's receipt, and the test-only buttons that send refund and dispute
    events through the webhook handler."""
    return rx.vstack(
        rx.heading("Receipt", size="4", as_="h2"),
        rx.data_list.root(
            rx.data_list.item(
                rx.data_list.label("Status"),
                rx.data_list.value(
                    rx.match(
                        TestCheckoutState.receipt_status,
                        *RECEIPT_STATUS.items(),
                        TestCheckoutState.receipt_status,
                    ),
                    id="test-receipt-status",
                ),
            ),
            _receipt_item("Refunded", TestCheckoutState.receipt_refunded, id="test-refunded"),
            _receipt_item(
                "Taken back", TestCheckoutState.receipt_taken_back, " tokens", id="test-taken-back"
            ),
            _receipt_item(
                "Not taken back (already spent)",
                TestCheckoutState.receipt_shortfall,
                " tokens",
                id="test-shortfall",
            ),
        ),
        rx.callout(
            "Test only: these buttons send the refund and dispute events Stripe would send, "
            "signed, through the same webhook handler. No money moves.",
            icon="flask_conical",
            color_scheme="orange",
            size="1",
        ),
        rx.flex(
            _test_button(
                "Refund in full (test)",
                TestCheckoutState.refund("full"),
                "refund-full",
                TestCheckoutState.can_refund,
                "test-refund-full",
            ),
            _test_button(
                "Refund a quarter (test)",
                TestCheckoutState.refund("partial"),
                "refund-part",
                TestCheckoutState.can_refund,
                "test-refund-partial",
            ),
            _test_button(
                "Open a dispute (test)",
                TestCheckoutState.dispute("created"),
                "dispute",
                TestCheckoutState.can_dispute,
                "test-dispute",
            ),
            _test_button(
                "Close the dispute as won (test)",
                TestCheckoutState.dispute("won"),
                "won",
                TestCheckoutState.can_win,
                "test-dispute-won",
            ),
            spacing="2",
            wrap="wrap",
        ),
        link_button("Back to tokens", href=routes.TOKENS, variant="soft", color_scheme="gray"),
        spacing="3",
        width="100%",
    )
