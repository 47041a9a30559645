"""A small fake of Stripe's API for the real `stripe` library: Checkout Sessions (create, retrieve
with `expand`, list by `payment_intent`), charges (retrieve), and what happens after a checkout
(paid, failed, expired, refunded, disputed), with the signed events Stripe would send about it.

Install it on pytest-httpserver (`fake.install(httpserver)`) and point `StripePayments` at
`httpserver.url_for("/")`. Every request is recorded in `requests` as (method, path, params) with
the form or query parameters flattened the way Stripe's library sends them (`metadata[user_id]`,
`expand[0]`). `down = True` answers every call with a 500 (Stripe unreachable).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from typing import Any

import stripe
from werkzeug.wrappers import Request, Response

SECRET = "whsec_test_secret_for_tests"


class FakeStripe:
    def __init__(self, secret: str = SECRET) -> None:
        self.secret = secret
        self.lock = threading.Lock()
        self.sessions: dict[str, dict[str, Any]] = {}
        self.charges: dict[str, dict[str, Any]] = {}
        self.disputes: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.down = False
        self._ids = itertools.count(1)

    def install(self, httpserver: Any) -> None:
        httpserver.expect_request(re.compile(r"^/v1/.*")).respond_with_handler(self.handle)

    def _id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._ids)}"

    # --- the API -----------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        params = request.form if request.method == "POST" else request.args
        flat = {k: v for k, v in params.items()}
        with self.lock:
            self.requests.append((request.method, request.path, flat))
            if self.down:
                return self._error(500, "api_error", "Stripe is down (fake)")
            if request.method == "POST" and request.path == "/v1/checkout/sessions":
                return self._json(self._create(flat))
            if request.method == "GET" and request.path == "/v1/checkout/sessions":
                found = [
                    self._view(s)
                    for s in self.sessions.values()
                    if s["payment_intent"] == flat.get("payment_intent")
                ]
                return self._json(
                    {"object": "list", "data": found[:1], "has_more": False, "url": request.path}
                )
            if m := re.fullmatch(r"/v1/checkout/sessions/([^/]+)", request.path):
                session = self.sessions.get(m[1])
                if session is None:
                    return self._error(
                        404, "invalid_request_error", f"No such checkout.session: {m[1]}"
                    )
                expand = {v for k, v in flat.items() if k.startswith("expand[")}
                return self._json(self._expanded(session, expand))
            if m := re.fullmatch(r"/v1/charges/([^/]+)", request.path):
                charge = self.charges.get(m[1])
                if charge is None:
                    return self._error(404, "invalid_request_error", f"No such charge: {m[1]}")
                return self._json(self._charge_view(charge))
        return self._error(404, "invalid_request_error", f"Unrecognized request URL {request.path}")

    @staticmethod
    def _json(body: dict[str, Any], status: int = 200) -> Response:
        return Response(json.dumps(body), status=status, content_type="application/json")

    def _error(self, status: int, kind: str, message: str) -> Response:
        code = {"error": {"type": kind, "message": message}}
        if status == 404:
            code["error"]["code"] = "resource_missing"
        return self._json(code, status)

    def _create(self, form: dict[str, str]) -> dict[str, Any]:
        session_id = self._id("cs")
        amount = int(form["line_items[0][price_data][unit_amount]"])
        session = {
            "id": session_id,
            "object": "checkout.session",
            "url": f"https://checkout.stripe.test/c/pay/{session_id}",
            "mode": form.get("mode"),
            "status": "open",
            "payment_status": "unpaid",
            "amount_subtotal": amount,
            "amount_total": amount,
            "currency": form["line_items[0][price_data][currency]"],
            "client_reference_id": form.get("client_reference_id"),
            "customer_email": form.get("customer_email"),
            "metadata": {
                k[len("metadata[") : -1]: v for k, v in form.items() if k.startswith("metadata[")
            },
            "payment_intent": None,
            "success_url": form.get("success_url"),
            "line_items": [
                {
                    "id": self._id("li"),
                    "object": "item",
                    "quantity": int(form["line_items[0][quantity]"]),
                    "amount_subtotal": amount,
                    "amount_total": amount,
                    "currency": form["line_items[0][price_data][currency]"],
                    "description": form.get("line_items[0][price_data][product_data][name]"),
                }
            ],
        }
        self.sessions[session_id] = session
        return self._view(session)

    @staticmethod
    def _view(session: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in session.items() if k != "line_items"}

    def _expanded(self, session: dict[str, Any], expand: set[str]) -> dict[str, Any]:
        view = self._view(session)
        if "line_items" in expand:
            view["line_items"] = {
                "object": "list",
                "data": session["line_items"],
                "has_more": False,
                "url": f"/v1/checkout/sessions/{session['id']}/line_items",
            }
        intent = session["payment_intent"]
        if intent and "payment_intent.latest_charge" in expand:
            charge = next(c for c in self.charges.values() if c["payment_intent"] == intent)
            view["payment_intent"] = {
                "id": intent,
                "object": "payment_intent",
                "status": "succeeded",
                "latest_charge": self._charge_view(charge),
            }
        return view

    @staticmethod
    def _charge_view(charge: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in charge.items() if k != "refund_list"}

    # --- what happens to a checkout ----------------------------------------------------------

    def pay(self, session_id: str, amount_total: int | None = None) -> str:
        """The customer pays: the session completes, a PaymentIntent and its charge exist."""
        with self.lock:
            session = self.sessions[session_id]
            total = session["amount_total"] if amount_total is None else amount_total
            intent, charge_id = self._id("pi"), self._id("ch")
            session.update(
                status="complete", payment_status="paid", amount_total=total, payment_intent=intent
            )
            self.charges[charge_id] = {
                "id": charge_id,
                "object": "charge",
                "amount": total,
                "amount_refunded": 0,
                "currency": session["currency"],
                "payment_intent": intent,
                "paid": True,
                "refunded": False,
                "receipt_url": f"https://pay.stripe.test/receipts/{charge_id}",
                "refund_list": [],
            }
            return intent

    def expire(self, session_id: str) -> None:
        with self.lock:
            self.sessions[session_id].update(status="expired")

    def charge_of(self, session_id: str) -> dict[str, Any]:
        intent = self.sessions[session_id]["payment_intent"]
        return next(c for c in self.charges.values() if c["payment_intent"] == intent)

    def refund(self, session_id: str, amount: int) -> tuple[str, dict[str, Any]]:
        """A refund of `amount` cents: its id, and the charge as it now is."""
        with self.lock:
            charge = self.charge_of(session_id)
            refund_id = self._id("re")
            charge["amount_refunded"] = min(charge["amount"], charge["amount_refunded"] + amount)
            charge["refunded"] = charge["amount_refunded"] == charge["amount"]
            charge["refund_list"].insert(
                0,
                {
                    "id": refund_id,
                    "object": "refund",
                    "amount": amount,
                    "charge": charge["id"],
                    "created": int(time.time()) + len(charge["refund_list"]),
                    "status": "succeeded",
                },
            )
            return refund_id, json.loads(json.dumps(charge))

    def dispute(self, session_id: str, status: str = "needs_response") -> dict[str, Any]:
        """The charge's dispute (one per charge), now in this status."""
        with self.lock:
            charge = self.charge_of(session_id)
            dispute_id = "dp_" + charge["id"].removeprefix("ch_")
            dispute = self.disputes.setdefault(
                dispute_id,
                {
                    "id": dispute_id,
                    "object": "dispute",
                    "amount": charge["amount"],
                    "currency": charge["currency"],
                    "charge": charge["id"],
                    "payment_intent": charge["payment_intent"],
                    "reason": "fraudulent",
                },
            )
            dispute["status"] = status
            return dict(dispute)

    # --- the events Stripe sends ---------------------------------------------------------------

    def event(
        self, event_type: str, obj: dict[str, Any], event_id: str | None = None
    ) -> tuple[str, str]:
        """A signed event (payload, Stripe-Signature header)."""
        payload = json.dumps(
            {
                "id": event_id or self._id("evt"),
                "object": "event",
                "api_version": "2025-01-27.acacia",
                "created": int(time.time()),
                "type": event_type,
                "data": {"object": obj},
            }
        )
        return payload, stripe.WebhookSignature.generate_signature_header(payload, self.secret)

    def session_event(self, event_type: str, session_id: str) -> tuple[str, str]:
        """checkout.session.completed / async_payment_* / expired, as the session now is."""
        return self.event(event_type, self._view(self.sessions[session_id]))

    def refunded_event(
        self, charge: dict[str, Any], with_refunds: bool = False, with_intent: bool = True
    ) -> tuple[str, str]:
        """charge.refunded. Since API version 2022-11-15 a charge no longer lists its refunds
        (`with_refunds` for an older account)."""
        obj = {k: v for k, v in charge.items() if k != "refund_list"}
        if with_refunds:
            obj["refunds"] = {"object": "list", "data": charge["refund_list"], "has_more": False}
        if not with_intent:
            obj["payment_intent"] = None
        return self.event("charge.refunded", obj)

    def dispute_event(self, dispute: dict[str, Any], with_intent: bool = True) -> tuple[str, str]:
        closed = dispute["status"] in ("won", "lost", "warning_closed")
        obj = dict(dispute)
        if not with_intent:
            obj["payment_intent"] = None
        return self.event("charge.dispute.closed" if closed else "charge.dispute.created", obj)
