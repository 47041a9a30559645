"""Issue H: request bodies on every /api route. Each scenario records its figure.

Malformed JSON, wrong types, 20 MiB bodies with and without a Content-Length, a huge declared
length with a tiny body -> 4xx (413 for too large), answered at once, the body not read (the app's
reads are counted by a raw ASGI driver, its memory by tracemalloc); junk webhook events, signed and
unsigned, and junk on the auth routes: never a 5xx, nothing credited or made. (Admin API body
validation is tests/api/test_admin_api.py's, webhook signatures and redeliveries
tests/services/test_billing.py's.)
"""

from __future__ import annotations

import functools
import json
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
from fastapi import FastAPI, Request
from sqlmodel import select
from starlette.testclient import TestClient

from tests.helpers import make_user
from tests.scenarios import abuse_helpers
from tests.scenarios.abuse_helpers import AUTH, BOTH, CHUNK, ORIGIN, SQLITE, MiB, sign
from vgen_app.api.limits import BodyLimitMiddleware
from vgen_app.config import reset_settings
from vgen_app.db import session_scope, with_db
from vgen_app.models import UserSession
from vgen_app.services import ledger

client = abuse_helpers.client
secrets_set = abuse_helpers.secrets_set
storage_root = abuse_helpers.storage_root


@dataclass
class Exchange:
    status: int
    headers: dict[str, str]
    body: bytes
    read: int  # request body bytes the app pulled through `receive`
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)


async def _drive(
    app: Any, method: str, path: str, headers: dict[str, str], chunks: Iterable[bytes]
) -> Exchange:
    """One request, its body fed chunk by chunk (`more_body`), the way a server streams a chunked
    upload: the app only gets what it asks for."""
    pieces = iter(chunks)
    read = 0
    sent_all = False
    done = anyio.Event()
    status, out_headers, body = 0, {}, bytearray()
    raw_path, _, query = path.partition("?")

    async def receive() -> dict[str, Any]:
        nonlocal read, sent_all
        if sent_all:
            await done.wait()
            return {"type": "http.disconnect"}
        piece = next(pieces, None)
        if piece is None:
            sent_all = True
            return {"type": "http.request", "body": b"", "more_body": False}
        read += len(piece)
        return {"type": "http.request", "body": piece, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            out_headers.update(
                {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
            )
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))
            if not message.get("more_body"):
                done.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": raw_path,
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("localhost", 3000),
        "state": {},
    }
    start = time.perf_counter()
    with anyio.fail_after(30):
        await app(scope, receive, send)
    return Exchange(status, out_headers, bytes(body), read, time.perf_counter() - start)


def drive(
    client: TestClient,
    app: Any,
    method: str,
    path: str,
    headers: dict[str, str],
    chunks: Iterable[bytes] = (),
) -> Exchange:
    """Run `_drive` on the TestClient's event loop (the app's lifespan lives there)."""
    return client.portal.call(functools.partial(_drive, app, method, path, headers, chunks))


def json_stream(total: int) -> Iterator[bytes]:
    """`total` bytes of one JSON object, made lazily in 64 KiB chunks (never whole in memory)."""
    yield b'{"userID": "'
    left = total - 14
    while left > 0:
        n = min(CHUNK, left)
        left -= n
        yield b"a" * n
    yield b'"}'


# (method, path, headers): every /api route, as an anonymous caller would reach it.
API_ROUTES = [
    ("POST", "/api/webhooks/stripe", {"Stripe-Signature": "t=1,v1=00"}),
    ("PUT", "/api/internal/balance", AUTH),
    ("PUT", "/api/internal/user", {}),
    ("POST", "/api/auth/logout", {}),
    ("GET", "/api/auth/session?ticket=x", {}),
    ("GET", "/api/runs/abc/result", {}),
    ("GET", "/api/health", {}),
]
ROUTE_IDS = [f"{m} {p.split('?')[0]}" for m, p, _ in API_ROUTES]


