"""Stripe webhook: verify the signature on the raw body, apply each event exactly once, answer
fast. Handled: checkout.session.completed / async_payment_succeeded (credit),
async_payment_failed / expired (the purchase failed / expired), charge.refunded (the refunded
share taken back), charge.dispute.created (taken back) and charge.dispute.closed (given back if
won). Everything else, and events about no checkout of ours, are acknowledged and ignored."""

from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from vgen_app.adapters.payments import BadSignature, PaymentsUnavailable, get_payments
from vgen_app.api.limits import BodyTooLarge, read_body
from vgen_app.db import run_db
from vgen_app.services import billing, metrics

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])
log = logging.getLogger("vgen.webhooks")

MAX_BODY = 512 * 1024  # Stripe events are a few KB


class WebhookAck(BaseModel):
    received: Literal[True]
    status: Literal["credited", "applied", "duplicate", "ignored"]
    detail: str


class WebhookError(BaseModel):
    error: str


# The route reads the raw body itself (the signature is over the exact bytes), so FastAPI cannot
# infer its request schema: it is described here, for the docs and for schemathesis.
STRIPE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A Stripe event, as Stripe sends it (`checkout.session.completed` and "
    "`checkout.session.async_payment_succeeded` with a paid Checkout Session credit tokens; "
    "`checkout.session.async_payment_failed` and `checkout.session.expired` mark the purchase; "
    "`charge.refunded`, `charge.dispute.created` and `charge.dispute.closed` take tokens back "
    "or give them back).",
    "required": ["id", "type", "data"],
    "properties": {
        "id": {"type": "string", "examples": ["evt_1"]},
        "object": {"type": "string", "enum": ["event"]},
        "type": {
            "type": "string",
            "examples": ["checkout.session.completed", "charge.refunded", "charge.dispute.created"],
        },
        "data": {
            "type": "object",
            "required": ["object"],
            "properties": {
                "object": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "object": {"type": "string"},
                        "mode": {"type": "string"},
                        "payment_status": {"type": "string"},
                        "amount_total": {"type": "integer"},
                        "currency": {"type": "string"},
                        "metadata": {"type": "object"},
                        "payment_intent": {"type": "string"},
                        "amount": {"type": "integer"},
                        "amount_refunded": {"type": "integer"},
                        "charge": {"type": "string"},
                        "status": {"type": "string"},
                    },
                }
            },
        },
    },
}

OPENAPI_EXTRA: dict[str, Any] = {
    "parameters": [
        {
            "name": "Stripe-Signature",
            "in": "header",
            "required": True,
            "description": "Stripe's `t=…,v1=…` signature over the raw body.",
            "schema": {"type": "string"},
        }
    ],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": STRIPE_EVENT_SCHEMA}},
    },
}

_ERROR = {"model": WebhookError}


@router.post(
    "/stripe",
    response_model=WebhookAck,
    summary="Stripe webhook",
    openapi_extra=OPENAPI_EXTRA,
    responses={
        400: {**_ERROR, "description": "No or bad signature, or a body that is not UTF-8."},
        413: {
            "description": f"Body over {MAX_BODY} bytes (or over API_MAX_BODY_BYTES).",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        503: {
            **_ERROR,
            "description": "Stripe could not be asked which checkout a charge or dispute "
            "belongs to, or our database is unreachable (api/errors.py): nothing changed, "
            "Stripe delivers the event again later.",
        },
    },
)
async def stripe_webhook(request: Request) -> JSONResponse:
    """200 for credited, applied, duplicate and ignored events (so Stripe stops retrying); 400 for
    a bad signature or body; 503 if Stripe could not be asked about a charge or our database is
    unreachable (api/errors.py; then Stripe retries, which is safe).
    A request without a signature is refused before its body is read; a body over MAX_BODY is
    refused by its declared length, or as soon as a body sent without one passes it."""
    signature = request.headers.get("stripe-signature")
    if not signature:
        metrics.webhook(None, "refused")
        return JSONResponse({"error": "invalid signature"}, status_code=400)
    try:
        payload = await read_body(request, MAX_BODY)
    except BodyTooLarge:
        metrics.webhook(None, "refused")
        return JSONResponse({"error": "body too large"}, status_code=413)
    secret = get_payments().webhook_secret
    try:
        result = await run_db(billing.handle_webhook, payload, signature, secret)
    except BadSignature as exc:
        log.warning("stripe webhook refused: %s", exc.message)
        return JSONResponse({"error": "invalid signature"}, status_code=400)
    except UnicodeDecodeError:
        return JSONResponse({"error": "body is not UTF-8"}, status_code=400)
    except billing.MalformedEvent as exc:
        log.warning("stripe webhook refused: malformed event (%s)", exc.problem)
        return JSONResponse({"error": exc.message}, status_code=400)
    except PaymentsUnavailable as exc:
        log.error("stripe webhook deferred: Stripe could not be asked (%s)", exc)
        return JSONResponse({"error": "payment provider unavailable, retry"}, status_code=503)
    return JSONResponse({"received": True, "status": result.status, "detail": result.detail})
