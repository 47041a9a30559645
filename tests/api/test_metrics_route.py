"""`GET /metrics` through the whole app: the admin token or nothing, then Prometheus text."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from tests.helpers import login_session, make_user
from vgen_app.config import reset_settings
from vgen_app.db import session_scope
from vgen_app.services import metrics

TOKEN = "metrics-test-token-0123456789"
OLD = "the-token-being-rotated-out"


@pytest.fixture
def client(asgi_app: Any, database_url: str, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setenv("ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("ADMIN_TOKENS", OLD)
    reset_settings()
    metrics.forget_cache()
    with TestClient(asgi_app, base_url="http://localhost:3000") as c:
        yield c


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": f"Bearer {TOKEN}x"},
    ],
    ids=["none", "wrong", "basic", "no-scheme", "longer"],
)
def test_without_the_token_is_401_and_shows_nothing(client: TestClient, headers: dict) -> None:
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "vgen_" not in r.text


def test_no_token_configured_is_503(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADMIN_TOKEN")
    monkeypatch.delenv("ADMIN_TOKENS")
    reset_settings()
    r = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 503 and "vgen_" not in r.text


def test_with_the_token_prometheus_text(client: TestClient) -> None:
    with session_scope() as db:
        make_user(db, "ann@example.com")
        login_session(db, "ann@example.com")
    for token in (TOKEN, OLD):  # ADMIN_TOKEN and each of ADMIN_TOKENS
        r = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert r.headers["cache-control"] == "no-store"
        families = {f.name: f for f in text_string_to_metric_families(r.text)}
        for name in (
            "vgen_runs",
            "vgen_runs_queued",
            "vgen_runs_queued_oldest_age_seconds",
            "vgen_outbox_pending",
            "vgen_outbox_failed",
            "vgen_outbox_oldest_pending_age_seconds",
            "vgen_logins",
            "vgen_signups",
            "vgen_webhooks",
            "vgen_event_handler_duration_seconds",
            "vgen_upload_bytes",
            "vgen_media_served_bytes",
            "vgen_metrics_database_up",
        ):
            assert name in families, name
        assert families["vgen_logins"].type == "counter"
        assert families["vgen_event_handler_duration_seconds"].type == "histogram"
        assert families["vgen_runs"].type == "gauge"
        logins = {s.labels["outcome"]: s.value for s in families["vgen_logins"].samples}
        assert logins["ok"] >= 1 and set(logins) >= {"ok", "refused", "rate_limited"}
        runs = {s.labels["status"]: s.value for s in families["vgen_runs"].samples}
        assert runs == {s: 0 for s in ("queued", "processing", "succeeded", "failed", "canceled")}
        assert families["vgen_metrics_database_up"].samples[0].value == 1


def test_an_unsigned_webhook_counts_through_the_route(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def refused() -> float:
        text = client.get("/metrics", headers=auth).text
        return sum(
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "vgen_webhooks_total"
            and s.labels == {"type": "unknown", "outcome": "refused"}
        )

    before = refused()
    assert client.post("/api/webhooks/stripe", content=b"{}").status_code == 400
    assert refused() == before + 1
