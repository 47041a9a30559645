"""Payments: Stripe Checkout when STRIPE_SECRET_KEY is set, else the built-in test checkout.

Both hand out a checkout URL, and both end in a signed `checkout.session.completed` event that goes
through the one webhook handler (`services.billing.handle_webhook`).
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


def _metadata(request: CheckoutRequest) -> dict[str, str]:
    return {
        "user_id": request.user_id,
        "package_id": request.package.id,
        "tokens": str(request.package.tokens),
    }


class StripePayments:
    name = "stripe"

    def __init__(self, secret_key: str, webhook_secret: str | None, api_base: str | None = None):
        self.webhook_secret = webhook_secret
        base = {"api": api_base.rstrip("/")} if api_base else None
        self.client = stripe.StripeClient(secret_key, base_addresses=base, max_network_retries=2)

    def create_checkout(self, request: CheckoutRequest) -> CreatedCheckout:
        package = request.package
        session = self.client.v1.checkout.sessions.create(
            params={
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

    def create_checkout(self, request: CheckoutRequest) -> CreatedCheckout:
        session_id = f"cs_test_{secrets.token_urlsafe(18)}"
        return CreatedCheckout(
            id=session_id,
            url=f"{self.app_url}/checkout/test?session_id={session_id}",
            provider=self.name,
        )

    def completed_event(
        self, session_id: str, user_id: str, package: TokenPackage, email: str
    ) -> tuple[str, str]:
        """A `checkout.session.completed` event shaped like Stripe's, and its signature header."""
        event: dict[str, Any] = {
            "id": f"evt_test_{secrets.token_urlsafe(12)}",
            "object": "event",
            "type": "checkout.session.completed",
            "created": int(time.time()),
            "livemode": False,
            "data": {
                "object": {
                    "id": session_id,
                    "object": "checkout.session",
                    "mode": "payment",
                    "status": "complete",
                    "payment_status": "paid",
                    "amount_total": package.price_cents,
                    "currency": package.currency,
                    "client_reference_id": user_id,
                    "customer_email": email,
                    "metadata": {
                        "user_id": user_id,
                        "package_id": package.id,
                        "tokens": str(package.tokens),
                    },
                }
            },
        }
        payload = json.dumps(event, separators=(",", ":"))
        header = stripe.WebhookSignature.generate_signature_header(payload, self.webhook_secret)
        return payload, header


def make_payments(settings: Settings) -> PaymentProvider:
    if settings.stripe_secret_key:
        return StripePayments(
            settings.stripe_secret_key, settings.stripe_webhook_secret, settings.stripe_api_base
        )
    return TestCheckout(settings.app_url, settings.stripe_webhook_secret)


@lru_cache(maxsize=4)
def _payments_for(key: tuple[str | None, ...]) -> PaymentProvider:
    return make_payments(get_settings())


def get_payments() -> PaymentProvider:
    """One provider per configuration and process (the test checkout's secret stays stable)."""
    s = get_settings()
    return _payments_for(
        (s.stripe_secret_key, s.stripe_webhook_secret, s.stripe_api_base, s.app_url)
    )
