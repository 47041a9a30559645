"""What a Stripe event must look like before the billing code reads it: the handled event types,
the object each one is about, and the shape check (`malformed`) that runs after the signature."""

from __future__ import annotations

from typing import Any

from vgen_app.services.errors import BillingError
from vgen_app.services.payment_events import (
    CHARGE_EVENTS,
    CLOSING_EVENTS,
    DISPUTE_CLOSED,
    DISPUTE_CREATED,
    REFUNDED,
)

CREDITING_EVENTS = {"checkout.session.completed", "checkout.session.async_payment_succeeded"}
SESSION_EVENTS = CREDITING_EVENTS | set(CLOSING_EVENTS)
HANDLED_EVENTS = SESSION_EVENTS | CHARGE_EVENTS

OBJECT_OF = {  # the `object` each handled event's data.object is
    **dict.fromkeys(SESSION_EVENTS, "checkout.session"),
    REFUNDED: "charge",
    DISPUTE_CREATED: "dispute",
    DISPUTE_CLOSED: "dispute",
}


class MalformedEvent(BillingError):
    """Signed, so it came from whoever holds the secret, but Stripe never sends this shape."""

    def __init__(self, problem: str) -> None:
        super().__init__("malformed_event", f"malformed event: {problem}")
        self.problem = problem


def _unstorable(value: Any, most: int) -> bool:
    text = str(value or "")
    return len(text) > most or "\x00" in text  # PostgreSQL refuses NUL in text


# What the handlers store of each handled event's object: field -> (longest, may be expanded).
STORED: dict[str, dict[str, tuple[int, bool]]] = {
    "checkout.session": {"id": (255, False), "payment_intent": (255, True)},
    "charge": {"id": (200, False), "payment_intent": (255, True), "receipt_url": (2000, False)},
    "dispute": {"id": (255, False), "payment_intent": (255, True), "charge": (255, True)},
}


def _bad(value: Any, most: int, expandable: bool) -> bool:
    """Not storable: neither None nor a string (or, where Stripe may expand it, an object with
    one as its id) that fits its column and holds no NUL."""
    if expandable and isinstance(value, dict):
        value = value.get("id")
    return not isinstance(value, str | None) or _unstorable(value, most)


def malformed(event: dict[str, Any]) -> str | None:
    """Why a verified event would break the billing code (None if it would not): a `type` that is
    not a string, a handled event whose `data` is not an object, or ids it would store that are
    not strings, do not fit their columns or hold a NUL byte. Only what `handle_webhook` reads is
    checked, so any event Stripe sends (other types, nulls, extra fields) passes and is handled
    or ignored."""
    event_type = event.get("type")
    if not isinstance(event_type, str):
        return "type"
    if event_type not in HANDLED_EVENTS:
        return None  # ignored whatever it holds
    data = event.get("data")
    if data and not isinstance(data, dict):
        return "data"
    obj = (data or {}).get("object")
    if not isinstance(obj, dict):
        return None  # not the object the event is about: ignored
    event_id = event.get("id")
    if not isinstance(event_id, str | None) or _unstorable(event_id, 10_000):
        return "id"  # Stripe's ids are strings
    for name, (most, expandable) in STORED[OBJECT_OF[event_type]].items():
        if _bad(obj.get(name), most, expandable):
            return f"data.object.{name}"
    refunds = obj.get("refunds")
    listed = refunds.get("data") if isinstance(refunds, dict) else None
    for item in listed if isinstance(listed, list) else []:
        if isinstance(item, dict) and _bad(item.get("id"), 255, False):
            return "data.object.refunds"
    metadata = obj.get("metadata")
    if (
        event_type in SESSION_EVENTS
        and isinstance(metadata, dict)
        and _unstorable(metadata.get("user_id"), 32)
    ):
        return "data.object.metadata.user_id"  # ours are user ids (32 at most)
    return None
