"""Logs: one structured line per request, with the user where known; no secrets in any line."""

from __future__ import annotations

import json
import logging

import pytest
from starlette.testclient import TestClient

from tests.helpers import make_user
from vgen_app.db import session_scope
from vgen_app.logs import JsonFormatter, redact
from vgen_app.services import accounts


@pytest.mark.parametrize(
    "text",
    [
        "GET /api/auth/session?ticket=abcdef123456&next=/",
        "Authorization: Bearer s3cr3t-admin-token",
        'login {"email": "a@b.c", "password": "correct horse"}',
        "cookie vgen_session=tok123",
    ],
)
def test_secrets_are_masked(text: str) -> None:
    out = redact(text)
    for secret in ("abcdef123456", "s3cr3t-admin-token", "correct horse", "tok123"):
        assert secret not in out
    assert "***" in out


def test_one_json_line_per_request_with_user_id(asgi_app, database_url, caplog) -> None:
    with session_scope() as db:
        make_user(db, "ann@example.com")
        ticket = accounts.login(db, "ann@example.com", "correct horse").ticket
    caplog.set_level(logging.INFO, logger="vgen.access")
    with TestClient(asgi_app, base_url="http://localhost:3000") as client:
        client.get(f"/api/auth/session?ticket={ticket}", follow_redirects=False)
    records = [r for r in caplog.records if r.name == "vgen.access"]
    assert len(records) == 1
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["kind"] == "request" and line["path"] == "/api/auth/session"
    assert line["status"] == 303 and line["user_id"] and isinstance(line["ms"], float)
    assert ticket not in json.dumps(line)
