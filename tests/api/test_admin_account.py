"""Issue M through HTTP: the operator's `DELETE /api/internal/user/{userID}` and
`GET /api/internal/users/{userID}/export` (401 / 404 / 409 / 422, the audit line, the ZIP), the
user's own `GET /api/account/export` (session only, streamed as a download), and schemathesis on
the two admin operations with a real user that has files (no 5xx, every answer one the schema
declares). On SQLite and PostgreSQL.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from sqlmodel import Session
from starlette.testclient import TestClient

from tests.helpers import make_user
from tests.services.test_erasure import PW, build_account
from vgen_app.api.app import create_api
from vgen_app.api.internal import create_internal_api
from vgen_app.config import reset_settings
from vgen_app.db import with_db
from vgen_app.services import erasure, ledger, runs, sessions

TOKEN = "test-admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UNKNOWN_ID = "noSuchUser123"

pytestmark = pytest.mark.usefixtures("local_storage")


@pytest.fixture
def admin_token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ADMIN_TOKEN", TOKEN)
    reset_settings()
    return TOKEN


@pytest.fixture
def api(database_url: str, admin_token: str) -> Iterator[TestClient]:
    with TestClient(create_internal_api(), headers=AUTH) as c:
        yield c


@pytest.fixture
def web(database_url: str) -> Iterator[TestClient]:
    """The /api app (the user's routes and the admin mount), as the browser reaches it."""
    with TestClient(create_api(), base_url="http://localhost:3000") as c:
        yield c


def _archive(content: bytes) -> zipfile.ZipFile:
    archive = zipfile.ZipFile(io.BytesIO(content))
    assert archive.testzip() is None
    return archive


# --- auth and validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"), [("DELETE", f"/user/{UNKNOWN_ID}"), ("GET", f"/users/{UNKNOWN_ID}/export")]
)
def test_without_the_token_is_401_and_without_one_configured_503(
    database_url: str, monkeypatch: pytest.MonkeyPatch, method: str, path: str
) -> None:
    with TestClient(create_internal_api()) as c:
        assert c.request(method, path).status_code == 503  # no ADMIN_TOKEN: disabled
        monkeypatch.setenv("ADMIN_TOKEN", TOKEN)
        reset_settings()
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            r = c.request(method, path, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        # A junk id without the token: 401 too (auth comes first).
        assert c.request(method, path.replace(UNKNOWN_ID, "a%20b")).status_code == 401


def test_junk_ids_are_422(api: TestClient) -> None:
    for junk in ("has%20space", "a" * 33, "semi;colon", "%00", "%C3%A9"):
        assert api.delete(f"/user/{junk}").status_code == 422, junk
        assert api.get(f"/users/{junk}/export").status_code == 422, junk


def test_unknown_and_deleted_users_are_404(api: TestClient, db: Session) -> None:
    uid = make_user(db, "ann@example.com", PW)
    for r in (api.delete(f"/user/{UNKNOWN_ID}"), api.get(f"/users/{UNKNOWN_ID}/export")):
        assert (r.status_code, r.json()) == (404, {"detail": "No such user."})
    assert api.delete(f"/user/{uid}").status_code == 200
    for r in (api.delete(f"/user/{uid}"), api.get(f"/users/{uid}/export")):
        assert (r.status_code, r.json()) == (404, {"detail": "This user is deleted."})
    # Its status stays blocked: the operator cannot bring a deleted account back.
    r = api.put("/user", json={"userID": uid, "status": "activated"})
    assert r.status_code == 409 and "deleted" in r.json()["detail"]
    assert api.get(f"/users/{uid}").json()["status"] == "blocked"


# --- delete ----------------------------------------------------------------------------------------


def test_delete_a_user(
    api: TestClient, db: Session, samples, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ann = build_account(db, samples, tmp_path / "sim")
    caplog.set_level(logging.INFO, logger="vgen.admin")
    r = api.delete(f"/user/{ann.user_id}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["userID"] == ann.user_id and body["deleted_at"].endswith("+00:00")
    assert (body["tasks_deleted"], body["sessions_deleted"], body["files_failed"]) == (1, 1, 0)
    assert body["files_removed"] >= 5 and body["links_deleted"] >= 3
    assert with_db(sessions.validate, ann.token) is None
    view = api.get(f"/users/{ann.user_id}").json()
    assert (view["email"], view["status"]) == (f"deleted-{ann.user_id}@deleted.invalid", "blocked")
    assert api.get("/users", params={"email": ann.email}).json() == []  # the address is free
    assert ledger.ledger_sum(db, ann.user_id) == ledger.balance_of(db, ann.user_id)
    assert any(
        "what=delete_user" in rec.getMessage()
        and f"userID={ann.user_id}" in rec.getMessage()
        and "outcome=ok" in rec.getMessage()
        and "status=200" in rec.getMessage()
        for rec in caplog.records
    )


def test_delete_while_a_run_is_in_flight_is_409(
    api: TestClient, db: Session, samples, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ann = build_account(db, samples, tmp_path / "sim")
    run = runs.start_run(db, ann.user_id, ann.task_id)
    caplog.set_level(logging.INFO, logger="vgen.admin")
    r = api.delete(f"/user/{ann.user_id}")
    assert r.status_code == 409
    assert r.json() == {"detail": erasure.BUSY}
    assert with_db(sessions.validate, ann.token) is not None  # nothing changed
    assert any("what=delete_user" in m and "outcome=busy" in m for m in caplog.messages)
    assert runs.cancel_run(db, ann.user_id, run.id)  # cancel it, then it goes
    assert api.delete(f"/user/{ann.user_id}").status_code == 200


# --- export ----------------------------------------------------------------------------------------


def test_the_operator_exports_a_user(api: TestClient, db: Session, samples, tmp_path: Path) -> None:
    ann = build_account(db, samples, tmp_path / "sim")
    r = api.get(f"/users/{ann.user_id}/export")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"].startswith('attachment; filename="vgen-export-20')
    assert "content-length" not in r.headers  # streamed
    archive = _archive(r.content)
    names = archive.namelist()
    assert names[:2] == ["account.json", "ledger.csv"] and names[-1] == "tasks.json"
    assert "files/My clip/result-attempt-1.mp4" in names
    assert json.loads(archive.read("account.json"))["email"] == ann.email


def test_my_own_export_needs_a_live_session(
    web: TestClient, db: Session, samples, tmp_path
) -> None:
    ann = build_account(db, samples, tmp_path / "sim")
    eve = build_account(db, samples, tmp_path / "sim-eve", "eve@example.com")
    assert web.get("/api/account/export").status_code == 401
    web.cookies.set("vgen_session", "forged")
    assert web.get("/api/account/export").status_code == 401
    web.cookies.set("vgen_session", ann.token)
    r = web.get("/api/account/export")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["cache-control"] == "private, no-store"
    assert r.headers["content-disposition"].startswith('attachment; filename="vgen-export-')
    archive = _archive(r.content)
    assert json.loads(archive.read("account.json"))["id"] == ann.user_id
    assert not any(eve.task_id in json.dumps(t) for t in json.loads(archive.read("tasks.json")))
    erasure.delete_account(ann.user_id, PW)
    assert web.get("/api/account/export").status_code == 401  # the session went with it


# --- schemathesis ----------------------------------------------------------------------------------

SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", create_internal_api())
NEW_OPERATIONS = {("DELETE", "/user/{userID}"), ("GET", "/users/{userID}/export")}
FUZZ = settings(
    max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


def test_schemathesis_on_delete_and_export_no_5xx(
    api: TestClient, db: Session, samples, tmp_path: Path, figure: Any
) -> None:
    """Positive and negative cases of the two operations; half of the ids are swapped for real
    users' (one with files and a succeeded run, made afresh whenever one was deleted)."""
    ann = build_account(db, samples, tmp_path / "sim")
    users = {"current": ann.user_id}
    seen: dict[str, int] = {}
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    operations = sorted(  # the export first: of the user with files, before a DELETE took them
        (
            op.ok()
            for op in SCHEMA.get_all_operations()
            if (op.ok().method.upper(), op.ok().path) in NEW_OPERATIONS
        ),
        key=lambda op: op.method.upper() != "GET",
    )
    assert len(operations) == 2
    made = [0]

    def check(case: schemathesis.Case) -> None:
        path = case.path_parameters
        if path and isinstance(path.get("userID"), str) and len(path["userID"]) % 2:
            if with_db(erasure.deleted_at, users["current"]) is not None:
                made[0] += 1
                users["current"] = with_db(make_user, f"fuzz{made[0]}@example.com", PW)
            path["userID"] = users["current"]
        case.headers = {**(case.headers or {}), **AUTH}
        response = case.call_and_validate(checks=checks)
        key = f"{case.method.upper()} {case.operation.path} {response.status_code}"
        seen[key] = seen.get(key, 0) + 1

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @FUZZ
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                check(case)

            run()
    assert not any(key.rsplit(" ", 1)[1].startswith("5") for key in seen)
    assert any(k.endswith(" 200") for k in seen if k.startswith("DELETE"))
    assert any(k.endswith(" 200") for k in seen if k.startswith("GET"))
    figure(f"{sum(seen.values())} generated calls to the two new admin operations: {seen}")
