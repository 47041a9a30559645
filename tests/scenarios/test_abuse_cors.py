"""Issue H: CORS. Foreign origins get no Access-Control-Allow-Origin on any /api route or /_upload;
ours does. (/ping's CORS is tests/ui/test_app.py's.)
"""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from tests.scenarios import abuse_helpers
from tests.scenarios.abuse_helpers import ORIGIN, SQLITE

client = abuse_helpers.client
secrets_set = abuse_helpers.secrets_set
storage_root = abuse_helpers.storage_root

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