@SQLITE
@pytest.mark.parametrize(("method", "path", "headers"), API_ROUTES, ids=ROUTE_IDS)
def test_huge_declared_body_is_413_before_anything_is_read(
    client: TestClient, asgi_app: Any, method: str, path: str, headers: dict, figure: Any
) -> None:
    """20 MiB announced by Content-Length (and a 1 TB announcement with a 10-byte body): 413 from
    the /api body cap before the route runs — not a byte of the body is read."""
    for declared, chunks in ((20 * MiB, json_stream(20 * MiB)), (10**12, [b'{"a": 1}  '])):
        ex = drive(
            client,
            asgi_app,
            method,
            path,
            {**headers, "Content-Type": "application/json", "Content-Length": str(declared)},
            chunks,
        )
        assert ex.status == 413, ex.body
        assert ex.read == 0 and ex.json()["detail"].startswith("The body is larger than")
        assert ex.seconds < 1.0
    figure(
        f"{method} {path}: 20 MiB and 10^12 B declared -> 413, 0 B read, {ex.seconds * 1000:.0f} ms"
    )


# What each route does with 20 MiB sent chunked (no Content-Length): (status, most bytes read).
CHUNKED_EXPECTED = {
    "POST /api/webhooks/stripe": (413, 512 * 1024 + CHUNK),  # its own 512 KiB cap, while reading
    "PUT /api/internal/balance": (413, 64 * 1024 + CHUNK),  # token given: the admin 64 KiB cap
    "PUT /api/internal/user": (401, 0),  # no token: refused before the body is read
    "POST /api/auth/logout": (200, 0),  # takes no body: never reads it (no session, nothing done)
    "GET /api/auth/session": (303, 0),  # bad ticket: redirected to /login, body never read
    "GET /api/runs/abc/result": (401, 0),
    "GET /api/health": (200, 0),
}


