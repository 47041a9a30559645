"""Stripe webhook: verify the signature on the raw body, credit exactly once, answer fast."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from vgen_app.adapters.payments import get_payments
from vgen_app.db import run_db
from vgen_app.services import billing

router = APIRouter(prefix="/api/webhooks", tags=["webhooks"])
log = logging.getLogger("vgen.webhooks")

MAX_BODY = 512 * 1024  # Stripe events are a few KB


@router.post("/stripe")
async def stripe_webhook(request: Request) -> JSONResponse:
    """200 for credited, duplicate and ignored events (so Stripe stops retrying); 400 for a bad
    signature or body; 5xx only if our database fails (then Stripe retries, which is safe)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        return JSONResponse({"error": "body too large"}, status_code=413)
    payload = await request.body()
    if len(payload) > MAX_BODY:
        return JSONResponse({"error": "body too large"}, status_code=413)
    secret = get_payments().webhook_secret
    try:
        result = await run_db(
            billing.handle_webhook, payload, request.headers.get("stripe-signature"), secret
        )
    except billing.BadSignature as exc:
        log.warning("stripe webhook refused: %s", exc.message)
        return JSONResponse({"error": "invalid signature"}, status_code=400)
    except UnicodeDecodeError:
        return JSONResponse({"error": "body is not UTF-8"}, status_code=400)
    return JSONResponse({"received": True, "status": result.status, "detail": result.detail})
