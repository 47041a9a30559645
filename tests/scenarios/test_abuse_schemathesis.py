"""Issue H: schemathesis against the /api app's own schema (the Stripe webhook, health) with half
of the generated events validly signed, and against the admin API through its mount: no 5xx for
any generated case; every admin operation without the token is 401. Each scenario records its
figure. (The admin API's token-holding run on SQLite is tests/api/test_admin_api.py's.)
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers import make_user
from tests.scenarios import abuse_helpers
from tests.scenarios.abuse_helpers import ADMIN_TOKEN, AUTH, sign
from vgen_app.api.app import create_api
from vgen_app.api.internal import create_internal_api
from vgen_app.db import with_db

secrets_set = abuse_helpers.secrets_set

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
