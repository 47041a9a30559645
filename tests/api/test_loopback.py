"""Both loopback names open the app (issue K): with APP_URL's default `localhost`, a page asked for
as 127.0.0.1 or [::1] is redirected to localhost before it loads; everything else passes."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from vgen_app.api.loopback import other_loopback_name
from vgen_app.config import reset_settings


@pytest.mark.parametrize(
    ("host", "app_url", "redirect"),
    [
        ("127.0.0.1:3000", "http://localhost:3000", True),
        ("[::1]:3000", "http://localhost:3000", True),
        ("localhost:3000", "http://127.0.0.1:3000", True),
        ("localhost:3000", "http://localhost:3000", False),  # already the right name
        ("127.0.0.1:4000", "http://localhost:3000", False),  # another port: another server
        ("127.0.0.1", "http://localhost", True),  # default ports
        ("app.vgen.com", "https://app.vgen.com", False),
        ("127.0.0.1:3000", "https://app.vgen.com", False),  # a real domain is never rewritten
        ("[bad", "http://localhost:3000", False),
    ],
)
def test_which_hosts_are_redirected(host: str, app_url: str, redirect: bool) -> None:
    assert other_loopback_name(host, app_url) is redirect


def test_a_page_on_127_0_0_1_goes_to_localhost_first(asgi_app, database_url: str) -> None:
    reset_settings()
    with TestClient(asgi_app, base_url="http://127.0.0.1:3000") as client:
        r = client.get("/login?next=%2Ftokens", follow_redirects=False)
        assert r.status_code == 307
        assert r.headers["location"] == "http://localhost:3000/login?next=%2Ftokens"
        r = client.get("/api/health", follow_redirects=False)
        assert r.status_code == 307  # every GET: the page's assets and API calls share one origin
        # Not a GET: never redirected (a webhook's POST must not be lost to a 307 on any name).
        r = client.post("/api/webhooks/stripe", content=b"{}", follow_redirects=False)
        assert r.status_code != 307
    with TestClient(asgi_app, base_url="http://localhost:3000") as client:
        assert client.get("/api/health", follow_redirects=False).status_code == 200
