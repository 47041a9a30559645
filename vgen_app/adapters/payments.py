"""Payments: Stripe Checkout when STRIPE_SECRET_KEY is set, else the built-in test checkout.

Both hand out a checkout URL, and both end in a signed `checkout.session.completed` event that goes
through the one webhook handler (`services.billing.handle_webhook`). Stripe is also asked about a
checkout when its webhook is late (the success page's `fulfill`) and which checkout a charge or
dispute belongs to when the event does not say; the test checkout signs refund and dispute events
for its receipt page's test-only buttons, through the same handler.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import stripe

from vgen_app.config import Settings, TokenPackage, get_settings


class PaymentsUnavailable(Exception):
    """Stripe could not be asked (network, 5xx, rate limit, auth): try again later."""


class BadSignature(Exception):
    """No, a wrong or a stale Stripe signature over the raw body (or no secret to check it)."""

    def __init__(self, message: str = "bad signature") -> None:
        super().__init__(message)
        self.message = message


def verify_event(
    payload: bytes | str, sig_header: str | None, secret: str | None
) -> dict[str, Any]:
    """Check the Stripe signature on the raw body (and its age); return the event as a dict.
    The one signature check: the webhook route and the test checkout both end here."""
    if not secret:
        raise BadSignature("no webhook secret configured")
    text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
    try:
        # verify_header checks the age only when given a tolerance (Stripe's default: 5 minutes).
        stripe.WebhookSignature.verify_header(
            text, sig_header or "", secret, tolerance=stripe.Webhook.DEFAULT_TOLERANCE
        )
    except (stripe.SignatureVerificationError, ValueError, IndexError) as exc:
        raise BadSignature(str(exc)) from exc
    try:
        event = json.loads(text)
    except ValueError as exc:
        raise BadSignature("body is not JSON") from exc
    if not isinstance(event, dict):
        raise BadSignature("event is not an object")
    return event


@dataclass(frozen=True)
class CheckoutRequest:
    user_id: str
    email: str
    package: TokenPackage
    success_url: str  # may contain Stripe's {CHECKOUT_SESSION_ID} template
    cancel_url: str


@dataclass(frozen=True)
class CreatedCheckout:
    id: str
    url: str
    provider: str


class PaymentProvider(Protocol):
    name: str
    webhook_secret: str | None

    def create_checkout(self, request: CheckoutRequest) -> CreatedCheckout:
        """Start a hosted checkout (an HTTP call for Stripe: run it off the event loop)."""

    def retrieve_checkout(self, session_id: str) -> dict[str, Any] | None:
        """The Checkout Session as Stripe has it now (line items and the PaymentIntent's latest
        charge expanded), None if it does not know it (PaymentsUnavailable if it cannot say)."""

    def checkout_of_payment_intent(self, payment_intent: str) -> str | None:
        """The id of the Checkout Session that made this PaymentIntent, None if none did."""

    def payment_intent_of_charge(self, charge_id: str) -> str | None:
        """The PaymentIntent of a charge, None if the charge is unknown or has none."""


def _metadata(request: CheckoutRequest) -> dict[str, str]:
    return {
        "user_id": request.user_id,
        "package_id": request.package.id,
        "tokens": str(request.package.tokens),
    }


def _id_of(value: Any) -> str | None:
    """An expandable field's id: the string itself, or the expanded object's `id`."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class CheckoutOptions:
    """The Checkout switches (STRIPE_ALLOW_PROMOTION_CODES, STRIPE_AUTOMATIC_TAX,
    STRIPE_INVOICE_CREATION): sent to Stripe only when on."""

    promotion_codes: bool = False
    automatic_tax: bool = False
    invoice_creation: bool = False

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.promotion_codes:
            out["allow_promotion_codes"] = True
        if self.automatic_tax:
            out["automatic_tax"] = {"enabled": True}
        if self.invoice_creation:
            out["invoice_creation"] = {"enabled": True}
        return out