@SQLITE
@pytest.mark.parametrize(("method", "path", "headers"), API_ROUTES, ids=ROUTE_IDS)
def test_huge_chunked_body_is_never_read_whole(
    client: TestClient, asgi_app: Any, method: str, path: str, headers: dict, figure: Any
) -> None:
    """20 MiB with no Content-Length (a chunked upload): a route that reads bodies stops at its cap
    with 413; the others answer without reading. Memory stays flat (tracemalloc peak)."""
    status, most = CHUNKED_EXPECTED[f"{method} {path.split('?')[0]}"]
    tracemalloc.start()
    try:
        ex = drive(
            client,
            asgi_app,
            method,
            path,
            {**headers, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
            json_stream(20 * MiB),
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ex.status == status, ex.body
    assert ex.read <= most
    assert peak < 4 * MiB, peak  # 20 MiB read whole would peak above 20 MiB
    assert ex.seconds < 5.0
    figure(
        f"{method} {path}: 20 MiB chunked -> {ex.status}, read {ex.read // 1024} KiB, "
        f"peak +{peak / MiB:.1f} MiB, {ex.seconds * 1000:.0f} ms"
    )


@SQLITE
@pytest.mark.parametrize("length", ["abc", "-1", "1e9", "12 34", "9" * 40, "0x10"])
def test_malformed_content_length_is_400(
    client: TestClient, asgi_app: Any, length: str, figure: Any
) -> None:
    for method, path, headers in API_ROUTES:
        ex = drive(client, asgi_app, method, path, {**headers, "Content-Length": length}, [b"{}"])
        assert ex.status == 400 and ex.read == 0, (path, ex.body)
    figure(f"Content-Length {length!r} on {len(API_ROUTES)} routes -> 400, 0 B read")


@SQLITE
def test_body_cap_is_a_setting(
    client: TestClient, asgi_app: Any, monkeypatch: pytest.MonkeyPatch, figure: Any
) -> None:
    """API_MAX_BODY_BYTES: the cap for every /api route, from the declared length or while
    streaming; Reflex's own paths (/_upload has its per-slot limit) are not under it."""
    monkeypatch.setenv("API_MAX_BODY_BYTES", "2048")
    reset_settings()
    small = drive(
        client, asgi_app, "POST", "/api/auth/logout", {"Content-Length": "2048"}, [b" " * 2048]
    )
    big = drive(
        client, asgi_app, "POST", "/api/auth/logout", {"Content-Length": "2049"}, [b" " * 2049]
    )
    assert (small.status, big.status) == (200, 413)
    assert big.json() == {"detail": "The body is larger than 2048 bytes."}
    upload = drive(client, asgi_app, "POST", "/_upload", {"Content-Length": str(10 * MiB)}, [b"x"])
    assert upload.status == 400 and b"larger than" not in upload.body  # Reflex's answer, not ours
    figure("API_MAX_BODY_BYTES=2048: 2048 B -> 200, 2049 B -> 413; /_upload not under the /api cap")


def test_the_cap_stops_a_route_that_reads_everything(figure: Any) -> None:
    """The middleware itself, around a route that reads whole bodies (none of ours does, but the
    next one might): a chunked body is cut off at the cap with 413; other paths are untouched."""
    app = FastAPI()
    app.add_middleware(BodyLimitMiddleware, max_bytes=100_000)

    @app.post("/api/echo")
    async def echo(request: Request) -> dict:
        return {"n": len(await request.body())}

    @app.post("/other/echo")
    async def other_echo(request: Request) -> dict:
        return {"n": len(await request.body())}

    async def main() -> list[Exchange]:
        def body() -> Iterator[bytes]:
            return (b"x" * CHUNK for _ in range(160))  # 10 MiB

        return [
            await _drive(app, "POST", "/api/echo", {}, body()),
            await _drive(app, "POST", "/other/echo", {}, body()),
            await _drive(app, "POST", "/api/echo", {}, [b"x" * 100_000]),
        ]

    capped, other, fits = anyio.run(main)
    assert capped.status == 413 and capped.read <= 100_000 + CHUNK
    assert capped.json() == {"detail": "The body is larger than 100000 bytes."}
    assert (other.status, other.json()) == (200, {"n": 10 * MiB})
    assert (fits.status, fits.json()) == (200, {"n": 100_000})
    figure(
        f"a route reading whole bodies behind a 100 kB cap: 10 MiB chunked -> 413 after "
        f"{capped.read // 1024} KiB; outside /api untouched ({other.read // MiB} MiB read)"
    )


# (body, outcome): "refused" is a 400, "ignored" a 200 that credits nothing.
SIGNED_JUNK = [
    (b"{", "refused"),
    (b"not json", "refused"),
    (b"[]", "refused"),
    (b'"text"', "refused"),
    (b"null", "refused"),
    (b"\xef\xbb\xbf{}", "refused"),
    (b'{"a":' * 5000 + b"1" + b"}" * 5000, "refused"),  # nested too deeply for json.loads
    (b'{"id": "evt", "type": ["checkout.session.completed"], "data": {}}', "refused"),
    (b'{"id": "evt", "type": {"a": 1}, "data": {}}', "refused"),
    (b'{"id": "evt", "type": "checkout.session.completed", "data": [1]}', "refused"),
    (b'{"id": "evt", "type": "checkout.session.completed", "data": "x"}', "refused"),
    (b'{"id": "evt", "type": "checkout.session.completed", "data": 7}', "refused"),
    (b'{"id": "evt", "type": "checkout.session.completed", "data": {"object": [1]}}', "ignored"),
    (b'{"id": "evt", "type": "checkout.session.completed", "data": {"object": "x"}}', "ignored"),
]


def _paid(obj: dict[str, Any], event_id: Any = "evt_x") -> bytes:
    base = {
        "object": "checkout.session",
        "mode": "payment",
        "payment_status": "paid",
        "amount_total": 1000,
        "currency": "usd",
    }
    event = {
        "id": event_id,
        "type": "checkout.session.completed",
        "data": {"object": {**base, **obj}},
    }
    return json.dumps(event).encode()


def _paid_junk(uid: str) -> list[tuple[bytes, str]]:
    """Paid 10k checkouts for a real user, each with one field of the wrong type or size."""
    meta = {"user_id": uid, "package_id": "10k"}
    return [
        (_paid({"id": {"a": 1}, "metadata": meta}), "refused"),
        (_paid({"id": ["cs"], "metadata": meta}), "refused"),
        (_paid({"id": "cs_" + "x" * 5000, "metadata": meta}), "refused"),  # over its 255 chars
        (_paid({"id": "cs_nul\u0000", "metadata": meta}), "refused"),  # PostgreSQL refuses NUL
        (_paid({"id": "cs_meta_list", "metadata": ["x"]}), "ignored"),
        (_paid({"id": "cs_meta_str", "metadata": "x"}), "ignored"),
        (_paid({"id": "cs_uid_long", "metadata": {**meta, "user_id": "u" * 500}}), "refused"),
        (_paid({"id": "cs_uid_nul", "metadata": {**meta, "user_id": "ab\u0000"}}), "refused"),
        (_paid({"id": "cs_uid_int", "metadata": {**meta, "user_id": 12}}), "ignored"),
        (_paid({"id": "cs_pkg_list", "metadata": {**meta, "package_id": ["10k"]}}), "ignored"),
        (_paid({"id": "cs_amount_str", "amount_total": "1000", "metadata": meta}), "ignored"),
        (_paid({"id": "cs_amount_huge", "amount_total": 10**40, "metadata": meta}), "ignored"),
        (_paid({"id": "cs_currency_list", "currency": ["usd"], "metadata": meta}), "ignored"),
        (_paid({"id": "cs_mode_list", "mode": ["payment"], "metadata": meta}), "ignored"),
        (_paid({"id": "cs_status_list", "payment_status": ["paid"], "metadata": meta}), "ignored"),
        (_paid({"id": "cs_evt_id_obj", "metadata": meta}, event_id={"a": 1}), "refused"),
        (_paid({"id": "cs_evt_id_null", "metadata": meta}, event_id=None), "credited"),
        (_paid({"id": "cs_evt_id_long", "metadata": meta}, event_id="e" * 5000), "credited"),
    ]


@BOTH
def test_webhook_malformed_and_wrong_types_are_4xx_or_ignored(
    client: TestClient, database_url: str, figure: Any
) -> None:
    """Unsigned junk never gets past the signature (400); signed junk — something only a holder of
    the secret can send — is refused (400) or ignored (200), never a 500, and credits nothing."""
    uid = with_db(make_user, "ann@example.com")
    url = "/api/webhooks/stripe"
    outcomes: Counter[str] = Counter()
    wrong = []
    cases = SIGNED_JUNK + _paid_junk(uid)
    for body, expected in cases:
        unsigned = client.post(url, content=body, headers={"Content-Type": "application/json"})
        assert unsigned.status_code == 400
        signed = client.post(
            url,
            content=body,
            headers={"Stripe-Signature": sign(body), "Content-Type": "application/json"},
        )
        got = (
            "refused"
            if signed.status_code == 400
            else signed.json()["status"]
            if signed.status_code == 200
            else str(signed.status_code)
        )
        outcomes[got] += 1
        if got != expected:
            wrong.append((body[:200], expected, signed.status_code, signed.text[:100]))
    assert not wrong, wrong
    with session_scope() as db:  # the two well-formed payments with odd event ids, nothing else
        assert ledger.balance_of(db, uid) == 10_000 * outcomes["credited"] == 20_000
    n = len(cases)
    figure(
        f"{n} malformed events: unsigned -> 400 each; signed -> {dict(outcomes)}, 0 5xx; "
        f"credited only the 2 well-formed payments (null / 5000-char event id)"
    )


@BOTH
def test_auth_routes_take_junk_without_a_5xx(client: TestClient, figure: Any) -> None:
    """Tickets and `next` of every shape, cookies of every shape: a redirect or a 200, never 5xx."""
    tickets = ["", "x", "\x00", "%00", "a" * 10_000, "é", "' OR 1=1 --", "../../etc/passwd", "[]"]
    nexts = ["", "//evil.example", "https://evil.example", "/\\evil", "\x00", "a" * 5000, "/tokens"]
    n = 0
    for ticket in tickets:
        for nxt in nexts:
            r = client.get(
                "/api/auth/session", params={"ticket": ticket, "next": nxt}, follow_redirects=False
            )
            n += 1
            assert r.status_code == 303, (ticket, nxt, r.status_code)
            assert r.headers["location"] == f"{ORIGIN}/login?expired=1"
    cookies = [
        "vgen_session=\x7f",
        "vgen_session=" + "a" * 5000,
        'vgen_session="\\x00"',
        ";;;==",
        "é=é",
    ]
    for cookie in cookies:
        r = client.post("/api/auth/logout", headers={"Cookie": cookie.encode()})
        n += 1
        assert r.status_code == 200 and r.json() == {"ok": True}
    junk = client.post(
        "/api/auth/logout", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert junk.status_code == 200  # takes no body: ignores it
    with session_scope() as db:
        assert db.exec(select(UserSession)).all() == []
    figure(
        f"{n + 1} junk tickets / next / cookies / bodies on the auth routes: 0 5xx, no session made"
    )
