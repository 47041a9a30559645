"""Stripe webhook: verify the signature on the raw body, credit exactly once, answer fast."""

from __future__ import annotations

import logging
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from vgen_app.adapters.payments import get_payments
from vgen_app.api.limits import BodyTooLarge, read_body
from vgen_app.db import run_db
from vgen_app.services import billing

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])
log = logging.getLogger("vgen.webhooks")

MAX_BODY = 512 * 1024  # Stripe events are a few KB


class WebhookAck(BaseModel):
    received: Literal[True]
    status: Literal["credited", "duplicate", "ignored"]
    detail: str


class WebhookError(BaseModel):
    error: str


# The route reads the raw body itself (the signature is over the exact bytes), so FastAPI cannot
# infer its request schema: it is described here, for the docs and for schemathesis.
STRIPE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A Stripe event, as Stripe sends it (only `checkout.session.completed` and "
    "`checkout.session.async_payment_succeeded` with a paid Checkout Session credit tokens).",
    "required": ["id", "type", "data"],
    "properties": {
        "id": {"type": "string", "examples": ["evt_1"]},
        "object": {"type": "string", "enum": ["event"]},
        "type": {"type": "string", "examples": ["checkout.session.completed"]},
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
    },
)
async def stripe_webhook(request: Request) -> JSONResponse:
    """200 for credited, duplicate and ignored events (so Stripe stops retrying); 400 for a bad
    signature or body; 5xx only if our database fails (then Stripe retries, which is safe).
    A request without a signature is refused before its body is read; a body over MAX_BODY is
    refused by its declared length, or as soon as a body sent without one passes it."""
    signature = request.headers.get("stripe-signature")
    if not signature:
        return JSONResponse({"error": "invalid signature"}, status_code=400)
    try:
        payload = await read_body(request, MAX_BODY)
    except BodyTooLarge:
        return JSONResponse({"error": "body too large"}, status_code=413)
    secret = get_payments().webhook_secret
    try:
        event = billing.verify_event(payload, signature, secret)
        problem = malformed(event)
    except billing.BadSignature as exc:
        log.warning("stripe webhook refused: %s", exc.message)
        return JSONResponse({"error": "invalid signature"}, status_code=400)
    except UnicodeDecodeError:
        return JSONResponse({"error": "body is not UTF-8"}, status_code=400)
    except RecursionError:  # signed, but nested too deeply for the JSON parser
        problem = "nested too deeply"
    if problem:
        # Signed, so it came from whoever holds the secret; Stripe never sends these shapes.
        log.warning("stripe webhook refused: malformed event (%s)", problem)
        return JSONResponse({"error": f"malformed event: {problem}"}, status_code=400)
    result = await run_db(billing.handle_webhook, payload, signature, secret)
    return JSONResponse({"received": True, "status": result.status, "detail": result.detail})


def _unstorable(value: Any, most: int) -> bool:
    text = str(value or "")
    return len(text) > most or "\x00" in text  # PostgreSQL refuses NUL in text


def malformed(event: dict[str, Any]) -> str | None:
    """Why a verified event would break the billing code (None if it would not): a `type` that is
    not a string, a crediting event whose `data` is not an object, or ids it would store that are
    not strings, do not fit their columns or hold a NUL byte. Only what `billing.handle_webhook` reads is checked,
    so any event Stripe sends (other types, nulls, extra fields) passes and is handled or ignored."""
    event_type = event.get("type")
    if not isinstance(event_type, str):
        return "type"
    if event_type not in billing.CREDITING_EVENTS:
        return None  # ignored whatever it holds
    data = event.get("data")
    if data and not isinstance(data, dict):
        return "data"
    obj = (data or {}).get("object")
    if not isinstance(obj, dict):
        return None  # not a Checkout Session: ignored
    event_id, session_id = event.get("id"), obj.get("id")
    if not isinstance(event_id, str | None) or _unstorable(event_id, 10_000):
        return "id"  # Stripe's ids are strings
    if not isinstance(session_id, str | None) or _unstorable(session_id, 255):
        return "data.object.id"
    metadata = obj.get("metadata")
    if isinstance(metadata, dict) and _unstorable(metadata.get("user_id"), 32):
        return "data.object.metadata.user_id"  # ours are user ids (32 at most)
    return None