class StripePayments:
    name = "stripe"

    def __init__(
        self,
        secret_key: str,
        webhook_secret: str | None,
        api_base: str | None = None,
        options: CheckoutOptions | None = None,
    ):
        self.webhook_secret = webhook_secret
        self.options = options or CheckoutOptions()
        base = {"api": api_base.rstrip("/")} if api_base else None
        self.client = stripe.StripeClient(secret_key, base_addresses=base, max_network_retries=2)

    def create_checkout(self, request: CheckoutRequest) -> CreatedCheckout:
        package = request.package
        session = self.client.v1.checkout.sessions.create(
            params={
                **self.options.params(),  # type: ignore[typeddict-item]
                "mode": "payment",
                "line_items": [
                    {
                        "quantity": 1,
                        "price_data": {
                            "currency": package.currency,
                            "unit_amount": package.price_cents,
                            "product_data": {"name": f"{package.tokens:,} vgen tokens"},
                        },
                    }
                ],
                "customer_email": request.email,
                "client_reference_id": request.user_id,
                "metadata": _metadata(request),
                "payment_intent_data": {"metadata": _metadata(request)},
                "success_url": request.success_url,
                "cancel_url": request.cancel_url,
            }
        )
        return CreatedCheckout(id=session.id, url=str(session.url), provider=self.name)

    def _ask(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        """One Stripe call: None for an object Stripe does not know (404), PaymentsUnavailable
        for anything else that went wrong."""
        try:
            return call(*args, **kwargs)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return None
            raise PaymentsUnavailable(str(exc)) from exc
        except stripe.StripeError as exc:
            raise PaymentsUnavailable(str(exc)) from exc

    def retrieve_checkout(self, session_id: str) -> dict[str, Any] | None:
        session = self._ask(
            self.client.v1.checkout.sessions.retrieve,
            session_id,
            params={"expand": ["line_items", "payment_intent.latest_charge"]},
        )
        return None if session is None else session.to_dict(for_json=True)

    def checkout_of_payment_intent(self, payment_intent: str) -> str | None:
        found = self._ask(
            self.client.v1.checkout.sessions.list,
            params={"payment_intent": payment_intent, "limit": 1},
        )
        data = [] if found is None else found.to_dict(for_json=True).get("data") or []
        return _id_of(data[0]) if data and isinstance(data[0], dict) else None

    def payment_intent_of_charge(self, charge_id: str) -> str | None:
        charge = self._ask(self.client.v1.charges.retrieve, charge_id)
        return None if charge is None else _id_of(charge.to_dict().get("payment_intent"))


TEST_CHECKOUT_PATH = "/checkout/test"  # the test checkout's page, and its purchases' receipt


class TestCheckout:
    """A clearly labelled in-app payment page standing in for Stripe (no money moves).

    Its webhook secret is random per process unless STRIPE_WEBHOOK_SECRET is set: the test page
    signs its events in-process, so nobody outside can forge one.
    """

    name = "test"
    __test__ = False  # not a pytest test class

    def __init__(self, app_url: str, webhook_secret: str | None = None):
        self.app_url = app_url
        self.webhook_secret = webhook_secret or f"whsec_test_{secrets.token_hex(24)}"

    @staticmethod
    def receipt_path(session_id: str) -> str:
        """The receipt of a paid test checkout: its own page (which then shows the receipt and
        the test-only refund and dispute buttons)."""
        return f"{TEST_CHECKOUT_PATH}?session_id={session_id}"

    def create_checkout(self, request: CheckoutRequest) -> CreatedCheckout:
        session_id = f"cs_test_{secrets.token_urlsafe(18)}"
        return CreatedCheckout(
            id=session_id,
            url=f"{self.app_url}{self.receipt_path(session_id)}",
            provider=self.name,
        )

    # Nothing to ask: a test checkout exists only here, and its events carry what they need.
    def retrieve_checkout(self, session_id: str) -> dict[str, Any] | None:
        return None

    def checkout_of_payment_intent(self, payment_intent: str) -> str | None:
        return None

    def payment_intent_of_charge(self, charge_id: str) -> str | None:
        return None

    def signed_event(self, event_type: str, obj: dict[str, Any]) -> tuple[str, str]:
        """An event of this type about `obj`, shaped like Stripe's, and its signature header."""
        event: dict[str, Any] = {
            "id": f"evt_test_{secrets.token_urlsafe(12)}",
            "object": "event",
            "type": event_type,
            "created": int(time.time()),
            "livemode": False,
            "data": {"object": obj},
        }
        payload = json.dumps(event, separators=(",", ":"))
        header = stripe.WebhookSignature.generate_signature_header(payload, self.webhook_secret)
        return payload, header

    def completed_event(
        self,
        session_id: str,
        user_id: str,
        package: TokenPackage,
        email: str,
        payment_intent: str | None = None,
    ) -> tuple[str, str]:
        """A `checkout.session.completed` event shaped like Stripe's, and its signature header."""
        return self.signed_event(
            "checkout.session.completed",
            {
                "id": session_id,
                "object": "checkout.session",
                "mode": "payment",
                "status": "complete",
                "payment_status": "paid",
                "amount_subtotal": package.price_cents,
                "amount_total": package.price_cents,
                "currency": package.currency,
                "client_reference_id": user_id,
                "customer_email": email,
                "payment_intent": payment_intent or f"pi_test_{secrets.token_urlsafe(12)}",
                "metadata": {
                    "user_id": user_id,
                    "package_id": package.id,
                    "tokens": str(package.tokens),
                },
            },
        )

    def refunded_event(
        self, payment_intent: str, amount: int, amount_refunded: int, currency: str
    ) -> tuple[str, str]:
        """`charge.refunded` for the test charge of this PaymentIntent, now refunded up to
        `amount_refunded` (the sum of its refunds, as Stripe's Charge says), with a new refund."""
        charge_id = "ch_" + payment_intent.removeprefix("pi_")
        refund = {
            "id": f"re_test_{secrets.token_urlsafe(12)}",
            "object": "refund",
            "charge": charge_id,
            "payment_intent": payment_intent,
            "created": int(time.time()),
            "status": "succeeded",
        }
        return self.signed_event(
            "charge.refunded",
            {
                "id": charge_id,
                "object": "charge",
                "amount": amount,
                "amount_refunded": amount_refunded,
                "currency": currency,
                "payment_intent": payment_intent,
                "refunded": amount_refunded >= amount,
                "refunds": {"object": "list", "data": [refund], "has_more": False},
            },
        )

    def dispute_event(
        self, payment_intent: str, amount: int, currency: str, status: str
    ) -> tuple[str, str]:
        """`charge.dispute.created` (status `needs_response`) or `charge.dispute.closed` (`won`,
        `lost`) for the one dispute of the test charge of this PaymentIntent."""
        suffix = payment_intent.removeprefix("pi_")
        closed = status in ("won", "lost", "warning_closed")
        return self.signed_event(
            "charge.dispute.closed" if closed else "charge.dispute.created",
            {
                "id": f"dp_{suffix}",
                "object": "dispute",
                "amount": amount,
                "currency": currency,
                "charge": f"ch_{suffix}",
                "payment_intent": payment_intent,
                "status": status,
            },
        )


def checkout_options(settings: Settings) -> CheckoutOptions:
    return CheckoutOptions(
        promotion_codes=settings.stripe_allow_promotion_codes,
        automatic_tax=settings.stripe_automatic_tax,
        invoice_creation=settings.stripe_invoice_creation,
    )


def make_payments(settings: Settings) -> PaymentProvider:
    if settings.stripe_secret_key:
        return StripePayments(
            settings.stripe_secret_key,
            settings.stripe_webhook_secret,
            settings.stripe_api_base,
            checkout_options(settings),
        )
    return TestCheckout(settings.app_url, settings.stripe_webhook_secret)


@lru_cache(maxsize=4)
def _payments_for(key: tuple[object, ...]) -> PaymentProvider:
    return make_payments(get_settings())


def get_payments() -> PaymentProvider:
    """One provider per configuration and process (the test checkout's secret stays stable)."""
    s = get_settings()
    return _payments_for(
        (
            s.stripe_secret_key,
            s.stripe_webhook_secret,
            s.stripe_api_base,
            s.app_url,
            checkout_options(s),
        )
    )
